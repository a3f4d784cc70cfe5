"""Pairwise distance matrices and label masks, shared by the metric-learning losses.

Everything here computes in float32 whatever the input dtype, uses ``keras.ops`` only and needs
``O(B^2)`` memory for a batch of ``B`` embeddings.
"""

from keras import ops

from keras_margins.heads.base import l2_normalize

#: The names accepted by :func:`pairwise_distance` (besides a callable).
DISTANCE_METRICS = ("L2", "squared-L2", "angular")

# Floor of a squared distance below which the distance is reported as exactly 0. The derivative
# of sqrt(d2) is 1 / (2 sqrt(d2)): at d2 = 0 (identical embeddings, and always on the diagonal)
# it is infinite, and an infinite factor times the zero derivative of d2 gives NaN. Below the
# floor the value is 0 and the gradient is 0; above it the derivative is bounded by
# 1 / (2 * 1e-6) = 5e5. Distances below 1e-6 are not resolved by the float32 expansion
# ||a||^2 + ||b||^2 - 2 a.b anyway (its rounding error is ~1e-7 * ||a||^2).
SQRT_FLOOR = 1e-12


def safe_sqrt(x):
    """``sqrt(x)`` for ``x >= 0`` with a finite gradient everywhere.

    Returns 0 (with a zero gradient) where ``x <= SQRT_FLOOR`` and ``sqrt(x)`` elsewhere, so
    zero distances (identical embeddings) give finite gradients.
    """
    keep = x > SQRT_FLOOR
    return ops.where(keep, ops.sqrt(ops.where(keep, x, 1.0)), 0.0)


def _off_diagonal_zero(matrix):
    n = ops.shape(matrix)[0]
    return ops.where(ops.eye(n, dtype="bool"), 0.0, matrix)


def squared_l2_distance(embeddings):
    """Pairwise squared Euclidean distances ``||x_i - x_j||^2``, float32 ``(B, B)``.

    Computed as ``||x_i||^2 + ||x_j||^2 - 2 x_i . x_j`` (``O(B^2)`` memory), clipped at 0 (the
    expansion can round slightly below zero) with an exact zero diagonal.
    """
    x = ops.cast(embeddings, "float32")
    sq = ops.sum(ops.square(x), axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    return _off_diagonal_zero(ops.maximum(d2, 0.0))


def l2_distance(embeddings):
    """Pairwise Euclidean distances ``||x_i - x_j||``, float32 ``(B, B)``, safe at zero."""
    return safe_sqrt(squared_l2_distance(embeddings))


def angular_distance(embeddings):
    """Pairwise angular distances ``1 - cos(x_i, x_j)``, float32 ``(B, B)``.

    Embeddings are L2-normalized first (an all-zero embedding stays zero, so its distance to
    everything is 1); the result is clipped at 0 and the diagonal is exactly 0.
    """
    x = l2_normalize(ops.cast(embeddings, "float32"), axis=1)
    d = 1.0 - ops.matmul(x, ops.transpose(x))
    return _off_diagonal_zero(ops.maximum(d, 0.0))


def check_distance_metric(distance_metric):
    """Validate ``distance_metric`` (one of :data:`DISTANCE_METRICS` or a callable)."""
    if callable(distance_metric):
        return distance_metric
    if not isinstance(distance_metric, str) or distance_metric not in DISTANCE_METRICS:
        raise ValueError(
            f"`distance_metric` must be one of {list(DISTANCE_METRICS)} or a callable. "
            f"Received: distance_metric={distance_metric!r}"
        )
    return distance_metric


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
        >>> from keras_margins.distances import pairwise_distance
        >>> x = np.array([[0.0, 0.0], [3.0, 4.0]], dtype="float32")
        >>> np.asarray(pairwise_distance(x)).tolist()
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
        >>> from keras_margins.distances import label_masks
        >>> pos, neg = label_masks(np.array([0, 0, 1]))
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
    "l2_distance",
    "label_masks",
    "pairwise_distance",
    "safe_sqrt",
    "squared_l2_distance",
]
