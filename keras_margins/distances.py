"""Pairwise distance matrices and label masks, shared by the metric-learning losses.

Everything here computes in float32 whatever the input dtype, uses ``keras.ops`` only and needs
``O(B^2)`` memory for a batch of ``B`` embeddings.
"""

import numpy as np
from keras import ops

from keras_margins.heads.base import l2_normalize

#: The names accepted by :func:`pairwise_distance` (besides a callable).
DISTANCE_METRICS = ("L2", "squared-L2", "angular")

# Floor of a squared distance below which the distance is reported as exactly 0. The derivative
# of sqrt(d2) is 1 / (2 sqrt(d2)): at d2 = 0 (identical embeddings, and always on the diagonal)
# it is infinite, and an infinite factor times the zero derivative of d2 gives NaN. Below the
# floor the value is 0 and the gradient is 0; above it the derivative is bounded by
# 1 / (2 * 1e-6) = 5e5. The distances below apply it to embeddings rescaled to a max-abs near 1,
# so the floor is relative: distances below ~1e-6 of the largest coordinate are not resolved by
# the float32 expansion ||a||^2 + ||b||^2 - 2 a.b anyway (its rounding error is ~1e-7 ||a||^2).
SQRT_FLOOR = 1e-12


def safe_sqrt(x):
    """``sqrt(x)`` for ``x >= 0`` with a finite gradient everywhere, NaN kept.

    Returns 0 (with a zero gradient) where ``x <= SQRT_FLOOR`` and ``sqrt(x)`` elsewhere, so
    zero distances (identical embeddings) give finite gradients. A NaN stays NaN (NaN in, NaN
    out: a NaN embedding must not look like a zero distance).
    """
    keep = x > SQRT_FLOOR
    # x * 0 is 0 for a finite x (gradient 0) and NaN for a NaN x.
    return ops.where(keep, ops.sqrt(ops.where(keep, x, 1.0)), x * 0.0)


def _relu(x):
    """``max(x, 0)`` that keeps NaN (``maximum`` may return 0 for a NaN on some backends)."""
    return ops.where(x < 0.0, 0.0, x)


def _zero_diagonal(matrix):
    """``matrix`` with an exact zero diagonal (NaN kept: 0 * NaN is NaN)."""
    n = ops.shape(matrix)[0]
    return ops.where(ops.eye(n, dtype="bool"), matrix * 0.0, matrix)


# Largest coordinates between 2^-40 and 2^40 keep squared norms well inside float32's normal
# range (2^-126 .. 2^128, for any realistic dimension): they are used unscaled.
_UNSCALED_RANGE = (2.0**-40, 2.0**40)


def _power_of_two_scale(max_abs):
    """A power of two near ``max_abs`` where it lies outside ``[2^-40, 2^40]``, else 1.

    Without gradient. Dividing by a power of two is exact in floating point (short of
    underflow), so rescaling embeddings by it changes no value; it only keeps squared norms of
    huge (beyond ~1e19) or tiny embeddings representable in float32. Embeddings in the usual
    range are not rescaled at all (the result is then bit-for-bit the unscaled formula).
    """
    max_abs = ops.stop_gradient(max_abs)
    low, high = _UNSCALED_RANGE
    usual = ops.logical_or(
        ops.logical_and(max_abs >= low, max_abs <= high), ops.equal(max_abs, 0.0)
    )
    safe = ops.where(usual, 1.0, max_abs)
    return ops.where(usual, 1.0, ops.power(2.0, ops.round(ops.log2(safe))))


def _scaled_rows(x):
    """``(u, s)`` with ``x = s * u``, ``s`` a power of two near the batch's largest ``|x|``."""
    s = _power_of_two_scale(ops.max(ops.abs(x), initial=0.0))
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
    return _zero_diagonal(_relu(d2))


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


def _row_normalize(x, axis=-1):
    """``x / ||x||`` along ``axis`` for any magnitude: rows are first rescaled by a power of two
    of their own max-abs (which leaves the direction unchanged), then L2-normalized. An all-zero
    row stays zero; NaN stays NaN."""
    s = _power_of_two_scale(ops.max(ops.abs(x), axis=axis, keepdims=True, initial=0.0))
    return l2_normalize(x / s, axis=axis)


def angular_distance(embeddings):
    """Pairwise angular distances ``1 - cos(x_i, x_j)``, float32 ``(B, B)``.

    Embeddings are L2-normalized first, whatever their magnitude (each row is rescaled by a
    power of two of its own max-abs before normalizing); an all-zero embedding stays zero, so its
    distance to everything is 1. The result is clipped at 0 and the diagonal is exactly 0.
    """
    x = _row_normalize(ops.cast(embeddings, "float32"), axis=1)
    d = 1.0 - ops.matmul(x, ops.transpose(x))
    return _zero_diagonal(_relu(d))


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


def labels_nan(labels):
    """A scalar bool tensor: true where float ``labels`` hold a NaN (never for integer labels)."""
    if "float" not in str(labels.dtype):
        return ops.convert_to_tensor(False)
    return ops.any(ops.isnan(labels))


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
    "check_labels_and_embeddings",
    "l2_distance",
    "label_masks",
    "pairwise_distance",
    "safe_sqrt",
    "squared_l2_distance",
]
