"""The combined margin (insightface): SphereFace, ArcFace and CosFace margins at once."""

import math

import keras

from keras_margins._validation import FLOAT32_MAX, check_float, check_float32_bound
from keras_margins.heads.arcface import angular_margin_target
from keras_margins.heads.base import MarginHead
from keras_margins.heads.class_margins import (
    check_margin,
    class_angular_margin_target,
    margin_config,
)


@keras.saving.register_keras_serializable(package="keras_margins")
class CombinedMargin(MarginHead):
    """Combined margin head (insightface): SphereFace, ArcFace and CosFace margins at once.

        target logit     = s * (cos(m1 * theta_y + m2) - m3)
        non-target logit = s * cos(theta_j)

    ``m1`` is SphereFace's multiplicative angular margin, ``m2`` ArcFace's additive angular
    margin and ``m3`` CosFace's additive cosine margin. ``(1, 0.5, 0)`` is ArcFace and
    ``(1, 0, 0.35)`` is CosFace. Past ``m1 * theta_y + m2 = pi`` the target keeps decreasing
    (see :func:`angular_margin_target`).

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        m1: Multiplicative angular margin, >= 1. Defaults to 1.0.
        m2: Additive angular margin in radians, in ``[0, pi)``, or a per-class vector of such
            margins (length ``num_classes``; sample ``i`` uses ``m2[y_i]``, with the fallback
            past ``m1 * theta + m2 = pi`` per sample). Defaults to 0.5.
        m3: Additive cosine margin, in ``[0, 2)``, or a per-class vector of such margins.
            Vectors are saved in the config as lists of floats. Defaults to 0.0.
        sub_centers: Sub-centres per class. Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint`` and the
            base layer arguments.

    Call arguments:
        inputs: ``[embeddings, labels]`` in training, or ``embeddings`` alone at inference.

    Returns:
        float32 logits of shape ``(B, num_classes)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.CombinedMargin(num_classes=10, m1=1.0, m2=0.3, m3=0.2)
        >>> x = np.random.rand(4, 8).astype("float32")
        >>> tuple(head([x, np.array([0, 1, 2, 3])]).shape)
        (4, 10)

    Reference:
        Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
        CVPR 2019, section 3.3 (arXiv 1801.07698).
    """

    def __init__(self, num_classes, scale=64.0, m1=1.0, m2=0.5, m3=0.0, sub_centers=1, **kwargs):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.m1 = check_float("m1", m1, low=1.0)
        check_float32_bound(
            "m1",
            self.m1,
            FLOAT32_MAX / 4.0,
            "m1 * theta (theta up to pi) must be finite in float32",
        )
        self.m2 = check_margin(
            "m2", m2, num_classes, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)"
        )
        self.m3 = check_margin("m3", m3, num_classes, low=0.0, high=2.0, high_open=True)

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        if isinstance(self.m2, float) and isinstance(self.m3, float):  # scalar path, unchanged
            return angular_margin_target(cos_y, self.m1, self.m2, self.m3)
        return class_angular_margin_target(cos_y, labels, self.m1, self.m2, self.m3)

    def get_config(self):
        config = super().get_config()
        config.update({"m1": self.m1, "m2": margin_config(self.m2), "m3": margin_config(self.m3)})
        return config
