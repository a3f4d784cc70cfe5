"""Sparse categorical cross-entropy with label smoothing, without a one-hot matrix."""

import keras
from keras import ops

from keras_margins._validation import (
    check_flag,
    check_float,
    check_int,
    check_label_dtype,
    normalize_class_labels,
)
from keras_margins.losses.softmax_mining import _LogitsLoss


def _check_label_smoothing(label_smoothing):
    return check_float("label_smoothing", label_smoothing, low=0.0, high=1.0)


def _check_axis(axis):
    return check_int("axis", axis)


def _log_probabilities(probs, axis):
    """Keras's rule for ``from_logits=False``: ``log(clip(p / sum(p), eps, 1 - eps))``.

    A NaN anywhere in a row makes that row's log-probabilities NaN whatever ``clip`` does with
    NaN on the backend, so NaN in gives NaN out.
    """
    eps = keras.config.epsilon()
    normalized = probs / ops.sum(probs, axis=axis, keepdims=True)
    log_p = ops.log(ops.clip(normalized, eps, 1.0 - eps))
    return ops.where(ops.isnan(normalized), normalized, log_p)


def sparse_categorical_crossentropy(
    y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1
):
    """Per-sample cross-entropy of integer labels with label smoothing, no one-hot built.

    With ``C`` classes, the smoothed target ``q = (1 - ε) · one_hot(y) + ε / C`` and the
    log-probabilities ``log p = z - logsumexp(z)`` of the logits ``z``:

        loss = -Σ_j q_j log p_j = logsumexp(z) - (1 - ε) · z_y - ε · mean_j(z_j)

    which is computed from ``z_y``, ``mean(z)`` and ``logsumexp(z)`` only: no ``(B, C)``
    one-hot or smoothed target is ever built. ``ε = 0`` is Keras's
    ``sparse_categorical_crossentropy``; any ``ε`` equals Keras's ``categorical_crossentropy``
    with ``label_smoothing=ε`` on the one-hot labels.

    With ``from_logits=False`` ``y_pred`` holds probabilities and Keras's rule is followed
    exactly: each row is divided by its sum and clipped to ``[ε_k, 1 - ε_k]`` with
    ``ε_k = keras.config.epsilon()`` (1e-7) before the log, so each ``-log p_j`` is at most
    about 16.1 and a clipped probability gets no gradient; then
    ``loss = -(1 - ε) · log p_y - ε · mean_j(log p_j)``. Prefer ``from_logits=True`` with the
    logits of a head (exact, no clip). A NaN in a row gives a NaN loss for that sample in both
    modes.

    The computation is float32 whatever the input dtype (``float16``/``bfloat16`` logits under
    mixed precision are cast first). A label that is not a class id in ``[0, C)`` (out of range,
    a float that is not an integer such as 1.6, NaN) gives NaN for its sample, as everywhere in
    keras_margins (see :func:`keras_margins._validation.normalize_class_labels`).

    Args:
        y_true: Integer class ids of the shape of ``y_pred`` without ``axis`` (``(B,)`` for
            ``(B, C)`` predictions), optionally with a trailing dimension of 1 (``(B, 1)``).
            Floats holding integers are accepted (Keras may feed them).
        y_pred: Logits (``from_logits=True``) or probabilities, with the classes on ``axis``.
        from_logits: Whether ``y_pred`` holds logits. Defaults to ``False`` (as in Keras).
        label_smoothing: ``ε`` in ``[0, 1]``. Defaults to 0.0.
        axis: The class axis of ``y_pred``. Defaults to -1.

    Returns:
        float32 tensor of the shape of ``y_true`` (without a trailing 1): the loss per sample.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> logits = np.array([[2.0, 0.0, 0.0]], "float32")
        >>> loss = km.sparse_categorical_crossentropy(
        ...     np.array([0]), logits, from_logits=True, label_smoothing=0.3
        ... )
        >>> round(float(loss[0]), 4)  # logsumexp(z) - 0.7 * 2 - 0.3 * 2 / 3
        0.6395

    Reference:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
        (label smoothing regularization).
    """
    from_logits = check_flag("from_logits", from_logits)
    label_smoothing = _check_label_smoothing(label_smoothing)
    axis = _check_axis(axis)
    y_pred = ops.convert_to_tensor(y_pred)
    rank = len(y_pred.shape)
    if rank < 1 or not -rank <= axis < rank:
        raise ValueError(
            f"`axis` must be an axis of `y_pred`. Received: axis={axis} for "
            f"y_pred.shape={tuple(y_pred.shape)}"
        )
    z = ops.cast(y_pred, "float32")
    if axis % rank != rank - 1:
        z = ops.moveaxis(z, axis, -1)
    num_classes = z.shape[-1]
    if num_classes is None:
        raise ValueError(
            "The class axis of `y_pred` must have a known size. "
            f"Received: y_pred.shape={tuple(y_pred.shape)}, axis={axis}"
        )
    # Kept as given (a NumPy int64 array is range-checked before any backend conversion, which
    # on JAX would wrap it to int32).
    labels = check_label_dtype(y_true, "y_true")
    if len(labels.shape) == rank and rank > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    expected = tuple(z.shape[:-1])
    got = tuple(labels.shape)
    if len(got) != len(expected) or any(
        a is not None and b is not None and a != b for a, b in zip(got, expected)
    ):
        raise ValueError(
            "`y_true` must hold one class id per prediction: the shape of `y_pred` without its "
            f"class axis {expected} (or with a trailing 1). Received: y_true.shape={got}, "
            f"y_pred.shape={tuple(y_pred.shape)}, axis={axis}"
        )
    labels = normalize_class_labels(labels, int(num_classes), "y_true")
    valid = labels >= 0
    index = ops.expand_dims(ops.maximum(labels, 0), -1)
    if from_logits:
        # logsumexp(z) - (1 - ε) z_y - ε mean(z) = -Σ_j q_j log softmax(z)_j.
        picked = ops.take_along_axis(z, index, axis=-1)[..., 0]
        loss = ops.logsumexp(z, axis=-1) - (1.0 - label_smoothing) * picked
        if label_smoothing:
            loss = loss - label_smoothing * ops.mean(z, axis=-1)
    else:
        log_p = _log_probabilities(z, axis=-1)
        loss = -(1.0 - label_smoothing) * ops.take_along_axis(log_p, index, axis=-1)[..., 0]
        if label_smoothing:
            loss = loss - label_smoothing * ops.mean(log_p, axis=-1)
    return ops.where(valid, loss, ops.full_like(loss, float("nan")))


@keras.saving.register_keras_serializable(package="keras_margins")
class SparseCategoricalCrossentropy(_LogitsLoss):
    """Keras's ``SparseCategoricalCrossentropy`` plus ``label_smoothing``, without a one-hot.

        q = (1 - ε) · one_hot(y) + ε / C
        loss = -Σ_j q_j log softmax(z)_j = logsumexp(z) - (1 - ε) · z_y - ε · mean_j(z_j)

    Keras's sparse cross-entropy has no ``label_smoothing``, so the two-input pattern (integer
    labels fed to a margin head and to the loss) could not smooth; this class can, and equals
    ``keras.losses.CategoricalCrossentropy(label_smoothing=ε)`` on one-hot labels without
    building them. ``label_smoothing=0`` is Keras's ``SparseCategoricalCrossentropy``.

    This is the real label smoothing, on the loss side: it is **not** what a Kaggle notebook's
    ``ArcMarginProduct(ls_eps=...)`` does (that mixes the margin into the logits, with a hard
    label loss; see ``docs/losses/sparse_crossentropy.md``).

    With ``from_logits=False`` the probabilities are normalized and clipped to
    ``[1e-7, 1 - 1e-7]`` as Keras does (see :func:`sparse_categorical_crossentropy`); margin
    heads output logits, so use ``from_logits=True`` with them. The loss is computed in float32
    (mixed precision included); a label that is not a class id gives NaN for its sample.

    Args:
        from_logits: Whether ``y_pred`` holds logits. Defaults to ``False`` (as in Keras).
        label_smoothing: ``ε`` in ``[0, 1]``. Defaults to 0.0.
        axis: The class axis of ``y_pred``. Defaults to -1.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Loss name. Defaults to ``"sparse_categorical_crossentropy"``.
        dtype: Loss dtype. Defaults to ``None`` (float32).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
        >>> logits = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]], "float32")
        >>> 0 < float(loss(np.array([0, 1]), logits)) < 0.5
        True

    Reference:
        Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def call(self, y_true, y_pred):
        return sparse_categorical_crossentropy(
            y_true,
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
            axis=self.axis,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
        }
