"""Mining-based softmax losses: HM-Softmax (hard-sample mining) and F-Softmax (focal)."""

import keras
from keras import ops

from keras_margins._validation import check_float

# float32 relative rounding allowance when turning keep_ratio * B into a count (so that
# keep_ratio=0.3 and B=10 keep 3 samples, not 4 because 0.3 * 10 rounds to 3.0000001).
_RATIO_TOL = 1e-6

# Floor of (1 - p) in the focal factor: keeps (1 - p)^gamma and its gradient finite at p = 1
# for 0 <= gamma < 1 (1e-30^(gamma - 1) <= 1e30 fits float32).
_FOCAL_FLOOR = 1e-30


def _sparse_labels(y_true):
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 2 and y_true.shape[-1] == 1:
        y_true = ops.reshape(y_true, (-1,))
    elif len(y_true.shape) != 1:
        raise ValueError(
            "`y_true` must be sparse integer labels of shape (batch_size,) or (batch_size, 1). "
            f"Received: y_true.shape={tuple(y_true.shape)}"
        )
    if "float" in keras.backend.standardize_dtype(y_true.dtype):
        y_true = ops.round(y_true)
    return ops.cast(y_true, "int32")


def _log_prob_target(y_true, y_pred):
    """float32 ``log softmax(y_pred)[y]`` per sample, from logits (stable for huge logits)."""
    logits = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    if len(logits.shape) != 2:
        raise ValueError(
            "`y_pred` must be logits of shape (batch_size, num_classes). "
            f"Received: y_pred.shape={tuple(logits.shape)}"
        )
    labels = _sparse_labels(y_true)
    log_probs = ops.log_softmax(logits, axis=-1)
    return ops.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]


def hard_mining_softmax_loss(y_true, y_pred, keep_ratio=0.5):
    """HM-Softmax per-sample loss: cross-entropy on the hardest ``keep_ratio`` of the batch.

    With ``ce_i = -log softmax(z_i)[y_i]`` and ``k = max(1, ceil(keep_ratio * B))``, the ``k``
    samples of largest ``ce_i`` are kept (ties broken by position) and

        out_i = (B / k) * ce_i   if i is kept,   0 otherwise

    so the mean of the output over the batch is the mean cross-entropy of the kept samples.
    The selection carries no gradient.

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
    # rank 0 = hardest sample; keep the k first ranks.
    order = ops.argsort(-ops.stop_gradient(ce))
    rank = ops.argsort(order)
    keep = ops.cast(rank, "float32") < k
    return ops.where(keep, ce * (batch_f / k), ops.zeros_like(ce))


def focal_softmax_loss(y_true, y_pred, gamma=2.0):
    """F-Softmax per-sample loss: focal cross-entropy ``-(1 - p_y)^gamma * log(p_y)`` on logits.

    ``log p_y`` comes from a log-softmax of the logits, so the loss and its gradient stay exact
    for the very confident (or very wrong) logits that scaled margin heads produce; ``gamma = 0``
    is the plain cross-entropy.

    Args:
        y_true: Integer class ids, shape ``(B,)`` or ``(B, 1)``.
        y_pred: Logits of any head, shape ``(B, C)``.
        gamma: The focusing parameter, >= 0. Defaults to 2.0.

    Returns:
        float32 tensor of shape ``(B,)``.
    """
    gamma = check_float("gamma", gamma, low=0.0)
    log_p = _log_prob_target(y_true, y_pred)
    if gamma == 0.0:
        return -log_p
    one_minus_p = ops.maximum(-ops.expm1(log_p), _FOCAL_FLOOR)
    return -ops.power(one_minus_p, gamma) * log_p


@keras.saving.register_keras_serializable(package="keras_margins")
class HardMiningSoftmaxLoss(keras.losses.Loss):
    """HM-Softmax: softmax cross-entropy on the hardest fraction of the mini-batch only.

        ce_i = -log softmax(z_i)[y_i],  k = max(1, ceil(keep_ratio * B))
        loss = mean of ce_i over the k samples of largest ce_i

    Per sample, the kept ones contribute ``(B / k) * ce_i`` and the others 0, so the default
    ``"sum_over_batch_size"`` reduction gives the mean over the kept samples (with
    ``sample_weight``, weights multiply these per-sample values). Takes the logits of any head
    (``from_logits`` only), so hard mining combines with any margin, as in the SV-Softmax paper.

    Args:
        keep_ratio: Fraction of the batch kept, in (0, 1]; 1 is the plain softmax loss.
            Defaults to 0.5.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Loss name. Defaults to ``"hard_mining_softmax_loss"``.
        dtype: Loss dtype. Defaults to ``None`` (float32).

    Call arguments:
        y_true: Integer class ids, ``(B,)`` or ``(B, 1)``.
        y_pred: Logits ``(B, C)``.

    Returns:
        The reduced loss (a scalar by default).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> from keras_margins.losses.mining import HardMiningSoftmaxLoss
        >>> loss = HardMiningSoftmaxLoss(keep_ratio=0.5)
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
        self._dtype_arg = dtype

    def call(self, y_true, y_pred):
        return hard_mining_softmax_loss(y_true, y_pred, keep_ratio=self.keep_ratio)

    def get_config(self):
        config = super().get_config()
        config.update({"keep_ratio": self.keep_ratio, "dtype": self._dtype_arg})
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class FocalSoftmaxLoss(keras.losses.Loss):
    """F-Softmax: focal cross-entropy on a head's logits, ``-(1 - p_y)^gamma * log(p_y)``.

    The same quantity as ``keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=gamma,
    from_logits=True)`` on one-hot labels, but for sparse labels and computed from a
    log-softmax: Keras's version clips probabilities at ``1e-7``, which caps the loss at about
    16 and zeroes its gradient for samples with ``p_y < 1e-7`` — exactly the mis-classified
    samples that scaled margin heads (``s = 30 .. 64``) produce early in training.

    Args:
        gamma: The focusing parameter, >= 0 (0 = cross-entropy). Defaults to 2.0 (the focal
            loss paper).
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Loss name. Defaults to ``"focal_softmax_loss"``.
        dtype: Loss dtype. Defaults to ``None`` (float32).

    Call arguments:
        y_true: Integer class ids, ``(B,)`` or ``(B, 1)``.
        y_pred: Logits ``(B, C)``.

    Returns:
        The reduced loss (a scalar by default).

    Examples:

        >>> import numpy as np
        >>> from keras_margins.losses.mining import FocalSoftmaxLoss
        >>> logits = np.array([[3.0, 0.0, 0.0]], "float32")
        >>> float(FocalSoftmaxLoss(gamma=2.0)(np.array([0]), logits)) < 0.01
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
        self.gamma = check_float("gamma", gamma, low=0.0)
        self._dtype_arg = dtype

    def call(self, y_true, y_pred):
        return focal_softmax_loss(y_true, y_pred, gamma=self.gamma)

    def get_config(self):
        config = super().get_config()
        config.update({"gamma": self.gamma, "dtype": self._dtype_arg})
        return config
