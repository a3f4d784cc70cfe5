"""CurricularFace: an ArcFace target with hard negatives re-weighted by a running curriculum."""

import math

import keras
from keras import ops

from keras_margins._validation import check_float
from keras_margins.heads.arcface import angular_margin_target
from keras_margins.heads.base import MarginHead
from keras_margins.ops import _upstream, finite_mean, safe_arccos


def curricular_logits(cos, target, is_target, raw, t, scale):
    """``scale * (target at is_target, else cos * (t + cos) where cos > raw, else cos)``.

    The gradient is written by hand, with respect to ``cos`` and ``target`` (``raw``, ``t``,
    ``scale`` are constants here): ``d/dc [c (t + c)] = t + 2c`` on hard entries, 1 on the
    others, 0 on the target column, whose gradient goes to ``target``. Autodiff of the same
    expression spends more ``(B, C)`` passes on the masks and products (measured in
    ``docs/benchmarks.md``).

    Args:
        cos: float32 ``(B, C)`` cosines.
        target: float32 ``(B,)`` target values (cosine units).
        is_target: bool ``(B, C)``.
        raw: float32 ``(B,)``: ``cos(theta_y + m)``, the hardness threshold of each row.
        t: float32 scalar, the curriculum state.
        scale: float32 scalar or ``(B, 1)``.
    """

    @ops.custom_gradient
    def forward(cos, target):
        hard = cos > raw[:, None]
        factor = ops.where(hard, t + cos, 1.0)
        out = ops.where(is_target, target[:, None], cos * factor) * scale

        def grad(*args, upstream=None):
            g = _upstream(args, upstream) * scale
            d_cos = ops.where(is_target, 0.0, g * (factor + ops.where(hard, cos, 0.0)))
            d_target = ops.sum(ops.where(is_target, g, 0.0), axis=1)
            return d_cos, d_target

        return out, grad

    return forward(cos, target)


@keras.saving.register_keras_serializable(package="keras_margins")
class CurricularFace(MarginHead):
    """CurricularFace head: ArcFace's target, hard negatives re-weighted by a running ``t``.

        T                = cos(theta_y + m)
        target logit     = s * T                     if cos(theta_y) > cos(pi - m)
                           s * (cos(theta_y) - m * sin(m))   otherwise (as in ArcFace)
        non-target logit = s * cos(theta_j) * (t + cos(theta_j))   if cos(theta_j) > T  (hard)
                           s * cos(theta_j)                        otherwise (easy)
        t                <- t_alpha * mean_i cos(theta_{y_i}) + (1 - t_alpha) * t

    A negative class ``j`` is *hard* for a sample when its cosine exceeds the sample's raw
    target ``T = cos(theta_y + m)`` (the mask uses ``T`` itself, not the fallback past
    ``theta_y + m = pi``). Its logit is modulated by ``t + cos(theta_j)``: early in training
    ``t`` is near 0 and the hard negatives' logits shrink (an easy curriculum); as the target
    cosines grow, ``t`` grows and the hard negatives weigh more. The gradient flows through both
    factors ``cos(theta_j)``; ``t`` and the mask carry none.

    ``t`` (``head.t``, a non-trainable float32 weight, initially 0) is an exponential moving
    average of the batch's mean target cosine (before the margin). In every call with
    ``training=True`` and labels it is updated *before* it is used on that batch, as in the
    authors' code; calls with ``training=False`` or unset (``evaluate``, ``predict``) use the
    stored ``t`` and never change it. It is saved in ``.keras`` files and weights, so a resumed
    training continues from it. The mean runs over the rows whose target cosine is finite: a
    row made NaN by a bad label (or a NaN embedding) has NaN logits, so the loss is NaN, but it
    does not turn ``t`` into NaN for good; an empty batch leaves ``t`` unchanged. Under
    :class:`~keras_margins.PartialFC` the mean is over the (local) batch, as in the authors'
    code.

    Where the authors' code and the paper disagree, this follows the code: the paper writes
    ``t <- alpha * r + (1 - alpha) * t`` with ``alpha = 0.99`` on the batch mean ``r``; the code
    puts 0.01 on it, and the author answered that "the code is the right version" (issue #8 of
    HuangYG123/CurricularFace). ``t_alpha`` is the weight on the batch mean: 0.01 by default,
    ``0.99`` for the paper as printed (Tencent's TFace uses 0.1).

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0 (the authors' code).
        margin: The angular margin ``m`` in radians, in ``[0, pi)``. Defaults to 0.5.
        t_alpha: Weight of the batch's mean target cosine in the update of ``t``, in
            ``[0, 1]`` (0 freezes ``t`` at its value). Defaults to 0.01 (the authors' code; the
            paper prints 0.99).
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``interclass_filtering_threshold`` and the base layer arguments.

    Returns:
        float32 logits of shape ``(B, num_classes)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.CurricularFace(num_classes=3, scale=1.0, margin=0.5,
        ...                          kernel_initializer="identity")
        >>> x = np.array([[0.8, 0.6, 0.0]], "float32")  # cos = (0.8, 0.6, 0), label 1
        >>> logits = np.asarray(head([x, np.array([1])], training=True))
        >>> round(float(head.t.numpy()), 4)  # 0.01 * 0.6 + 0.99 * 0
        0.006
        >>> round(float(logits[0, 0]), 4)  # hard negative: 0.8 * (0.006 + 0.8)
        0.6448

    Reference:
        Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face
        Recognition", CVPR 2020 (arXiv 2004.00288); the authors' code
        (HuangYG123/CurricularFace, ``head/metrics.py``).
    """

    #: The hard negatives' logits are rewritten too (see :meth:`combine`).
    rewrites_non_targets = True

    def __init__(self, num_classes, scale=64.0, margin=0.5, t_alpha=0.01, sub_centers=1, **kwargs):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.margin = check_float(
            "margin", margin, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)"
        )
        self.t_alpha = check_float("t_alpha", t_alpha, low=0.0, high=1.0)
        self.t = None  # the curriculum state, created in `build_state`

    def build_state(self):
        self.t = self.add_training_state("t")

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        return angular_margin_target(cos_y, 1.0, self.margin, 0.0)

    def current_t(self, cos_y=None, training=None):
        """The ``t`` a call uses: the stored one, or in a training call the updated one.

        With ``training=True`` and the batch's target cosines ``cos_y``, computes
        ``t_alpha * mean(cos_y) + (1 - t_alpha) * t`` (over the finite entries; an empty batch
        keeps ``t``), stores it and returns it. Otherwise returns the stored ``t``.
        """
        stored = ops.convert_to_tensor(self.t)
        if training is not True or cos_y is None:
            return stored
        mean, count = finite_mean(ops.stop_gradient(cos_y))
        updated = self.t_alpha * mean + (1.0 - self.t_alpha) * stored
        updated = ops.where(count > 0, updated, stored)
        self.update_training_state(self.t, updated, training)
        return updated

    def combine(self, cos, target, is_target, scale, cos_y=None, training=None):
        t = ops.stop_gradient(self.current_t(cos_y, training))
        # The raw T = cos(theta_y + m), without the fallback past pi, decides which negatives
        # are hard (a comparison: no gradient). The target column is overwritten, so the mask
        # need not exclude it.
        raw = ops.cos(safe_arccos(ops.stop_gradient(cos_y)) + self.margin)
        return curricular_logits(cos, target, is_target, raw, t, scale)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "t_alpha": self.t_alpha})
        return config
