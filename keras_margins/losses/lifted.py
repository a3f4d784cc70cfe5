"""Lifted structured loss (Oh Song et al. 2016), compatible with tensorflow-addons."""

import keras
from keras import ops

from keras_margins._validation import check_float_or_tensor, float_config, margin_or_nan
from keras_margins.distances import (
    check_labels_and_embeddings,
    l2_distance,
    label_masks,
    labels_not_class_ids,
)
from keras_margins.losses._batch import BatchLoss
from keras_margins.ops import relu

#: Largest accepted ``margin``: ``max(J, 0)^2`` is computed in float32 and ``J`` is of the order
#: of the margin, so the margin's square must be finite.
MAX_MARGIN = 1e19
_MARGIN_REASON = (
    "the loss is computed in float32: max(J, 0)^2 with J ~ margin overflows past ~1.8e19"
)


@keras.saving.register_keras_serializable(package="keras_margins")
def lifted_struct_loss(y_true, y_pred, margin=1.0):
    """Lifted structured loss, as ``tfa.losses.lifted_struct_loss``.

    With ``D`` the Euclidean distances of the embeddings, ``N(i)`` the samples whose label
    differs from ``i``'s and ``P`` the positive pairs ``i < j`` (same label)::

        J_ij = log( sum_{k in N(i)} exp(margin - D_ik) + sum_{l in N(j)} exp(margin - D_jl) )
               + D_ij
        L    = 1 / (2 |P|) * sum_{(i, j) in P} max(J_ij, 0)^2

    The log-sum-exp is stabilised as in tensorflow-addons (and the authors' Caffe layer) by
    factoring out ``max(m_i, m_j)``, ``m_i = max_{k in N(i)} (margin - D_ik)``; here it is
    computed from per-row sums, so it needs ``O(B^2)`` memory (tensorflow-addons tiled a
    ``B^2 x B`` matrix). A batch without any positive pair gives 0 (tensorflow-addons: NaN, a
    division by zero), like the triplet losses; so does a batch of a single class, which has no
    negative (tensorflow-addons: NaN); an empty batch gives 0. A NaN embedding or label gives NaN.

    Args:
        y_true: Integer labels ``(B,)`` or ``(B, 1)``.
        y_pred: Embeddings ``(B, D)``, any float dtype; computed in float32.
        margin: The margin, in ``[0, 1e19]``: a number, or a scalar tensor or ``keras.Variable``
            (a value outside the range gives NaN). Defaults to 1.0.

    Returns:
        A float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        >>> float(km.lifted_struct_loss(np.array([0, 0, 1, 1, 2, 2, 3, 3]), x)) > 0.0
        True

    Reference:
        Oh Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature
        Embedding", CVPR 2016 (arXiv 1511.06452).
    """
    margin = check_float_or_tensor("margin", margin, 0.0, MAX_MARGIN, _MARGIN_REASON)
    labels, y_pred = check_labels_and_embeddings(y_true, y_pred)
    if y_pred.shape[0] == 0:
        return ops.zeros((), "float32")
    margin = margin_or_nan(margin, 0.0, MAX_MARGIN)
    d = l2_distance(y_pred)
    positive, negative = label_masks(labels)
    diff = margin - d
    # m_i, the largest margin - D_ik over the negatives of i (a constant for the gradient: the
    # log-sum-exp does not depend on it). Rows without negatives only occur in a single-class
    # batch, where every row lacks them; m_i is then 0 and unused.
    has_negative = ops.any(negative, axis=1)
    row_max = ops.max(ops.where(negative, diff, -float("inf")), axis=1)
    m = ops.stop_gradient(ops.where(has_negative, row_max, 0.0))
    # S_i = sum_{k in N(i)} exp(margin - D_ik - m_i), each term <= 1.
    s = ops.sum(ops.where(negative, ops.exp(ops.where(negative, diff - m[:, None], 0.0)), 0.0), 1)
    big_m = ops.maximum(m[:, None], m[None, :])
    total = ops.exp(m[:, None] - big_m) * s[:, None] + ops.exp(m[None, :] - big_m) * s[None, :]
    valid = ops.logical_and(positive, total > 0.0)
    j = big_m + ops.log(ops.where(valid, total, 1.0)) + d
    hinge = ops.square(relu(j))
    num_ordered = ops.sum(ops.cast(positive, "float32"))
    # Over ordered pairs: sum_(i<j) = sum / 2 and |P| = num_ordered / 2.
    loss = ops.sum(ops.where(valid, hinge, 0.0)) / (2.0 * ops.maximum(num_ordered, 1.0))
    bad = ops.logical_or(ops.any(ops.isnan(d)), labels_not_class_ids(labels))
    if not isinstance(margin, float):
        bad = ops.logical_or(bad, ops.isnan(margin))
    return ops.where(bad, float("nan"), loss)


@keras.saving.register_keras_serializable(package="keras_margins")
class LiftedStructLoss(BatchLoss):
    """Lifted structured loss, a drop-in replacement of ``tfa.losses.LiftedStructLoss``.

    ``L = 1 / (2 |P|) sum_{(i, j) in P} max(J_ij, 0)^2`` with ``J_ij`` the log-sum-exp of the
    margin-shifted negative distances of ``i`` and ``j`` plus ``D_ij`` (see
    :func:`lifted_struct_loss`). The value is the batch loss whatever the reduction (as
    tensorflow-addons, whose class forced ``Reduction.NONE`` on the scalar).

    Args:
        margin: The margin, in ``[0, 1e19]``: a number, or a scalar tensor or
            ``keras.Variable``. Defaults to 1.0.
        name: Name of the loss. Defaults to ``"lifted_struct_loss"``.
        **kwargs: ``reduction`` and ``dtype`` of ``keras.losses.Loss``.

    Called as ``loss(y_true, y_pred)`` with integer labels ``(B,)`` or ``(B, 1)`` and
    embeddings ``(B, D)``; returns a float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.LiftedStructLoss(margin=1.0)
        >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        >>> float(loss(np.array([0, 0, 1, 1, 2, 2, 3, 3]), x)) > 0.0
        True

    Reference:
        Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding",
        CVPR 2016 (arXiv 1511.06452).
    """

    def __init__(self, margin=1.0, name="lifted_struct_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = check_float_or_tensor("margin", margin, 0.0, MAX_MARGIN, _MARGIN_REASON)

    def batch_loss(self, y_true, y_pred):
        return lifted_struct_loss(y_true, y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = float_config(self.margin)
        return config
