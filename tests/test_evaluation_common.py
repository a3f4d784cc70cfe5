"""keras_margins.evaluation._common: the shared checks, scores and FAR operating points."""

import math

import numpy as np
import pytest
from sklearn.metrics import auc as sk_auc

from keras_margins.evaluation import _common


def test_far_operating_points_match_the_definition():
    # floor(f * n) false accepts allowed; a target allowing fewer than one is unresolved.
    fars = [0.5, 0.3, 0.1, 0.05, 1.0]
    resolved, unresolved = _common.far_operating_points(np.array(fars), 10)
    assert resolved == [(0.5, 5), (0.3, 3), (0.1, 1), (1.0, 10)]  # 0.3 * 10 is 3, not 2
    assert unresolved == (0.05,)
    assert all(isinstance(f, float) for f, _ in resolved)


def test_score_block_matches_float64_reference(rng):
    q = rng.normal(size=(7, 5)).astype("float32")
    g = rng.normal(size=(11, 5)).astype("float32")
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    want_cos = np.array([[float(np.dot(a, b)) for b in g64] for a in q64])
    want_euc = np.array([[-math.sqrt(float(np.sum((a - b) ** 2))) for b in g64] for a in q64])
    got_cos = _common.score_block(q, g, "cosine")
    got_euc = _common.score_block(q, g, "euclidean")
    assert got_cos.dtype == got_euc.dtype == np.float64
    np.testing.assert_allclose(got_cos, want_cos, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_euc, want_euc, rtol=1e-5, atol=1e-5)


def test_trapezoid_auc_matches_sklearn(rng):
    x = np.sort(rng.uniform(size=20))
    y = np.sort(rng.uniform(size=20))
    assert _common.trapezoid_auc(x, y) == pytest.approx(sk_auc(x, y), abs=1e-12)


def test_check_float_array_never_flattens_and_names_the_argument():
    np.testing.assert_array_equal(
        _common.check_float_array("t", [3, 1], "a list of numbers", "1-D list"), [3.0, 1.0]
    )
    with pytest.raises(ValueError, match=r"`t` must be a 1-D list \(it is not flattened\)"):
        _common.check_float_array("t", [[1, 2]], "a list of numbers", "1-D list")
    with pytest.raises(ValueError, match="`t` must be a list of numbers. Received: t='x'"):
        _common.check_float_array("t", "x", "a list of numbers", "1-D list")


def test_check_new_threshold_needs_a_label():
    assert _common.check_new_threshold(None, None) is None
    assert _common.check_new_threshold("new", 1) == 1.0
    with pytest.raises(ValueError, match="`new_label` is required"):
        _common.check_new_threshold(None, 0.5)
