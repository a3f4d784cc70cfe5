"""Plots of evaluation results: ROC, CMC, score histograms, features on the circle / sphere.

matplotlib is an optional dependency (``pip install matplotlib``, or the ``plots`` extra from
a clone: ``pip install -e ".[plots]"``); it is imported only when a plot is drawn. Every
function returns the matplotlib ``Figure`` and, with ``path``, also saves it there (format from
the extension). Pass ``ax`` to draw into an existing axes instead of a new figure.
"""

import numpy as np

from keras_margins._validation import check_int


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "keras_margins.plots needs matplotlib, which is not installed. Install it with "
            "`pip install matplotlib` (or, from a clone of keras_margins, "
            '`pip install -e ".[plots]"`).'
        ) from error
    return plt


def _figure(ax, projection=None, figsize=(5.0, 4.0)):
    plt = _pyplot()
    if ax is not None:
        return ax.figure, ax
    fig = plt.figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1, projection=projection)
    return fig, ax


def _finish(fig, path):
    if path is not None:
        fig.savefig(path, bbox_inches="tight")
    return fig


def _as_1d(name, values):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values) | np.isinf(values)):
        raise ValueError(
            f"`{name}` must be a non-empty array of numbers. Received: {name}={values}"
        )
    return values


def plot_roc(far, tar=None, label=None, ax=None, path=None, mark_fars=True):
    """ROC curve with the false accept rate on a log scale.

    Points with ``FAR = 0`` cannot be drawn on a log axis and are left out; the curve starts at
    the smallest nonzero FAR (``1 / num_impostor`` at best).

    Args:
        far: A :class:`keras_margins.VerificationReport`, or the FAR array of
            :func:`keras_margins.roc_curve`.
        tar: The TAR array (when ``far`` is an array). Defaults to ``None``.
        label: Legend label. Defaults to ``None`` (the AUC when a report is given).
        ax: Axes to draw into. Defaults to ``None`` (a new figure).
        path: File to save the figure to. Defaults to ``None``.
        mark_fars: With a report, mark its TAR@FAR points. Defaults to ``True``.

    Returns:
        The matplotlib ``Figure``.

    Examples:

        >>> import keras_margins as km
        >>> fig = km.plots.plot_roc(*km.roc_curve([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0])[:2])
        >>> fig.axes[0].get_xscale()
        'log'
    """
    report = None
    if tar is None:
        report = far
        if not hasattr(report, "far"):
            raise ValueError(
                "`tar` is required unless `far` is a VerificationReport. "
                f"Received: far of type {type(far).__name__}, tar=None"
            )
        far, tar = report.far, report.tar
        if label is None:
            label = f"AUC = {report.auc:.4f}"
    far, tar = _as_1d("far", far), _as_1d("tar", tar)
    if far.shape != tar.shape:
        raise ValueError(
            f"`far` and `tar` must have the same length. Received: {far.size} and {tar.size}"
        )
    keep = far > 0
    fig, ax = _figure(ax)
    ax.plot(far[keep], tar[keep], label=label)
    if report is not None and mark_fars and report.tar_at_far:
        fs = np.array(list(report.tar_at_far))
        ax.plot(fs, [report.tar_at_far[f] for f in report.tar_at_far], "o", label="TAR@FAR")
    ax.set_xscale("log")
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_ylim(0.0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("ROC")
    if label is not None:
        ax.legend(loc="lower right")
    return _finish(fig, path)


def plot_cmc(ranks, cmc=None, label=None, ax=None, path=None):
    """Cumulative match characteristic: identification rate against rank.

    Args:
        ranks: Ranks ``1..R``, or the ``(ranks, cmc)`` tuple of :func:`keras_margins.cmc_curve`.
        cmc: Identification rate at each rank. Defaults to ``None`` (taken from ``ranks``).
        label: Legend label. Defaults to ``None``.
        ax: Axes to draw into. Defaults to ``None``.
        path: File to save the figure to. Defaults to ``None``.

    Returns:
        The matplotlib ``Figure``.

    Examples:

        >>> import keras_margins as km
        >>> fig = km.plots.plot_cmc([1, 2, 3], [0.5, 0.9, 1.0])
        >>> fig.axes[0].get_xlabel()
        'Rank'
    """
    if cmc is None:
        ranks, cmc = ranks
    ranks, cmc = _as_1d("ranks", ranks), _as_1d("cmc", cmc)
    if ranks.shape != cmc.shape:
        raise ValueError(
            f"`ranks` and `cmc` must have the same length. Received: {ranks.size} and {cmc.size}"
        )
    fig, ax = _figure(ax)
    ax.plot(ranks, cmc, marker="." if ranks.size <= 50 else None, label=label)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    ax.set_ylim(0.0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.set_title("CMC")
    if label is not None:
        ax.legend(loc="lower right")
    return _finish(fig, path)


def plot_score_histogram(scores, issame=None, threshold=None, bins=50, ax=None, path=None):
    """Histograms of genuine and impostor pair scores, with an optional threshold line.

    Args:
        scores: A :class:`keras_margins.VerificationReport` (its scores, labels and best
            threshold are used), or pair scores (cosine similarities or distances).
        issame: Booleans, ``True`` for genuine pairs (when ``scores`` is an array).
            Defaults to ``None``.
        threshold: Vertical line to draw. Defaults to ``None`` (the report's best threshold).
        bins: Number of bins shared by both histograms. Defaults to ``50``.
        ax: Axes to draw into. Defaults to ``None``.
        path: File to save the figure to. Defaults to ``None``.

    Returns:
        The matplotlib ``Figure``.

    Examples:

        >>> import keras_margins as km
        >>> fig = km.plots.plot_score_histogram([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], bins=4)
        >>> len(fig.axes[0].patches)
        8
    """
    xlabel = "Score"
    if issame is None:
        report = scores
        if not hasattr(report, "scores"):
            raise ValueError(
                "`issame` is required unless `scores` is a VerificationReport. "
                f"Received: scores of type {type(scores).__name__}, issame=None"
            )
        scores, issame = report.scores, report.issame
        threshold = report.best_threshold if threshold is None else threshold
        xlabel = "Cosine similarity" if report.metric == "cosine" else "Euclidean distance"
    scores = _as_1d("scores", scores)
    issame = np.asarray(issame).astype(bool).reshape(-1)
    if issame.shape != scores.shape:
        raise ValueError(
            f"`issame` must have one entry per score ({scores.size}). "
            f"Received: issame with length {issame.size}"
        )
    bins = check_int("bins", bins, minimum=1)
    edges = np.histogram_bin_edges(scores, bins=bins)
    fig, ax = _figure(ax)
    ax.hist(scores[issame], bins=edges, alpha=0.6, density=True, label="genuine")
    ax.hist(scores[~issame], bins=edges, alpha=0.6, density=True, label="impostor")
    if threshold is not None:
        ax.axvline(float(threshold), color="k", linestyle="--", label="threshold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Density")
    ax.set_title("Genuine vs impostor scores")
    ax.legend()
    return _finish(fig, path)


_DEFAULT = object()


def plot_features_on_sphere(
    embeddings,
    labels,
    centers=None,
    ax=None,
    path=None,
    max_points=2000,
    seed=0,
    class_names=None,
    title=_DEFAULT,
):
    """Normalized features per class on the unit circle (2-D) or sphere (3-D).

    The figure of the margin papers: each embedding is scaled to unit length and drawn in its
    class colour; each class-centre direction is drawn as a line from the origin to the unit
    sphere (without ``centers``: each class's mean feature direction, the only "centre" that
    classes the head never saw have). Train with a 2- or 3-dimensional embedding to make one,
    or project a wider one (PCA). The legend sits outside the axes, on the right.

    Args:
        embeddings: ``(num_samples, D)`` with ``D`` in ``{2, 3}``.
        labels: ``(num_samples,)`` integer classes.
        centers: ``(num_classes, D)`` class-centre directions, row ``c`` for class ``c``; for a
            margin head, ``keras.ops.convert_to_numpy(head.kernel).T`` (one sub-centre). Defaults
            to ``None``: the mean direction of each class's features.
        ax: Axes to draw into (a 3-D axes for ``D = 3``). Defaults to ``None``.
        path: File to save the figure to. Defaults to ``None``.
        max_points: Draw at most this many points (a seeded subsample). Defaults to ``2000``.
        seed: Seed of the subsample. Defaults to ``0``.
        class_names: Legend names: a sequence indexed by class id or a mapping from class id
            to name, covering every class in ``labels`` (a sequence needs labels ``>= 0``).
            Defaults to ``None`` (the class ids).
        title: Axes title; ``None`` for none. Defaults to "Normalized features and class
            centres" with ``centers``, else "Normalized features and class mean directions".

    Returns:
        The matplotlib ``Figure``.

    Reference:
        Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017
        (figure of features on the sphere); Deng et al., "ArcFace", CVPR 2019.

    Examples:

        >>> import numpy as np
        >>> import keras_margins as km
        >>> x = np.array([[1.0, 0.1], [2.0, -0.1], [-0.1, 1.0]])
        >>> fig = km.plots.plot_features_on_sphere(x, [0, 0, 1])
        >>> len(fig.axes[0].collections)
        2
        >>> fig = km.plots.plot_features_on_sphere(x, [0, 0, 1], class_names=["cat", "dog"])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        ['cat', 'dog']
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] not in (2, 3) or x.shape[0] == 0:
        raise ValueError(
            "`embeddings` must have shape (num_samples, 2) or (num_samples, 3). "
            f"Received: embeddings with shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("`embeddings` must be finite. Received: NaN or infinite values")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(
            f"`labels` must have one entry per embedding ({x.shape[0]}). "
            f"Received: labels with length {labels.shape[0]}"
        )
    max_points = check_int("max_points", max_points, minimum=1)
    d = x.shape[1]
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes = np.unique(labels)
    names = _legend_names(classes, class_names)
    has_centers = centers is not None
    if centers is None:
        centers = np.stack([unit[labels == c].mean(axis=0) for c in classes])
        center_classes = classes
    else:
        centers = np.asarray(centers, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != d:
            raise ValueError(
                f"`centers` must have shape (num_classes, {d}). "
                f"Received: centers with shape {centers.shape}"
            )
        center_classes = np.arange(centers.shape[0])
    centers = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    if x.shape[0] > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        unit, labels = unit[pick], labels[pick]
    plt = _pyplot()
    fig, ax = _figure(ax, projection="3d" if d == 3 else None, figsize=(5.0, 5.0))
    cmap = plt.get_cmap("tab10" if classes.size <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    if d == 2:
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t), np.sin(t), color="0.8", linewidth=1)
        for c in classes:
            pts = unit[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=8, color=colour[c], label=names[c])
        for c, w in zip(center_classes, centers):
            ax.plot([0, w[0]], [0, w[1]], color=colour.get(c, "k"), linewidth=2)
        ax.set_aspect("equal")
        ax.set_xlim(-1.1, 1.1)
        ax.set_ylim(-1.1, 1.1)
    else:
        u, v = np.mgrid[0 : 2 * np.pi : 24j, 0 : np.pi : 12j]
        ax.plot_wireframe(
            np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", linewidth=0.5
        )
        for c in classes:
            pts = unit[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=6, color=colour[c], label=names[c])
        for c, w in zip(center_classes, centers):
            ax.plot([0, w[0]], [0, w[1]], [0, w[2]], color=colour.get(c, "k"), linewidth=2)
        ax.set_box_aspect((1, 1, 1))
    if d == 3:
        # Three ticks per axis: the default five overlap where the axes meet.
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_ticks([-1.0, 0.0, 1.0])
        ax.tick_params(labelsize=7, pad=0)
    if title is _DEFAULT:
        title = (
            "Normalized features and class centres"
            if has_centers
            else "Normalized features and class mean directions"
        )
    if title is not None:
        ax.set_title(title)
    if classes.size <= 20:
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.02 if d == 2 else 1.08, 1.0),
            fontsize="small",
            markerscale=2,
            frameon=False,
        )
    return _finish(fig, path)


def _legend_names(classes, class_names):
    """``{class id: legend text}`` for every class in ``classes``."""
    if class_names is None:
        return {c: str(c) for c in classes}
    if isinstance(class_names, str):
        raise ValueError(
            "`class_names` must be a sequence or a mapping of names, not a string. "
            f"Received: class_names={class_names!r}"
        )
    is_mapping = hasattr(class_names, "keys")
    negative = [
        c.item() if hasattr(c, "item") else c
        for c in classes
        if not is_mapping and isinstance(c, (int, np.integer)) and c < 0
    ]
    if negative:
        raise ValueError(
            "`labels` must be >= 0 when `class_names` is a sequence (a negative label would "
            f"pick a name from the end). Received: labels with {negative}; pass a mapping "
            "from label to name instead"
        )
    missing = []
    names = {}
    for c in classes:
        key = c.item() if hasattr(c, "item") else c
        try:
            names[c] = str(class_names[key])
        except (KeyError, IndexError, TypeError):
            missing.append(key)
    if missing:
        raise ValueError(
            f"`class_names` must name every class in `labels`; it has no entry for {missing}. "
            f"Received: class_names={class_names!r}"
        )
    return names


__all__ = ["plot_roc", "plot_cmc", "plot_score_histogram", "plot_features_on_sphere"]
