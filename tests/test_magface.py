"""MagFace and the embedding norm as a quality score, against float64 NumPy references.

From the formula sheet (PAPERS.md, 2): a = clip(||x||, l_a, u_a), not detached;
m(a) = (u_m - l_m) / (u_a - l_a) (a - l_a) + l_m; target s cos(theta_y + m(a)) where
cos theta_y > 0 and s cos theta_y elsewhere (easy_margin), or ArcFace's fallback
s (cos theta_y - m sin m) where cos theta_y <= cos(pi - m); loss CE + lambda_g mean g(a),
g(a) = a / u_a^2 + 1 / a. The references share no code with keras_margins.
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_config_round_trip,
    compiled,
    grad_fn,
    head_model,
    load_digits_split,
    numerical_gradient,
    ref_cross_entropy,
    skip_unless_tensorflow,
    to_numpy,
    value_and_grads,
    xla_in_fit,
)
from tests.helpers import (
    ref_cosines as ref_cos,
)

SMALL = {"l_a": 1.0, "u_a": 10.0, "l_m": 0.3, "u_m": 0.9}  # norms of order 1-10 in the tests

# --------------------------------------------------------------------------- float64 references


def ref_a(x, l_a, u_a):
    return np.array([min(max(np.linalg.norm(row), l_a), u_a) for row in np.asarray(x, np.float64)])


def ref_logits(x, w, labels, s, l_a, u_a, l_m, u_m, easy_margin=True, k=1):
    cos = ref_cos(x, w, k)
    out = s * cos
    for i, a in enumerate(ref_a(x, l_a, u_a)):
        m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
        c = cos[i, labels[i]]
        theta = math.acos(c)
        if easy_margin:
            value = math.cos(theta + m) if c > 0 else c
        else:
            value = math.cos(theta + m) if c > math.cos(math.pi - m) else c - m * math.sin(m)
        out[i, labels[i]] = s * value
    return out


def ref_g_loss(x, lambda_g, l_a, u_a):
    return lambda_g * np.mean([a / u_a**2 + 1.0 / a for a in ref_a(x, l_a, u_a)])


def ref_total_loss(x, w, labels, s, lambda_g, easy_margin=True, k=1, ranges=SMALL):
    logits = ref_logits(x, w, labels, s, easy_margin=easy_margin, k=k, **ranges)
    return ref_cross_entropy(logits, labels) + ref_g_loss(x, lambda_g, ranges["l_a"], ranges["u_a"])


def make_inputs(rng, norms, dim=6, num_classes=5, k=1):
    x = rng.normal(size=(len(norms), dim))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.asarray(norms)[:, None]
    kernel = rng.normal(size=(dim, num_classes * k)).astype("float32")
    labels = rng.integers(0, num_classes, size=len(norms)).astype("int32")
    return x.astype("float32"), kernel, labels


def built(kernel, num_classes, **kwargs):
    head = km.MagFace(num_classes, **kwargs)
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


def ce(labels, logits):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("easy_margin", [True, False])
@pytest.mark.parametrize("sub_centers", [1, 3])
def test_logits_and_regulariser_match_reference(easy_margin, sub_centers, rng):
    # Norms below l_a, inside, above u_a; targets near cos -1 (both fallbacks) and random.
    norms = [0.5, 1.0, 2.5, 4.0, 6.0, 9.0, 12.0, 30.0]
    x, kernel, labels = make_inputs(rng, norms, k=sub_centers)
    # Sample 6 opposite to its class, whose sub-centres lie close together: cos near -1.
    far = kernel[:, labels[6] * sub_centers]
    block = slice(labels[6] * sub_centers, (labels[6] + 1) * sub_centers)
    kernel[:, block] = far[:, None] + 0.05 * rng.normal(size=(6, sub_centers))
    x[6] = -12.0 * far / np.linalg.norm(far)
    head = built(
        kernel,
        5,
        scale=16.0,
        lambda_g=20.0,
        easy_margin=easy_margin,
        sub_centers=sub_centers,
        **SMALL,
    )
    expected = ref_logits(x, kernel, labels, 16.0, easy_margin=easy_margin, k=sub_centers, **SMALL)
    cos_y = ref_cos(x, kernel, sub_centers)[np.arange(8), labels]
    assert (cos_y > 0).any() and (cos_y <= 0).any() and cos_y.min() < -math.cos(0.9)  # branches
    for training in (True, False, None):
        logits = head([x, labels], training=training)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(logits), expected, atol=2e-4)
        assert len(head.losses) == 1  # one regulariser per call, not accumulated
        assert float(to_numpy(head.losses[0])) == pytest.approx(
            ref_g_loss(x, 20.0, 1.0, 10.0), rel=1e-5
        )
    # Inference without labels: s * cos and no regulariser.
    np.testing.assert_allclose(to_numpy(head(x)), 16.0 * ref_cos(x, kernel, sub_centers), atol=1e-4)
    assert head.losses == []


@pytest.mark.parametrize("easy_margin", [True, False])
def test_gradients_through_the_norm_match_finite_differences(easy_margin, rng):
    """The CE gradient reaches a through m(a), and g(a) adds its own (no detach)."""
    x, kernel, labels = make_inputs(rng, [2.0, 3.5, 5.0, 7.0, 0.6], dim=3, num_classes=4)
    x[4] = -0.6 * kernel[:, labels[4]] / np.linalg.norm(kernel[:, labels[4]])  # a clipped: l_a
    head = built(kernel, 4, scale=4.0, lambda_g=3.0, easy_margin=easy_margin, **SMALL)

    def ref_x(xx):
        return ref_total_loss(xx, kernel, labels, 4.0, 3.0, easy_margin)

    def ref_w(ww):
        return ref_total_loss(x, ww, labels, 4.0, 3.0, easy_margin)

    def loss_fn(xt):
        logits = head([xt, labels], training=True)
        return ce(labels, logits) + sum(head.losses)

    loss, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel])
    assert loss == pytest.approx(ref_x(x), rel=1e-5)
    np.testing.assert_allclose(gx, numerical_gradient(ref_x, x), rtol=3e-3, atol=3e-5)
    np.testing.assert_allclose(gw, numerical_gradient(ref_w, kernel), rtol=3e-3, atol=3e-5)
    # The path through a is really there: with the norm detached the gradient differs.
    radial = np.sum(gx[:4] * x[:4], axis=1)
    assert np.all(np.abs(radial) > 1e-4)


def test_fit_and_evaluate_report_the_same_loss_with_the_regulariser(rng):
    x, kernel, labels = make_inputs(rng, [1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0])
    head = built(kernel, 5, scale=8.0, lambda_g=5.0, **SMALL)
    model = head_model(head, 6)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    expected = ref_total_loss(x, kernel, labels, 8.0, 5.0)
    history = model.fit([x, labels], labels, batch_size=8, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert model.evaluate([x, labels], labels, batch_size=8, verbose=0) == pytest.approx(
        expected, rel=1e-4
    )


def test_mixed_float16_gives_float32_logits_and_loss(rng):
    keras.config.set_dtype_policy("mixed_float16")
    x, kernel, labels = make_inputs(rng, [1.5, 3.0, 5.0, 9.0])
    head = built(kernel, 5, scale=16.0, **SMALL)
    xh = keras.ops.cast(x, "float16")
    logits = head([xh, labels], training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert keras.backend.standardize_dtype(head.losses[0].dtype) == "float32"
    x16 = to_numpy(keras.ops.cast(xh, "float32")).astype(np.float64)
    np.testing.assert_allclose(
        to_numpy(logits), ref_logits(x16, kernel, labels, 16.0, **SMALL), atol=2e-4
    )


def test_xla_matches_eager_with_the_regulariser(rng):
    x, kernel, labels = make_inputs(rng, [1.5, 3.0, 5.0, 9.0, 2.0, 7.0])
    head = built(kernel, 5, scale=16.0, **SMALL)

    def step(xx, yy):
        def loss_fn(xv):
            return ce(yy, head([xv, yy], training=True)) + sum(head.losses)

        loss, grads = grad_fn(loss_fn, [head.kernel])(xx)
        return (loss, *grads)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    xla = compiled(step)(xt, yt)
    assert to_numpy(eager[0]) == pytest.approx(ref_total_loss(x, kernel, labels, 16.0, 35.0))
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-5)


def test_partial_fc_with_sub_centers_gives_the_reference_on_the_sampled_classes(rng):
    x, _, _ = make_inputs(rng, [1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 11.0])
    labels = np.array([0, 2, 5, 9, 0, 2, 5, 9], "int32")  # k = 4 of 10 classes: exactly these
    pfc = km.PartialFC(
        km.MagFace(10, scale=8.0, lambda_g=5.0, sub_centers=3, **SMALL), sample_rate=0.4, seed=0
    )
    logits = to_numpy(pfc([x, labels], training=True))
    kernel = to_numpy(pfc.kernel).T
    full = ref_logits(x, kernel, labels, 8.0, k=3, **SMALL)
    np.testing.assert_allclose(logits, full[:, [0, 2, 5, 9]], atol=1e-4)
    # Partial FC's own cross-entropy and the head's regulariser, once each.
    losses = sorted(float(to_numpy(t)) for t in pfc.losses)
    remapped = np.searchsorted([0, 2, 5, 9], labels)
    expected = sorted(
        [ref_cross_entropy(full[:, [0, 2, 5, 9]], remapped), ref_g_loss(x, 5.0, 1.0, 10.0)]
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_training_on_digits_lowers_the_loss():
    x_train, _, y_train, _ = load_digits_split()
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16)]
    )
    head = km.MagFace(10, scale=16.0, lambda_g=2.0, **SMALL)
    train_model, embed_model = km.build_models(backbone, head, return_norm=True)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    losses = train_model.fit(
        [x_train[:512], y_train[:512]], y_train[:512], batch_size=64, epochs=4, verbose=0
    ).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    emb, norms = (to_numpy(t) for t in embed_model(x_train[:32]))
    features = to_numpy(backbone(x_train[:32])).astype(np.float64)
    np.testing.assert_allclose(norms[:, 0], np.linalg.norm(features, axis=1), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- quality score


def _backbone():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="features")])


@pytest.mark.parametrize("normalize", [True, False])
def test_embedding_model_returns_the_raw_norm(normalize, rng):
    backbone = _backbone()
    train_model, _ = km.build_models(backbone, km.MagFace(3))
    embed = km.get_embedding_model(train_model, normalize=normalize, return_norm=True)
    assert len(embed.outputs) == 2
    x = rng.normal(size=(6, 5)).astype("float32") * 30.0
    emb, norms = (to_numpy(t) for t in embed(x))
    features = to_numpy(backbone(x)).astype(np.float64)
    assert norms.dtype == np.float32 and norms.shape == (6, 1)
    np.testing.assert_allclose(norms[:, 0], np.linalg.norm(features, axis=1), rtol=1e-6)
    expected = features / np.linalg.norm(features, axis=1, keepdims=True) if normalize else features
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)
    # Without it: one output, as before.
    assert len(km.get_embedding_model(train_model).outputs) == 1
    with pytest.raises(ValueError, match="`return_norm`"):
        km.get_embedding_model(train_model, return_norm="yes")
    with pytest.raises(ValueError, match="`return_norm`"):
        km.build_models(backbone, km.MagFace(3), return_norm=1)


def test_norm_is_exact_at_any_magnitude_and_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    backbone = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    backbone.layers[0].kernel.assign(np.eye(2))
    _, embed = km.build_models(backbone, km.MagFace(3), return_norm=True)
    emb, norms = (to_numpy(t) for t in embed(np.array([[3.0, 4.0], [300.0, 400.0]], "float32")))
    assert emb.dtype == np.float32 and norms.dtype == np.float32
    np.testing.assert_allclose(norms[:, 0], [5.0, 500.0], rtol=1e-6)
    keras.config.set_dtype_policy("float32")
    from keras_margins.export.embedding_model import EmbeddingNorm

    big = np.array([[3e30, 4e30], [3e-30, 4e-30], [0.0, 0.0]], "float32")
    out = to_numpy(EmbeddingNorm()(big))[:, 0]
    np.testing.assert_allclose(out[:2], [5e30, 5e-30], rtol=1e-6)
    assert np.isnan(to_numpy(EmbeddingNorm()(np.array([[np.nan, 1.0]], "float32")))).all()


def test_two_output_embedding_model_saves_and_exporters_refuse_it_clearly(tmp_path, rng):
    backbone = _backbone()
    train_model, embed = km.build_models(backbone, km.MagFace(3), return_norm=True)
    x = rng.normal(size=(4, 5)).astype("float32")
    path = str(tmp_path / "embed.keras")
    embed.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded(x), embed(x)):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # The exporters cut their own embedding model out of the training model; given the
    # two-output model they say why they cannot.
    with pytest.raises(ValueError, match="single output"):
        km.get_embedding_model(embed)


@skip_unless_tensorflow("SavedModel export")
def test_export_saved_model_refuses_the_two_output_model(tmp_path):
    _, embed = km.build_models(_backbone(), km.MagFace(3), return_norm=True)
    with pytest.raises(ValueError, match="single output"):
        km.export_saved_model(embed, str(tmp_path / "sm"))


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"l_a": 0.0}, "l_a"),
        ({"l_a": -1.0}, "l_a"),
        ({"u_a": 5.0, "l_a": 5.0}, "u_a"),
        ({"u_a": float("inf")}, "u_a"),
        ({"l_m": -0.1}, "l_m"),
        ({"u_m": math.pi}, "u_m"),
        ({"l_m": 0.9, "u_m": 0.5}, "u_m"),
        ({"lambda_g": -1.0}, "lambda_g"),
        ({"easy_margin": "yes"}, "easy_margin"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        km.MagFace(**{"num_classes": 3, **kwargs})


def test_lambda_g_bound_and_config():
    # s k u_a^2 l_a^2 / (u_a^2 - l_a^2), k = 0.35 / 100, by hand: 64 * 0.0035 * 1210000 / 12000.
    assert km.magface_lambda_g_lower_bound() == pytest.approx(22.586666666666666, rel=1e-12)
    assert km.magface_lambda_g_lower_bound(30.0, 1.0, 10.0, 0.3, 0.9) == pytest.approx(
        30.0 * (0.6 / 9.0) * 100.0 / 99.0
    )
    with pytest.raises(ValueError, match="`u_a`"):
        km.magface_lambda_g_lower_bound(l_a=10.0, u_a=10.0)
    head = km.MagFace(
        4,
        scale=30.0,
        l_a=2.0,
        u_a=20.0,
        l_m=0.2,
        u_m=0.6,
        lambda_g=7.0,
        easy_margin=False,
        sub_centers=2,
    )
    clone = assert_config_round_trip(head)
    assert (clone.l_a, clone.u_a, clone.l_m, clone.u_m, clone.lambda_g) == (
        2.0,
        20.0,
        0.2,
        0.6,
        7.0,
    )
    assert clone.easy_margin is False and clone.sub_centers == 2
    # lambda_g = 0: no regulariser at all.
    plain = km.MagFace(4, lambda_g=0.0)
    plain([np.ones((2, 3), "float32"), np.array([0, 1])])
    assert plain.losses == []
