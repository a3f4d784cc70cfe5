"""Blocked exact k-NN search (keras_margins.evaluation.search) against brute-force NumPy."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_margins as km
from tests.knn_reference import PALETTE, assert_valid_topk, ref_knn, ref_sim


def _issue12_gallery(dtype="float32", dim=8, distinct=4, n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(distinct, dim)).astype(dtype)[rng.integers(0, distinct, n)]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block", [256 * 2**20, 3000, 1])
def test_nearest_neighbors_matches_brute_force(rng, metric, block):
    q = rng.normal(size=(37, 5))
    g = rng.normal(size=(101, 5))
    vals, idx = km.nearest_neighbors(q, g, k=7, metric=metric, max_block_bytes=block)
    rvals, ridx = ref_knn(q, g, 7, metric)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(vals, rvals, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block", [256 * 2**20, 2000])
def test_nearest_neighbors_ties_go_to_smaller_index(rng, block):
    # Rows drawn from a few pairwise non-parallel integer vectors: exact duplicates give
    # exactly equal scores in float32 and float64 alike, straddling the k-th place.
    g = PALETTE[rng.integers(0, len(PALETTE), 120)]
    q = PALETTE[rng.integers(0, len(PALETTE), 30)]
    for metric in ("cosine", "euclidean"):
        _, idx = km.nearest_neighbors(q, g, k=9, metric=metric, max_block_bytes=block)
        _, ridx = ref_knn(q, g, 9, metric)
        np.testing.assert_array_equal(idx, ridx)


def test_nearest_neighbors_exclude_self_and_float32(rng):
    x = rng.normal(size=(50, 8)).astype("float32")
    x[7] = x[3]  # a duplicate must still be found, only the query itself is excluded
    vals, idx = km.nearest_neighbors(x, x, k=4, exclude_self=True, max_block_bytes=500)
    _, ridx = ref_knn(x, x, 4, "cosine", exclude_self=True)
    np.testing.assert_array_equal(idx, ridx)
    assert idx[3, 0] == 7 and idx[7, 0] == 3
    assert not np.any(idx == np.arange(50)[:, None])
    np.testing.assert_allclose(vals[3, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block", [256 * 2**20, 700, 1])
def test_duplicate_gallery_rows_tie_by_index(dtype, metric, block):
    # Issue 12: copies of a few Gaussian rows (not exactly representable dot products). Copies
    # are exact ties, whatever column of a BLAS product they land in, so they come out in
    # increasing index order; the reference computes every score from its two rows only.
    x = _issue12_gallery(dtype)
    ref = ref_sim(x, x, metric)
    for k in (1, 2, 5, 23):
        _, idx = km.nearest_neighbors(
            x, x, k=k, metric=metric, exclude_self=True, max_block_bytes=block
        )
        _, ridx = ref_knn(x, x, k, metric, exclude_self=True)
        np.testing.assert_array_equal(idx, ridx)
        assert_valid_topk(idx, ref, k, tol=1e-6, exclude_self=True)
    q = _issue12_gallery(dtype, seed=0)[:7] * 3.0  # other scale, same directions
    _, idx = km.nearest_neighbors(q, x, k=24, metric="cosine", max_block_bytes=block)
    _, ridx = ref_knn(q, x, 24, "cosine")
    np.testing.assert_array_equal(idx, ridx)
    _, idx = km.nearest_neighbors(x, x, k=2, exclude_self=True)
    assert idx[6].tolist() == [7, 8]  # the issue's example


def test_duplicate_rows_negative_zero_and_constant_gallery():
    # -0.0 and 0.0 are equal values: rows differing only there are copies of each other.
    g = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, -0.0], [2.0, 0.0], [1.0, 0.0]], "float32")
    _, idx = km.nearest_neighbors(np.array([[1.0, 0.1]], "float32"), g, k=5)
    # Rows 0, 2, 3, 4 are parallel to (1, 0): equal cosines (exact here: one non-zero term).
    assert idx.tolist() == [[0, 2, 3, 4, 1]]
    _, idx = km.nearest_neighbors(g[:1], g, k=4, metric="euclidean")
    assert idx.tolist() == [[0, 2, 4, 1]]
    # A constant gallery: one group of 300 copies.
    g = np.full((300, 3), 0.25, "float32")
    _, idx = km.nearest_neighbors(g, g, k=7, exclude_self=True, max_block_bytes=4000)
    expected = [[j for j in range(300) if j != i][:7] for i in range(300)]
    assert idx.tolist() == expected


def test_duplicate_rows_tie_under_other_blas_kernels():
    # OpenBLAS picks its kernels by CPU; OPENBLAS_CORETYPE forces other ones (Haswell and Zen
    # round some columns of a float32 product differently from SkylakeX, as the AMD EPYC CI
    # machine did). Same check as above in a fresh process for each kernel family.
    code = (
        "import numpy as np, keras_margins as km\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(4, 8)).astype('float32')[rng.integers(0, 4, 24)]\n"
        "g = rng.choice([-1.0, 1.0], size=(3000, 8)).astype('float32')\n"
        "out = [km.nearest_neighbors(x, x, k=5, exclude_self=True)[1].tolist(),\n"
        "       km.nearest_neighbors(g[:6], g, k=15)[1].tolist()]\n"
        "print(repr(out))\n"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8)).astype("float32")[rng.integers(0, 4, 24)]
    g = rng.choice([-1.0, 1.0], size=(3000, 8)).astype("float32")
    expected = [
        ref_knn(x, x, 5, "cosine", exclude_self=True)[1].tolist(),
        ref_knn(g[:6], g, 15, "cosine")[1].tolist(),
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for core in ("Haswell", "Zen"):
        env = dict(os.environ, OPENBLAS_CORETYPE=core, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert eval(result.stdout.strip().splitlines()[-1]) == expected, core


def test_faiss_backend_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    x = np.eye(3)
    with pytest.raises(ImportError, match="faiss"):
        km.nearest_neighbors(x, x, k=1, backend="faiss")
    _, idx = km.nearest_neighbors(x, x, k=1, backend="auto")  # falls back to NumPy
    np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")
def test_faiss_backend_agrees(rng):
    q = rng.normal(size=(30, 16)).astype("float32")
    g = rng.normal(size=(200, 16)).astype("float32")
    for metric in ("cosine", "euclidean"):
        v1, i1 = km.nearest_neighbors(q, g, k=5, metric=metric, backend="faiss")
        v2, i2 = km.nearest_neighbors(q, g, k=5, metric=metric)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(v1, v2, atol=1e-4)
    _, i3 = km.nearest_neighbors(g, g, k=3, exclude_self=True, backend="faiss")
    _, i4 = km.nearest_neighbors(g, g, k=3, exclude_self=True)
    np.testing.assert_array_equal(i3, i4)


@pytest.mark.parametrize("kind", ["gaussian", "ties", "constant"])
def test_nearest_neighbors_wide_gallery_paths(rng, kind):
    # Galleries wider than the 2048-column sample exercise the bound-and-gather path
    # (gaussian), the same with many exact ties (ties), and the argpartition fallback
    # (constant: every score equal).
    if kind == "gaussian":
        g = rng.normal(size=(5000, 6)).astype("float32")
        q = rng.normal(size=(12, 6)).astype("float32")
    elif kind == "ties":
        # +-1 vectors in 8-D: all norms equal and dot products exact integers, so cosines tie
        # exactly (in float32 and float64 alike) and only where they are mathematically equal.
        g = rng.choice([-1.0, 1.0], size=(5000, 8)).astype("float32")
        q = g[rng.integers(0, 5000, 12)]
    else:
        g = np.ones((5000, 4), "float32")
        q = np.ones((12, 4), "float32")
    for metric in ("cosine", "euclidean"):
        _, idx = km.nearest_neighbors(q, g, k=15, metric=metric)
        _, ridx = ref_knn(q, g, 15, metric)
        np.testing.assert_array_equal(idx, ridx)


def test_nearest_neighbors_memory_stays_bounded(rng):
    # 400 x 20,000 float32 scores would take 32 MB (plus 64 MB of argpartition indices); with
    # a 2 MiB block budget the search must never come close to that.
    import tracemalloc

    q = rng.normal(size=(400, 16)).astype("float32")
    g = rng.normal(size=(20_000, 16)).astype("float32")
    tracemalloc.start()
    _, idx = km.nearest_neighbors(q, g, k=5, max_block_bytes=2 * 2**20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 6 * 2**20, peak
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    full = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (
        g64 / np.linalg.norm(g64, axis=1, keepdims=True)
    ).T
    assert_valid_topk(idx, full, 5, tol=1e-6)


def test_drop_own_index_removes_self_or_the_last_neighbour():
    from keras_margins.evaluation.search import drop_own_index

    values = np.array([[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]])
    indices = np.array([[4, 1, 2], [3, 0, 5]])
    # Row 0 holds its own index (1): it goes. Row 1 does not hold 7: its last entry goes.
    v, i = drop_own_index(values, indices, np.array([1, 7]))
    np.testing.assert_array_equal(i, [[4, 2], [3, 0]])
    np.testing.assert_array_equal(v, [[0.9, 0.7], [0.6, 0.5]])
