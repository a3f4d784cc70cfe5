"""Contrastive loss on pair distances, compatible with tensorflow-addons."""

import keras
from keras import ops

from keras_margins._validation import check_float_or_tensor, float_config, margin_or_nan
from keras_margins.ops import relu

#: Largest accepted ``margin``: ``max(margin - d, 0)^2`` is computed in float32 (largest value
#: ~3.4e38), so the margin's square must be finite.
MAX_MARGIN = 1e19
_MARGIN_REASON = "the loss is computed in float32: max(margin - d, 0)^2 overflows past ~1.8e19"


def _align(y, d):
    """Align pair labels and distances without broadcasting; ``ValueError`` on a mismatch.

    ``(B,)`` and ``(B, 1)`` are aligned in any combination; otherwise both must have the same
    shape (elementwise, as tensorflow-addons). Dimensions unknown at trace time are not checked.
    """
    if len(d.shape) == len(y.shape) + 1 and d.shape[-1] == 1:
        d = ops.squeeze(d, axis=-1)
    elif len(y.shape) == len(d.shape) + 1 and y.shape[-1] == 1:
        y = ops.squeeze(y, axis=-1)
    same = len(y.shape) == len(d.shape) and all(
        a is None or b is None or a == b for a, b in zip(y.shape, d.shape)
    )
    if not same:
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape, (batch_size,) or (batch_size, 1) "
            "(one label per pair distance; they are not broadcast). "
            f"Received: y_true.shape={tuple(y.shape)}, y_pred.shape={tuple(d.shape)}"
        )
    return y, d


@keras.saving.register_keras_serializable(package="keras_margins")
def contrastive_loss(y_true, y_pred, margin=1.0):
    """Contrastive loss of pairs, as ``tfa.losses.contrastive_loss``.

        L_i = y_i * d_i^2 + (1 - y_i) * max(margin - d_i, 0)^2

    ``y = 1`` marks a similar pair and ``y = 0`` a dissimilar one (Hadsell et al. write the
    opposite convention with a factor 1/2; this follows tensorflow-addons, so it is a drop-in
    replacement). A label other than 0 or 1 (``y = 2`` would give a negative loss) gives NaN for
    that pair, as does a NaN distance: values cannot be checked under XLA, so they are not
    turned into errors. Mismatched shapes are a ``ValueError`` when traced.

    Args:
        y_true: Pair labels ``(B,)`` or ``(B, 1)``: 1 for similar, 0 for dissimilar.
        y_pred: Distances of the pairs ``(B,)`` or ``(B, 1)`` (for example from
            :class:`keras_margins.PairDistance`), any float dtype; computed in float32.
        margin: The margin that dissimilar pairs are pushed beyond, in ``[0, 1e19]``: a number,
            or a scalar tensor or ``keras.Variable`` (for a schedule; a value outside the range
            gives NaN). Defaults to 1.0.

    Returns:
        float32 per-pair losses, shaped like ``y_pred`` squeezed to the rank of ``y_true``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> np.asarray(km.contrastive_loss(np.array([1, 0]), np.array([0.5, 0.25]))).tolist()
        [0.25, 0.5625]

    Reference:
        Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
        CVPR 2006.
    """
    margin = check_float_or_tensor("margin", margin, 0.0, MAX_MARGIN, _MARGIN_REASON)
    margin = margin_or_nan(margin, 0.0, MAX_MARGIN)
    y, d = _align(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))
    loss = y * ops.square(d) + (1.0 - y) * ops.square(relu(margin - d))
    valid = ops.logical_or(ops.equal(y, 0.0), ops.equal(y, 1.0))
    return ops.where(valid, loss, float("nan"))


@keras.saving.register_keras_serializable(package="keras_margins")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of pairs, a drop-in replacement of ``tfa.losses.ContrastiveLoss``.

        L = mean_i [ y_i * d_i^2 + (1 - y_i) * max(margin - d_i, 0)^2 ]

    The arguments are in tensorflow-addons' order, ``(margin, reduction, name)``.

    Args:
        margin: The margin that dissimilar pairs are pushed beyond, in ``[0, 1e19]``: a number,
            or a scalar tensor or ``keras.Variable``. Defaults to 1.0.
        reduction: Keras reduction of the per-pair losses. Defaults to
            ``"sum_over_batch_size"`` (the mean, as tensorflow-addons).
        name: Name of the loss. Defaults to ``"contrastive_loss"``.
        **kwargs: ``dtype`` of ``keras.losses.Loss``.

    Call arguments:
        y_true: Pair labels ``(B,)`` or ``(B, 1)``: 1 similar, 0 dissimilar (any other value
            gives NaN).
        y_pred: Pair distances ``(B,)`` or ``(B, 1)``.
        sample_weight: Optional per-pair weights.

    Returns:
        A float32 scalar (with the default reduction).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> float(km.ContrastiveLoss()(np.array([1, 0]), np.array([0.5, 0.25])))
        0.40625

    Reference:
        Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
        CVPR 2006.
    """

    def __init__(
        self,
        margin=1.0,
        reduction="sum_over_batch_size",
        name="contrastive_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = check_float_or_tensor("margin", margin, 0.0, MAX_MARGIN, _MARGIN_REASON)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = float_config(self.margin)
        return config
