"""Contrastive loss against a per-pair float64 reference (tensorflow-addons' definition)."""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_config_round_trip,
    cast,
    compiled,
    numerical_gradient,
    to_numpy,
    value_and_grads,
)


def ref_contrastive(y, d, margin=1.0):
    out = []
    for yi, di in zip(np.ravel(y).astype(float), np.ravel(d).astype(float)):
        out.append(di * di if yi == 1 else max(margin - di, 0.0) ** 2)
    return np.array(out)


@pytest.fixture
def pairs(rng):
    return rng.integers(0, 2, size=32), rng.uniform(0, 2, size=32).astype("float32")


@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0, 2.5])
def test_per_pair_values_match_reference(pairs, margin):
    y, d = pairs
    got = np.asarray(km.contrastive_loss(y, d, margin))
    np.testing.assert_allclose(got, ref_contrastive(y, d, margin), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "y_shape, d_shape", [((32,), (32, 1)), ((32, 1), (32,)), ((32, 1), (32, 1))]
)
def test_shapes_are_aligned_not_broadcast(pairs, y_shape, d_shape):
    y, d = pairs
    got = float(km.ContrastiveLoss(margin=1.5)(y.reshape(y_shape), d.reshape(d_shape)))
    np.testing.assert_allclose(got, ref_contrastive(y, d, 1.5).mean(), rtol=1e-6)


def test_sample_weight(pairs):
    y, d = pairs
    w = np.linspace(0, 1, 32)
    got = float(km.ContrastiveLoss()(y, d, sample_weight=w))
    np.testing.assert_allclose(got, (ref_contrastive(y, d) * w).sum() / 32, rtol=1e-6)


def test_gradient_matches_finite_differences(pairs):
    y, d = pairs
    d64 = d.astype("float64")
    _, (grad,) = value_and_grads(lambda t: km.ContrastiveLoss(margin=1.2)(y, t), d)
    num = numerical_gradient(lambda v: ref_contrastive(y, v, 1.2).mean(), d64)
    np.testing.assert_allclose(grad, num, atol=1e-6)


def test_zero_distance_similar_pair_has_zero_loss_and_gradient():
    loss, (grad,) = value_and_grads(
        lambda t: km.ContrastiveLoss()(np.array([1, 0]), t), np.array([0.0, 0.0], "float32")
    )
    np.testing.assert_allclose(float(loss), 0.5)  # (0 + 1) / 2
    np.testing.assert_allclose(grad, [0.0, -1.0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_distances(pairs, dtype):
    y, d = pairs
    low = cast(d, dtype)
    got = km.contrastive_loss(y, low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(got), ref_contrastive(y, to_numpy(cast(low, "float32"))), rtol=1e-6
    )


def test_jit_compile(pairs):
    y, d = pairs
    f = compiled(lambda a, b: km.ContrastiveLoss()(a, b))
    np.testing.assert_allclose(float(to_numpy(f(y, d))), ref_contrastive(y, d).mean(), rtol=1e-6)


def test_config_round_trip():
    clone = assert_config_round_trip(km.ContrastiveLoss(margin=2.0, reduction="sum"))
    assert clone.margin == 2.0 and clone.reduction == "sum"


@pytest.mark.parametrize("margin", [-1.0, float("inf"), "1"])
def test_bad_margin_raises(margin):
    with pytest.raises(ValueError, match="margin"):
        km.ContrastiveLoss(margin=margin)
    with pytest.raises(ValueError, match="margin"):
        km.contrastive_loss(np.ones(2), np.ones(2), margin=margin)


def test_keras_file_round_trip_keeps_the_loss(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=km.ContrastiveLoss(margin=0.7))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.get_config() == model.loss.get_config()


# ------------------------------------------------------------------ issue 12: bad inputs
@pytest.mark.parametrize("label", [2.0, -1.0, 0.5, np.nan])
def test_label_outside_0_1_gives_nan(pairs, label):
    y, d = pairs
    y = y.astype("float32")
    y[4] = label
    per_pair = np.asarray(km.contrastive_loss(y, d))
    assert np.isnan(per_pair[4]) and np.all(np.isfinite(np.delete(per_pair, 4)))
    assert np.isnan(float(km.ContrastiveLoss()(y, d)))


@pytest.mark.parametrize(
    "y_shape, d_shape", [((4, 1), (4, 3)), ((4,), (5,)), ((4, 3), (4,)), ((2, 2), (4,))]
)
def test_mismatched_shapes_are_not_broadcast(y_shape, d_shape):
    with pytest.raises(ValueError, match="y_true.*y_pred"):
        km.ContrastiveLoss()(np.zeros(y_shape), np.zeros(d_shape, "float32"))
    with pytest.raises(ValueError, match="shape"):
        km.contrastive_loss(np.zeros(y_shape), np.zeros(d_shape, "float32"))


def test_nan_distance_gives_nan(pairs):
    y, d = pairs
    d = d.copy()
    d[[0, 1]] = np.nan
    assert np.isnan(float(km.ContrastiveLoss()(y, d)))


def test_margin_bound_for_float32():
    with pytest.raises(ValueError, match="margin.*float32"):
        km.ContrastiveLoss(margin=1e20)
    assert km.ContrastiveLoss(margin=1e19).margin == 1e19


# ------------------------------------------------------------------ issue 15: tfa compatibility
def test_positional_order_is_tfas():
    """tfa: ContrastiveLoss(margin, reduction, name). Intended change: the old order was
    (margin, name), so ContrastiveLoss(1.0, "sum") was a loss named "sum" with the mean."""
    loss = km.ContrastiveLoss(2.0, "sum", "cl")
    assert (loss.margin, loss.reduction, loss.name) == (2.0, "sum", "cl")


def test_margin_as_variable(pairs):
    y, d = pairs
    m = keras.Variable(0.5, dtype="float32")
    loss = km.ContrastiveLoss(margin=m)
    np.testing.assert_allclose(float(loss(y, d)), ref_contrastive(y, d, 0.5).mean(), rtol=1e-6)
    m.assign(1.5)
    np.testing.assert_allclose(float(loss(y, d)), ref_contrastive(y, d, 1.5).mean(), rtol=1e-6)
    got = km.contrastive_loss(y, d, margin=keras.ops.convert_to_tensor(1.5))
    np.testing.assert_allclose(to_numpy(got), ref_contrastive(y, d, 1.5), rtol=1e-6, atol=1e-7)
    m.assign(-1.0)
    assert np.isnan(float(loss(y, d)))


def test_function_is_registered():
    assert keras.saving.get_registered_object("keras_margins>contrastive_loss") is (
        km.contrastive_loss
    )
