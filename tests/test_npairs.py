"""N-pair losses against float64 loop references, finite differences, XLA and training."""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_config_round_trip,
    cast,
    compiled,
    grad_fn,
    numerical_gradient,
    to_numpy,
    value_and_grads,
)


def ref_npairs(y, s):
    """mean_i of -sum_j T_ij log softmax(S_i)_j, T_ij = 1[y_i = y_j] / #{k: y_k = y_i}."""
    s = np.asarray(s, np.float64)
    y = np.ravel(y)
    total = 0.0
    for i in range(len(y)):
        top = s[i].max()
        lse = top + np.log(sum(np.exp(v - top) for v in s[i]))
        same = [j for j in range(len(y)) if y[j] == y[i]]
        total += sum((lse - s[i, j]) / len(same) for j in same)
    return total / len(y)


def ref_multilabel(y, s):
    """Rows with at least one label: targets are the row-normalised label intersections."""
    s = np.asarray(s, np.float64)
    y = np.asarray(y, np.float64)
    losses = []
    for i in range(len(y)):
        inter = np.array([float(np.dot(y[i], y[j])) for j in range(len(y))])
        if inter.sum() == 0:
            continue
        top = s[i].max()
        lse = top + np.log(np.exp(s[i] - top).sum())
        losses.append(sum(inter[j] / inter.sum() * (lse - s[i, j]) for j in range(len(y))))
    return float(np.mean(losses)) if losses else 0.0


@pytest.fixture
def case(rng):
    """Similarities of a random batch with duplicated labels."""
    a = rng.normal(size=(12, 5))
    p = a + 0.3 * rng.normal(size=(12, 5))
    y = rng.integers(0, 4, size=12)
    return y, (a @ p.T).astype("float32")


@pytest.fixture
def multi(rng):
    y = (rng.random((12, 5)) < 0.35).astype("int64")
    y[3] = 0  # a sample without any label
    s = rng.normal(size=(12, 12)).astype("float32") * 3
    return y, s


@pytest.mark.parametrize("seed", range(4))
def test_npairs_matches_reference_with_duplicates(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=10)
    s = (rng.normal(size=(10, 10)) * 4).astype("float32")
    np.testing.assert_allclose(float(km.npairs_loss(y, s)), ref_npairs(y, s), rtol=1e-5)
    np.testing.assert_allclose(float(km.NpairsLoss()(y, s)), ref_npairs(y, s), rtol=1e-5)
    np.testing.assert_allclose(
        float(km.npairs_loss(y.reshape(-1, 1), s)), ref_npairs(y, s), rtol=1e-5
    )


def test_npairs_multilabel_with_single_labels_equals_npairs(case):
    y, s = case
    onehot = np.eye(4, dtype="int64")[y]
    np.testing.assert_allclose(
        float(km.npairs_multilabel_loss(onehot, s)), float(km.npairs_loss(y, s)), rtol=1e-6
    )


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_matches_reference(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((10, 4)) < 0.4).astype("float32")
    y[0] = 0.0
    s = (rng.normal(size=(10, 10)) * 3).astype("float32")
    np.testing.assert_allclose(
        float(km.npairs_multilabel_loss(y, s)), ref_multilabel(y, s), rtol=1e-5
    )


def test_multilabel_sparse_labels(multi):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.SparseTensor labels: TensorFlow backend")
    y, s = multi
    got = km.NpairsMultilabelLoss()(tf.sparse.from_dense(y), s)
    np.testing.assert_allclose(float(got), ref_multilabel(y, s), rtol=1e-5)


def test_no_label_rows_and_no_labels_at_all(multi):
    y, s = multi
    # The row without a label is left out of the mean (tfa: NaN).
    assert np.isfinite(float(km.npairs_multilabel_loss(y, s)))
    assert float(km.npairs_multilabel_loss(np.zeros((12, 5)), s)) == 0.0


def test_nan_and_bad_values_give_nan(case, multi):
    y, s = case
    bad = s.copy()
    bad[2, 5] = np.nan
    assert np.isnan(float(km.npairs_loss(y, bad)))
    assert np.isnan(float(km.npairs_loss(np.where(y == 0, np.nan, y).astype("float32"), s)))
    ym, sm = multi
    assert np.isnan(float(km.npairs_multilabel_loss(ym * 2, sm)))  # not binary
    assert np.isnan(float(km.npairs_multilabel_loss(ym, np.full_like(sm, np.nan))))


def test_minus_inf_similarity_of_a_non_target_is_allowed():
    s = np.array([[2.0, -np.inf], [0.5, 1.0]], "float32")
    got = float(km.npairs_loss(np.array([0, 1]), s))
    want = (0.0 + (np.log(np.exp(0.5) + np.exp(1.0)) - 1.0)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_empty_batch_gives_zero():
    assert float(km.npairs_loss(np.zeros((0,), "int32"), np.zeros((0, 0), "float32"))) == 0.0
    assert float(km.npairs_multilabel_loss(np.zeros((0, 3)), np.zeros((0, 0), "float32"))) == 0.0


@pytest.mark.parametrize(
    "y, s, match",
    [
        (np.arange(4), np.zeros((4, 3)), "y_pred"),
        (np.arange(4), np.zeros((4,)), "y_pred"),
        (np.arange(3), np.zeros((4, 4)), "y_true"),
        (np.zeros((4, 2)), np.zeros((4, 4)), "y_true"),
    ],
)
def test_shape_errors_name_the_argument(y, s, match):
    with pytest.raises(ValueError, match=match):
        km.npairs_loss(y, s.astype("float32"))


def test_multilabel_shape_errors():
    with pytest.raises(ValueError, match="y_true"):
        km.npairs_multilabel_loss(np.zeros(4), np.zeros((4, 4), "float32"))
    with pytest.raises(ValueError, match="y_true"):
        km.npairs_multilabel_loss(np.zeros((3, 2)), np.zeros((4, 4), "float32"))


def test_gradients_match_finite_differences(case, multi):
    y, s = case
    _, (g,) = value_and_grads(lambda t: km.npairs_loss(y, t), s)
    num = numerical_gradient(lambda v: ref_npairs(y, v), s.astype("float64"))
    np.testing.assert_allclose(g, num, atol=1e-5, rtol=1e-3)
    ym, sm = multi
    _, (g,) = value_and_grads(lambda t: km.npairs_multilabel_loss(ym, t), sm)
    num = numerical_gradient(lambda v: ref_multilabel(ym, v), sm.astype("float64"))
    np.testing.assert_allclose(g, num, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_and_mixed_policy(case, dtype):
    y, s = case
    low = cast(s, dtype)
    got = km.npairs_loss(y, low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(float(got), ref_npairs(y, to_numpy(cast(low, "float32"))), rtol=1e-5)
    keras.config.set_dtype_policy(f"mixed_{dtype}")
    got = km.NpairsLoss()(y, low)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"


def test_jit_compile_matches_reference(case, multi):
    y, s = case
    ym, sm = multi

    @compiled
    def f(labels, sim, multilabels, msim):
        loss, (g,) = grad_fn(lambda t: km.npairs_loss(labels, t))(sim)
        return loss, g, km.npairs_multilabel_loss(multilabels, msim)

    loss, g, ml = f(*(keras.ops.convert_to_tensor(v) for v in (y, s, ym, sm)))
    np.testing.assert_allclose(float(to_numpy(loss)), ref_npairs(y, s), rtol=1e-5)
    np.testing.assert_allclose(float(to_numpy(ml)), ref_multilabel(ym, sm), rtol=1e-5)
    assert np.all(np.isfinite(to_numpy(g)))


def test_reduction_does_not_change_the_value(case):
    y, s = case
    want = ref_npairs(y, s)
    for reduction in ("sum", "sum_over_batch_size", "mean", "none"):
        np.testing.assert_allclose(float(km.NpairsLoss(reduction=reduction)(y, s)), want, rtol=1e-5)


@pytest.mark.parametrize("obj", [km.NpairsLoss(name="n"), km.NpairsMultilabelLoss(reduction="sum")])
def test_config_round_trip(obj):
    assert_config_round_trip(obj)


class _Similarity(keras.layers.Layer):
    def call(self, e):
        return keras.ops.matmul(e, keras.ops.transpose(e))


def test_fit_lowers_the_loss(rng):
    from tests.helpers import load_digits_split

    x, _, y, _ = load_digits_split()
    # Two views of each of 32 samples per batch: (anchor, positive) = (sample, noisy copy).
    idx = rng.choice(len(x), 32 * 20)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), _Similarity()])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=km.NpairsLoss(), jit_compile=True)
    history = model.fit(x[idx], y[idx], batch_size=32, epochs=4, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0], history.history
