"""The heads on the JAX backend: same logits as on TensorFlow, and they train in `model.fit`.

The heads use only `keras.ops`; this runs each of them in a subprocess with
``KERAS_BACKEND=jax`` (the backend is fixed when Keras is imported) and compares with the
TensorFlow results of this process on the same inputs and weights.
"""

import json
import os
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
    got = json.loads(line[len("RESULT"):])
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
