"""Lifted structured loss against a float64 loop reference (the formula, unstabilised)."""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_config_round_trip,
    cast,
    compiled,
    grad_fn,
    load_digits_split,
    numerical_gradient,
    to_numpy,
    value_and_grads,
)


def ref_lifted(y, x, margin=1.0):
    """1/(2|P|) sum_{i<j, y_i = y_j} max(J_ij, 0)^2; 0 without positive pairs or negatives."""
    x = np.asarray(x, np.float64)
    y = np.ravel(y)
    n = len(y)
    d = np.array([[np.sqrt(np.sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)])
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            if y[i] != y[j]:
                continue
            pairs += 1
            terms = [np.exp(margin - d[i, k]) for k in range(n) if y[k] != y[i]]
            terms += [np.exp(margin - d[j, k]) for k in range(n) if y[k] != y[j]]
            if terms:
                total += max(np.log(sum(terms)) + d[i, j], 0.0) ** 2
    return total / (2 * pairs) if pairs else 0.0


@pytest.fixture
def batch(rng):
    return rng.normal(size=(14, 5)).astype("float32"), rng.integers(0, 4, size=14)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0, 3.0])
def test_matches_reference_with_duplicates(seed, margin):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(12, 4)) * rng.uniform(0.2, 2)).astype("float32")
    y = rng.integers(0, 3, size=12)
    np.testing.assert_allclose(
        float(km.lifted_struct_loss(y, x, margin)), ref_lifted(y, x, margin), rtol=2e-5
    )


def test_stabilised_for_far_apart_embeddings():
    """Distances ~100: exp(margin - D) underflows without the max shift."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(8, 3)) * 100).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    d = np.sqrt(((x[:, None].astype("float64") - x[None]) ** 2).sum(-1))
    # the same loss with the shift written out in float64
    total = 0.0
    for i, j in [(0, 1), (2, 3), (4, 5), (6, 7)]:
        negs = [1.0 - d[a, k] for a in (i, j) for k in range(8) if y[k] != y[a]]
        top = max(negs)
        total += max(top + np.log(np.sum(np.exp(np.array(negs) - top))) + d[i, j], 0.0) ** 2
    got = float(km.lifted_struct_loss(y, x))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, total / 8, rtol=1e-5)


def test_no_positive_pair_single_class_and_empty_batch_give_zero(batch):
    x, _ = batch
    assert float(km.lifted_struct_loss(np.arange(14), x)) == 0.0  # tfa: NaN (0 / 0)
    loss, (g,) = value_and_grads(lambda t: km.lifted_struct_loss(np.zeros(14), t), x)
    assert float(loss) == 0.0 and np.all(g == 0.0)  # no negative at all (tfa: NaN)
    assert float(km.lifted_struct_loss(np.zeros(0), np.zeros((0, 3), "float32"))) == 0.0


def test_nan_embedding_or_label_gives_nan(batch):
    x, y = batch
    bad = x.copy()
    bad[3, 1] = np.nan
    assert np.isnan(float(km.lifted_struct_loss(y, bad)))
    assert np.isnan(float(km.lifted_struct_loss(np.where(y == 1, np.nan, y), x)))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(9, 3))
    y = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
    _, (g,) = value_and_grads(lambda t: km.lifted_struct_loss(y, t, 0.7), x.astype("float32"))
    num = numerical_gradient(lambda v: ref_lifted(y, v, 0.7), x)
    np.testing.assert_allclose(g, num, atol=2e-4, rtol=1e-3)


def test_identical_embeddings_finite_gradient():
    x = np.ones((6, 3), "float32")
    loss, (g,) = value_and_grads(lambda t: km.lifted_struct_loss([0, 0, 1, 1, 2, 2], t), x)
    np.testing.assert_allclose(float(loss), ref_lifted([0, 0, 1, 1, 2, 2], x), rtol=1e-6)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_and_mixed_policy(batch, dtype):
    x, y = batch
    low = cast(x, dtype)
    got = km.lifted_struct_loss(y, low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(float(got), ref_lifted(y, to_numpy(cast(low, "float32"))), rtol=2e-5)
    keras.config.set_dtype_policy(f"mixed_{dtype}")
    got = km.LiftedStructLoss()(y, low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"


def test_jit_compile_matches_reference(batch):
    x, y = batch

    @compiled
    def f(labels, emb):
        return grad_fn(lambda e: km.lifted_struct_loss(labels, e, 0.5))(emb)

    loss, (g,) = f(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(x))
    np.testing.assert_allclose(float(to_numpy(loss)), ref_lifted(y, x, 0.5), rtol=2e-5)
    assert np.all(np.isfinite(to_numpy(g)))


def test_margin_as_variable_and_bad_margins(batch):
    x, y = batch
    m = keras.Variable(0.5, dtype="float32")
    loss = km.LiftedStructLoss(margin=m)
    np.testing.assert_allclose(float(loss(y, x)), ref_lifted(y, x, 0.5), rtol=2e-5)
    m.assign(2.0)
    np.testing.assert_allclose(float(loss(y, x)), ref_lifted(y, x, 2.0), rtol=2e-5)
    m.assign(-1.0)  # cannot be checked under tracing: NaN
    assert np.isnan(float(loss(y, x)))
    assert loss.get_config()["margin"] == -1.0
    for bad in (-0.1, float("nan"), "1", 1e20):
        with pytest.raises(ValueError, match="margin"):
            km.LiftedStructLoss(margin=bad)


@pytest.mark.parametrize(
    "y, x, match",
    [
        (np.zeros(4), np.zeros((4, 2, 2)), "y_pred"),
        (np.zeros(3), np.zeros((4, 2)), "batch size"),
        (np.zeros((4, 2)), np.zeros((4, 2)), "y_true"),
    ],
)
def test_shape_errors(y, x, match):
    with pytest.raises(ValueError, match=match):
        km.lifted_struct_loss(y, x.astype("float32"))


def test_reduction_does_not_change_the_value(batch):
    x, y = batch
    want = ref_lifted(y, x)
    for reduction in ("sum", "sum_over_batch_size", "mean_with_sample_weight", None):
        got = km.LiftedStructLoss(reduction=reduction)(y, x)
        np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_config_round_trip():
    clone = assert_config_round_trip(km.LiftedStructLoss(0.3, name="l"))
    assert clone.margin == 0.3 and clone.name == "l"


def test_fit_on_digits_lowers_the_loss():
    x, _, y, _ = load_digits_split()
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(len(x))[:640] for _ in range(2)])
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(8)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=km.LiftedStructLoss(), jit_compile=True
    )
    history = model.fit(x[idx], y[idx], batch_size=64, epochs=4, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0], history.history
