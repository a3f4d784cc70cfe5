"""N-pair losses on a similarity matrix, compatible with tensorflow-addons.

As in tensorflow-addons, ``y_pred`` is the ``(B, B)`` similarity matrix the caller builds (for
example ``anchors @ positives.T``), not the embeddings, and there is no L2 term (the old
``tf.contrib`` version added ``0.25 * reg_lambda * (mean ||a||^2 + mean ||p||^2)``; add it as a
regularizer if wanted).
"""

import keras
from keras import ops

from keras_margins.distances import flatten_labels, labels_not_class_ids
from keras_margins.losses._batch import BatchLoss


def _check_similarity(y_pred, batch=None, labels_name="y_true", labels_shape=None):
    shape = tuple(y_pred.shape)
    if len(shape) != 2 or (None not in shape and shape[0] != shape[1]):
        raise ValueError(
            "`y_pred` must be the (batch_size, batch_size) similarity matrix. "
            f"Received: y_pred.shape={shape}"
        )
    if batch is not None and shape[0] is not None and batch != shape[0]:
        raise ValueError(
            f"`{labels_name}` must have one row per row of `y_pred`. "
            f"Received: {labels_name}.shape={labels_shape}, y_pred.shape={shape}"
        )


def _cross_entropy(targets, logits):
    """Per-row ``-sum_j t_ij log softmax(logits_i)_j``; a ``-inf`` logit with ``t = 0`` is fine."""
    log_p = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    return -ops.sum(ops.where(targets > 0.0, targets * log_p, 0.0), axis=1)


def _mean_rows(values, rows):
    """Mean of ``values`` over the rows where ``rows`` is true; 0 when there is none."""
    count = ops.sum(ops.cast(rows, "float32"))
    total = ops.sum(ops.where(rows, values, 0.0))
    return total / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="keras_margins")
def npairs_loss(y_true, y_pred):
    """N-pair loss (Sohn 2016) on a similarity matrix, as ``tfa.losses.npairs_loss``.

    With ``S = y_pred`` the ``(B, B)`` similarities of anchors (rows) and positives (columns)
    and ``T_ij = 1[y_i = y_j] / #{k : y_k = y_i}``::

        L = mean_i [ logsumexp_j S_ij - sum_j T_ij S_ij ]

    the softmax cross-entropy of each row against its row-normalised label-match targets. With
    all labels distinct this is ``mean_i log(1 + sum_{j != i} exp(S_ij - S_ii))``. Computed in
    float32; an empty batch gives 0; a NaN similarity or a NaN label gives NaN.

    Args:
        y_true: Integer labels ``(B,)`` or ``(B, 1)``.
        y_pred: Similarity matrix ``(B, B)``, any float dtype.

    Returns:
        A float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> f = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], "float32")
        >>> round(float(km.npairs_loss(np.arange(4), f @ f.T)), 5)
        0.25386

    Reference:
        Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NIPS 2016.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    labels = ops.convert_to_tensor(y_true)
    shape = tuple(labels.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, None))):
        raise ValueError(
            "`y_true` must be class labels of shape (batch_size,) or (batch_size, 1). "
            f"Received: y_true.shape={shape}"
        )
    _check_similarity(y_pred, shape[0], "y_true", shape)
    if y_pred.shape[0] == 0:
        return ops.zeros((), "float32")
    logits = ops.cast(y_pred, "float32")
    labels = flatten_labels(labels)
    match = ops.cast(ops.equal(labels[:, None], labels[None, :]), "float32")
    # A NaN label matches nothing, not even itself: 0 / 0 gives NaN targets and a NaN loss.
    targets = match / ops.sum(match, axis=1, keepdims=True)
    per_row = _cross_entropy(targets, logits)
    per_row = ops.where(ops.any(ops.isnan(targets), axis=1), float("nan"), per_row)
    return ops.where(labels_not_class_ids(labels), float("nan"), ops.mean(per_row))


def _dense_multilabels(y_true):
    """Dense float32 ``(B, C)`` labels from a dense tensor or a ``tf.SparseTensor``."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(y_true, tf.SparseTensor):
            return tf.cast(tf.sparse.to_dense(y_true), "float32")
    return ops.cast(ops.convert_to_tensor(y_true), "float32")


@keras.saving.register_keras_serializable(package="keras_margins")
def npairs_multilabel_loss(y_true, y_pred):
    """Multi-label N-pair loss on a similarity matrix, as ``tfa.losses.npairs_multilabel_loss``.

    With binary labels ``Y`` ``(B, C)`` the targets are the row-normalised label intersections
    ``T_ij = (Y Y^T)_ij / sum_k (Y Y^T)_ik`` and::

        L = mean_i [ logsumexp_j S_ij - sum_j T_ij S_ij ]

    over the samples with at least one label. A sample without any label has no positive (not
    even itself): it is left out of the mean, like an anchor without positives in the triplet
    losses, and a batch where no sample has a label gives 0 (tensorflow-addons divided by zero:
    NaN). A label other than 0 or 1, a NaN label or a NaN similarity gives NaN (values cannot
    be checked under XLA). Computed in float32; an empty batch gives 0.

    Args:
        y_true: Binary labels ``(B, C)``, dense or (TensorFlow backend) a ``tf.SparseTensor``.
        y_pred: Similarity matrix ``(B, B)``, any float dtype.

    Returns:
        A float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> f = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], "float32")
        >>> y = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
        >>> round(float(km.npairs_multilabel_loss(y, f @ f.T)), 5)
        1.42052

    Reference:
        Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NIPS 2016.
    """
    y = _dense_multilabels(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y.shape) != 2:
        raise ValueError(
            "`y_true` must be binary labels of shape (batch_size, num_classes). "
            f"Received: y_true.shape={tuple(y.shape)}"
        )
    _check_similarity(y_pred, y.shape[0], "y_true", tuple(y.shape))
    if y_pred.shape[0] == 0:
        return ops.zeros((), "float32")
    logits = ops.cast(y_pred, "float32")
    binary = ops.all(ops.logical_or(ops.equal(y, 0.0), ops.equal(y, 1.0)))
    inter = ops.matmul(y, ops.transpose(y))
    count = ops.sum(inter, axis=1, keepdims=True)
    has_label = count[:, 0] > 0.0
    targets = inter / ops.where(count > 0.0, count, 1.0)
    loss = _mean_rows(_cross_entropy(targets, logits), has_label)
    return ops.where(binary, loss, float("nan"))


@keras.saving.register_keras_serializable(package="keras_margins")
class NpairsLoss(BatchLoss):
    """N-pair loss on a similarity matrix, a drop-in replacement of ``tfa.losses.NpairsLoss``.

    ``L = mean_i [ logsumexp_j S_ij - sum_j T_ij S_ij ]``, ``T`` the row-normalised label
    matches (see :func:`npairs_loss`). The value is the batch loss whatever the reduction (as
    tensorflow-addons, whose class forced ``Reduction.NONE`` on the scalar).

    Args:
        name: Name of the loss. Defaults to ``"npairs_loss"``.
        **kwargs: ``reduction`` and ``dtype`` of ``keras.losses.Loss``.

    Call arguments:
        y_true: Integer labels ``(B,)`` or ``(B, 1)``.
        y_pred: Similarity matrix ``(B, B)``.

    Returns:
        A float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> f = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], "float32")
        >>> round(float(km.NpairsLoss()(np.arange(4), f @ f.T)), 5)
        0.25386

    Reference:
        Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NIPS 2016.
    """

    def __init__(self, name="npairs_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def batch_loss(self, y_true, y_pred):
        return npairs_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_margins")
class NpairsMultilabelLoss(BatchLoss):
    """Multi-label N-pair loss, a drop-in replacement of ``tfa.losses.NpairsMultilabelLoss``.

    See :func:`npairs_multilabel_loss`. The value is the batch loss whatever the reduction.

    Called as ``loss(y_true, y_pred)`` with binary labels ``(B, C)`` (dense, or a
    ``tf.SparseTensor`` on TensorFlow) and a similarity matrix ``(B, B)``; returns a float32
    scalar. ``name`` defaults to ``"npairs_multilabel_loss"``; ``**kwargs`` are ``reduction`` and
    ``dtype`` of ``keras.losses.Loss``. Reference: as :class:`NpairsLoss`.

    Examples:

        With one label per sample (one-hot rows) it is :class:`NpairsLoss`:

        >>> import numpy as np, keras_margins as km
        >>> f = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
        >>> y = np.array([0, 1, 2, 0, 1, 2])
        >>> multi = float(km.NpairsMultilabelLoss()(np.eye(3)[y], f @ f.T))
        >>> bool(np.isclose(multi, float(km.NpairsLoss()(y, f @ f.T)), rtol=1e-6))
        True
    """

    def __init__(self, name="npairs_multilabel_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def batch_loss(self, y_true, y_pred):
        return npairs_multilabel_loss(y_true, y_pred)
