"""build_models: one-hot label input, argument checks, and km.load_model of mixed-precision runs."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.test_heads import digits_backbone


def small_backbone(dim=8, embedding_dim=4):
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(embedding_dim)])


def test_one_hot_label_input_gives_the_sparse_logits(rng, tmp_path):
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.integers(0, 5, size=32)
    backbone = small_backbone()
    head = km.ArcFace(num_classes=5)
    sparse_model, _ = km.build_models(backbone, head)
    one_hot_model, embed = km.build_models(backbone, head, label_input="one_hot")
    assert tuple(one_hot_model.inputs[-1].shape) == (None, 5)
    y1 = np.eye(5, dtype="float32")[y]
    np.testing.assert_allclose(
        one_hot_model.predict([x, y1], verbose=0),
        sparse_model.predict([x, y], verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    # The notebook pipeline: one-hot targets, categorical cross-entropy.
    one_hot_model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    history = one_hot_model.fit([x, y1], y1, epochs=4, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    # Saved and reloaded without custom_objects.
    path = os.path.join(str(tmp_path), "one_hot.keras")
    one_hot_model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict([x, y1], verbose=0), one_hot_model.predict([x, y1], verbose=0), atol=1e-6
    )
    # The embedding model is the same as with sparse labels, and export finds it.
    assert [tuple(t.shape) for t in embed.inputs] == [(None, 8)]
    found = km.get_embedding_model(one_hot_model)
    np.testing.assert_allclose(found.predict(x, verbose=0), embed.predict(x, verbose=0), atol=1e-6)


def test_label_dtypes():
    backbone = small_backbone()
    model, _ = km.build_models(backbone, km.ArcFace(num_classes=3), label_dtype="int64")
    assert keras.backend.standardize_dtype(model.inputs[-1].dtype) == "int64"
    model, _ = km.build_models(backbone, km.ArcFace(num_classes=3), label_input="one_hot")
    assert keras.backend.standardize_dtype(model.inputs[-1].dtype) == "float32"
    for bad in ("string", "float32", "bool", "nonsense"):
        with pytest.raises(ValueError, match="label_dtype"):
            km.build_models(backbone, km.ArcFace(num_classes=3), label_dtype=bad)
    with pytest.raises(ValueError, match="label_dtype"):
        km.build_models(
            backbone, km.ArcFace(num_classes=3), label_input="one_hot", label_dtype="string"
        )


@pytest.mark.parametrize("scale", [1e-30, 1e-8, 1.0, 1e20, 1e30])
def test_embedding_model_normalizes_at_any_magnitude(scale, rng, tmp_path):
    # Issue 12: keras.layers.UnitNormalization overflows its squared norm above ~1e19 (every
    # embedding became 0) and meets its 1e-12 floor below ~1e-6 (embeddings shorter than 1).
    x = rng.normal(size=(16, 6))
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Rescaling(scale)])
    _, embed = km.build_models(backbone, km.ArcFace(num_classes=3))
    got = embed.predict(x.astype("float32"), verbose=0)
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)  # float64, magnitude-free
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "embed.keras")
    embed.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x.astype("float32"), verbose=0), got)


def test_l2_normalization_layer_zero_nan_and_mixed_precision():
    layer = km.L2Normalization()
    x = np.array([[0.0, 0.0], [np.nan, 1.0], [3.0, 4.0]], dtype="float32")
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(got[0], [0.0, 0.0])
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(got[2], [0.6, 0.8], rtol=1e-6)
    keras.config.set_dtype_policy("mixed_float16")
    mixed = km.L2Normalization()
    out = mixed(x[2:].astype("float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert km.L2Normalization.from_config(mixed.get_config()).get_config() == mixed.get_config()


def test_argument_errors_name_the_argument():
    backbone = small_backbone()
    for head in (keras.layers.Dense(3), "arcface", km.ArcFace, None):
        with pytest.raises(ValueError, match="`head`"):
            km.build_models(backbone, head)
    for bad in (keras.layers.Dense(3), "resnet", keras.Sequential([keras.layers.Dense(3)])):
        with pytest.raises(ValueError, match="`backbone`"):
            km.build_models(bad, km.ArcFace(num_classes=3))
    for flag in ("no", 0, None):
        with pytest.raises(ValueError, match="normalize_embeddings"):
            km.build_models(backbone, km.ArcFace(num_classes=3), normalize_embeddings=flag)
    with pytest.raises(ValueError, match="label_input"):
        km.build_models(backbone, km.ArcFace(num_classes=3), label_input="categorical")
    # False really turns normalization off.
    _, embed = km.build_models(backbone, km.ArcFace(num_classes=3), normalize_embeddings=False)
    out = embed.predict(np.full((2, 8), 3.0, "float32"), verbose=0)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)
    # PartialFC is accepted as a head.
    km.build_models(small_backbone(), km.PartialFC(km.ArcFace(num_classes=10), sample_rate=0.5))


_TRAIN = textwrap.dedent(
    """
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras, keras_margins as km
    path, stage = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = np.arange(64) % 4
    if stage == "first":
        keras.config.set_dtype_policy("mixed_float16")
        keras.utils.set_random_seed(0)
        backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
        model, _ = km.build_models(backbone, km.ArcFace(num_classes=4, scale=8.0, margin=0.2))
        schedule = keras.optimizers.schedules.CosineDecay(
            1e-3, decay_steps=100, warmup_target=2e-2, warmup_steps=8)
        model.compile(keras.optimizers.Adam(schedule),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        h = model.fit([x, y], y, epochs=6, batch_size=16, verbose=0, shuffle=False)
        model.save(path)
    else:
        load = km.load_model if stage == "helper" else keras.saving.load_model
        model = load(path)
        h = model.fit([x, y], y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    print(json.dumps({"iterations": int(model.optimizer.iterations),
                      "optimizer": type(model.optimizer).__name__,
                      "loss": h.history["loss"],
                      "global_policy": keras.config.dtype_policy().name}))
    """
)


def _run(script, *args):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["KERAS_BACKEND"] = "tensorflow"
    out = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    import json

    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.mark.slow
def test_load_model_keeps_mixed_precision_optimizer_state(tmp_path):
    script = os.path.join(str(tmp_path), "train.py")
    with open(script, "w") as handle:
        handle.write(_TRAIN)
    path = os.path.join(str(tmp_path), "model.keras")
    first, _ = _run(script, path, "first")
    assert first["iterations"] == 24 and first["optimizer"] == "LossScaleOptimizer"
    assert km.saved_dtype_policy(path) == "mixed_float16"
    # Fresh process, km.load_model: the step count continues (24 + 4) and the loss continues
    # from where it stopped instead of jumping back up.
    resumed, _ = _run(script, path, "helper")
    assert resumed["iterations"] == 28
    assert resumed["optimizer"] == "LossScaleOptimizer"
    assert resumed["global_policy"] == "float32"  # restored after loading
    assert resumed["loss"][0] < first["loss"][0] * 0.9
    assert resumed["loss"][0] == pytest.approx(first["loss"][-1], rel=0.25)
    # The plain keras.saving.load_model drops the optimizer state (the bug worked around).
    plain, stderr = _run(script, path, "plain")
    assert plain["iterations"] == 4
    assert "Skipping variable loading for optimizer" in stderr


def test_load_model_of_float32_archives_is_plain_load(tmp_path, rng):
    model, _ = km.build_models(small_backbone(), km.ArcFace(num_classes=3))
    path = os.path.join(str(tmp_path), "m.keras")
    model.save(path)
    assert km.saved_dtype_policy(path) is None
    x, y = rng.normal(size=(4, 8)).astype("float32"), np.arange(4) % 3
    np.testing.assert_allclose(
        km.load_model(path).predict([x, y], verbose=0), model.predict([x, y], verbose=0), atol=1e-6
    )
    with pytest.raises(ValueError, match="path"):
        km.saved_dtype_policy(__file__)


def test_build_models_share_weights_and_validate():
    backbone = digits_backbone()
    train_model, embed_model = km.build_models(backbone, km.CosFace(10), normalize_embeddings=False)
    x = np.random.default_rng(0).random((3, 64)).astype("float32")
    np.testing.assert_allclose(
        embed_model.predict(x, verbose=0), backbone.predict(x, verbose=0), atol=1e-6
    )
    assert {id(w) for w in backbone.weights} <= {id(w) for w in train_model.weights}
    with pytest.raises(ValueError, match="backbone"):
        km.build_models("not a model", km.CosFace(10))
    with pytest.raises(ValueError, match="head"):
        km.build_models(backbone, "not a head")
