"""The heads and losses on the JAX and PyTorch backends.

The library uses only `keras.ops`. The backend is fixed when Keras is first imported, so the
other backends run in subprocesses with ``KERAS_BACKEND=jax`` / ``torch``: every head's logits
are compared on JAX with the TensorFlow results of this process on the same inputs and weights,
and the head and loss test modules run again, whole, on JAX and on PyTorch (SavedModel export,
`tf.distribute` and Partial FC's `IndexedSlices` are TensorFlow-only and stay out; on PyTorch the
XLA tests skip themselves).
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_margins as km  # noqa: F401  (used by the head expressions)

pytest.importorskip("jax")

HEADS = {
    "NormSoftmax": "km.NormSoftmax(7)",
    "CosFace": "km.CosFace(7, scale=30.0)",
    "ArcFace": "km.ArcFace(7, scale=30.0, sub_centers=2)",
    "CombinedMargin": "km.CombinedMargin(7, scale=30.0, m1=1.2, m2=0.3, m3=0.2)",
    "SphereFace": "km.SphereFace(7)",
    "SVSoftmax": "km.SVSoftmax(7, margin=0.3, margin_type='arc')",
    "L2Softmax": "km.L2Softmax(7)",
}

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras, keras_margins as km
    assert keras.backend.backend() == "jax", keras.backend.backend()
    data = np.load(sys.argv[1])
    x, y, heads = data["x"], data["y"], json.loads(sys.argv[2])
    out = {}
    for name, expr in heads.items():
        head = eval(expr)
        head.build((None, x.shape[1]))
        for i, w in enumerate(head.weights):
            w.assign(data[f"{name}_{i}"])
        logits = keras.ops.convert_to_numpy(head([x, y]))
        keras.utils.set_random_seed(0)
        backbone = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16)])
        model, _ = km.build_models(backbone, eval(expr))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        history = model.fit([x, y], y, epochs=3, batch_size=16, verbose=0).history
        out[name] = {"logits": logits.tolist(), "loss": history["loss"]}
    print("RESULT" + json.dumps(out))
    """
)


def test_heads_match_tensorflow_and_train_on_jax(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 7, size=64).astype("int32")
    arrays, expected = {"x": x, "y": y}, {}
    for name, expr in HEADS.items():
        head = eval(expr)
        head.build((None, 5))
        for i, w in enumerate(head.weights):
            arrays[f"{name}_{i}"] = keras.ops.convert_to_numpy(w)
        expected[name] = keras.ops.convert_to_numpy(head([x, y]))
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)

    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), json.dumps(HEADS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(t for t in result.stdout.splitlines() if t.startswith("RESULT"))
    got = json.loads(line[len("RESULT") :])
    for name in HEADS:
        np.testing.assert_allclose(
            np.array(got[name]["logits"]),
            expected[name],
            rtol=1e-4,
            atol=1e-4,
            err_msg=f"{name}: JAX logits differ from TensorFlow's",
        )
        losses = got[name]["loss"]
        assert np.all(np.isfinite(losses)), (name, losses)
        assert losses[-1] < losses[0], (name, losses)


ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKEND_MODULES = [
    "tests/test_heads.py",
    "tests/test_arcface.py",
    "tests/test_combined_margin.py",
    "tests/test_normalized_matmul.py",
    "tests/test_sphereface.py",
    "tests/test_sv_softmax.py",
    "tests/test_l2_softmax.py",
    "tests/test_softmax_mining.py",
    "tests/test_triplet.py",
    "tests/test_contrastive.py",
    "tests/test_center_loss.py",
    "tests/test_distances.py",
    "tests/test_npairs.py",
    "tests/test_lifted.py",
    "tests/test_validation.py",
    "tests/test_layer_harness.py",
    "tests/test_head_base.py",
    "tests/test_adaface.py::test_matches_reference_over_steps",
    "tests/test_magface.py::test_gradients_through_the_norm_match_finite_differences",
    "tests/test_magface.py::test_fit_and_evaluate_report_the_same_loss_with_the_regulariser",
    "tests/test_curricularface.py::test_matches_reference_over_steps",
    "tests/test_curricularface.py::test_gradients_match_finite_differences",
    "tests/test_adacos.py::test_dynamic_matches_reference_over_steps",
    "tests/test_adacos.py::test_xla_matches_eager_and_updates_the_scale",
    "tests/test_elasticface.py::test_plus_differs_from_the_official_codes_permutation",
    "tests/test_elasticface.py::test_gradients_match_finite_differences_with_the_drawn_margins_fixed",
    "tests/test_class_margins.py::test_arcface_with_a_margin_vector_matches_the_reference",
    "tests/test_class_margins.py::test_partial_fc_gives_each_sample_its_own_class_margin",
    "tests/test_sparse_crossentropy.py::test_equals_keras_categorical_crossentropy_on_one_hot",
    "tests/test_interclass_filtering.py::test_logits_match_float64_reference",
    "tests/test_interclass_filtering.py::test_filtered_entries_get_no_gradient",
    "tests/test_cleaning.py::test_k1_head_holds_the_dominant_centres",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jax", "torch"])
def test_head_and_loss_test_modules_pass_on_other_backends(name):
    # JAX is in the test extra; PyTorch is not (pip would fetch its CUDA build): the PyTorch
    # rerun runs where torch is installed (CI installs the CPU wheel) and skips, saying so,
    # elsewhere.
    pytest.importorskip(
        name,
        reason=f"{name} is not installed, so the head and loss tests do not rerun on "
        f"KERAS_BACKEND={name}"
        + (
            " (install the CPU wheel: pip install torch==2.13.0 --index-url "
            "https://download.pytorch.org/whl/cpu)"
            if name == "torch"
            else ""
        ),
    )
    env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            *BACKEND_MODULES,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"KERAS_BACKEND={name}: {summary}")
    assert result.returncode == 0, (result.stdout[-6000:], result.stderr[-2000:])
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
