"""Exact k-nearest-neighbour search of embeddings, and the exact rescaling it relies on.

Everything here is NumPy: evaluation runs offline on embeddings that a model has already
produced. The search computes ``queries @ gallery.T`` in blocks of rows and columns and keeps a
running top-k, so the full ``(num_queries, num_gallery)`` similarity matrix is never held in
memory (see ``max_block_bytes``).

Conventions shared by the whole ``keras_margins.evaluation`` package (the rescaling and the
duplicate-row grouping that implement them live here):

- ``metric="cosine"`` scores pairs by cosine similarity (higher = more similar); embeddings are
  L2-normalized first (a zero vector gets similarity 0 with everything).
- ``metric="euclidean"`` scores pairs by Euclidean distance (lower = more similar). Thresholds
  and returned values are then distances.
- Scale: rows of extreme magnitude (outside about 1e-12 .. 1e12 in float32, 1e-120 .. 1e120
  in float64) are first multiplied by a power of two (exact), their own for cosine and one
  common to all rows for Euclidean, so results do not depend on the magnitude of the
  embeddings anywhere in the float32/float64 range (no overflow of squared norms above ~1e19,
  no norm floor below ~1e-6).
- Non-finite embeddings (NaN or infinity) are a ``ValueError``: they have no rank.
- Ties in similarity are broken by the smaller gallery index (a deterministic order).
  Bit-identical gallery rows (``-0.0`` equal to ``0.0``) always tie exactly, on every CPU:
  each distinct row is scored once. Distinct rows whose scores are mathematically equal tie
  exactly when the arithmetic is exact (for example small integer entries); otherwise their
  computed scores may differ in the last bit, depending on the BLAS kernel, and are ordered
  by those. Metrics that count ranks (CMC, identification) count ties pessimistically, see
  their docstrings.
"""

import numpy as np

from keras_margins._validation import check_choice, check_flag, check_int
from keras_margins.evaluation._common import (
    METRICS,
    check_embeddings,
    check_same_dim,
    common_dtype,
)

__all__ = ["nearest_neighbors"]


# Rows whose largest entry lies within 2^-SAFE .. 2^SAFE need no scaling: their squared norms
# neither overflow nor underflow (float32: up to ~1e12 with D up to 2^16; float64: ~1e120).
_SAFE_EXPONENT = {4: 40, 8: 400}


def row_exponents(x):
    """Per row, a power-of-two exponent ``e`` that brings ``max|x_i| * 2^-e`` into a safe range.

    ``e`` is the exponent of the row's max-abs (``max|x_i|`` in ``[2^(e-1), 2^e)``) for rows
    outside ``2^-SAFE .. 2^SAFE`` and 0 for the others (and for zero rows), so that ordinary
    embeddings are used as they are.
    """
    e = np.frexp(np.max(np.abs(x), axis=1))[1].astype(np.int64)
    e[np.abs(e) <= _SAFE_EXPONENT[x.dtype.itemsize]] = 0
    return e


def global_exponent(*arrays):
    """One exponent as :func:`row_exponents` for the largest magnitude in all ``arrays``."""
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    e = int(np.frexp(largest)[1])
    safe = min(_SAFE_EXPONENT[a.dtype.itemsize] for a in arrays)
    return 0 if abs(e) <= safe else e


def scale_rows(x, exponents):
    """``x_i * 2^-e_i``, exact (a power of two), in ``x``'s dtype; ``x`` if all ``e == 0``."""
    exponents = np.asarray(exponents)
    if not np.any(exponents):
        return x
    return np.ldexp(x, -exponents[..., None]).astype(x.dtype, copy=False)


def _inverse_norms_of_scaled(xs):
    """``1 / |x_i|`` of rows scaled by :func:`scale_rows` (0 for a zero row)."""
    norm = np.sqrt(np.einsum("ij,ij->i", xs, xs))
    out = np.zeros_like(norm)
    np.divide(1.0, norm, out=out, where=norm > 0)
    return out.astype(xs.dtype, copy=False)


def normalize_rows(x):
    """Rows divided by their L2 norm, for any magnitude (a zero row stays zero).

    A row of extreme magnitude is first multiplied by the power of two that brings its largest
    entry into ``[0.5, 1)`` (exact), so the squared norm can neither overflow (rows above ~1e19
    in float32, ~1e154 in float64) nor lose precision to underflow; there is no norm floor.
    """
    xs = scale_rows(x, row_exponents(x))
    return xs * _inverse_norms_of_scaled(xs)[:, None]


def duplicate_groups(x):
    """Group the bit-identical rows of ``x`` (``-0.0`` counts as ``0.0``).

    Returns ``None`` when every row is distinct (the common case, found with one integer hash
    per row), else ``(first, inverse)``: the first row of each group, ascending, and the group
    number of each row (groups numbered in the order of their first rows).
    """
    n, d = x.shape
    utype = np.uint32 if x.dtype.itemsize == 4 else np.uint64
    sign = utype(1) << utype(8 * x.dtype.itemsize - 1)
    mult = np.random.default_rng(0x5EED).integers(0, 2**63, size=d, dtype=np.uint64) | 1
    h = np.empty(n, dtype=np.uint64)
    step = max(1, 2**20 // max(d, 1))
    for r0 in range(0, n, step):
        u = np.ascontiguousarray(x[r0 : r0 + step]).view(utype)
        u = np.where(u == sign, 0, u).astype(np.uint64)
        h[r0 : r0 + step] = np.sum(u * mult, axis=1, dtype=np.uint64)  # wraps modulo 2^64
    order = np.argsort(h, kind="stable")
    same_as_prev = h[order][1:] == h[order][:-1]
    if not np.any(same_as_prev):
        return None
    candidate = np.zeros(n, dtype=bool)
    candidate[order[1:][same_as_prev]] = True
    candidate[order[:-1][same_as_prev]] = True
    cand = np.flatnonzero(candidate)
    rows = np.ascontiguousarray(x[cand])
    rows = np.where(rows == 0, np.zeros((), rows.dtype), rows)  # -0.0 -> 0.0
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * d))).reshape(-1)
    _, first_c, inv_c = np.unique(keys, return_index=True, return_inverse=True)
    leader = np.arange(n)
    leader[cand] = cand[first_c[inv_c.reshape(-1)]]
    first = np.flatnonzero(leader == np.arange(n))
    if first.size == n:
        return None  # hash collisions only
    return first, np.searchsorted(first, leader)


# --------------------------------------------------------------------------------------------
# Exact k-nearest-neighbour search
# --------------------------------------------------------------------------------------------


def _sorted_topk(scores, indices, k):
    """Per row, the ``k`` best (highest score, then smallest index) of candidate columns."""
    # np.lexsort sorts along the last axis; the last key is the primary one.
    order = np.lexsort((indices, -scores))[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    return scores[rows, order], indices[rows, order]


def _block_topk_partition(neg, k, col_offset):
    """Top-k of each row of a negated score block by ``argpartition`` (exact, ties fixed)."""
    rows, cols = neg.shape
    part = np.argpartition(neg, k - 1, axis=1)[:, :k]
    r = np.arange(rows)[:, None]
    vals = neg[r, part]
    # Rows where equal scores straddle the k-th position: argpartition picks arbitrary members
    # of the tie, so redo those rows with a full stable order to keep the smallest indices.
    kth = vals.max(axis=1)
    ambiguous = np.flatnonzero(np.count_nonzero(neg <= kth[:, None], axis=1) > k)
    for i in ambiguous:
        order = np.lexsort((np.arange(cols), neg[i]))[:k]
        part[i] = order
        vals[i] = neg[i, order]
    return _sorted_topk(-vals, part + col_offset, k)


_SAMPLE_COLUMNS = 2048


def _block_topk(block, k, col_offset):
    """Exact top-k (score desc, index asc) of each row of a ``(rows, cols)`` score block.

    The k-th best score among the first ``_SAMPLE_COLUMNS`` columns is a lower bound of the
    row's k-th best, so only the (few) scores reaching it are gathered and sorted: one
    comparison pass over the block instead of a partition of every row. Degenerate blocks
    (many scores at the bound, e.g. collapsed embeddings) fall back to ``argpartition``.
    ``block`` may be overwritten.
    """
    rows, cols = block.shape
    if k >= cols:
        idx = np.broadcast_to(np.arange(cols), block.shape)
        return _sorted_topk(block, idx + col_offset, k)
    sample = max(_SAMPLE_COLUMNS, 4 * k)
    if sample < cols:
        bound = -np.partition(-block[:, :sample], k - 1, axis=1)[:, k - 1]
        mask = block >= bound[:, None]
        if np.count_nonzero(mask) <= max(cols, 64 * k) * rows // 16:
            r, c = np.nonzero(mask)
            del mask
            vals = block[r, c]
            order = np.lexsort((c, -vals, r))  # by row, then score desc, then column
            starts = np.searchsorted(r[order], np.arange(rows))
            sel = order[starts[:, None] + np.arange(k)[None, :]]
            return vals[sel], c[sel] + col_offset
        del mask
    return _block_topk_partition(np.negative(block, out=block), k, col_offset)


def _faiss_search(q, g, k, metric):  # pragma: no cover - exercised only where faiss exists
    import faiss

    q = np.ascontiguousarray(q, dtype=np.float32)
    g = np.ascontiguousarray(g, dtype=np.float32)
    index = faiss.IndexFlatIP(g.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    values, indices = index.search(q, k)
    if metric == "euclidean":
        values = np.sqrt(np.maximum(values, 0.0))
    return values.astype(np.float64), indices.astype(np.int64)


def _block_sizes(num_queries, num_gallery, itemsize, max_block_bytes):
    # Per score: the score itself, argpartition's int64 index and a boolean comparison.
    per = itemsize + 9
    cols = max(1, min(num_gallery, max_block_bytes // (per * 64)))
    rows = max(1, min(num_queries, max_block_bytes // (per * cols)))
    return rows, cols


def nearest_neighbors(
    queries,
    gallery,
    k=10,
    metric="cosine",
    exclude_self=False,
    max_block_bytes=256 * 2**20,
    backend="numpy",
):
    """Exact k-nearest-neighbour search by blocked matrix products.

    For each query ``q`` the gallery is ranked by cosine similarity ``q.g / (|q| |g|)``
    (``metric="cosine"``) or by Euclidean distance ``|q - g|`` (``metric="euclidean"``), best
    first, ties going to the smaller gallery index (bit-identical gallery rows always tie, see
    the module notes on ties). Scores are computed block by block and merged
    into a running top-k; a block and its temporaries (the scores, argpartition's indices and a
    comparison mask) take about ``max_block_bytes``, so memory stays
    ``O(max_block_bytes + num_queries * k)`` however large ``queries x gallery`` is (plus a
    copy of the distinct rows when the gallery holds bit-identical copies). Scores
    are computed in the inputs' precision (float32 unless an input is float64); Euclidean
    distances of the returned neighbours are then recomputed exactly in float64.

    Args:
        queries: Array of shape ``(num_queries, D)``.
        gallery: Array of shape ``(num_gallery, D)``.
        k: Number of neighbours per query, at most ``num_gallery`` (``num_gallery - 1`` with
            ``exclude_self``). Defaults to ``10``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        exclude_self: Queries and gallery are the same set (leave-one-out retrieval): row ``i``
            never returns gallery item ``i``. Requires ``num_queries == num_gallery``.
            Defaults to ``False``.
        max_block_bytes: Memory for one block of scores and its temporaries. Defaults to
            256 MiB.
        backend: ``"numpy"``, ``"faiss"`` (exact ``IndexFlat``; raises ``ImportError`` if faiss
            is not installed) or ``"auto"`` (faiss when importable, else NumPy). Defaults to
            ``"numpy"``.

    Returns:
        ``(values, indices)``, both of shape ``(num_queries, k)``: cosine similarities
        (descending) or Euclidean distances (ascending), and the gallery indices.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> gallery = np.eye(4, dtype="float32")
        >>> values, indices = km.nearest_neighbors(gallery[:2] + 0.1, gallery, k=2)
        >>> indices.tolist()
        [[0, 1], [1, 0]]
    """
    check_choice("metric", metric, METRICS)
    check_choice("backend", backend, ("numpy", "faiss", "auto"))
    q = check_embeddings("queries", queries)
    g = check_embeddings("gallery", gallery)
    check_same_dim("queries", q, "gallery", g)
    exclude_self = check_flag("exclude_self", exclude_self)
    if exclude_self and q.shape[0] != g.shape[0]:
        raise ValueError(
            "`exclude_self=True` needs queries and gallery to be the same set. Received: "
            f"queries.shape={q.shape}, gallery.shape={g.shape}"
        )
    available = g.shape[0] - (1 if exclude_self else 0)
    k = check_int("k", k, minimum=1)
    if k > available:
        raise ValueError(
            f"`k` must be at most the number of gallery items ({available}"
            f"{' excluding the query itself' if exclude_self else ''}). Received: k={k}"
        )
    max_block_bytes = check_int("max_block_bytes", max_block_bytes, minimum=1)
    dtype = common_dtype(q, g)
    q = q.astype(dtype, copy=False)
    g = g.astype(dtype, copy=False)
    if backend != "numpy":
        try:
            import faiss  # noqa: F401

            have_faiss = True
        except ImportError:
            have_faiss = False
        if backend == "faiss" and not have_faiss:
            raise ImportError(
                "backend='faiss' needs the faiss package: `pip install faiss-cpu`, or use "
                "backend='numpy'."
            )
        if have_faiss:  # pragma: no cover
            common = 0
            if metric == "cosine":
                q, g = normalize_rows(q), normalize_rows(g)
            else:
                common = global_exponent(q, g)
                q, g = np.ldexp(q, -common), np.ldexp(g, -common)
            kk = k + (1 if exclude_self else 0)
            values, indices = _faiss_search(q, g, kk, metric)
            values = np.ldexp(values, common)
            if exclude_self:
                values, indices = drop_own_index(values, indices, np.arange(q.shape[0]))
            return values, indices

    # Scale invariance: cosine rows are multiplied by their own power of two, Euclidean rows by
    # one common power of two (both exact), so no squared norm overflows or underflows.
    if metric == "cosine":
        e_q, e_g = row_exponents(q), row_exponents(g)
    else:
        common = global_exponent(q, g)
        e_q = np.full(q.shape[0], common, dtype=np.int64)
        e_g = np.full(g.shape[0], common, dtype=np.int64)
    # Bit-identical gallery rows must get bit-identical scores, but a BLAS product may round
    # the same dot product differently in different columns. So each distinct row is scored
    # once and its copies are expanded afterwards, in increasing index order.
    groups = duplicate_groups(g)
    if groups is None:
        g_search, e_search, k_search = g, e_g, k
    else:
        first, inverse = groups
        g_search, e_search = g[first], e_g[first]
        k_search = min(k + (1 if exclude_self else 0), first.size)
    stat = _gallery_stats(g_search, e_search, metric)
    nq, ng = q.shape[0], g_search.shape[0]
    rows, cols = _block_sizes(nq, ng, np.dtype(dtype).itemsize, max_block_bytes)
    cols = max(cols, min(ng, k_search + 1))  # a block must be able to hold k candidates
    out_scores = np.empty((nq, k), dtype=np.float64)
    out_indices = np.empty((nq, k), dtype=np.int64)
    for r0 in range(0, nq, rows):
        r1 = min(nq, r0 + rows)
        best_s = best_i = None
        q_rows = scale_rows(q[r0:r1], e_q[r0:r1])
        inv_q = _inverse_norms_of_scaled(q_rows) if metric == "cosine" else None
        for c0 in range(0, ng, cols):
            c1 = min(ng, c0 + cols)
            block = q_rows @ scale_rows(g_search[c0:c1], e_search[c0:c1]).T
            if metric == "cosine":
                # Raw dot products scaled afterwards: equal dot products of rows with equal
                # norms give exactly equal cosines. The query's 1/|q| does not change the
                # ranking of its row: it is applied to the k winners only.
                block *= stat[None, c0:c1]
            else:
                # -||q - g||^2 up to the row constant ||q||^2 (same ranking).
                block *= 2.0
                block -= stat[None, c0:c1]
            if exclude_self and groups is None:
                lo, hi = max(r0, c0), min(r1, c1)
                if lo < hi:
                    diag = np.arange(lo, hi)
                    block[diag - r0, diag - c0] = -np.inf
            s, i = _block_topk(block, min(k_search, c1 - c0), c0)
            if best_s is None:
                best_s, best_i = s, i
            else:
                best_s, best_i = _sorted_topk(
                    np.concatenate([best_s, s], axis=1),
                    np.concatenate([best_i, i], axis=1),
                    k_search,
                )
        if metric == "cosine":
            best_s = best_s * inv_q[:, None]
        if groups is not None:
            best_s, best_i = _expand_groups(
                best_s,
                best_i,
                inverse,
                k,
                np.arange(r0, r1) if exclude_self else None,
                max_block_bytes,
            )
        if metric == "euclidean":
            # Exact distances for the k winners (the ranking used 2 q.g - |g|^2), computed on
            # the scaled rows and scaled back.
            diff = np.ldexp(q[r0:r1, None, :].astype(np.float64), -common) - np.ldexp(
                g[best_i].astype(np.float64), -common
            )
            best_s = np.ldexp(np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)), common)
        out_scores[r0:r1] = best_s
        out_indices[r0:r1] = best_i
    return out_scores, out_indices


def _gallery_stats(g, exponents, metric):
    """Per gallery row: the inverse norm (cosine) or squared norm (Euclidean) of the scaled row."""
    out = np.empty(g.shape[0], dtype=g.dtype)
    step = max(1, 2**20 // max(g.shape[1], 1))
    for r0 in range(0, g.shape[0], step):
        gs = scale_rows(g[r0 : r0 + step], exponents[r0 : r0 + step])
        if metric == "cosine":
            out[r0 : r0 + step] = _inverse_norms_of_scaled(gs)
        else:
            out[r0 : r0 + step] = np.einsum("ij,ij->i", gs, gs)
    return out


def _expand_groups(best_s, best_u, inverse, k, self_rows, max_block_bytes):
    """Top-k gallery indices from the top-k' groups of bit-identical rows.

    Each group stands for its rows, which share its score; the winners are the best ``k`` of
    the first ``k`` (``k + 1`` with ``exclude_self``) rows of each winning group, ordered by
    score then index, leaving out each query's own index when ``self_rows`` is given.
    """
    counts = np.bincount(inverse)
    members = np.argsort(inverse, kind="stable")  # rows grouped, ascending within a group
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    m = min(k + (0 if self_rows is None else 1), int(counts.max()))
    rows, width = best_u.shape
    chunk = max(1, max_block_bytes // (40 * width * m))
    out_s = np.empty((rows, k), dtype=best_s.dtype)
    out_i = np.empty((rows, k), dtype=np.int64)
    j = np.arange(m)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        u = best_u[r0:r1]
        c = counts[u][:, :, None]
        idx = members[starts[u][:, :, None] + np.minimum(j, c - 1)]
        valid = j < c
        if self_rows is not None:
            valid &= idx != self_rows[r0:r1, None, None]
        scores = np.where(valid, best_s[r0:r1, :, None], -np.inf).reshape(r1 - r0, -1)
        idx = np.where(valid, idx, inverse.size).reshape(r1 - r0, -1)
        out_s[r0:r1], out_i[r0:r1] = _sorted_topk(scores, idx, k)
    return out_s, out_i


def drop_own_index(values, indices, own):
    """Remove each query's own gallery index from its ``K`` neighbours, leaving ``K - 1``.

    For a self-search run with one neighbour more than needed: row ``r`` drops the entry equal
    to ``own[r]``, or its last entry when its own index is not among them (bit-identical rows
    with smaller indices pushed it out), as ``exclude_self=True`` does.

    Args:
        values: ``(rows, K)`` neighbour scores.
        indices: ``(rows, K)`` neighbour gallery indices.
        own: ``(rows,)`` each row's own gallery index.

    Returns:
        ``(values, indices)`` of shape ``(rows, K - 1)``.
    """
    rows, width = indices.shape
    keep = indices != np.asarray(own)[:, None]
    keep[np.all(keep, axis=1), -1] = False
    return values[keep].reshape(rows, width - 1), indices[keep].reshape(rows, width - 1)
