"""Mining-based softmax losses: HM-Softmax (hard-sample mining) and F-Softmax (focal)."""

import keras
from keras import ops

from keras_margins._validation import (
    FLOAT32_MAX,
    check_float,
    check_float32_bound,
    class_ids,
)

# float32 relative rounding allowance when turning keep_ratio * B into a count (so that
# keep_ratio=0.3 and B=10 keep 3 samples, not 4 because 0.3 * 10 rounds to 3.0000001).
_RATIO_TOL = 1e-6

# Floor of (1 - p) in the focal factor: keeps (1 - p)^gamma and its gradient finite at p = 1
# for 0 <= gamma < 1 (1e-30^(gamma - 1) <= 1e30 fits float32).
_FOCAL_FLOOR = 1e-30


def _log_prob_target(y_true, y_pred):
    """float32 ``log softmax(y_pred)[y]`` per sample, from logits (stable for huge logits).

    A label that is not a class id in ``[0, C)`` (outside the range, or a float that is not an
    integer) gives NaN for its sample, as the heads do: never another class's value.
    """
    logits = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(logits.shape) != 2 or logits.shape[-1] is None:
        raise ValueError(
            "`y_pred` must be logits of shape (batch_size, num_classes) with a known "
            f"num_classes. Received: y_pred.shape={tuple(logits.shape)}"
        )
    labels = class_ids(y_true, int(logits.shape[-1]), "y_true")
    n, batch = labels.shape[0], logits.shape[0]
    if n is not None and batch is not None and n != batch:
        raise ValueError(
            "`y_true` must have one label per row of `y_pred`. Received: "
            f"y_true of {n} labels, y_pred.shape={tuple(logits.shape)}"
        )
    valid = labels >= 0
    log_probs = ops.log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(log_probs, ops.maximum(labels, 0)[:, None], axis=1)[:, 0]
    return ops.where(valid, picked, ops.full_like(picked, float("nan")))


def _check_gamma(gamma):
    gamma = check_float("gamma", gamma, low=0.0)
    return check_float32_bound("gamma", gamma, FLOAT32_MAX, "it must be representable in float32")


def hard_mining_softmax_loss(y_true, y_pred, keep_ratio=0.5):
    """HM-Softmax per-sample loss: cross-entropy on the hardest ``keep_ratio`` of the batch.

    With ``ce_i = -log softmax(z_i)[y_i]`` and ``k = max(1, ceil(keep_ratio * B))``, the ``k``
    samples of largest ``ce_i`` are kept (ties broken by position) and

        out_i = (B / k) * ce_i   if i is kept,   0 otherwise

    so the mean of the output over the batch is the mean cross-entropy of the kept samples.
    The selection carries no gradient. A label that is not a class id in ``[0, C)`` (outside
    the range, or a float such as 1.6 that is not an integer) makes its sample's value NaN, kept
    or not, as in the heads: the batch loss is NaN, never another class's loss.

    Args:
        y_true: Integer class ids, shape ``(B,)`` or ``(B, 1)``.
        y_pred: Logits of any head, shape ``(B, C)``.
        keep_ratio: Fraction of the batch kept, in (0, 1]. Defaults to 0.5.

    Returns:
        float32 tensor of shape ``(B,)``.
    """
    keep_ratio = check_float("keep_ratio", keep_ratio, low=0.0, high=1.0, low_open=True)
    ce = -_log_prob_target(y_true, y_pred)
    batch = ops.shape(ce)[0]
    batch_f = ops.cast(batch, "float32")
    k = ops.ceil(keep_ratio * batch_f * (1.0 - _RATIO_TOL))
    k = ops.clip(k, 1.0, batch_f)
    # rank 0 = hardest sample; keep the k first ranks. A NaN (a bad label, NaN logits) is ranked
    # last, so it does not displace the other samples, and stays NaN in the output whether kept
    # or not: the batch loss is NaN, never a plausible number.
    is_nan = ops.isnan(ce)
    key = ops.where(is_nan, ops.full_like(ce, -float("inf")), ops.stop_gradient(ce))
    order = ops.argsort(-key)
    rank = ops.argsort(order)
    keep = ops.cast(rank, "float32") < k
    out = ops.where(keep, ce * (batch_f / k), ops.zeros_like(ce))
    return ops.where(is_nan, ce, out)


def focal_softmax_loss(y_true, y_pred, gamma=2.0):
    """F-Softmax per-sample loss: focal cross-entropy ``-(1 - p_y)^gamma * log(p_y)`` on logits.

    ``log p_y`` comes from a log-softmax of the logits, so the loss and its gradient stay exact
    for the very confident (or very wrong) logits that scaled margin heads produce; ``gamma = 0``
    is the plain cross-entropy. A label that is not a class id in ``[0, C)`` gives NaN for its
    sample, as in the heads.

    Args:
        y_true: Integer class ids, shape ``(B,)`` or ``(B, 1)``.
        y_pred: Logits of any head, shape ``(B, C)``.
        gamma: The focusing parameter, >= 0. Defaults to 2.0.

    Returns:
        float32 tensor of shape ``(B,)``.
    """
    gamma = _check_gamma(gamma)
    log_p = _log_prob_target(y_true, y_pred)
    if gamma == 0.0:
        return -log_p
    one_minus_p = ops.maximum(-ops.expm1(log_p), _FOCAL_FLOOR)
    # A NaN (a bad label, NaN logits) stays NaN whatever `maximum` does with it on the backend.
    return ops.where(ops.isnan(log_p), log_p, -ops.power(one_minus_p, gamma) * log_p)


class _LogitsLoss(keras.losses.Loss):
    """A per-sample loss on a head's logits that keeps the ``dtype`` it was given in its config."""

    def __init__(self, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._dtype_arg = dtype

    def get_config(self):
        return {**super().get_config(), "dtype": self._dtype_arg}


@keras.saving.register_keras_serializable(package="keras_margins")
class HardMiningSoftmaxLoss(_LogitsLoss):
    """HM-Softmax: softmax cross-entropy on the hardest fraction of the mini-batch only.

        ce_i = -log softmax(z_i)[y_i],  k = max(1, ceil(keep_ratio * B))
        loss = mean of ce_i over the k samples of largest ce_i

    Per sample, the kept ones contribute ``(B / k) * ce_i`` and the others 0, so the default
    ``"sum_over_batch_size"`` reduction gives the mean over the kept samples (with
    ``sample_weight``, weights multiply these per-sample values). Takes the logits of any head
    (``from_logits`` only), so hard mining combines with any margin, as in the SV-Softmax paper.

    Called as ``loss(y_true, y_pred)`` on integer class ids ``(B,)`` or ``(B, 1)`` and a head's
    logits ``(B, C)``; returns the reduced loss (a scalar by default).

    Args:
        keep_ratio: Fraction of the batch kept, in (0, 1]; 1 is the plain softmax loss.
            Defaults to 0.5.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Loss name. Defaults to ``"hard_mining_softmax_loss"``.
        dtype: Loss dtype. Defaults to ``None`` (float32).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.HardMiningSoftmaxLoss(keep_ratio=0.5)
        >>> logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]], "float32")
        >>> float(loss(np.array([0, 0, 0, 0]), logits)) > 0
        True

    Reference:
        The HM-Softmax baseline of Wang et al., "Support Vector Guided Softmax Loss for Face
        Recognition", arXiv 1812.11317 (2018).
    """

    def __init__(
        self,
        keep_ratio=0.5,
        reduction="sum_over_batch_size",
        name="hard_mining_softmax_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.keep_ratio = check_float("keep_ratio", keep_ratio, low=0.0, high=1.0, low_open=True)

    def call(self, y_true, y_pred):
        return hard_mining_softmax_loss(y_true, y_pred, keep_ratio=self.keep_ratio)

    def get_config(self):
        return {**super().get_config(), "keep_ratio": self.keep_ratio}


@keras.saving.register_keras_serializable(package="keras_margins")
class FocalSoftmaxLoss(_LogitsLoss):
    """F-Softmax: focal cross-entropy on a head's logits, ``-(1 - p_y)^gamma * log(p_y)``.

    The same quantity as ``keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=gamma,
    from_logits=True)`` on one-hot labels, but for sparse labels and computed from a
    log-softmax: Keras's version clips probabilities at ``1e-7``, which caps the loss at about
    16 and zeroes its gradient for samples with ``p_y < 1e-7`` — exactly the mis-classified
    samples that scaled margin heads (``s = 30 .. 64``) produce early in training.

    Called like :class:`HardMiningSoftmaxLoss` (labels, logits; the reduced loss).

    Args:
        gamma: The focusing parameter, >= 0 (0 = cross-entropy). Defaults to 2.0 (the focal
            loss paper).
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Loss name. Defaults to ``"focal_softmax_loss"``.
        dtype: Loss dtype. Defaults to ``None`` (float32).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> logits = np.array([[3.0, 0.0, 0.0]], "float32")
        >>> float(km.FocalSoftmaxLoss(gamma=2.0)(np.array([0]), logits)) < 0.01
        True

    Reference:
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; the F-Softmax baseline
        of Wang et al., arXiv 1812.11317 (2018).
    """

    def __init__(
        self,
        gamma=2.0,
        reduction="sum_over_batch_size",
        name="focal_softmax_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.gamma = _check_gamma(gamma)

    def call(self, y_true, y_pred):
        return focal_softmax_loss(y_true, y_pred, gamma=self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}
