"""Retrieval metrics and exact nearest-neighbour search for embeddings.

Everything here is NumPy: evaluation runs offline on embeddings that a model has already
produced. The search computes ``queries @ gallery.T`` in blocks of rows and columns and keeps a
running top-k, so the full ``(num_queries, num_gallery)`` similarity matrix is never held in
memory (see ``max_block_bytes``).

Conventions shared by the whole ``keras_margins.evaluation`` package:

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

from keras_margins._validation import check_choice, check_flag, check_float, check_int

METRICS = ("cosine", "euclidean")


# --------------------------------------------------------------------------------------------
# Input checks shared with verification.py and identification.py
# --------------------------------------------------------------------------------------------


def _check_embeddings(name, x, dtype=None):
    """Return ``x`` as a finite 2-D floating array, raising ``ValueError`` otherwise."""
    x = np.asarray(x)
    if x.dtype == object or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        raise ValueError(f"`{name}` must be a numeric array. Received: {name} of dtype {x.dtype}")
    if x.ndim == 1 and x.size == 0:
        x = x.reshape(0, 0)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array of shape (num_samples, embedding_dim). "
            f"Received: {name} with shape {x.shape}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name} with shape {x.shape}")
    if dtype is None:
        dtype = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise ValueError(
            f"`{name}` must contain only finite values. Received: {name} with NaN or infinite "
            f"values in {bad} row(s)"
        )
    return x


def _check_labels(name, labels, length=None, length_name=None):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array. Received: {name} with shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name} with shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating) and np.any(np.isnan(labels)):
        raise ValueError(
            f"`{name}` must not contain NaN (a NaN label matches nothing, not even itself). "
            f"Received: {name} with {int(np.sum(np.isnan(labels)))} NaN values"
        )
    if length is not None and labels.shape[0] != length:
        raise ValueError(
            f"`{name}` must have one entry per row of `{length_name}` ({length}). "
            f"Received: {name} with length {labels.shape[0]}"
        )
    return labels


def _check_same_dim(name_a, a, name_b, b):
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same embedding dimension. "
            f"Received: {name_a}.shape={a.shape}, {name_b}.shape={b.shape}"
        )


def _check_int_sequence(name, values, minimum=None):
    """A non-empty sequence of integers (never truncated: ``1.5`` is an error)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(
            f"`{name}` must be a sequence of integers, e.g. (1, 5). Received: {name}={values!r}"
        )
    items = list(np.asarray(values, dtype=object).reshape(-1)) if isinstance(
        values, np.ndarray) else list(values)
    if not items:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={values!r}")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                f"`{name}` must contain only integers. Received: {name}={values!r} "
                f"(element {v!r})"
            )
        if minimum is not None and v < minimum:
            raise ValueError(
                f"`{name}` must contain only integers >= {minimum}. Received: {name}={values!r}"
            )
        out.append(int(v))
    return tuple(out)


# Rows whose largest entry lies within 2^-SAFE .. 2^SAFE need no scaling: their squared norms
# neither overflow nor underflow (float32: up to ~1e12 with D up to 2^16; float64: ~1e120).
_SAFE_EXPONENT = {4: 40, 8: 400}


def _row_exponents(x):
    """Per row, a power-of-two exponent ``e`` that brings ``max|x_i| * 2^-e`` into a safe range.

    ``e`` is the exponent of the row's max-abs (``max|x_i|`` in ``[2^(e-1), 2^e)``) for rows
    outside ``2^-SAFE .. 2^SAFE`` and 0 for the others (and for zero rows), so that ordinary
    embeddings are used as they are.
    """
    e = np.frexp(np.max(np.abs(x), axis=1))[1].astype(np.int64)
    e[np.abs(e) <= _SAFE_EXPONENT[x.dtype.itemsize]] = 0
    return e


def _global_exponent(*arrays):
    """One exponent as :func:`_row_exponents` for the largest magnitude in all ``arrays``."""
    largest = max(float(np.max(np.abs(a))) for a in arrays)
    e = int(np.frexp(largest)[1])
    safe = min(_SAFE_EXPONENT[a.dtype.itemsize] for a in arrays)
    return 0 if abs(e) <= safe else e


def _scale_rows(x, exponents):
    """``x_i * 2^-e_i``: exact (a power of two), in ``x``'s dtype; ``x`` itself if all ``e == 0``."""
    exponents = np.asarray(exponents)
    if not np.any(exponents):
        return x
    return np.ldexp(x, -exponents[..., None]).astype(x.dtype, copy=False)


def _inverse_norms_of_scaled(xs):
    """``1 / |x_i|`` of rows scaled by :func:`_scale_rows` (0 for a zero row)."""
    norm = np.sqrt(np.einsum("ij,ij->i", xs, xs))
    out = np.zeros_like(norm)
    np.divide(1.0, norm, out=out, where=norm > 0)
    return out.astype(xs.dtype, copy=False)


def _normalize(x):
    """Rows divided by their L2 norm, for any magnitude (a zero row stays zero).

    A row of extreme magnitude is first multiplied by the power of two that brings its largest
    entry into ``[0.5, 1)`` (exact), so the squared norm can neither overflow (rows above ~1e19
    in float32, ~1e154 in float64) nor lose precision to underflow; there is no norm floor.
    """
    xs = _scale_rows(x, _row_exponents(x))
    return xs * _inverse_norms_of_scaled(xs)[:, None]


def _duplicate_groups(x):
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
        u = np.ascontiguousarray(x[r0:r0 + step]).view(utype)
        u = np.where(u == sign, 0, u).astype(np.uint64)
        h[r0:r0 + step] = np.sum(u * mult, axis=1, dtype=np.uint64)  # wraps modulo 2^64
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


def _common_dtype(a, b):
    return np.float64 if (a.dtype == np.float64 or b.dtype == np.float64) else np.float32


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
    q = _check_embeddings("queries", queries)
    g = _check_embeddings("gallery", gallery)
    _check_same_dim("queries", q, "gallery", g)
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
    dtype = _common_dtype(q, g)
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
                q, g = _normalize(q), _normalize(g)
            else:
                common = _global_exponent(q, g)
                q, g = np.ldexp(q, -common), np.ldexp(g, -common)
            kk = k + (1 if exclude_self else 0)
            values, indices = _faiss_search(q, g, kk, metric)
            values = np.ldexp(values, common)
            if exclude_self:
                keep = indices != np.arange(q.shape[0])[:, None]
                # Each row drops its own index if present, otherwise its last entry.
                keep[np.all(keep, axis=1), -1] = False
                values = values[keep].reshape(q.shape[0], k)
                indices = indices[keep].reshape(q.shape[0], k)
            return values, indices

    # Scale invariance: cosine rows are multiplied by their own power of two, Euclidean rows by
    # one common power of two (both exact), so no squared norm overflows or underflows.
    if metric == "cosine":
        e_q, e_g = _row_exponents(q), _row_exponents(g)
    else:
        common = _global_exponent(q, g)
        e_q = np.full(q.shape[0], common, dtype=np.int64)
        e_g = np.full(g.shape[0], common, dtype=np.int64)
    # Bit-identical gallery rows must get bit-identical scores, but a BLAS product may round
    # the same dot product differently in different columns. So each distinct row is scored
    # once and its copies are expanded afterwards, in increasing index order.
    groups = _duplicate_groups(g)
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
        q_rows = _scale_rows(q[r0:r1], e_q[r0:r1])
        inv_q = _inverse_norms_of_scaled(q_rows) if metric == "cosine" else None
        for c0 in range(0, ng, cols):
            c1 = min(ng, c0 + cols)
            block = q_rows @ _scale_rows(g_search[c0:c1], e_search[c0:c1]).T
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
                    np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1),
                    k_search,
                )
        if metric == "cosine":
            best_s = best_s * inv_q[:, None]
        if groups is not None:
            best_s, best_i = _expand_groups(
                best_s, best_i, inverse, k, np.arange(r0, r1) if exclude_self else None,
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
        gs = _scale_rows(g[r0:r0 + step], exponents[r0:r0 + step])
        if metric == "cosine":
            out[r0:r0 + step] = _inverse_norms_of_scaled(gs)
        else:
            out[r0:r0 + step] = np.einsum("ij,ij->i", gs, gs)
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


# --------------------------------------------------------------------------------------------
# Metrics on ranked lists
# --------------------------------------------------------------------------------------------


def _ranked_matches(query_labels, neighbor_labels):
    return np.asarray(neighbor_labels) == np.asarray(query_labels)[:, None]


def precision_at_k(query_labels, neighbor_labels, k=1):
    """Mean over queries of the fraction of the top-``k`` neighbours with the query's label.

    ``precision@k = mean_q (1/k) sum_{i<=k} [label(n_i(q)) == label(q)]``; ``k=1`` gives
    precision@1 (the nearest neighbour is correct).

    Args:
        query_labels: Array of shape ``(num_queries,)``.
        neighbor_labels: Labels of each query's ranked neighbours, ``(num_queries, K)``.
        k: Cut-off, ``1 <= k <= K``. Defaults to ``1``.

    Returns:
        A float in ``[0, 1]``.

    Examples:

        >>> import keras_margins as km
        >>> km.precision_at_k([0, 1], [[0, 1], [0, 1]], k=1)
        0.5
    """
    matches = _check_ranked("neighbor_labels", query_labels, neighbor_labels, k)
    return float(np.mean(matches[:, :k]))


def recall_at_k(query_labels, neighbor_labels, k=1):
    """Fraction of queries with at least one correct neighbour among the top ``k``.

    This is the "Recall@K" of deep metric learning papers (CUB-200, Cars196, SOP): a hit rate,
    ``mean_q max_{i<=k} [label(n_i(q)) == label(q)]``.

    Args:
        query_labels: Array of shape ``(num_queries,)``.
        neighbor_labels: Labels of each query's ranked neighbours, ``(num_queries, K)``.
        k: Cut-off, ``1 <= k <= K``. Defaults to ``1``.

    Returns:
        A float in ``[0, 1]``.

    Examples:

        >>> import keras_margins as km
        >>> km.recall_at_k([0, 1], [[0, 1], [0, 1]], k=2)
        1.0
    """
    matches = _check_ranked("neighbor_labels", query_labels, neighbor_labels, k)
    return float(np.mean(np.any(matches[:, :k], axis=1)))


def map_at_r(query_labels, neighbor_labels, num_relevant):
    """Mean Average Precision at R (MAP@R, Musgrave et al. 2020).

    For a query with ``R`` relevant gallery items,
    ``AP@R = (1/R) sum_{i=1}^{R} P(i) rel(i)`` where ``rel(i)`` says whether neighbour ``i`` is
    relevant and ``P(i)`` is the precision of the first ``i`` neighbours. Queries with
    ``R = 0`` are skipped.

    Args:
        query_labels: Array of shape ``(num_queries,)``.
        neighbor_labels: Labels of each query's ranked neighbours, ``(num_queries, K)`` with
            ``K >= max(num_relevant)``.
        num_relevant: ``R`` per query, shape ``(num_queries,)``.

    Returns:
        A float in ``[0, 1]``.

    Reference:
        Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020.

    Examples:

        >>> import keras_margins as km
        >>> round(km.map_at_r([0], [[0, 1, 0]], num_relevant=[2]), 4)  # (1 + 0) / 2
        0.5
    """
    r = np.asarray(num_relevant)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or np.issubdtype(
            r.dtype, np.floating)) or r.dtype == bool:
        raise ValueError(
            "`num_relevant` must be a 1-D array of non-negative integers. "
            f"Received: num_relevant={num_relevant!r}"
        )
    if np.issubdtype(r.dtype, np.floating):
        if not np.all(np.isfinite(r)) or np.any(r != np.round(r)):
            raise ValueError(
                "`num_relevant` must hold whole numbers (a count of relevant items). "
                f"Received: num_relevant={num_relevant!r}"
            )
        r = r.astype(np.int64)
    if np.any(r < 0):
        raise ValueError(
            "`num_relevant` must be >= 0 (a count of relevant items). "
            f"Received: num_relevant={num_relevant!r}"
        )
    matches = _check_ranked("neighbor_labels", query_labels, neighbor_labels, 1)
    if r.shape[0] != matches.shape[0]:
        raise ValueError(
            "`num_relevant` must have one entry per query. "
            f"Received: num_relevant with length {r.shape[0]} for {matches.shape[0]} queries"
        )
    if r.max() > matches.shape[1]:
        raise ValueError(
            "`neighbor_labels` must hold at least max(num_relevant) neighbours per query. "
            f"Received: {matches.shape[1]} neighbours, max(num_relevant)={int(r.max())}"
        )
    valid = r > 0
    if not np.any(valid):
        raise ValueError("`num_relevant` must be positive for at least one query. Received: all 0")
    positions = np.arange(1, matches.shape[1] + 1)
    within_r = positions[None, :] <= r[:, None]
    hits = matches & within_r
    precision = np.cumsum(hits, axis=1) / positions[None, :]
    ap = np.sum(precision * hits, axis=1)[valid] / r[valid]
    return float(np.mean(ap))


def predict_labels(neighbor_values, neighbor_labels, k=5, new_label=None, new_threshold=None,
                   metric="cosine"):
    """The top-``k`` distinct labels of each query's ranked neighbours, Kaggle-style.

    Labels are read in neighbour order and kept the first time they appear. With
    ``new_threshold``, the ``new_label`` ("new individual") is inserted at the first position
    whose neighbour is farther than the threshold (cosine similarity below it, or Euclidean
    distance above it), or at the end if every neighbour is within it and fewer than ``k``
    labels were found.

    Args:
        neighbor_values: Similarities/distances of the ranked neighbours ``(num_queries, K)``.
        neighbor_labels: Their labels ``(num_queries, K)``.
        k: Number of labels to predict. Defaults to ``5``.
        new_label: The "new individual" label. Required with ``new_threshold``. Defaults to
            ``None``.
        new_threshold: Similarity (or distance) threshold that triggers ``new_label``.
            Defaults to ``None`` (never predict a new individual).
        metric: ``"cosine"`` or ``"euclidean"``: how to read ``neighbor_values``. Defaults to
            ``"cosine"``.

    Returns:
        A list (one per query) of lists of at most ``k`` labels.

    Examples:

        >>> import keras_margins as km
        >>> km.predict_labels([[0.9, 0.8, 0.3]], [["a", "a", "b"]], k=3, new_label="new",
        ...                   new_threshold=0.5)
        [['a', 'new', 'b']]
    """
    check_choice("metric", metric, METRICS)
    k = check_int("k", k, minimum=1)
    values = np.asarray(neighbor_values, dtype=np.float64)
    labels = np.asarray(neighbor_labels)
    if values.shape != labels.shape or values.ndim != 2:
        raise ValueError(
            "`neighbor_values` and `neighbor_labels` must be 2-D arrays of the same shape. "
            f"Received: shapes {values.shape} and {labels.shape}"
        )
    if np.any(np.isnan(values)):
        raise ValueError(
            "`neighbor_values` must not contain NaN (a NaN similarity has no rank). Received: "
            f"neighbor_values with {int(np.sum(np.isnan(values)))} NaN values"
        )
    if new_threshold is not None:
        new_threshold = check_float("new_threshold", new_threshold)
        if new_label is None:
            raise ValueError("`new_label` is required with `new_threshold`. Received: None")
    return _predict_rows(values, labels, k, new_label, new_threshold, metric)[0]


def _predict_rows(values, labels, k, new_label, new_threshold, metric):
    """:func:`predict_labels` plus, per query, whether its ``k`` labels were all found before
    the neighbour list ran out (then a longer list gives the same prediction)."""
    out, complete = [], []
    for vals, labs in zip(values, labels):
        pred = []
        inserted = new_threshold is None
        for v, lab in zip(vals, labs):
            if len(pred) == k:
                break
            if not inserted and (v < new_threshold if metric == "cosine" else v > new_threshold):
                pred.append(new_label)
                inserted = True
                if len(pred) == k:
                    break
            lab = lab.item() if hasattr(lab, "item") else lab
            if lab not in pred:
                pred.append(lab)
        complete.append(len(pred) == k)
        if not inserted and len(pred) < k:
            pred.append(new_label)
        out.append(pred)
    return out, complete


def map_at_k(query_labels, predicted_labels, k=5):
    """Kaggle MAP@k with one true label per query: ``mean_q 1/rank`` of the true label.

    ``predicted_labels[q]`` is a ranked list of distinct labels; the score of a query is
    ``1/i`` if its true label is the ``i``-th prediction (``i <= k``), else 0. MAP@5 is the
    Humpback Whale Identification metric (with ``"new_whale"`` as a label, see
    :func:`predict_labels`).

    Args:
        query_labels: True labels, length ``num_queries``.
        predicted_labels: Ranked predictions per query (list of lists or 2-D array).
        k: Cut-off. Defaults to ``5``.

    Returns:
        A float in ``[0, 1]``.

    Examples:

        >>> import keras_margins as km
        >>> km.map_at_k(["a", "b"], [["a", "c"], ["c", "b"]], k=5)
        0.75
    """
    k = check_int("k", k, minimum=1)
    truth = _check_labels("query_labels", query_labels)
    if len(predicted_labels) != truth.shape[0]:
        raise ValueError(
            "`predicted_labels` must have one list per query. "
            f"Received: {len(predicted_labels)} lists for {truth.shape[0]} queries"
        )
    total = 0.0
    for t, preds in zip(truth, predicted_labels):
        t = t.item() if hasattr(t, "item") else t
        for i, p in enumerate(list(preds)[:k]):
            p = p.item() if hasattr(p, "item") else p
            if p == t:
                total += 1.0 / (i + 1)
                break
    return total / truth.shape[0]


def _check_ranked(name, query_labels, neighbor_labels, k):
    query_labels = _check_labels("query_labels", query_labels)
    neighbor_labels = np.asarray(neighbor_labels)
    if neighbor_labels.ndim != 2 or neighbor_labels.shape[0] != query_labels.shape[0]:
        raise ValueError(
            f"`{name}` must have shape (num_queries, K) with num_queries={query_labels.shape[0]}."
            f" Received: {name}.shape={neighbor_labels.shape}"
        )
    k = check_int("k", k, minimum=1)
    if k > neighbor_labels.shape[1]:
        raise ValueError(
            f"`k` must be at most the number of ranked neighbours ({neighbor_labels.shape[1]}). "
            f"Received: k={k}"
        )
    return _ranked_matches(query_labels, neighbor_labels)


def _split_args(query_embeddings, query_labels, gallery_embeddings, gallery_labels):
    q = _check_embeddings("query_embeddings", query_embeddings)
    ql = _check_labels("query_labels", query_labels, q.shape[0], "query_embeddings")
    if (gallery_embeddings is None) != (gallery_labels is None):
        raise ValueError(
            "`gallery_embeddings` and `gallery_labels` must be given together. Received: "
            f"gallery_embeddings is None: {gallery_embeddings is None}, "
            f"gallery_labels is None: {gallery_labels is None}"
        )
    if gallery_embeddings is None:
        return q, ql, q, ql, True
    g = _check_embeddings("gallery_embeddings", gallery_embeddings)
    gl = _check_labels("gallery_labels", gallery_labels, g.shape[0], "gallery_embeddings")
    _check_same_dim("query_embeddings", q, "gallery_embeddings", g)
    return q, ql, g, gl, False


def retrieval_metrics(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    ks=(1, 5, 10),
    metric="cosine",
    new_label=None,
    new_threshold=None,
    max_block_bytes=256 * 2**20,
    backend="numpy",
):
    """Precision@1, recall@k, MAP@R and MAP@5 of a retrieval split, in one call.

    Without a gallery the query set is searched against itself, leaving each query out
    (``exclude_self``). ``R`` for MAP@R is the number of gallery items sharing the query's
    label; queries whose label is absent from the gallery count as misses for precision and
    recall, are skipped by MAP@R, and score only through ``new_label`` in MAP@5. MAP@5 reads
    each query's ranked gallery as far as needed to find five distinct labels (the search is
    deepened for those queries), so it equals :func:`predict_labels` + :func:`map_at_k` on the
    full neighbour list.

    Args:
        query_embeddings: ``(num_queries, D)``.
        query_labels: ``(num_queries,)``.
        gallery_embeddings: ``(num_gallery, D)`` or ``None`` (leave-one-out on the queries).
            Defaults to ``None``.
        gallery_labels: ``(num_gallery,)`` or ``None``. Defaults to ``None``.
        ks: Cut-offs for ``recall@k``. Defaults to ``(1, 5, 10)``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        new_label: Label standing for "new individual" in MAP@5; queries whose label is not in
            the gallery are scored against it. Defaults to ``None``.
        new_threshold: Threshold that inserts ``new_label`` (see :func:`predict_labels`).
            Defaults to ``None``.
        max_block_bytes: Memory bound of the search. Defaults to 256 MiB.
        backend: Search backend (see :func:`nearest_neighbors`). Defaults to ``"numpy"``.

    Returns:
        A dict of floats: ``precision@1``, ``recall@{k}`` for each ``k``, ``map@r``, ``map@5``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype="float32")
        >>> km.retrieval_metrics(x, [0, 0, 1, 1], ks=(1,))["precision@1"]
        1.0
    """
    check_choice("metric", metric, METRICS)
    q, ql, g, gl, self_search = _split_args(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels
    )
    ks = _check_int_sequence("ks", ks, minimum=1)
    g_unique, g_counts = np.unique(gl, return_counts=True)
    count_of = dict(zip(g_unique.tolist(), g_counts.tolist()))
    num_relevant = np.array([count_of.get(lab, 0) for lab in ql.tolist()], dtype=np.int64)
    if self_search:
        num_relevant = num_relevant - 1
    available = g.shape[0] - (1 if self_search else 0)
    depth = max(max(ks), 5, 1, int(num_relevant.max()))
    depth = min(depth, available)
    if max(ks) > available:
        raise ValueError(
            f"`ks` must not exceed the number of gallery items ({available}). Received: ks={ks}"
        )
    values, indices = nearest_neighbors(
        q, g, k=depth, metric=metric, exclude_self=self_search,
        max_block_bytes=max_block_bytes, backend=backend,
    )
    nl = gl[indices]
    out = {"precision@1": precision_at_k(ql, nl, 1)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ql, nl, k)
    if np.any(num_relevant > 0):
        out["map@r"] = map_at_r(ql, nl, num_relevant)
    else:
        out["map@r"] = float("nan")
    truth = [lab if count_of.get(lab, 0) - (1 if self_search else 0) > 0 else new_label
             for lab in ql.tolist()]
    if new_threshold is not None:
        new_threshold = check_float("new_threshold", new_threshold)
        if new_label is None:
            raise ValueError("`new_label` is required with `new_threshold`. Received: None")
    preds, complete = _predict_rows(values, nl, 5, new_label, new_threshold, metric)
    # MAP@5 reads neighbours until five distinct labels are found, which may be far beyond
    # `depth` (many neighbours sharing a label): search deeper for those queries only.
    pending = np.flatnonzero(~np.asarray(complete))
    d = depth
    while pending.size and d < available:
        d = min(available, 2 * d)
        if self_search:
            # The queries are a subset of the gallery: search one more and drop the query itself
            # (or, if it is not among them, the last neighbour), as exclude_self does.
            kk = min(d + 1, g.shape[0])
            v, i = nearest_neighbors(q[pending], g, k=kk, metric=metric,
                                     max_block_bytes=max_block_bytes, backend=backend)
            keep = i != pending[:, None]
            keep[np.all(keep, axis=1), -1] = False
            v = v[keep].reshape(pending.size, kk - 1)[:, :d]
            i = i[keep].reshape(pending.size, kk - 1)[:, :d]
        else:
            v, i = nearest_neighbors(q[pending], g, k=d, metric=metric,
                                     max_block_bytes=max_block_bytes, backend=backend)
        more, done = _predict_rows(v, gl[i], 5, new_label, new_threshold, metric)
        for row, pred in zip(pending.tolist(), more):
            preds[row] = pred
        pending = pending[~np.asarray(done)]
    out["map@5"] = map_at_k(np.array(truth, dtype=object), preds, k=5)
    return out


# --------------------------------------------------------------------------------------------
# Match sets within a threshold and mean per-query F1
# --------------------------------------------------------------------------------------------


def match_f1_sweep(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    thresholds=None,
    metric="cosine",
    include_self=True,
    max_block_bytes=256 * 2**20,
):
    """Mean per-query F1 of threshold match sets, for many thresholds, and the best one.

    For a threshold ``t`` the predicted match set of query ``q`` is
    ``P_q = {g : cos(q, g) >= t}`` (or ``|q - g| <= t`` for Euclidean), the true set is
    ``T_q = {g : label(g) == label(q)}``, and
    ``F1_q = 2 |P_q & T_q| / (|P_q| + |T_q|)`` (1 when both are empty). The score is the mean
    of ``F1_q`` over queries, as in the Shopee product-matching competition. Every threshold is
    evaluated in one blocked pass: each score is binned among the sorted thresholds, so memory
    stays bounded and the cost grows with ``log(len(thresholds))`` only.

    Args:
        query_embeddings: ``(num_queries, D)``.
        query_labels: ``(num_queries,)``.
        gallery_embeddings: ``(num_gallery, D)`` or ``None`` to match the queries among
            themselves. Defaults to ``None``.
        gallery_labels: ``(num_gallery,)`` or ``None``. Defaults to ``None``.
        thresholds: 1-D array of thresholds. Defaults to 101 values evenly spaced on
            ``[-1, 1]`` (cosine) or on ``[0, max distance]`` (Euclidean).
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        include_self: Without a gallery, each item belongs to its own predicted and true
            set (Shopee's convention). ``False`` removes it from both. Defaults to ``True``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 256 MiB.

    Returns:
        A dict: ``thresholds`` (sorted array), ``f1`` (mean F1 per threshold), ``best_threshold``
        and ``best_f1`` (the first maximum in sorted threshold order).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype="float32")
        >>> out = km.match_f1_sweep(x, [0, 0, 1], thresholds=[0.5, 0.999])
        >>> out["best_threshold"], out["best_f1"]
        (0.5, 1.0)
    """
    check_choice("metric", metric, METRICS)
    include_self = check_flag("include_self", include_self)
    q, ql, g, gl, self_search = _split_args(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels
    )
    dtype = _common_dtype(q, g)
    q, g = q.astype(dtype, copy=False), g.astype(dtype, copy=False)
    common = 0  # Euclidean: distances are computed on rows scaled by 2^-common (exact)
    if metric == "cosine":
        q, g = _normalize(q), _normalize(g)
    else:
        common = _global_exponent(q, g)
        q, g = np.ldexp(q, -common).astype(dtype), np.ldexp(g, -common).astype(dtype)
    if thresholds is None:
        if metric == "cosine":
            thresholds = np.linspace(-1.0, 1.0, 101)
        else:
            span = np.sqrt(np.max(np.sum(q.astype(np.float64) ** 2, 1))) + np.sqrt(
                np.max(np.sum(g.astype(np.float64) ** 2, 1))
            )
            thresholds = np.linspace(0.0, np.ldexp(span, common), 101)
    try:
        thresholds = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"`thresholds` must be a 1-D array of numbers. Received: thresholds={thresholds!r}"
        ) from None
    if thresholds.ndim > 1:
        raise ValueError(
            "`thresholds` must be a 1-D array (it is not flattened). "
            f"Received: thresholds with shape {thresholds.shape}"
        )
    thresholds = thresholds.reshape(-1)
    if thresholds.size == 0 or not np.all(np.isfinite(thresholds)):
        raise ValueError(
            "`thresholds` must be a non-empty array of finite values. "
            f"Received: thresholds={thresholds}"
        )
    thresholds = np.unique(thresholds)
    n_t = thresholds.size
    # Work in "higher is better" score space: s >= s_t  <=>  item is in the match set.
    score_t = thresholds if metric == "cosine" else -np.ldexp(thresholds, -common)
    asc = np.sort(score_t)  # bin edges; bin b counts thresholds with asc <= s
    true_size = np.array(
        [np.count_nonzero(gl == lab) for lab in ql.tolist()], dtype=np.float64
    ) if not self_search else None
    if self_search:
        _, inv, counts = np.unique(ql, return_inverse=True, return_counts=True)
        true_size = counts[inv].astype(np.float64)
    g_sq = np.sum(g.astype(np.float64) ** 2, axis=1) if metric == "euclidean" else None
    nq, ng = q.shape[0], g.shape[0]
    # About five float64-sized temporaries per score (scores, bins, flat index, weights).
    rows = max(1, min(nq, max_block_bytes // (40 * ng)))
    pred_counts = np.zeros((nq, n_t))
    hit_counts = np.zeros((nq, n_t))
    for r0 in range(0, nq, rows):
        r1 = min(nq, r0 + rows)
        prod = (q[r0:r1] @ g.T).astype(np.float64)
        if metric == "cosine":
            s = prod
        else:
            q_sq = np.sum(q[r0:r1].astype(np.float64) ** 2, axis=1)
            s = -np.sqrt(np.maximum(q_sq[:, None] + g_sq[None, :] - 2.0 * prod, 0.0))
        same = gl[None, :] == ql[r0:r1, None]
        if self_search:
            diag = np.arange(r0, r1)
            if include_self:
                s[diag - r0, diag] = np.inf  # an item always matches itself
            else:
                s[diag - r0, diag] = -np.inf
                same[diag - r0, diag] = False
        # Number of ascending score-thresholds that each score reaches.
        reached = np.searchsorted(asc, s, side="right")
        nr = r1 - r0
        flat = (np.arange(nr)[:, None] * (n_t + 1) + reached).reshape(-1)
        pc = np.bincount(flat, minlength=nr * (n_t + 1)).reshape(nr, n_t + 1)
        hc = np.bincount(flat, weights=same.reshape(-1).astype(np.float64),
                         minlength=nr * (n_t + 1)).reshape(nr, n_t + 1)
        # count(s >= asc[j]) = sum over bins b > j.
        pc_ge = np.cumsum(pc[:, ::-1], axis=1)[:, ::-1][:, 1:]
        hc_ge = np.cumsum(hc[:, ::-1], axis=1)[:, ::-1][:, 1:]
        pred_counts[r0:r1] = pc_ge
        hit_counts[r0:r1] = hc_ge
    if self_search and not include_self:
        true_size = true_size - 1
    # Map ascending score thresholds back to the sorted thresholds.
    if metric == "euclidean":
        pred_counts, hit_counts = pred_counts[:, ::-1], hit_counts[:, ::-1]
    denom = pred_counts + true_size[:, None]
    f1 = np.where(denom > 0, 2.0 * hit_counts / np.where(denom > 0, denom, 1.0), 1.0)
    mean_f1 = f1.mean(axis=0)
    best = int(np.argmax(mean_f1))
    return {
        "thresholds": thresholds,
        "f1": mean_f1,
        "best_threshold": float(thresholds[best]),
        "best_f1": float(mean_f1[best]),
    }


def match_f1(query_embeddings, query_labels, gallery_embeddings=None, gallery_labels=None,
             threshold=0.5, metric="cosine", include_self=True, max_block_bytes=256 * 2**20):
    """Mean per-query F1 of the match sets within one similarity threshold.

    See :func:`match_f1_sweep` for the definition; this evaluates a single ``threshold``.

    Args:
        query_embeddings: ``(num_queries, D)``.
        query_labels: ``(num_queries,)``.
        gallery_embeddings: ``(num_gallery, D)`` or ``None``. Defaults to ``None``.
        gallery_labels: ``(num_gallery,)`` or ``None``. Defaults to ``None``.
        threshold: Cosine similarity (or Euclidean distance) threshold. Defaults to ``0.5``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        include_self: See :func:`match_f1_sweep`. Defaults to ``True``.
        max_block_bytes: Memory bound. Defaults to 256 MiB.

    Returns:
        The mean F1, a float in ``[0, 1]``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype="float32")
        >>> km.match_f1(x, [0, 0, 1], threshold=0.5)
        1.0
    """
    threshold = check_float("threshold", threshold)
    out = match_f1_sweep(query_embeddings, query_labels, gallery_embeddings, gallery_labels,
                         thresholds=[threshold], metric=metric, include_self=include_self,
                         max_block_bytes=max_block_bytes)
    return out["best_f1"]


__all__ = [
    "nearest_neighbors",
    "precision_at_k",
    "recall_at_k",
    "map_at_r",
    "map_at_k",
    "predict_labels",
    "retrieval_metrics",
    "match_f1",
    "match_f1_sweep",
]
