"""AdaFace against float64 NumPy references written from the formula sheet (PAPERS.md, 1).

n = clip(||x||, 0.001, 100) (no gradient); in a training call the running statistics are
updated first, mu <- a mean(n) + (1 - a) mu, sigma <- a std_{N-1}(n) + (1 - a) sigma (a batch of
one keeps sigma, an empty batch keeps both); z = clip(h (n - mu) / (sigma + eps), -1, 1);
target logit s (cos(clip(acos(clip(c_y, -1 + eps, 1 - eps)) - m z, eps, pi - eps)) - m - m z),
other logits s c_j. The references share no code with keras_margins.
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_all_close,
    assert_config_round_trip,
    compiled,
    head_model,
    head_training_step,
    load_digits_split,
    numerical_gradient,
    ref_cross_entropy,
    skip_compiled_fit_on_torch,
    to_numpy,
    value_and_grads,
    xla_in_fit,
)
from tests.helpers import (
    ref_cosines as ref_cos,
)

EPS = 1e-3

# --------------------------------------------------------------------------- float64 references


def ref_update(norms, mu, sigma, alpha):
    """The running statistics after one training batch with these (raw) norms."""
    n = [min(max(float(v), 0.001), 100.0) for v in norms]
    if len(n) >= 1:
        mean = sum(n) / len(n)
        mu = alpha * mean + (1 - alpha) * mu
    if len(n) >= 2:
        std = math.sqrt(sum((v - mean) ** 2 for v in n) / (len(n) - 1))
        sigma = alpha * std + (1 - alpha) * sigma
    return mu, sigma


def ref_z(norms, mu, sigma, h):
    out = []
    for v in norms:
        n = min(max(float(v), 0.001), 100.0)
        out.append(min(max(h * (n - mu) / (sigma + EPS), -1.0), 1.0))
    return np.array(out)


def ref_logits(x, w, labels, z, s, m, k=1):
    cos = ref_cos(x, w, k)
    out = s * cos
    for i, y in enumerate(labels):
        c = min(max(cos[i, y], -1 + EPS), 1 - EPS)
        theta = min(max(math.acos(c) - m * z[i], EPS), math.pi - EPS)
        out[i, y] = s * (math.cos(theta) - m - m * z[i])
    return out


def make_inputs(rng, batch=8, dim=6, num_classes=5, k=1, low=2.0, high=40.0):
    """Embeddings with norms spread over [low, high] (z covers the clip), kernel, labels."""
    x = rng.normal(size=(batch, dim))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(low, high, (batch, 1))
    kernel = rng.normal(size=(dim, num_classes * k)).astype("float32")
    labels = rng.integers(0, num_classes, size=batch).astype("int32")
    return x.astype("float32"), kernel, labels


def built(kernel, num_classes, **kwargs):
    head = km.AdaFace(num_classes, **kwargs)
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


def stats(head):
    return float(to_numpy(head.norm_mean)), float(to_numpy(head.norm_std))


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_logits_match_reference_and_inference_freezes_the_state(sub_centers, rng):
    x, kernel, labels = make_inputs(rng, k=sub_centers)
    # One sample on its class centre (cos = 1: the clamps) and one opposite to it (cos = -1);
    # norms chosen so that z = (n - 15) / 8 covers both clips and the linear part.
    x[0] = kernel[:, labels[0] * sub_centers]
    x[1] = -kernel[:, labels[1] * sub_centers]
    target_norms = np.array([30.0, 1.0, 3.0, 10.0, 14.0, 17.0, 22.0, 50.0])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True) * target_norms[:, None]).astype("float32")
    head = built(kernel, 5, scale=16.0, margin=0.5, h=1.0, sub_centers=sub_centers)
    head.norm_mean.assign(15.0)
    head.norm_std.assign(8.0)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    z = ref_z(norms, 15.0, 8.0, 1.0)
    assert z.min() == -1.0 and z.max() == 1.0 and np.any(np.abs(z) < 1.0)  # every regime
    expected = ref_logits(x, kernel, labels, z, 16.0, 0.5, sub_centers)
    for training in (False, None):
        got = head([x, labels], training=training)
        assert keras.backend.standardize_dtype(got.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(got), expected, atol=2e-4)
    assert stats(head) == (15.0, 8.0)
    # Without labels: s * cos, no state change even with training=True.
    np.testing.assert_allclose(to_numpy(head(x)), 16.0 * ref_cos(x, kernel, sub_centers), atol=1e-4)
    assert stats(head) == (15.0, 8.0)


def test_matches_reference_over_steps(rng):
    """Training calls update the statistics before use; inference calls do not touch them."""
    alpha = 0.3
    x_all, kernel, labels_all = make_inputs(rng, batch=40)
    head = built(kernel, 5, scale=8.0, margin=0.4, h=0.333, t_alpha=alpha)
    mu, sigma = 20.0, 100.0
    assert stats(head) == (mu, sigma)
    # Batches of 8, 1 (std undefined: kept), 0 (nothing changes), 5 and 8 samples.
    start = 0
    for size in (8, 1, 0, 5, 8, 8):
        x, y = x_all[start : start + size], labels_all[start : start + size]
        start += size
        logits = to_numpy(head([x, y], training=True))
        mu, sigma = ref_update(np.linalg.norm(x.astype(np.float64), axis=1), mu, sigma, alpha)
        assert stats(head) == pytest.approx((mu, sigma), rel=1e-5)
        assert np.isfinite(stats(head)[1])
        z = ref_z(np.linalg.norm(x.astype(np.float64), axis=1), mu, sigma, 0.333)
        assert logits.shape == (size, 5)
        np.testing.assert_allclose(logits, ref_logits(x, kernel, y, z, 8.0, 0.4), atol=1e-4)
        # Right after a training call, inference on the same batch gives the same logits
        # (the training call used the statistics it stored).
        np.testing.assert_allclose(to_numpy(head([x, y], training=False)), logits, atol=1e-5)
    assert abs(z).max() < 1.0  # the statistics moved towards the data: z no longer clipped
    before = stats(head)
    head([x_all, labels_all])
    head([x_all, labels_all], training=False)
    with pytest.warns(UserWarning, match="without labels"):
        head(x_all, training=True)  # no labels: no target, no statistics
    assert stats(head) == before


def test_gradients_match_finite_differences(rng):
    x, kernel, labels = make_inputs(rng, batch=5, dim=3, num_classes=4, low=5.0, high=30.0)
    head = built(kernel, 4, scale=4.0, margin=0.4, h=0.333, t_alpha=0.5)
    # A training call: the statistics are updated first, z comes from them and is detached.
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    z = ref_z(norms, *ref_update(norms, 20.0, 100.0, 0.5), 0.333)
    assert np.all(np.abs(z) < 1.0)

    def ref_loss_x(xx):
        return ref_cross_entropy(ref_logits(xx, kernel, labels, z, 4.0, 0.4), labels)

    def ref_loss_w(ww):
        return ref_cross_entropy(ref_logits(x, ww, labels, z, 4.0, 0.4), labels)

    def loss_fn(xt):
        logits = head([xt, labels], training=True)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)

    loss, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel], state=[head])
    assert loss == pytest.approx(ref_loss_x(x), rel=1e-5)
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=3e-3, atol=3e-5)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=3e-3, atol=3e-5)


def test_mixed_float16_gives_float32_logits(rng):
    keras.config.set_dtype_policy("mixed_float16")
    x, kernel, labels = make_inputs(rng)
    head = built(kernel, 5, scale=16.0)
    xh = keras.ops.cast(x, "float16")
    logits = head([xh, labels], training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.norm_mean.dtype == "float32" and head.norm_std.dtype == "float32"
    x16 = to_numpy(keras.ops.cast(xh, "float32")).astype(np.float64)
    norms = np.linalg.norm(x16, axis=1)
    mu, sigma = ref_update(norms, 20.0, 100.0, 0.01)
    assert stats(head) == pytest.approx((mu, sigma), rel=1e-5)
    expected = ref_logits(x16, kernel, labels, ref_z(norms, mu, sigma, 0.333), 16.0, 0.4)
    np.testing.assert_allclose(to_numpy(logits), expected, atol=2e-4)


def test_xla_matches_eager_including_the_state_update(rng):
    x, kernel, labels = make_inputs(rng)
    head = built(kernel, 5, scale=16.0, t_alpha=0.2)
    step = head_training_step(head)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    after_eager = stats(head)
    assert after_eager != (20.0, 100.0)
    head.norm_mean.assign(20.0)
    head.norm_std.assign(100.0)
    xla = compiled(step)(xt, yt)
    assert stats(head) == pytest.approx(after_eager, rel=1e-6)
    assert_all_close(xla, eager)


def test_partial_fc_with_sub_centers_gives_the_reference_on_the_sampled_classes(rng):
    x, _, _ = make_inputs(rng, batch=8)
    # k = 4 of 10 classes, and the batch holds exactly 4 classes: those are the sampled ones.
    labels = np.array([1, 3, 6, 8, 1, 3, 6, 8], "int32")
    pfc = km.PartialFC(
        km.AdaFace(10, scale=8.0, t_alpha=0.5, sub_centers=3), sample_rate=0.4, seed=0
    )
    logits = to_numpy(pfc([x, labels], training=True))
    assert logits.shape == (8, 4)
    head = pfc.head
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    mu, sigma = ref_update(norms, 20.0, 100.0, 0.5)
    assert stats(head) == pytest.approx((mu, sigma), rel=1e-5)
    kernel = to_numpy(pfc.kernel).T  # (D, C * K)
    z = ref_z(norms, mu, sigma, 0.333)
    expected = ref_logits(x, kernel, labels, z, 8.0, 0.4, k=3)[:, [1, 3, 6, 8]]
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    # Without Partial FC: a copy of the head with the centres and the statistics.
    assert stats(pfc.to_head()) == stats(head)


# --------------------------------------------------------------------------- training and saving


def test_fit_updates_the_statistics_once_per_step_and_resumes_after_load(tmp_path, rng):
    """17 samples in batches of 8: steps of 8, 8 and 1 samples, two epochs, no shuffling."""
    x, kernel, labels = make_inputs(rng, batch=17)
    head = built(kernel, 5, scale=8.0, t_alpha=0.1)
    model = head_model(head, 6)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA: test_xla_matches_eager_including_the_state_update
    )
    history = model.fit([x, labels], labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    mu, sigma = 20.0, 100.0
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    for _ in range(2):
        for start in (0, 8, 16):
            mu, sigma = ref_update(norms[start : start + 8], mu, sigma, 0.1)
    assert stats(head) == pytest.approx((mu, sigma), rel=1e-5)
    # evaluate and predict use the statistics and never move them.
    model.evaluate([x, labels], labels, batch_size=8, verbose=0)
    model.predict([x, labels], batch_size=8, verbose=0)
    assert stats(head) == pytest.approx((mu, sigma), rel=1e-5)

    path = str(tmp_path / "adaface.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_head = loaded.layers[-1]
    assert isinstance(loaded_head, km.AdaFace)
    assert stats(loaded_head) == stats(head)
    np.testing.assert_array_equal(to_numpy(loaded([x, labels])), to_numpy(model([x, labels])))
    # Resumed: the next training step continues from the saved statistics, identically.
    a = to_numpy(head([x[:8], labels[:8]], training=True))
    b = to_numpy(loaded_head([x[:8], labels[:8]], training=True))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert stats(loaded_head) == pytest.approx(stats(head), rel=1e-7)


def test_training_on_digits_lowers_the_loss():
    skip_compiled_fit_on_torch(False)
    x_train, _, y_train, _ = load_digits_split()
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16)]
    )
    head = km.AdaFace(10, scale=16.0)
    train_model, _ = km.build_models(backbone, head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    losses = train_model.fit(
        [x_train[:512], y_train[:512]], y_train[:512], batch_size=64, epochs=4, verbose=0
    ).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert stats(head) != (20.0, 100.0)


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"margin": -0.1}, "margin"),
        ({"margin": math.pi}, "margin"),
        ({"margin": "0.4"}, "margin"),
        ({"h": -0.5}, "h"),
        ({"h": float("nan")}, "h"),
        ({"t_alpha": 0.0}, "t_alpha"),
        ({"t_alpha": 1.5}, "t_alpha"),
        ({"scale": -1.0}, "scale"),
        ({"sub_centers": 0}, "sub_centers"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        km.AdaFace(**{"num_classes": 3, **kwargs})


def test_config_round_trip_and_nan_in_nan_out(rng):
    head = km.AdaFace(7, scale=30.0, margin=0.3, h=0.5, t_alpha=0.99, sub_centers=2)
    clone = assert_config_round_trip(head)
    assert (clone.margin, clone.h, clone.t_alpha, clone.sub_centers) == (0.3, 0.5, 0.99, 2)
    x, kernel, labels = make_inputs(rng, num_classes=7, k=2)
    x[2, 0] = np.nan
    out = to_numpy(built(kernel, 7, sub_centers=2)([x, labels]))
    assert np.all(np.isnan(out[2])) and np.all(np.isfinite(np.delete(out, 2, axis=0)))
    # In training the NaN row is NaN too, and it is left out of the running statistics.
    head = built(kernel, 7, sub_centers=2)
    out = to_numpy(head([x, labels], training=True))
    assert np.all(np.isnan(out[2])) and np.all(np.isfinite(np.delete(out, 2, axis=0)))
    norms = np.linalg.norm(np.delete(x, 2, axis=0).astype("float64"), axis=1).clip(0.001, 100)
    mean = 0.01 * norms.mean() + 0.99 * 20.0
    std = 0.01 * norms.std(ddof=1) + 0.99 * 100.0
    np.testing.assert_allclose(to_numpy(head.norm_mean), mean, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(head.norm_std), std, rtol=1e-5)
