"""Brute-force k-NN references shared by test_search.py and test_retrieval.py (no tests here)."""

import math

import numpy as np

PALETTE = np.array(
    [[1, 0, 0], [0, 1, 0], [1, 2, 0], [2, 1, 3], [-1, 1, 1], [3, -2, 1], [0, -1, 2]], "float32"
)


def ref_sim(q, g, metric):
    """Float64 scores (higher = better) without BLAS: each entry is a correctly rounded
    function of its two rows only (``math.fsum``), so equal rows give equal scores wherever
    they sit, and exact ties in the data stay exact."""
    q = np.asarray(q, np.float64)
    g = np.asarray(g, np.float64)
    out = np.empty((len(q), len(g)))
    if metric == "cosine":
        gn = [math.sqrt(math.fsum(r)) for r in (g * g).tolist()]
        for i, row in enumerate(q):
            qn = math.sqrt(math.fsum((row * row).tolist()))
            dots = [math.fsum(r) for r in (g * row).tolist()]
            out[i] = [d / (qn * n) if qn * n > 0 else 0.0 for d, n in zip(dots, gn)]
        return out
    for i, row in enumerate(q):
        diff = g - row
        out[i] = [-math.sqrt(math.fsum(r)) for r in (diff * diff).tolist()]
    return out


def assert_valid_topk(idx, ref_scores, k, tol, exclude_self=False):
    """``idx`` is a top-k of ``ref_scores`` (higher = better) up to near-ties within ``tol``:
    a check that does not depend on how the last bits of the scores were rounded."""
    assert idx.shape == (ref_scores.shape[0], k)
    for i, row in enumerate(idx):
        assert len(set(row.tolist())) == k
        s = ref_scores[i].copy()
        if exclude_self:
            assert i not in row
            s[i] = -np.inf
        np.testing.assert_allclose(s[row], np.sort(s)[::-1][:k], atol=tol, rtol=0)


def ref_knn(q, g, k, metric, exclude_self=False):
    s = ref_sim(q, g, metric)
    idx = []
    for i in range(len(q)):
        cands = [j for j in range(len(g)) if not (exclude_self and j == i)]
        cands.sort(key=lambda j: (-s[i, j], j))  # best first, ties -> smaller index
        idx.append(cands[:k])
    idx = np.array(idx)
    vals = np.take_along_axis(s, idx, axis=1)
    return (vals if metric == "cosine" else -vals), idx
