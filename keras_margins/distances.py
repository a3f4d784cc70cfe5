"""Pairwise distance matrices and label masks, shared by the metric-learning losses.

Everything here computes in float32 whatever the input dtype, uses ``keras.ops`` only and needs
``O(B^2)`` memory for a batch of ``B`` embeddings.
"""

import numpy as np
from keras import ops

from keras_margins.ops import (  # noqa: F401  safe_sqrt and SQRT_FLOOR are part of this module's API
    SQRT_FLOOR,
    power_of_two_scale,
    relu,
    row_normalize,
    safe_sqrt,
    zero_diagonal,
)

#: The names accepted by :func:`pairwise_distance` (besides a callable).
DISTANCE_METRICS = ("L2", "squared-L2", "angular")


def _scaled_rows(x):
    """``(u, s)`` with ``x = s * u``, ``s`` a power of two near the batch's largest ``|x|``."""
    s = power_of_two_scale(ops.max(ops.abs(x), initial=0.0))
    return x / s, s


def _rescale(d, factor, square=False):
    """``d * factor`` (``d * factor^2`` with ``square``), skipped by a ``cond`` when it is 1.

    The ``cond`` also materializes ``d``: multiplied in place, XLA fuses the whole elementwise
    distance chain into each of the mining's consumers and the semi-hard loss ran ~1.7x slower
    (B = 1024, CPU).
    """
    scaled = (lambda: (d * factor) * factor) if square else (lambda: d * factor)
    return ops.cond(ops.equal(factor, 1.0), lambda: d, scaled)


def _squared_l2_unit(u):
    """Pairwise ``||u_i - u_j||^2`` by the expansion, clipped at 0, zero diagonal (NaN kept)."""
    sq = ops.sum(ops.square(u), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(u, ops.transpose(u))
    return zero_diagonal(relu(d2))


def squared_l2_distance(embeddings):
    """Pairwise squared Euclidean distances ``||x_i - x_j||^2``, float32 ``(B, B)``.

    Computed as ``s^2 ||u_i - u_j||^2`` with ``x = s u`` (``s`` a power of two near the batch's
    largest ``|x|``) and ``||u_i||^2 + ||u_j||^2 - 2 u_i . u_j`` (``O(B^2)`` memory), clipped at 0
    (the expansion can round slightly below zero) with an exact zero diagonal. The result
    overflows to inf only where the true squared distance exceeds float32's range (~3.4e38). A
    NaN (or inf) anywhere in the batch makes the whole matrix NaN.
    """
    u, s = _scaled_rows(ops.cast(embeddings, "float32"))
    return _rescale(_squared_l2_unit(u), s, square=True)


def l2_distance(embeddings):
    """Pairwise Euclidean distances ``||x_i - x_j||``, float32 ``(B, B)``, safe at zero.

    Scale-invariant over the whole float32 range (``s ||u_i - u_j||`` with ``x = s u``, see
    :func:`squared_l2_distance`). A NaN (or inf) anywhere in the batch makes the whole matrix
    NaN.
    """
    u, s = _scaled_rows(ops.cast(embeddings, "float32"))
    return _rescale(safe_sqrt(_squared_l2_unit(u)), s)


def angular_distance(embeddings):
    """Pairwise angular distances ``1 - cos(x_i, x_j)``, float32 ``(B, B)``.

    Embeddings are L2-normalized first, whatever their magnitude (each row is rescaled by a
    power of two of its own max-abs before normalizing); an all-zero embedding stays zero, so its
    distance to everything is 1. The result is clipped at 0 and the diagonal is exactly 0.
    """
    x = row_normalize(ops.cast(embeddings, "float32"), axis=1)
    d = 1.0 - ops.matmul(x, ops.transpose(x))
    return zero_diagonal(relu(d))


def check_distance_metric(distance_metric):
    """Validate ``distance_metric`` (one of :data:`DISTANCE_METRICS` or a callable)."""
    if callable(distance_metric):
        return distance_metric
    if not isinstance(distance_metric, str) or distance_metric not in DISTANCE_METRICS:
        hint = _METRIC_HINTS.get(str(distance_metric).lower().replace("_", ""), "")
        raise ValueError(
            f"`distance_metric` must be one of {list(DISTANCE_METRICS)} or a callable{hint}. "
            f"Received: distance_metric={distance_metric!r}"
        )
    return distance_metric


# The names other APIs use for the same distances (PairDistance's `metric`, scikit-learn,
# older tensorflow-addons), named in the error message rather than accepted silently.
_METRIC_HINTS = {
    "euclidean": " ('euclidean' is 'L2' here)",
    "l2": " (names are case-sensitive: 'L2')",
    "sqeuclidean": " ('sqeuclidean' is 'squared-L2' here)",
    "squaredl2": " (names are case-sensitive: 'squared-L2')",
    "squared-l2": " (names are case-sensitive: 'squared-L2')",
    "cosine": " (1 - cosine similarity is 'angular' here)",
}


def pairwise_distance(embeddings, distance_metric="L2"):
    """Pairwise distance matrix of a batch of embeddings, float32 ``(B, B)``.

    Args:
        embeddings: Tensor ``(B, D)`` of any float dtype (float16 and bfloat16 are cast to
            float32 first).
        distance_metric: ``"L2"`` (Euclidean, with a safe square root), ``"squared-L2"``,
            ``"angular"`` (``1 -`` cosine similarity) or a callable taking the float32
            ``(B, D)`` embeddings and returning a ``(B, B)`` distance matrix. Defaults to
            ``"L2"``.

    Returns:
        float32 tensor ``(B, B)``.

    Examples:

        >>> import numpy as np
        >>> import keras_margins as km
        >>> x = np.array([[0.0, 0.0], [3.0, 4.0]], dtype="float32")
        >>> np.asarray(km.distances.pairwise_distance(x)).tolist()
        [[0.0, 5.0], [5.0, 0.0]]
    """
    distance_metric = check_distance_metric(distance_metric)
    if callable(distance_metric):
        return ops.cast(distance_metric(ops.cast(embeddings, "float32")), "float32")
    if distance_metric == "L2":
        return l2_distance(embeddings)
    if distance_metric == "squared-L2":
        return squared_l2_distance(embeddings)
    return angular_distance(embeddings)


def _static_rank(x):
    shape = getattr(x, "shape", None)
    return None if shape is None else len(shape)


def check_labels_and_embeddings(labels, embeddings, labels_name="y_true", embeddings_name="y_pred"):
    """Check the static shapes of integer labels ``(B,)``/``(B, 1)`` and embeddings ``(B, D)``.

    Raises ``ValueError`` naming the argument and the shape received when a rank is wrong or the
    two batch sizes differ; dimensions unknown at trace time are not checked. Returns
    ``(labels, embeddings)`` as tensors, the labels flattened to ``(B,)``.
    """
    embeddings = ops.convert_to_tensor(embeddings)
    if isinstance(labels, (list, tuple)):
        labels = np.asarray(labels)
    kind = getattr(getattr(labels, "dtype", None), "kind", None)  # NumPy: U/S/O are not numbers
    if kind in ("U", "S", "O") or "string" in str(getattr(labels, "dtype", "")):
        raise TypeError(
            f"`{labels_name}` must hold numeric class labels. "
            f"Received: {labels_name} with dtype {labels.dtype}"
        )
    labels = ops.convert_to_tensor(labels)
    if len(embeddings.shape) != 2:
        raise ValueError(
            f"`{embeddings_name}` must be a batch of embeddings of shape (batch_size, dim). "
            f"Received: {embeddings_name}.shape={tuple(embeddings.shape)}"
        )
    shape = tuple(labels.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, None))):
        raise ValueError(
            f"`{labels_name}` must be class labels of shape (batch_size,) or (batch_size, 1). "
            f"Received: {labels_name}.shape={shape}"
        )
    b_labels, b_emb = shape[0], embeddings.shape[0]
    if b_labels is not None and b_emb is not None and b_labels != b_emb:
        raise ValueError(
            f"`{labels_name}` and `{embeddings_name}` must have the same batch size. "
            f"Received: {labels_name}.shape={shape}, "
            f"{embeddings_name}.shape={tuple(embeddings.shape)}"
        )
    return flatten_labels(labels), embeddings


def labels_not_class_ids(labels):
    """A scalar bool tensor: true where float ``labels`` hold a value that is not a class id.

    The package's one label rule (see ``keras_margins._validation.normalize_class_labels``): a
    float label must hold an integer exactly, so ``3.0`` is a label and ``1.6``, NaN and inf are
    not. Integer labels are always class ids here (the metric losses compare labels only for
    equality). The losses turn a true value into a NaN loss, never a plausible number.
    """
    if "float" not in str(labels.dtype):
        return ops.convert_to_tensor(False)
    labels = ops.cast(labels, "float32") if "16" in str(labels.dtype) else labels
    return ops.logical_not(
        ops.all(ops.logical_and(ops.isfinite(labels), ops.floor(labels) == labels))
    )


def flatten_labels(labels):
    """Labels ``(B,)`` or ``(B, 1)`` as a ``(B,)`` tensor (dtype unchanged)."""
    labels = ops.convert_to_tensor(labels)
    return ops.reshape(labels, (-1,))


def label_masks(labels):
    """Positive and negative pair masks from integer labels.

    Args:
        labels: Labels ``(B,)`` or ``(B, 1)`` (integers, or floats holding integers).

    Returns:
        ``(positive, negative)``: boolean ``(B, B)`` tensors. ``positive[i, j]`` is true when
        ``i != j`` and the labels are equal; ``negative[i, j]`` when the labels differ.

    Examples:

        >>> import numpy as np
        >>> import keras_margins as km
        >>> pos, neg = km.distances.label_masks(np.array([0, 0, 1]))
        >>> np.asarray(pos).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """
    labels = flatten_labels(labels)
    same = ops.equal(labels[:, None], labels[None, :])
    n = ops.shape(labels)[0]
    positive = ops.logical_and(same, ops.logical_not(ops.eye(n, dtype="bool")))
    return positive, ops.logical_not(same)


__all__ = [
    "DISTANCE_METRICS",
    "angular_distance",
    "check_labels_and_embeddings",
    "l2_distance",
    "label_masks",
    "pairwise_distance",
    "safe_sqrt",
    "squared_l2_distance",
]
