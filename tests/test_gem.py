"""GeMPooling2D against a float64 NumPy reference, finite differences, mixed precision, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km
from tests.helpers import assert_config_round_trip, assert_keras_round_trip


def ref_gem(x, p, eps=1e-6, channels_last=True, keepdims=False):
    """GeM by loops in float64: (mean_hw max(x, eps)^p)^(1/p), per sample and channel."""
    x = np.asarray(x, np.float64)
    if not channels_last:
        x = np.transpose(x, (0, 2, 3, 1))
    b, h, w, c = x.shape
    out = np.zeros((b, c))
    for i in range(b):
        for k in range(c):
            total = 0.0
            for r in range(h):
                for s in range(w):
                    total += max(x[i, r, s, k], eps) ** p
            out[i, k] = (total / (h * w)) ** (1.0 / p)
    if keepdims:
        out = out[:, None, None, :] if channels_last else out[:, :, None, None]
    return out


def feature_map(rng, shape=(2, 3, 4, 5), scale=2.0):
    x = rng.normal(size=shape) * scale
    x[0, 0, 0, :] = 0.0  # ReLU-style exact zeros and negatives exercise the clamp
    return x.astype("float32")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_matches_float64_reference(rng, data_format, keepdims):
    x = feature_map(rng)
    layer = km.GeMPooling2D(data_format=data_format, keepdims=keepdims)
    got = keras.ops.convert_to_numpy(layer(x))
    expected = ref_gem(x, 3.0, channels_last=data_format == "channels_last", keepdims=keepdims)
    assert got.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # A learned exponent is used as is.
    layer.p.assign([2.5])
    got = keras.ops.convert_to_numpy(layer(x))
    expected = ref_gem(x, 2.5, channels_last=data_format == "channels_last", keepdims=keepdims)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_special_cases(rng):
    x = np.abs(rng.normal(size=(3, 4, 4, 2))).astype("float32") + 0.1
    layer = km.GeMPooling2D(p=1.0, trainable_p=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x.mean(axis=(1, 2)), rtol=1e-5)
    # Large p tends to max pooling; an all-negative map gives eps.
    big = km.GeMPooling2D(p=60.0)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(big), x.max(axis=(1, 2)), rtol=0.05)
    neg = keras.ops.convert_to_numpy(km.GeMPooling2D()(-x))
    np.testing.assert_allclose(neg, 1e-6, rtol=1e-5)
    # NaN in, NaN out.
    x_nan = x.copy()
    x_nan[0, 1, 1, 0] = np.nan
    out = keras.ops.convert_to_numpy(km.GeMPooling2D()(x_nan))
    assert np.isnan(out[0, 0]) and np.all(np.isfinite(out[1:]))


def test_gradients_match_finite_differences(rng):
    x = (np.abs(rng.normal(size=(2, 3, 3, 2))) + 0.2).astype("float32")
    x[1, 0, 0, 1] = -0.5  # clamped entry: zero gradient
    p0 = 2.7
    layer = km.GeMPooling2D(p=p0)
    weights = rng.normal(size=(2, 2))  # a random linear read-out makes the loss scalar
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt) * weights)
    gx, gp = tape.gradient(loss, [xt, layer.p])

    def f(x64, p):
        return float(np.sum(ref_gem(x64, p) * weights))

    h = 1e-6
    x64 = x.astype(np.float64)
    fd_x = np.zeros_like(x64)
    for idx in np.ndindex(x64.shape):
        up, down = x64.copy(), x64.copy()
        up[idx] += h
        down[idx] -= h
        fd_x[idx] = (f(up, p0) - f(down, p0)) / (2 * h)
    fd_p = (f(x64, p0 + h) - f(x64, p0 - h)) / (2 * h)
    np.testing.assert_allclose(gx.numpy(), fd_x, rtol=2e-3, atol=1e-5)
    assert fd_x[1, 0, 0, 1] == 0.0 and gx.numpy()[1, 0, 0, 1] == 0.0
    np.testing.assert_allclose(gp.numpy(), [fd_p], rtol=2e-3)


def test_mixed_float16_does_not_overflow(rng):
    keras.config.set_dtype_policy("mixed_float16")
    x = (np.abs(rng.normal(size=(2, 4, 4, 3))) * 60.0 + 41.0).astype("float16")
    # The naive computation in float16 overflows: 41**3 > 65504.
    assert np.isinf(np.float16(41.0) ** np.float16(3.0))
    layer = km.GeMPooling2D()
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert layer.p.dtype == "float32"
    expected = ref_gem(x.astype(np.float64), 3.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out).astype(np.float64), expected, rtol=2e-3
    )


def _gem_model(seed=0, jit_compile=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    feats = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    pooled = km.GeMPooling2D(name="gem")(feats)
    outputs = keras.layers.Dense(4)(pooled)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def test_fit_learns_p_and_xla_agrees(rng):
    x = rng.normal(size=(64, 6, 6, 3)).astype("float32")
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int32") + 2 * (x[..., 1].max(axis=(1, 2)) > 2)
    eager = _gem_model()
    xla = _gem_model(jit_compile=True)
    np.testing.assert_allclose(
        xla.predict(x, verbose=0), eager.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
    history = eager.fit(x, y, epochs=5, batch_size=16, verbose=0)
    xla_history = xla.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    p_eager = float(eager.get_layer("gem").p.numpy()[0])
    p_xla = float(xla.get_layer("gem").p.numpy()[0])
    assert p_eager != 3.0  # p is trained
    assert p_xla == pytest.approx(p_eager, rel=1e-3)
    np.testing.assert_allclose(xla_history.history["loss"], history.history["loss"], rtol=1e-3)
    # trainable_p=False keeps p fixed.
    layer = km.GeMPooling2D(trainable_p=False)
    layer.build((None, 6, 6, 3))
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1


def test_config_and_keras_round_trip(rng, tmp_path):
    layer = km.GeMPooling2D(
        p=4.0, eps=1e-5, trainable_p=True, data_format="channels_first", keepdims=True, name="gem"
    )
    clone = assert_config_round_trip(layer)
    assert clone.data_format == "channels_first" and clone.keepdims
    model = _gem_model()
    model.get_layer("gem").p.assign([3.7])  # a trained value must survive the round trip
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    loaded = assert_keras_round_trip(model, x, tmp_path, atol=1e-6)
    assert float(loaded.get_layer("gem").p.numpy()[0]) == pytest.approx(3.7)


def test_not_tensorflow_similarity_formula(rng):
    # tensorflow-similarity computes M_p(x - min + 1) + min - 1, not M_p(max(x, eps)).
    x = (np.abs(rng.normal(size=(1, 3, 3, 1))) + 0.5).astype("float32")
    ours = keras.ops.convert_to_numpy(km.GeMPooling2D()(x))[0, 0]
    m = x.min()
    shifted = np.mean((x.astype(np.float64) - m + 1.0) ** 3) ** (1 / 3) + m - 1.0
    assert abs(ours - shifted) > 1e-3


def test_errors():
    with pytest.raises(ValueError, match="`p`"):
        km.GeMPooling2D(p=0.0)
    with pytest.raises(ValueError, match="`eps`"):
        km.GeMPooling2D(eps=-1.0)
    with pytest.raises(ValueError, match="data_format"):
        km.GeMPooling2D(data_format="NHWC")
    with pytest.raises(ValueError, match="keepdims"):
        km.GeMPooling2D(keepdims="no")
    with pytest.raises(ValueError, match="trainable_p"):
        km.GeMPooling2D(trainable_p="yes")
    with pytest.raises(ValueError):
        km.GeMPooling2D()(np.zeros((2, 3, 3), "float32"))
