"""Pairwise distances and label masks against scikit-learn and brute force."""

import keras
import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_distances, euclidean_distances

from keras_margins.distances import label_masks, pairwise_distance, safe_sqrt
from tests.helpers import cast, value_and_grads


@pytest.fixture
def x(rng):
    return rng.normal(size=(12, 5)).astype("float32")


def test_l2_matches_sklearn(x):
    got = np.asarray(pairwise_distance(x, "L2"))
    np.testing.assert_allclose(got, euclidean_distances(x.astype("float64")), atol=2e-5)
    assert np.all(np.diag(got) == 0.0)


def test_squared_l2_matches_sklearn(x):
    got = np.asarray(pairwise_distance(x, "squared-L2"))
    ref = euclidean_distances(x.astype("float64"), squared=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_angular_matches_sklearn(x):
    got = np.asarray(pairwise_distance(x, "angular"))
    ref = cosine_distances(x.astype("float64"))
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(got, np.maximum(ref, 0.0), atol=1e-6)


def test_callable_metric(x):
    def manhattan(e):
        return keras.ops.sum(keras.ops.abs(e[:, None, :] - e[None, :, :]), axis=-1)

    got = np.asarray(pairwise_distance(x, manhattan))
    ref = np.abs(x[:, None, :].astype("float64") - x[None, :, :]).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_low_precision_inputs_compute_in_float32(x, dtype, metric):
    low = cast(x, dtype)
    got = pairwise_distance(low, metric)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    ref = np.asarray(pairwise_distance(cast(low, "float32"), metric))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=0)


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_identical_embeddings_have_finite_gradients(metric):
    def total_fn(x):
        d = pairwise_distance(x, metric)
        return keras.ops.sum(d), d

    _, (grad,), d = value_and_grads(total_fn, np.ones((4, 3), "float32"), has_aux=True)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)
    assert np.all(np.isfinite(grad))


def test_safe_sqrt_value_and_gradient():
    def total_fn(v):
        s = safe_sqrt(v)
        return keras.ops.sum(s), s

    v = np.array([0.0, 1e-20, 4.0, 9.0], "float32")
    _, (g,), s = value_and_grads(total_fn, v, has_aux=True)
    np.testing.assert_allclose(s, [0.0, 0.0, 2.0, 3.0])
    np.testing.assert_allclose(g, [0.0, 0.0, 0.25, 1.0 / 6.0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(9,), (9, 1)])
def test_masks_match_brute_force(rng, shape):
    labels = rng.integers(0, 3, size=9)
    pos, neg = label_masks(labels.reshape(shape))
    pos, neg = np.asarray(pos), np.asarray(neg)
    for i in range(9):
        for j in range(9):
            assert pos[i, j] == (i != j and labels[i] == labels[j])
            assert neg[i, j] == (labels[i] != labels[j])


def test_bad_metric_names_the_argument(x):
    with pytest.raises(ValueError, match="distance_metric"):
        pairwise_distance(x, "cosine")


# ------------------------------------------------------------------ NaN and magnitude (issue 12)
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_nan_embedding_gives_nan_distances(x, metric):
    bad = x.copy()
    bad[2, 3] = np.nan
    d = np.asarray(pairwise_distance(bad, metric))
    assert np.all(np.isnan(d[2])) and np.all(np.isnan(d[:, 2]))


def test_safe_sqrt_keeps_nan():
    assert np.isnan(np.asarray(safe_sqrt(np.array([np.nan], "float32")))[0])


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30, 1e36])
def test_l2_and_angular_are_scale_invariant(x, scale):
    ref = euclidean_distances(x.astype("float64"))
    got = np.asarray(pairwise_distance(x * np.float32(scale), "L2"))
    np.testing.assert_allclose(got / scale, ref, rtol=1e-5, atol=2e-5)
    ang = np.asarray(pairwise_distance(x * np.float32(scale), "angular"))
    np.testing.assert_allclose(ang, np.asarray(pairwise_distance(x, "angular")), atol=1e-6)


def test_squared_l2_overflows_only_where_the_result_is_not_representable(x):
    got = np.asarray(pairwise_distance(x * np.float32(1e18), "squared-L2"))  # values ~1e36
    ref = euclidean_distances(x.astype("float64"), squared=True) * 1e36
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e31)
    assert np.all(
        np.isinf(np.asarray(pairwise_distance(x * np.float32(1e20), "squared-L2")))[
            ~np.eye(12, dtype=bool)
        ]
    )


@pytest.mark.parametrize(
    "name, hint", [("euclidean", "'L2' here"), ("cosine", "'angular' here"), ("l2", "'L2'")]
)
def test_other_vocabularies_get_a_hint(x, name, hint):
    with pytest.raises(ValueError, match=f"distance_metric.*{hint}.*Received: distance_metric"):
        pairwise_distance(x, name)
