"""Sub-center ArcFace's cleaning of noisy labels: dominant sub-centres, outliers, a K=1 head."""

import math

import keras
import numpy as np

from keras_margins._validation import check_float, check_int, class_ids
from keras_margins.heads.base import MarginHead
from keras_margins.partial_fc import PartialFC

#: Elements of float64 per chunk of gathered class centres (``rows * K * D``): 32 MiB.
_CHUNK_ELEMENTS = 2**22


class SubCenterCleaning:
    """What :func:`subcenter_cleaning` found: dominant sub-centres, votes, outliers.

    Attributes:
        dominant: int64 ``(C,)``: each class's dominant sub-centre (the most voted one), ``-1``
            for a class without any (finite) sample.
        votes: int64 ``(C, K)``: how many of each class's samples have each sub-centre as their
            closest one (among the class's ``K`` sub-centres).
        cosine: float64 ``(N,)``: each sample's cosine to its class's dominant sub-centre (NaN
            for a non-finite or zero embedding).
        outliers: bool ``(N,)``: ``cosine < cos(threshold)``; a NaN cosine is an outlier too.
        keep: bool ``(N,)``: ``~outliers``, the samples to continue training on.
        empty_classes: int64 array of the classes with no (finite) sample: no dominant
            sub-centre.
        dropped_classes: int64 array of the classes with no kept sample (the empty ones, and
            those whose samples are all outliers); insightface removes these.
        centers: ``(C, D)`` array (the kernel's dtype): each class's dominant sub-centre as
            stored in the head (not normalized), NaN rows for the empty classes.
        threshold: The threshold angle, in degrees.
        labels: int64 ``(N,)``: the class ids used.
    """

    def __init__(self, *, dominant, votes, cosine, threshold, labels, centers, source):
        self.dominant = dominant
        self.votes = votes
        self.cosine = cosine
        self.threshold = threshold
        self.labels = labels
        self.centers = centers
        self.outliers = ~(cosine >= math.cos(math.radians(threshold)))
        self.keep = ~self.outliers
        self.empty_classes = np.flatnonzero(dominant < 0)
        kept_per_class = np.bincount(labels[self.keep], minlength=len(dominant))
        self.dropped_classes = np.flatnonzero(kept_per_class == 0)
        self._source = source

    @property
    def num_classes(self):
        return len(self.dominant)

    def __repr__(self):
        return (
            f"SubCenterCleaning(num_classes={self.num_classes}, "
            f"sub_centers={self.votes.shape[1]}, samples={len(self.cosine)}, "
            f"outliers={int(self.outliers.sum())}, threshold={self.threshold}, "
            f"empty_classes={len(self.empty_classes)}, "
            f"dropped_classes={len(self.dropped_classes)})"
        )

    def to_head(self, drop_classes=False):
        """A head of the same type with ``sub_centers=1`` holding the dominant sub-centres.

        The head has the cleaned head's configuration (scale, margin, ...) but one centre per
        class, the dominant sub-centre as stored (so its cosines are the original head's
        cosines to the dominant sub-centres), and the original head's other state (a step
        counter, running statistics). For a :class:`~keras_margins.PartialFC` the result is a
        ``PartialFC`` with the same ``sample_rate`` and ``seed`` around such a head. The other
        sub-centres are discarded, as insightface does. The new layer gets a fresh name.

        A class without any sample has no dominant sub-centre and is never given an arbitrary
        one: by default this is a ``ValueError``; with ``drop_classes=True`` every class
        without a kept sample (:attr:`dropped_classes`) is removed and the others re-indexed
        in order (insightface's ``drop.py``), and the mapping is returned with the head.

        Args:
            drop_classes: Remove the classes without a kept sample and re-index the others.
                Defaults to ``False``.

        Returns:
            The head; with ``drop_classes=True``, ``(head, class_map)`` where ``class_map``
            (int64 ``(C,)``) is each old class's new id, ``-1`` for a removed class:
            ``class_map[labels[keep]]`` are the labels to train the new head on.
        """
        if not isinstance(drop_classes, bool):
            raise ValueError(
                f"`drop_classes` must be True or False. Received: drop_classes={drop_classes!r}"
            )
        num_classes = self.num_classes
        if drop_classes:
            kept = np.setdiff1d(np.arange(num_classes), self.dropped_classes)
            if len(kept) == 0:
                raise ValueError(
                    "No class has a kept sample: there is nothing to build a head from. "
                    f"Received: threshold={self.threshold}"
                )
        else:
            if len(self.empty_classes):
                shown = self.empty_classes[:10].tolist()
                raise ValueError(
                    f"{len(self.empty_classes)} class(es) had no sample in the data given to "
                    f"subcenter_cleaning, so they have no dominant sub-centre (e.g. {shown}). "
                    "Pass embeddings of every class, or call to_head(drop_classes=True) to "
                    "remove the classes without a kept sample and re-index the others (it "
                    "returns the label mapping too)."
                )
            kept = np.arange(num_classes)
        class_map = np.full(num_classes, -1, dtype=np.int64)
        class_map[kept] = np.arange(len(kept))

        source = self._source
        config = dict(source["head_config"])
        config.pop("name", None)
        config["sub_centers"] = 1
        config["num_classes"] = len(kept)
        if drop_classes:
            # A per-class argument (a list of C values, e.g. per-class margins) keeps the values
            # of the classes kept.
            for key, value in config.items():
                if isinstance(value, (list, tuple)) and len(value) == num_classes:
                    config[key] = [value[i] for i in kept]
        head = source["head_class"].from_config(config)
        centers = self.centers[kept]
        dim = centers.shape[1]
        if source["partial_fc"] is None:
            head.build((None, dim))
            head.kernel.assign(np.ascontiguousarray(centers.T))
            state = [w for w in head.weights if w is not head.kernel]
            out = head
        else:
            out = PartialFC(head, **source["partial_fc"])
            out.build((None, dim))
            out.kernel.assign(centers)
            state = list(head.weights)
        _copy_state(source["state"], state, num_classes, kept)
        return (out, class_map) if drop_classes else out


def _copy_state(values, variables, num_classes, kept):
    """The cleaned head's non-kernel weights into the new head's, per-class ones re-indexed."""
    if len(values) != len(variables):
        raise ValueError(
            f"The new head has {len(variables)} state weights and the cleaned one "
            f"{len(values)}: cannot carry its state over."
        )
    for value, variable in zip(values, variables):
        shape = tuple(variable.shape)
        if value.shape == shape:
            variable.assign(value)
        elif value.ndim and value.shape[0] == num_classes and shape[0] == len(kept):
            variable.assign(value[kept])
        else:
            raise ValueError(
                f"Cannot carry the state weight {variable.path} over: shape {value.shape} in "
                f"the cleaned head, {shape} in the new one."
            )


def _describe(head):
    """``(margin head, centres (C, K, D), source info)`` of a head or a PartialFC."""
    if isinstance(head, PartialFC):
        margin_head, layer = head.head, head
    elif isinstance(head, MarginHead):
        margin_head, layer = head, head
    else:
        raise TypeError(
            "`head` must be a keras_margins margin head (e.g. km.ArcFace(..., sub_centers=3)) or "
            f"a km.PartialFC wrapping one. Received: head={head!r}"
        )
    k = margin_head.sub_centers
    if k == 1:
        raise ValueError(
            "`head` has sub_centers=1: each class has a single centre, so there is nothing to "
            "clean (train with sub_centers > 1, e.g. 3, first). "
            f"Received: head={head.name!r} with sub_centers=1"
        )
    if not layer.built or getattr(layer, "kernel", None) is None:
        hint = (
            " (this head is wrapped by a PartialFC, which holds the centres: pass the PartialFC)"
            if layer.built
            else ""
        )
        raise ValueError(
            f"`head` must be built and trained: it holds no class centres yet{hint}. "
            f"Received: head={head.name!r}"
        )
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    c = margin_head.num_classes
    if isinstance(head, PartialFC):
        centers = kernel.reshape(c, k, -1)  # row c * K + k
        state = [keras.ops.convert_to_numpy(w) for w in margin_head.weights]
        partial_fc = {"sample_rate": head.sample_rate, "seed": head.seed}
    else:
        centers = kernel.T.reshape(c, k, -1)  # column c * K + k
        state = [
            keras.ops.convert_to_numpy(w) for w in margin_head.weights if w is not layer.kernel
        ]
        partial_fc = None
    source = {
        "head_class": type(margin_head),
        "head_config": margin_head.get_config(),
        "state": state,
        "partial_fc": partial_fc,
    }
    return margin_head, centers, source


def _unit(x, axis=-1):
    """Rows divided by their L2 norm in float64; a zero or non-finite row becomes NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return x / np.linalg.norm(x, axis=axis, keepdims=True)


def subcenter_cleaning(head, embeddings, labels, threshold=75.0, batch_size=None):
    """Sub-center ArcFace's cleaning: dominant sub-centres, outliers, and a head to go on with.

    For a head trained with ``K = sub_centers > 1`` sub-centres per class (insightface's
    ``drop.py`` recipe, Deng et al. 2020), with ``x_i`` and ``w_{c,k}`` L2-normalized:

    1. each sample ``i`` of class ``y_i`` votes for its closest sub-centre
       ``argmax_k x_i · w_{y_i,k}`` (among its own class's ``K``);
    2. each class's dominant sub-centre is its most voted one
       ``d_c = argmax_k votes[c, k]`` (the lowest ``k`` on a tie);
    3. a sample is an outlier when its cosine to its class's dominant sub-centre is below
       ``cos(threshold)``: ``x_i · w_{y_i, d_{y_i}} < cos(threshold)``.

    Clean data sits near the dominant sub-centre; mislabelled images gather on the others.
    Train on the kept samples (``result.keep``) with ``result.to_head()``, a ``K = 1`` head
    holding the dominant sub-centres (see :meth:`SubCenterCleaning.to_head`).

    The computation is offline, in float64 NumPy, on the embeddings given (all of a class's
    images, as insightface does, for stable votes). Each sample is compared with its own
    class's ``K`` centres only, in chunks of ``batch_size`` samples: memory is
    ``O(batch_size * K * D)`` for the gathered centres plus ``O(N * K)`` for the cosines; no
    ``(N, C * K)`` matrix is ever built, and the time is ``O(N * K * D)``. A sample whose
    embedding is zero or not finite has a NaN cosine, casts no vote and is an outlier.

    Args:
        head: A built margin head with ``sub_centers > 1`` (``km.ArcFace(..., sub_centers=3)``
            or any other :class:`~keras_margins.heads.MarginHead`), or a
            :class:`~keras_margins.PartialFC` wrapping one.
        embeddings: ``(N, D)`` embeddings (NumPy array or tensor), e.g. from the embedding
            model's ``predict``; they are L2-normalized here.
        labels: ``(N,)`` or ``(N, 1)`` class ids. A label that is not a class id in
            ``[0, num_classes)`` (keras_margins' label rule) is a ``ValueError`` here, since
            the data is at hand.
        threshold: Outlier angle in degrees, in (0, 180). Defaults to 75.0 (insightface's and
            pytorch-metric-learning's default).
        batch_size: Samples per chunk. Defaults to ``None``: as many as keep the gathered
            float64 centres to 32 MiB.

    Returns:
        A :class:`SubCenterCleaning` (``dominant``, ``votes``, ``cosine``, ``outliers``,
        ``keep``, ``empty_classes``, ``dropped_classes``, ``to_head(...)``).

    Example:

        >>> import numpy as np, keras_margins as km
        >>> head = km.ArcFace(num_classes=2, sub_centers=2)
        >>> head.build((None, 2))
        >>> # class 0: sub-centres (1, 0) and (0, 1); class 1: (-1, 0) and (0, -1)
        >>> _ = head.kernel.assign(np.array([[1, 0, -1, 0], [0, 1, 0, -1]], "float32"))
        >>> x = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-1, 0]], "float32")
        >>> result = km.subcenter_cleaning(head, x, [0, 0, 0, 1])
        >>> result.dominant.tolist(), result.outliers.tolist()
        ([0, 0], [False, False, True, False])
        >>> km.subcenter_cleaning(head, x, [0, 0, 0, 1]).to_head().sub_centers
        1

    Reference:
        Deng et al., "Sub-center ArcFace: Boosting Face Recognition by Large-scale Noisy Web
        Faces", ECCV 2020; insightface ``recognition/subcenter_arcface/drop.py``.
    """
    _, centers, source = _describe(head)
    threshold = check_float(
        "threshold",
        threshold,
        low=0.0,
        high=180.0,
        low_open=True,
        high_open=True,
        range_text="(0, 180) degrees",
    )
    num_classes, k, dim = centers.shape
    x = np.asarray(keras.ops.convert_to_numpy(embeddings))
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(
            f"`embeddings` must be of shape (N, {dim}), the embedding size of the head's "
            f"centres. Received: embeddings.shape={x.shape}"
        )
    if x.dtype.kind not in "fiu":
        raise TypeError(f"`embeddings` must be numbers. Received: embeddings of dtype {x.dtype}")
    n = x.shape[0]
    ids = np.asarray(
        keras.ops.convert_to_numpy(class_ids(labels, num_classes, "labels", batch_size=n))
    ).astype(np.int64)
    bad = np.flatnonzero(ids < 0)
    if len(bad):
        raw = np.asarray(keras.ops.convert_to_numpy(labels)).reshape(n, -1)[:, 0]
        raise ValueError(
            f"`labels` must be class ids in [0, {num_classes}): {len(bad)} are not, e.g. "
            f"labels[{bad[0]}]={raw[bad[0]]!r} (positions {bad[:10].tolist()})"
        )
    if batch_size is None:
        batch_size = max(1, _CHUNK_ELEMENTS // (k * dim))
    else:
        batch_size = check_int("batch_size", batch_size, minimum=1)

    cos = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        xs = _unit(x[start:stop].astype(np.float64))
        ws = _unit(centers[ids[start:stop]].astype(np.float64))  # (n, K, D), own class only
        cos[start:stop] = np.einsum("nd,nkd->nk", xs, ws)
    finite = np.all(np.isfinite(cos), axis=1)
    votes = np.bincount(
        ids[finite] * k + np.argmax(cos[finite], axis=1), minlength=num_classes * k
    ).reshape(num_classes, k)
    dominant = np.where(votes.sum(axis=1) > 0, np.argmax(votes, axis=1), -1)
    own = dominant[ids]
    cosine = np.where(own >= 0, cos[np.arange(n), np.maximum(own, 0)], np.nan)
    cosine[~finite] = np.nan
    dominant_centers = centers[np.arange(num_classes), np.maximum(dominant, 0)].copy()
    if dominant_centers.dtype.kind == "f":
        dominant_centers[dominant < 0] = np.nan
    return SubCenterCleaning(
        dominant=dominant.astype(np.int64),
        votes=votes.astype(np.int64),
        cosine=cosine,
        threshold=threshold,
        labels=ids,
        centers=dominant_centers,
        source=source,
    )
