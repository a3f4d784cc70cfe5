"""Contrastive loss on pair distances, compatible with tensorflow-addons."""

import keras
from keras import ops

from keras_margins._validation import check_float


def contrastive_loss(y_true, y_pred, margin=1.0):
    """Contrastive loss of pairs, as ``tfa.losses.contrastive_loss``.

        L_i = y_i * d_i^2 + (1 - y_i) * max(margin - d_i, 0)^2

    ``y = 1`` marks a similar pair and ``y = 0`` a dissimilar one (Hadsell et al. write the
    opposite convention with a factor 1/2; this follows tensorflow-addons, so it is a drop-in
    replacement).

    Args:
        y_true: Pair labels ``(B,)`` or ``(B, 1)``: 1 for similar, 0 for dissimilar.
        y_pred: Distances of the pairs ``(B,)`` or ``(B, 1)`` (for example from
            :class:`keras_margins.PairDistance`), any float dtype; computed in float32.
        margin: The margin that dissimilar pairs are pushed beyond, >= 0. Defaults to 1.0.

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
    margin = check_float("margin", margin, low=0.0)
    d = ops.cast(y_pred, "float32")
    y = ops.cast(y_true, "float32")
    if len(d.shape) == len(y.shape) + 1 and d.shape[-1] == 1:
        d = ops.squeeze(d, axis=-1)
    elif len(y.shape) == len(d.shape) + 1 and y.shape[-1] == 1:
        y = ops.squeeze(y, axis=-1)
    return y * ops.square(d) + (1.0 - y) * ops.square(ops.maximum(margin - d, 0.0))


@keras.saving.register_keras_serializable(package="keras_margins")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of pairs, a drop-in replacement of ``tfa.losses.ContrastiveLoss``.

        L = mean_i [ y_i * d_i^2 + (1 - y_i) * max(margin - d_i, 0)^2 ]

    Args:
        margin: The margin that dissimilar pairs are pushed beyond, >= 0. Defaults to 1.0.
        name: Name of the loss. Defaults to ``"contrastive_loss"``.
        **kwargs: ``reduction`` (defaults to ``"sum_over_batch_size"``, the mean, as
            tensorflow-addons) and ``dtype`` of ``keras.losses.Loss``.

    Call arguments:
        y_true: Pair labels ``(B,)`` or ``(B, 1)``: 1 similar, 0 dissimilar.
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

    def __init__(self, margin=1.0, name="contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = check_float("margin", margin, low=0.0)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config
