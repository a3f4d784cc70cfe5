"""ArcFace (additive angular margin) and ArcMarginLayer, its Kaggle name."""

import math

import keras
from keras import ops

from keras_margins._validation import check_flag
from keras_margins.heads.base import MarginHead
from keras_margins.heads.class_margins import (
    check_margin,
    class_angular_margin_target,
    margin_config,
    per_sample_margin,
)
from keras_margins.ops import safe_arccos


def angular_margin_target(cos_y, m1=1.0, m2=0.0, m3=0.0):
    """Target value ``cos(m1 * theta + m2) - m3``, kept decreasing in ``theta`` on [0, pi].

    ``cos(m1 * theta + m2)`` rises again once ``m1 * theta + m2`` passes pi, i.e. for ``theta``
    beyond ``theta_t = (pi - m2) / m1``. There the target continues as
    ``cos(theta) - m3 - c`` with ``c = max(m2 * sin(m2), 1 + cos(theta_t))``:

    - for ``m1 = 1`` and the margins used in practice (``m2`` up to about 2.33) ``c`` is
      ``m2 * sin(m2)``: exactly insightface's rule ``cos(theta) - m * sin(m)`` past
      ``cos(pi - m)``, which steps down a little at ``theta_t``;
    - otherwise ``c = 1 + cos(theta_t)`` makes the continuation meet the main branch's value
      ``-1 - m3`` at ``theta_t``, so the target never rises (for any ``m1 >= 1``,
      ``0 <= m2 < pi``), where the insightface rule would step up.

    Args:
        cos_y: float32 target cosines, clipped to [-1, 1].
        m1, m2, m3: multiplicative angular, additive angular and additive cosine margins.

    Returns:
        float32 tensor of the same shape as ``cos_y``.
    """
    if m1 == 1.0 and m2 == 0.0:
        return cos_y - m3  # the pure cosine margin: no angle needed
    theta = safe_arccos(cos_y)
    target = ops.cos(m1 * theta + m2) - m3
    theta_t = (math.pi - m2) / m1
    if theta_t < math.pi:
        cos_t = math.cos(theta_t)
        offset = max(m2 * math.sin(m2), 1.0 + cos_t)
        target = ops.where(cos_y > cos_t, target, cos_y - m3 - offset)
    return target


@keras.saving.register_keras_serializable(package="keras_margins")
class ArcFace(MarginHead):
    """ArcFace head: an additive angular margin on the target angle.

        target logit     = s * cos(theta_y + m)
        non-target logit = s * cos(theta_j)

    Where ``theta_y + m`` would pass pi (``cos(theta_y) <= cos(pi - m)``) the target logit
    continues as ``s * (cos(theta_y) - m * sin(m))`` (insightface's rule), so it keeps decreasing
    as the sample moves away from its class; for margins above about 2.33 rad, where that rule
    would step up, the continuation is made continuous instead (see
    :func:`angular_margin_target`). ``easy_margin=True`` applies the margin only where
    ``cos(theta_y) > 0`` and leaves the target cosine unchanged elsewhere.

    ``ArcMarginLayer`` is this same class under the name Kaggle notebooks use.

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        margin: The angular margin ``m`` in radians, in ``[0, pi)``, or a per-class vector of
            such margins (a list or NumPy array of length ``num_classes``, e.g. from
            :func:`~keras_margins.class_size_margins`): sample ``i`` then uses
            ``margin[y_i]``, with the fallback past ``theta + m = pi`` and ``easy_margin``
            applied per sample. A vector is saved in the config as a list of floats.
            Defaults to 0.5.
        easy_margin: Apply the margin only where ``cos(theta_y) > 0``. Defaults to ``False``.
        sub_centers: Sub-centres ``K`` per class (sub-center ArcFace: the class cosine is the
            max over its ``K`` centres; the paper uses ``K = 3``). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint`` and the
            base layer arguments.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.ArcFace(num_classes=2, scale=10.0, margin=0.5, kernel_initializer="identity")
        >>> x = np.array([[np.cos(np.pi / 3), np.sin(np.pi / 3)]], "float32")  # 60 degrees
        >>> logits = np.asarray(head([x, np.array([0])]))
        >>> bool(np.isclose(logits[0, 0], 10.0 * np.cos(np.pi / 3 + 0.5), atol=1e-4))
        True

    Reference:
        Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
        CVPR 2019 (arXiv 1801.07698); Deng et al., "Sub-center ArcFace", ECCV 2020.
    """

    def __init__(
        self, num_classes, scale=64.0, margin=0.5, easy_margin=False, sub_centers=1, **kwargs
    ):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.margin = check_margin(
            "margin",
            margin,
            num_classes,
            low=0.0,
            high=math.pi,
            high_open=True,
            range_text="[0, pi)",
        )
        self.easy_margin = check_flag("easy_margin", easy_margin)

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        if self.easy_margin:
            m = per_sample_margin(self.margin, labels)  # a float, or each sample's class margin
            return ops.where(cos_y > 0, ops.cos(safe_arccos(cos_y) + m), cos_y)
        if isinstance(self.margin, float):  # the scalar path, unchanged
            return angular_margin_target(cos_y, 1.0, self.margin, 0.0)
        return class_angular_margin_target(cos_y, labels, 1.0, self.margin, 0.0)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": margin_config(self.margin), "easy_margin": self.easy_margin})
        return config


#: The ArcFace head under the name Kaggle users know (the same class).
ArcMarginLayer = ArcFace
