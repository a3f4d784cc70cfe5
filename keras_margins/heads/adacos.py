"""AdaCos: a cosine softmax without margin whose scale is set from the number of classes."""

import math

import keras
from keras import ops

from keras_margins._validation import check_flag, check_int
from keras_margins.heads.base import MarginHead
from keras_margins.ops import max_along, safe_arccos


def adacos_fixed_scale(num_classes):
    """AdaCos's fixed scale ``sqrt(2) * log(C - 1)`` (``log(C - 1) / cos(pi / 4)``), ``C >= 3``."""
    return math.sqrt(2.0) * math.log(num_classes - 1)


def lower_median(values, valid):
    """The lower middle value of the entries of the ``(B,)`` tensor ``values`` where ``valid``.

    Of ``n`` valid entries, the ``(n - 1) // 2``-th smallest (``torch.median``'s choice for an
    even ``n``); ``+inf`` when none is valid.
    """
    inf = ops.full_like(values, float("inf"))
    # One +inf more, so that the index is in range for an empty batch too.
    padded = ops.concatenate(
        [ops.where(valid, values, inf), ops.full((1,), float("inf"), dtype=values.dtype)], 0
    )
    ordered = ops.sort(padded)
    count = ops.sum(ops.cast(valid, "int32"))
    index = ops.maximum(count - 1, 0) // 2
    return ops.take(ordered, index)


@keras.saving.register_keras_serializable(package="keras_margins")
class AdaCos(MarginHead):
    """AdaCos head: no margin, a scale chosen from the number of classes (fixed or adaptive).

        logits = s * cos(theta_j)         for every class (no margin)
        fixed:    s = s_f = sqrt(2) * log(C - 1)
        dynamic:  B_avg   = (1/N) sum_i sum_{k != y_i} exp(s_prev * cos(theta_ik))
                  theta_m = median_i theta_{i, y_i}
                  s       = log(B_avg) / cos(min(pi/4, theta_m))

    The fixed scale ``s_f`` is the one for which the target probability's gradient is largest
    around ``theta_y = pi/4`` when the non-target cosines are near 0 (``log(C - 1) /
    cos(pi/4)``); it needs ``C >= 3`` (``C = 2`` gives 0, ``C = 1`` is undefined). It is computed
    from ``num_classes``, the total number of classes, also under
    :class:`~keras_margins.PartialFC`.

    With ``dynamic=True`` the scale is recomputed in every training call (``training=True`` and
    labels), before the batch is scaled, from that batch's cosines and the previous scale,
    without gradient: the logits of that batch are ``s_new * cos``. ``B_avg`` is computed in
    log space (a log-sum-exp over the non-target logits minus ``log N``), so a large scale
    cannot overflow float32. The median is the lower middle value for an even batch, as
    ``torch.median`` takes it in the reference port. The scale (``head.s``, a non-trainable
    float32 weight, initially ``s_f``) is saved in ``.keras`` files and weights; calls with
    ``training=False`` or unset (``evaluate``, ``predict``) use the stored scale and never
    change it, with or without labels. Rows whose cosines are not all finite (a bad label, a
    NaN embedding) are left out of the update: their logits are NaN (so is the loss), but the
    stored scale is not poisoned; a batch with no such row left (or an empty batch) keeps the
    scale. Under Partial FC the sum runs over the sampled classes, the classes of the softmax
    actually trained in that step.

    No formula bounds the dynamic scale: when ``B_avg < 1`` (few classes whose cosines are
    mostly negative) it becomes negative, as in the reference port; see the docs page.

    There is no official code; the dynamic update follows the unofficial PyTorch port
    4uiiurz1/pytorch-adacos (``metrics.py``), which also gives ``s_f`` as the initial scale.

    ``AdaCos`` has no ``scale`` argument (the scale is the formula's); ``get_config`` holds
    ``num_classes``, ``dynamic`` and ``sub_centers``.

    Args:
        num_classes: Number of classes ``C``. Must be >= 3.
        dynamic: Adapt the scale per training batch (the paper's dynamic AdaCos).
            Defaults to ``False`` (the fixed scale).
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``interclass_filtering_threshold`` and the base layer arguments.

    Returns:
        float32 logits of shape ``(B, num_classes)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.AdaCos(num_classes=11)
        >>> round(head.current_scale(), 4)  # sqrt(2) * log(10)
        3.2563
        >>> x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
        >>> tuple(head([x, np.array([0, 1, 2, 3])]).shape)
        (4, 11)

    Reference:
        Zhang et al., "AdaCos: Adaptively Scaling Cosine Logits for Effectively Learning Deep
        Face Representations", CVPR 2019 (arXiv 1905.00292).
    """

    def __init__(self, num_classes, dynamic=False, sub_centers=1, **kwargs):
        if "scale" in kwargs:
            raise ValueError(
                "`scale` is not an argument of AdaCos: its scale is sqrt(2) * log(num_classes - 1)"
                " (or adapted per batch with dynamic=True). Received: scale="
                f"{kwargs['scale']!r}"
            )
        num_classes = check_int("num_classes", num_classes, minimum=1)
        if num_classes < 3:
            raise ValueError(
                "`num_classes` must be >= 3 for AdaCos: its scale sqrt(2) * log(num_classes - 1)"
                " is 0 for 2 classes and undefined for 1. Received: "
                f"num_classes={num_classes}"
            )
        super().__init__(
            num_classes,
            scale=adacos_fixed_scale(num_classes),
            sub_centers=sub_centers,
            **kwargs,
        )
        self.dynamic = check_flag("dynamic", dynamic)
        # A fixed-scale AdaCos has no margin: its training logits need no labels. The dynamic
        # one needs them to adapt the scale (it would silently keep it otherwise).
        self.uses_labels = self.dynamic
        self.rewrites_non_targets = self.dynamic
        self.s = None  # the dynamic scale, created in `build_state`

    def build_state(self):
        if self.dynamic:
            self.s = self.add_training_state(
                "s", initializer=keras.initializers.Constant(self.scale)
            )

    def current_scale(self):
        """The scale the next call uses, as a Python float (``s_f``, or the stored ``s``)."""
        if self.s is None:
            return float(self.scale)
        return float(ops.convert_to_numpy(self.s))

    def logit_scale(self, norm):
        if self.dynamic:
            return ops.convert_to_tensor(self.s)  # inference: the stored scale
        return super().logit_scale(norm)

    def new_scale(self, cos, is_target, cos_y, previous):
        """The dynamic update ``log(B_avg) / cos(min(pi/4, theta_med))`` (no gradient).

        Args:
            cos: float32 ``(B, C)`` cosines.
            is_target: bool ``(B, C)``.
            cos_y: float32 ``(B,)`` target cosines.
            previous: float32 scalar, the previous scale.

        Returns:
            ``(scale, count)``: the new scale (float32 scalar) and the number of rows it was
            computed from (0: keep the previous scale).
        """
        cos = ops.stop_gradient(cos)
        cos_y = ops.stop_gradient(cos_y)
        # A row with a NaN embedding or a bad label is NaN throughout, its target cosine too.
        valid = ops.isfinite(cos_y)
        count = ops.sum(ops.cast(valid, "float32"))
        # log B_avg = log(sum over the valid rows' non-target exp(s * cos)) - log N, shifted by
        # the largest entry of the valid rows so that exp never overflows (s * cos reaches
        # hundreds): six (B, C) passes, the (B, C) work of the update.
        scaled = previous * cos
        row_top = ops.where(valid, max_along(scaled, 1), float("-inf"))
        # One -inf more, so that an empty batch has a maximum too (-inf) on every backend.
        top = ops.max(ops.concatenate([row_top, ops.full((1,), float("-inf"))], 0))
        top = ops.where(ops.isfinite(top), top, ops.zeros_like(top))  # no valid row
        terms = ops.where(is_target, 0.0, ops.exp(scaled - top))
        row_sums = ops.where(valid, ops.sum(terms, axis=1), 0.0)
        log_b_avg = top + ops.log(ops.sum(row_sums)) - ops.log(ops.maximum(count, 1.0))
        theta_med = lower_median(safe_arccos(cos_y), valid)
        denominator = ops.cos(ops.minimum(theta_med, math.pi / 4.0))
        return log_b_avg / denominator, count

    def combine(self, cos, target, is_target, scale, cos_y=None, training=None):
        if not self.dynamic or training is not True:
            return ops.where(is_target, target[:, None], cos) * scale
        previous = ops.convert_to_tensor(self.s)
        new, count = self.new_scale(cos, is_target, cos_y, previous)
        # With no valid row or no non-target class, nothing to adapt to: keep the scale.
        usable = ops.logical_and(count > 0, ops.isfinite(new))
        new = ops.stop_gradient(ops.where(usable, new, previous))
        self.update_training_state(self.s, new, training)
        # No margin: the target logit is new * cos(theta_y) like every other one.
        return cos * new

    def get_config(self):
        config = super().get_config()
        config.pop("scale", None)  # not an argument: the scale is computed from num_classes
        config.update({"dynamic": self.dynamic})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # A config written by a MarginHead-level serializer may carry the computed scale.
        scale = config.pop("scale", None)
        if scale is not None:
            expected = adacos_fixed_scale(int(config["num_classes"]))
            if not math.isclose(float(scale), expected, rel_tol=1e-6):
                raise ValueError(
                    "`scale` in an AdaCos config must be sqrt(2) * log(num_classes - 1) = "
                    f"{expected} for num_classes={config['num_classes']}. Received: "
                    f"scale={scale}"
                )
        return cls(**config)
