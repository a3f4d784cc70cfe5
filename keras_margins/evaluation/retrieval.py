"""Retrieval metrics of embeddings: precision/recall@k, MAP@R, MAP@k and match-set F1.

Everything here is NumPy and runs offline on embeddings a model has already produced. The
neighbours come from :func:`keras_margins.nearest_neighbors` (module
:mod:`keras_margins.evaluation.search`, which also states the conventions on metrics, scale and
ties shared by the whole ``keras_margins.evaluation`` package).
"""

import numpy as np

from keras_margins._validation import check_choice, check_flag, check_float, check_int
from keras_margins.evaluation._common import (
    METRICS,
    check_embeddings,
    check_float_array,
    check_int_sequence,
    check_labels,
    check_new_threshold,
    check_same_dim,
    common_dtype,
    python_value,
    score_block,
)
from keras_margins.evaluation.search import (
    drop_own_index,
    global_exponent,
    nearest_neighbors,
    normalize_rows,
)

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
    if (
        r.ndim != 1
        or not (np.issubdtype(r.dtype, np.integer) or np.issubdtype(r.dtype, np.floating))
        or r.dtype == bool
    ):
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


def predict_labels(
    neighbor_values, neighbor_labels, k=5, new_label=None, new_threshold=None, metric="cosine"
):
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
    new_threshold = check_new_threshold(new_label, new_threshold)
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
            lab = python_value(lab)
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
    truth = check_labels("query_labels", query_labels)
    if len(predicted_labels) != truth.shape[0]:
        raise ValueError(
            "`predicted_labels` must have one list per query. "
            f"Received: {len(predicted_labels)} lists for {truth.shape[0]} queries"
        )
    total = 0.0
    for t, preds in zip(truth, predicted_labels):
        t = python_value(t)
        for i, p in enumerate(list(preds)[:k]):
            p = python_value(p)
            if p == t:
                total += 1.0 / (i + 1)
                break
    return total / truth.shape[0]


def _check_ranked(name, query_labels, neighbor_labels, k):
    query_labels = check_labels("query_labels", query_labels)
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
    q = check_embeddings("query_embeddings", query_embeddings)
    ql = check_labels("query_labels", query_labels, q.shape[0], "query_embeddings")
    if (gallery_embeddings is None) != (gallery_labels is None):
        raise ValueError(
            "`gallery_embeddings` and `gallery_labels` must be given together. Received: "
            f"gallery_embeddings is None: {gallery_embeddings is None}, "
            f"gallery_labels is None: {gallery_labels is None}"
        )
    if gallery_embeddings is None:
        return q, ql, q, ql, True
    g = check_embeddings("gallery_embeddings", gallery_embeddings)
    gl = check_labels("gallery_labels", gallery_labels, g.shape[0], "gallery_embeddings")
    check_same_dim("query_embeddings", q, "gallery_embeddings", g)
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
    ks = check_int_sequence("ks", ks, minimum=1)
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
        q,
        g,
        k=depth,
        metric=metric,
        exclude_self=self_search,
        max_block_bytes=max_block_bytes,
        backend=backend,
    )
    nl = gl[indices]
    out = {"precision@1": precision_at_k(ql, nl, 1)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ql, nl, k)
    if np.any(num_relevant > 0):
        out["map@r"] = map_at_r(ql, nl, num_relevant)
    else:
        out["map@r"] = float("nan")
    truth = [
        lab if count_of.get(lab, 0) - (1 if self_search else 0) > 0 else new_label
        for lab in ql.tolist()
    ]
    new_threshold = check_new_threshold(new_label, new_threshold)
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
            v, i = drop_own_index(
                *nearest_neighbors(
                    q[pending],
                    g,
                    k=kk,
                    metric=metric,
                    max_block_bytes=max_block_bytes,
                    backend=backend,
                ),
                pending,
            )
            v, i = v[:, :d], i[:, :d]
        else:
            v, i = nearest_neighbors(
                q[pending], g, k=d, metric=metric, max_block_bytes=max_block_bytes, backend=backend
            )
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
    dtype = common_dtype(q, g)
    q, g = q.astype(dtype, copy=False), g.astype(dtype, copy=False)
    common = 0  # Euclidean: distances are computed on rows scaled by 2^-common (exact)
    if metric == "cosine":
        q, g = normalize_rows(q), normalize_rows(g)
    else:
        common = global_exponent(q, g)
        q, g = np.ldexp(q, -common).astype(dtype), np.ldexp(g, -common).astype(dtype)
    if thresholds is None:
        if metric == "cosine":
            thresholds = np.linspace(-1.0, 1.0, 101)
        else:
            span = np.sqrt(np.max(np.sum(q.astype(np.float64) ** 2, 1))) + np.sqrt(
                np.max(np.sum(g.astype(np.float64) ** 2, 1))
            )
            thresholds = np.linspace(0.0, np.ldexp(span, common), 101)
    thresholds = check_float_array("thresholds", thresholds, "a 1-D array of numbers", "1-D array")
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
    true_size = (
        np.array([np.count_nonzero(gl == lab) for lab in ql.tolist()], dtype=np.float64)
        if not self_search
        else None
    )
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
        s = score_block(q[r0:r1], g, metric, g_sq)
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
        hc = np.bincount(
            flat, weights=same.reshape(-1).astype(np.float64), minlength=nr * (n_t + 1)
        ).reshape(nr, n_t + 1)
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


def match_f1(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    threshold=0.5,
    metric="cosine",
    include_self=True,
    max_block_bytes=256 * 2**20,
):
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
    out = match_f1_sweep(
        query_embeddings,
        query_labels,
        gallery_embeddings,
        gallery_labels,
        thresholds=[threshold],
        metric=metric,
        include_self=include_self,
        max_block_bytes=max_block_bytes,
    )
    return out["best_f1"]


__all__ = [
    "precision_at_k",
    "recall_at_k",
    "map_at_r",
    "map_at_k",
    "predict_labels",
    "retrieval_metrics",
    "match_f1",
    "match_f1_sweep",
]
