"""Kaggle inference helpers: match lists, ranked identities and submission CSV files.

Two formats of the similarity competitions are covered:

* **match sets** (Shopee product matching): every item's prediction is the list of items whose
  cosine similarity with it reaches a threshold, the item itself included, capped at the
  ``max_matches`` nearest ones (Shopee notebooks used k = 50), with at least ``min_matches``
  entries (taking the nearest ones when too few pass the threshold). Submission:
  ``posting_id,matches`` with space-separated ids.
* **ranked identities** (Humpback Whale, Happywhale): each query gets ``k`` distinct gallery
  labels in order of their nearest neighbour, with ``new_label`` (``"new_individual"``)
  inserted where the similarity falls below ``new_threshold``. Submission:
  ``image,predictions``.

Queries are processed ``chunk_size`` rows at a time with :func:`keras_margins.nearest_neighbors`
(itself blocked), and the writers stream rows to the file, so 70 000 items need memory for one
chunk of neighbours only, never the ``N x N`` similarity matrix.
"""

import csv
import os

import numpy as np

from keras_margins._validation import check_choice, check_float, check_int
from keras_margins.evaluation._common import (
    METRICS,
    check_embeddings,
    check_new_threshold,
    check_same_dim,
    python_value,
)
from keras_margins.evaluation.retrieval import predict_labels
from keras_margins.evaluation.search import drop_own_index, nearest_neighbors


def _check_ids(name, ids, length, length_name):
    if ids is None:
        return np.arange(length)
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"`{name}` must be a sequence of ids. Received: {name}={ids!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != length:
        raise ValueError(
            f"`{name}` must be 1-D with one entry per row of `{length_name}` ({length}). "
            f"Received: {name} with shape {ids.shape}"
        )
    return ids


def _passes(values, threshold, metric):
    return values >= threshold if metric == "cosine" else values <= threshold


def _iter_matches(
    embeddings,
    ids,
    threshold,
    max_matches,
    min_matches,
    metric,
    gallery_embeddings,
    gallery_ids,
    chunk_size,
    max_block_bytes,
):
    """Yield ``(query_index, [ids])`` in query order, ``chunk_size`` queries per search."""
    check_choice("metric", metric, METRICS)
    q = check_embeddings("embeddings", embeddings)
    self_search = gallery_embeddings is None
    if self_search:
        if gallery_ids is not None:
            raise ValueError(
                "`gallery_ids` needs `gallery_embeddings`. Received: gallery_embeddings=None"
            )
        g, g_ids = q, _check_ids("ids", ids, q.shape[0], "embeddings")
    else:
        g = check_embeddings("gallery_embeddings", gallery_embeddings)
        check_same_dim("embeddings", q, "gallery_embeddings", g)
        g_ids = _check_ids("gallery_ids", gallery_ids, g.shape[0], "gallery_embeddings")
        if ids is not None:
            _check_ids("ids", ids, q.shape[0], "embeddings")
    threshold = check_float("threshold", threshold)
    max_matches = check_int("max_matches", max_matches, minimum=1)
    min_matches = check_int("min_matches", min_matches, minimum=0, maximum=max_matches)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    ng = g.shape[0]
    # With self-search the item itself is always the first match and counts in both bounds.
    others = min(max_matches - 1, ng - 1) if self_search else min(max_matches, ng)
    for r0 in range(0, q.shape[0], chunk_size):
        r1 = min(q.shape[0], r0 + chunk_size)
        if others == 0:
            values = np.empty((r1 - r0, 0))
            indices = np.empty((r1 - r0, 0), dtype=np.int64)
        elif self_search:
            # One extra neighbour, then drop the query's own index (or, if exact duplicates
            # with smaller indices pushed it out, the last one).
            values, indices = drop_own_index(
                *nearest_neighbors(
                    q[r0:r1], g, k=others + 1, metric=metric, max_block_bytes=max_block_bytes
                ),
                np.arange(r0, r1),
            )
        else:
            values, indices = nearest_neighbors(
                q[r0:r1], g, k=others, metric=metric, max_block_bytes=max_block_bytes
            )
        ok = _passes(values, threshold, metric)
        n_pass = ok.sum(axis=1)
        for row in range(r1 - r0):
            own = [python_value(g_ids[r0 + row])] if self_search else []
            # Neighbours are sorted, so the ones within the threshold are a prefix.
            count = max(int(n_pass[row]), min_matches - len(own))
            count = min(count, indices.shape[1])
            yield r0 + row, own + [python_value(v) for v in g_ids[indices[row, :count]]]


def match_predictions(
    embeddings,
    ids=None,
    threshold=0.5,
    max_matches=50,
    min_matches=1,
    metric="cosine",
    gallery_embeddings=None,
    gallery_ids=None,
    chunk_size=4096,
    max_block_bytes=64 * 2**20,
):
    """Predicted match lists under a similarity threshold, with a neighbour cap (Shopee).

    Without a gallery the items are matched among themselves: item ``i``'s list starts with
    ``ids[i]`` itself, followed by the other items ``j`` with ``cos(x_i, x_j) >= threshold``
    (``|x_i - x_j| <= threshold`` for Euclidean) in decreasing similarity, ties going to the
    smaller index; only the ``max_matches - 1`` nearest others are considered (the list has at
    most ``max_matches`` entries, self included), and if fewer than ``min_matches`` entries
    pass, the nearest ones are added until there are ``min_matches`` (Shopee's "at least two"
    trick is ``min_matches=2``). With a gallery the same rule applies to gallery items, with no
    self entry.

    Args:
        embeddings: ``(N, D)`` embeddings of the items (the queries).
        ids: Their ids (e.g. ``posting_id``), length ``N``. Defaults to ``None``: row indices.
        threshold: Cosine similarity (or Euclidean distance) threshold. Defaults to ``0.5``.
        max_matches: Largest list length (self included). Defaults to ``50``.
        min_matches: Smallest list length, in ``[0, max_matches]`` (self included).
            Defaults to ``1``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        gallery_embeddings: ``(M, D)`` items to match against instead of the queries
            themselves. Defaults to ``None``.
        gallery_ids: Ids of the gallery items. Defaults to ``None``: gallery row indices.
        chunk_size: Queries searched at a time. Defaults to ``4096``.
        max_block_bytes: Memory bound of one block of scores (see
            :func:`keras_margins.nearest_neighbors`). Defaults to 64 MiB.

    Returns:
        A list of ``N`` lists of ids.

    Example:

        >>> import numpy as np, keras_margins as km
        >>> x = np.array([[1, 0], [0.99, 0.1], [0, 1]], dtype="float32")
        >>> km.match_predictions(x, ["a", "b", "c"], threshold=0.9)
        [['a', 'b'], ['b', 'a'], ['c']]
        >>> km.match_predictions(x, ["a", "b", "c"], threshold=0.9, min_matches=2)[2]
        ['c', 'b']
    """
    out = []
    for _, matches in _iter_matches(
        embeddings,
        ids,
        threshold,
        max_matches,
        min_matches,
        metric,
        gallery_embeddings,
        gallery_ids,
        chunk_size,
        max_block_bytes,
    ):
        out.append(matches)
    return out


def _iter_identities(
    query_embeddings,
    gallery_embeddings,
    gallery_labels,
    k,
    new_label,
    new_threshold,
    metric,
    chunk_size,
    max_block_bytes,
):
    check_choice("metric", metric, METRICS)
    q = check_embeddings("query_embeddings", query_embeddings)
    g = check_embeddings("gallery_embeddings", gallery_embeddings)
    check_same_dim("query_embeddings", q, "gallery_embeddings", g)
    labels = _check_ids("gallery_labels", gallery_labels, g.shape[0], "gallery_embeddings")
    k = check_int("k", k, minimum=1)
    new_threshold = check_new_threshold(new_label, new_threshold)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    ng = g.shape[0]
    start_depth = min(ng, max(4 * k, 32))
    for r0 in range(0, q.shape[0], chunk_size):
        r1 = min(q.shape[0], r0 + chunk_size)
        preds = [None] * (r1 - r0)
        todo = np.arange(r1 - r0)
        depth = start_depth
        while todo.size:
            values, indices = nearest_neighbors(
                q[r0 + todo], g, k=depth, metric=metric, max_block_bytes=max_block_bytes
            )
            nl = labels[indices]
            rows = predict_labels(
                values, nl, k=k, new_label=new_label, new_threshold=new_threshold, metric=metric
            )
            # A row is final once its neighbours hold k distinct labels (the k-th prediction
            # is then decided inside the list) or the whole gallery was searched.
            complete = np.array([len(set(row.tolist())) >= k for row in nl]) | (depth == ng)
            for pos in np.flatnonzero(complete):
                preds[todo[pos]] = rows[pos]
            todo = todo[~complete]
            depth = min(ng, depth * 4)
        for row, pred in enumerate(preds):
            yield r0 + row, pred


def identity_predictions(
    query_embeddings,
    gallery_embeddings,
    gallery_labels,
    k=5,
    new_label="new_individual",
    new_threshold=None,
    metric="cosine",
    chunk_size=4096,
    max_block_bytes=64 * 2**20,
):
    """Top-``k`` distinct gallery labels per query, with a "new individual" guess (Happywhale).

    The gallery is ranked by similarity to each query; labels are read in that order and kept
    the first time they appear (:func:`keras_margins.predict_labels`), and ``new_label`` is
    inserted before the first neighbour whose similarity is below ``new_threshold`` (distance
    above it for Euclidean). Unlike a fixed neighbour depth, the search for a query is widened
    until its neighbours hold ``k`` distinct labels (or the gallery is exhausted), so the
    result equals :func:`keras_margins.predict_labels` on the fully sorted gallery.

    Args:
        query_embeddings: ``(N, D)``.
        gallery_embeddings: ``(M, D)`` embeddings of the known individuals' images.
        gallery_labels: Their labels, length ``M``.
        k: Predictions per query. Defaults to ``5``.
        new_label: The "new individual" label. Defaults to ``"new_individual"``.
        new_threshold: Similarity (distance) threshold that inserts ``new_label``.
            Defaults to ``None`` (never).
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        chunk_size: Queries searched at a time. Defaults to ``4096``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 64 MiB.

    Returns:
        A list of ``N`` lists of at most ``k`` labels.

    Example:

        >>> import numpy as np, keras_margins as km
        >>> g = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype="float32")
        >>> km.identity_predictions(g[:1], g, ["a", "a", "b"], k=3, new_threshold=0.5)
        [['a', 'new_individual', 'b']]
    """
    return [
        pred
        for _, pred in _iter_identities(
            query_embeddings,
            gallery_embeddings,
            gallery_labels,
            k,
            new_label,
            new_threshold,
            metric,
            chunk_size,
            max_block_bytes,
        )
    ]


def _check_columns(columns):
    if (
        not isinstance(columns, (tuple, list))
        or len(columns) != 2
        or not all(isinstance(c, str) and c for c in columns)
    ):
        raise ValueError(f"`columns` must be two non-empty strings. Received: columns={columns!r}")
    return tuple(columns)


def write_submission(path, ids, predictions, columns=("posting_id", "matches"), sep=" "):
    """Write a Kaggle submission CSV: one row per id, its predictions joined by ``sep``.

    ``predictions`` may be any iterable (a generator is consumed row by row, so the file is
    streamed). Every prediction is written with ``str``.

    Args:
        path: Output file.
        ids: Row ids (e.g. ``posting_id`` or image names).
        predictions: Iterable of lists of predicted ids/labels, one per id.
        columns: The two header names. Defaults to ``("posting_id", "matches")``; Happywhale
            uses ``("image", "predictions")``.
        sep: Separator inside the prediction cell. Defaults to ``" "``.

    Returns:
        The number of rows written.

    Example:

        >>> import os, tempfile, keras_margins as km
        >>> path = os.path.join(tempfile.mkdtemp(), "submission.csv")
        >>> km.write_submission(path, ["a", "b"], [["a", "b"], ["b"]])
        2
        >>> open(path).read().splitlines()
        ['posting_id,matches', 'a,a b', 'b,b']
    """
    columns = _check_columns(columns)
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"`sep` must be a non-empty string. Received: sep={sep!r}")
    ids = list(ids)
    predictions = iter(predictions)
    missing = object()
    count = 0
    with open(os.fspath(path), "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row_id in ids:
            pred = next(predictions, missing)
            if pred is missing:
                break
            if isinstance(pred, (str, bytes)):
                raise ValueError(
                    "`predictions` must hold one list of predictions per id. "
                    f"Received: {pred!r} for id {row_id!r}"
                )
            writer.writerow([python_value(row_id), sep.join(str(python_value(p)) for p in pred)])
            count += 1
    extra = next(predictions, missing) is not missing
    if count != len(ids) or extra:
        raise ValueError(
            f"`predictions` must have one entry per id ({len(ids)}). "
            f"Received: {'more' if extra else count}"
        )
    return count


def write_match_submission(
    path,
    embeddings,
    ids,
    threshold,
    max_matches=50,
    min_matches=1,
    metric="cosine",
    columns=("posting_id", "matches"),
    chunk_size=4096,
    max_block_bytes=64 * 2**20,
):
    """Write a Shopee-style ``posting_id,matches`` submission from embeddings, streamed.

    The match lists are those of :func:`match_predictions` (items matched among themselves,
    each list starting with the item itself), computed ``chunk_size`` rows at a time and
    written as they come.

    Args:
        path: Output CSV file.
        embeddings: ``(N, D)`` test-set embeddings.
        ids: Their ids, length ``N``.
        threshold: Cosine similarity (Euclidean distance) threshold, e.g. the
            ``best_threshold`` of :func:`keras_margins.match_f1_sweep` on a validation fold.
        max_matches: Largest list length. Defaults to ``50``.
        min_matches: Smallest list length. Defaults to ``1``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        columns: Header. Defaults to ``("posting_id", "matches")``.
        chunk_size: Queries per search. Defaults to ``4096``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 64 MiB.

    Returns:
        The number of rows written.

    Example:

        >>> import os, tempfile, numpy as np, keras_margins as km
        >>> x = np.array([[1, 0], [0.99, 0.1], [0, 1]], dtype="float32")
        >>> path = os.path.join(tempfile.mkdtemp(), "submission.csv")
        >>> km.write_match_submission(path, x, ["p1", "p2", "p3"], threshold=0.9)
        3
        >>> open(path).read().splitlines()[1]
        'p1,p1 p2'
    """
    ids = _check_ids("ids", ids, check_embeddings("embeddings", embeddings).shape[0], "embeddings")
    rows = _iter_matches(
        embeddings,
        ids,
        threshold,
        max_matches,
        min_matches,
        metric,
        None,
        None,
        chunk_size,
        max_block_bytes,
    )
    return write_submission(path, ids, (m for _, m in rows), columns=columns)


def write_identity_submission(
    path,
    query_embeddings,
    query_ids,
    gallery_embeddings,
    gallery_labels,
    new_threshold=None,
    new_label="new_individual",
    k=5,
    metric="cosine",
    columns=("image", "predictions"),
    chunk_size=4096,
    max_block_bytes=64 * 2**20,
):
    """Write a Happywhale-style ``image,predictions`` submission from embeddings, streamed.

    The predictions are those of :func:`identity_predictions`, computed ``chunk_size`` queries
    at a time and written as they come.

    Args:
        path: Output CSV file.
        query_embeddings: ``(N, D)`` test-image embeddings.
        query_ids: Their ids (image names), length ``N``.
        gallery_embeddings: ``(M, D)`` embeddings of the training images.
        gallery_labels: Their individual ids, length ``M``.
        new_threshold: Threshold that inserts ``new_label``. Defaults to ``None``.
        new_label: Defaults to ``"new_individual"``.
        k: Predictions per image. Defaults to ``5``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        columns: Header. Defaults to ``("image", "predictions")``.
        chunk_size: Queries per search. Defaults to ``4096``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 64 MiB.

    Returns:
        The number of rows written.
    """
    q = check_embeddings("query_embeddings", query_embeddings)
    query_ids = _check_ids("query_ids", query_ids, q.shape[0], "query_embeddings")
    rows = _iter_identities(
        q,
        gallery_embeddings,
        gallery_labels,
        k,
        new_label,
        new_threshold,
        metric,
        chunk_size,
        max_block_bytes,
    )
    return write_submission(path, query_ids, (p for _, p in rows), columns=columns)


__all__ = [
    "match_predictions",
    "identity_predictions",
    "write_submission",
    "write_match_submission",
    "write_identity_submission",
]
