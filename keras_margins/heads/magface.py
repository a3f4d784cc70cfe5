"""MagFace: a margin linear in the feature norm, and a regulariser that makes the norm a quality."""

import math

import keras
from keras import ops

from keras_margins._validation import check_flag, check_float
from keras_margins.heads.base import MarginHead
from keras_margins.ops import safe_sin_from_cos


def magface_lambda_g_lower_bound(scale=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8):
    """The smallest ``lambda_g`` of MagFace's convergence guarantee (a Python float).

        lambda_g >= s * k * u_a^2 * l_a^2 / (u_a^2 - l_a^2),    k = (u_m - l_m) / (u_a - l_a)

    Above it the loss has a unique optimal norm per sample in ``[l_a, u_a]`` that grows with
    the sample's quality (the paper's Theorem; the bound is the one in the authors' code). The
    released training scripts use 35 with the defaults, where the bound is about 22.6; the
    argparse default 20 is below it. A ``lambda_g`` below the bound is allowed (the guarantee
    then no longer holds; training may still work).

    Args:
        scale, l_a, u_a, l_m, u_m: as for :class:`MagFace`.

    Returns:
        The bound as a float.

    Example:

        >>> import keras_margins as km
        >>> round(km.magface_lambda_g_lower_bound(), 2)
        22.59
    """
    scale = check_float("scale", scale, low=0.0, low_open=True)
    l_a, u_a, l_m, u_m = _check_magface_ranges(l_a, u_a, l_m, u_m)
    k = (u_m - l_m) / (u_a - l_a)
    return scale * k * u_a**2 * l_a**2 / (u_a**2 - l_a**2)


def _check_magface_ranges(l_a, u_a, l_m, u_m):
    l_a = check_float("l_a", l_a, low=0.0, low_open=True)
    u_a = check_float("u_a", u_a, low=0.0, low_open=True)
    if not u_a > l_a:
        raise ValueError(
            f"`u_a` must be greater than `l_a` (0 < l_a < u_a). Received: l_a={l_a}, u_a={u_a}"
        )
    l_m = check_float("l_m", l_m, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)")
    u_m = check_float("u_m", u_m, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)")
    if u_m < l_m:
        raise ValueError(
            f"`u_m` must be at least `l_m` (0 <= l_m <= u_m < pi). Received: l_m={l_m}, u_m={u_m}"
        )
    return l_a, u_a, l_m, u_m


@keras.saving.register_keras_serializable(package="keras_margins")
class MagFace(MarginHead):
    """MagFace head: an ArcFace margin that grows with the feature norm, plus a norm regulariser.

    With ``a = clip(||x||, l_a, u_a)`` the norm of the raw embedding (before any L2
    normalization), **not** detached,

        m(a)             = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
        target logit     = s * cos(theta_y + m(a))        (easy_margin: where cos theta_y > 0,
                                                           else s * cos theta_y)
        non-target logit = s * cos(theta_j)
        g(a)             = a / u_a^2 + 1 / a

    and ``lambda_g * mean(g(a))`` over the batch is added to the model's loss with
    ``add_loss`` in every call with labels (training, ``evaluate`` and direct calls alike, so
    ``fit`` and ``evaluate`` report the same loss; ``predict`` with the one-input embedding
    model adds nothing). The margin pushes a sample's norm up (a larger norm costs a larger
    margin only if the sample is easy), ``g`` pushes it down: at the optimum the norm grows
    with how easily the sample is recognised, so the norm of the raw embedding is a quality
    score at inference (``km.get_embedding_model(model, return_norm=True)`` returns it next
    to the normalized embedding; see ``docs/heads/magface.md``). The CE gradient reaches
    ``a`` through ``m(a)``, as in the authors' code; outside ``[l_a, u_a]`` the clip passes no
    gradient.

    ``easy_margin=True`` (the authors' ``MagLinear`` default) applies the margin only where
    ``cos theta_y > 0``; ``easy_margin=False`` uses ArcFace's fallback past ``theta_y + m > pi``:
    ``cos theta_y - m * sin(m)``, with the sample's own ``m(a)``.

    ``lambda_g`` should be at least :func:`magface_lambda_g_lower_bound` (about 22.6 with the
    defaults) for the paper's guarantee that the optimal norm is unique and monotone in
    quality; a smaller value is accepted (the authors' argparse default 20 is below it).

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        l_a: Lower bound of the norm, > 0. Defaults to 10.0 (the released run.sh).
        u_a: Upper bound of the norm, > ``l_a``. Defaults to 110.0.
        l_m: Margin at ``a = l_a``, in ``[0, pi)``. Defaults to 0.45.
        u_m: Margin at ``a = u_a``, in ``[l_m, pi)``. Defaults to 0.8.
        lambda_g: Weight of the regulariser ``g``, >= 0 (0 turns it off). Defaults to 35.0
            (the released run.sh; the argparse default is 20).
        easy_margin: Apply the margin only where ``cos theta_y > 0``. Defaults to ``True`` (the
            authors' code).
        sub_centers: Sub-centres ``K`` per class. Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``interclass_filtering_threshold`` and the base layer arguments.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.MagFace(num_classes=10)
        >>> x = 20.0 * np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
        >>> tuple(head([x, np.array([0, 1, 2, 3])]).shape)
        (4, 10)
        >>> len(head.losses)  # lambda_g * mean g(a)
        1

    Reference:
        Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality
        Assessment", CVPR 2021 (arXiv 2103.06627); the authors' code,
        github.com/IrvingMeng/MagFace.
    """

    def __init__(
        self,
        num_classes,
        scale=64.0,
        l_a=10.0,
        u_a=110.0,
        l_m=0.45,
        u_m=0.8,
        lambda_g=35.0,
        easy_margin=True,
        sub_centers=1,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.l_a, self.u_a, self.l_m, self.u_m = _check_magface_ranges(l_a, u_a, l_m, u_m)
        self.lambda_g = check_float("lambda_g", lambda_g, low=0.0)
        self.easy_margin = check_flag("easy_margin", easy_margin)

    def clipped_norm(self, norm):
        """``a = clip(||x||, l_a, u_a)`` (float32, differentiable inside the range)."""
        return ops.clip(norm, self.l_a, self.u_a)

    def margin_of(self, a):
        """``m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m``."""
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m

    def regularizer_of(self, a):
        """``g(a) = a / u_a^2 + 1 / a``, per sample."""
        return a / (self.u_a**2) + 1.0 / a

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        a = self.clipped_norm(norm)
        m = self.margin_of(a)
        if self.lambda_g > 0.0:
            # The batch mean (0 for an empty batch, not NaN).
            count = ops.maximum(ops.sum(ops.ones_like(a)), 1.0)
            self.add_loss(self.lambda_g * ops.sum(self.regularizer_of(a)) / count)
        cos_m, sin_m = ops.cos(m), ops.sin(m)
        cos_theta_m = cos_y * cos_m - safe_sin_from_cos(cos_y) * sin_m  # cos(theta + m)
        if self.easy_margin:
            return ops.where(cos_y > 0.0, cos_theta_m, cos_y)
        return ops.where(cos_y > -cos_m, cos_theta_m, cos_y - m * sin_m)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "l_a": self.l_a,
                "u_a": self.u_a,
                "l_m": self.l_m,
                "u_m": self.u_m,
                "lambda_g": self.lambda_g,
                "easy_margin": self.easy_margin,
            }
        )
        return config


__all__ = ["MagFace", "magface_lambda_g_lower_bound"]
