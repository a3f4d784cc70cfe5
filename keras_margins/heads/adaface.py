"""AdaFace: a margin that adapts to each sample's feature norm (an image-quality proxy)."""

import math

import keras
from keras import ops

from keras_margins._validation import check_float
from keras_margins.heads.base import MarginHead
from keras_margins.ops import finite_mean, safe_arccos

#: The authors' ``eps``: the cosine clamp, the angle clamp and the std floor.
ADAFACE_EPS = 1e-3

#: The feature norm is clipped to this range before it is used (the authors' ``safe_norms``).
ADAFACE_NORM_RANGE = (0.001, 100.0)


def adaface_batch_statistics(norms, mean, std, t_alpha):
    """The running ``(mean, std)`` of the feature norms after one training batch (float32).

        mean <- t_alpha * mean(n) + (1 - t_alpha) * mean
        std  <- t_alpha * std(n)  + (1 - t_alpha) * std     (std unbiased, N - 1)

    Only finite norms count: a NaN or inf embedding (whose logits are NaN anyway, so the loss
    is NaN and visible) is left out, so that one bad sample does not turn the saved state into
    NaN for every later step. A batch with one usable sample (whose unbiased std is undefined)
    updates the mean and keeps the std; a batch with none keeps both.

    Args:
        norms: float32 ``(B,)`` clipped, detached feature norms.
        mean, std: float32 scalars, the current running statistics.
        t_alpha: the weight of the new batch, in ``(0, 1]``.

    Returns:
        ``(new_mean, new_std)``, float32 scalars.
    """
    batch_mean, count = finite_mean(norms)
    deviation = ops.square(norms - batch_mean)
    sq = ops.sum(ops.where(ops.isfinite(norms), deviation, ops.zeros_like(deviation)))
    batch_std = ops.sqrt(sq / ops.maximum(count - 1.0, 1.0))
    new_mean = ops.where(count >= 1.0, t_alpha * batch_mean + (1.0 - t_alpha) * mean, mean)
    new_std = ops.where(count >= 2.0, t_alpha * batch_std + (1.0 - t_alpha) * std, std)
    return new_mean, new_std


@keras.saving.register_keras_serializable(package="keras_margins")
class AdaFace(MarginHead):
    """AdaFace head: a margin between ArcFace's and CosFace's, chosen by the feature norm.

    The norm ``n = ||x||`` of each raw embedding (before any L2 normalization) is a proxy for
    the image's quality. It is clipped to ``[0.001, 100]`` and detached (no gradient), and
    standardized with running statistics ``mu``, ``sigma`` of the batch norms:

        z       = clip(h * (n - mu) / (sigma + eps), -1, 1)             eps = 1e-3
        theta   = arccos(clip(cos theta_y, -1 + eps, 1 - eps))
        theta'  = clip(theta - m * z, eps, pi - eps)
        target logit     = s * (cos(theta') - (m + m * z))
        non-target logit = s * cos(theta_j)

    A low-quality sample (``z = -1``) gets ArcFace's angular margin ``cos(theta + m)``, which
    puts little weight on hard samples; an average one (``z = 0``) CosFace's ``cos(theta) - m``;
    a high-quality one (``z = +1``) ``cos(theta - m) - 2m``, which emphasizes hard samples.

    **The state.** ``mu`` and ``sigma`` are non-trainable weights (``head.norm_mean``, initial
    20, and ``head.norm_std``, initial 100, as in the authors' code), saved in ``.keras``
    files and weights. In every training call (``training=True``, once per ``model.fit``
    step) they are updated **before** use,

        mu    <- t_alpha * mean(n) + (1 - t_alpha) * mu
        sigma <- t_alpha * std(n)  + (1 - t_alpha) * sigma     (unbiased std, N - 1)

    and the batch's margins use the updated values. In any other call (``predict``,
    ``evaluate``, ``training=False`` or unset) they are frozen and used as stored. A batch of a
    single sample updates ``mu`` and keeps ``sigma`` (its unbiased std is undefined; no NaN is
    written into the state); an empty batch changes nothing; a NaN or inf embedding is left
    out of the statistics (its own logits are NaN, so the loss shows it). Under
    ``tf.distribute`` the first replica's update is kept (its local batch), as the authors'
    DDP training broadcasts rank 0's buffers.

    **Where the authors' code and the paper differ** (mk-minchul/AdaFace, ``head.py``; we follow
    the code):

    - the running statistics weight the new batch by ``t_alpha = 0.01`` (the code's training
      default); the paper writes ``alpha = 0.99`` for the same weight (``t_alpha=0.99`` gives
      the paper's reading);
    - the scale multiplies both terms of the target, ``s * (cos(theta') - g_add)``; the paper
      prints ``s * cos(theta') - g_add``, which makes the additive margin almost vanish next
      to ``s``; not offered as an option.

    One deliberate departure: the code clamps *every* cosine to ``[-1 + eps, 1 - eps]``; here
    only the target cosine is clamped (it goes through ``arccos``), and non-target logits are
    the plain ``s * cos(theta_j)`` of every other head. The two differ only for a non-target
    cosine beyond ``+-0.999`` (by at most ``s * eps = 0.064`` in a logit), where the clamp would
    also remove the gradient that pushes such a near-duplicate class centre away.

    AdaFace needs embeddings whose norms vary with quality: feed it the backbone's raw features,
    not L2-normalized ones (with unit norms ``z`` is noise around 0 and AdaFace is CosFace).

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        margin: The margin ``m``, in ``[0, pi)``. Defaults to 0.4 (the released training
            scripts).
        h: The concentration ``h`` of the standardized norm, >= 0 (0 gives CosFace).
            Defaults to 0.333 (the released training scripts and the paper).
        t_alpha: Weight of the new batch in the running statistics, in ``(0, 1]``. Defaults to
            0.01 (the authors' training code; see above).
        sub_centers: Sub-centres ``K`` per class (the class cosine is the max over its ``K``
            centres). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``interclass_filtering_threshold`` and the base layer arguments.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.AdaFace(num_classes=10)
        >>> x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
        >>> tuple(head([x, np.array([0, 1, 2, 3])], training=True).shape)
        (4, 10)
        >>> float(head.norm_mean.numpy()) != 20.0  # advanced by the training call
        True

    Reference:
        Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022
        (arXiv 2204.00964); the authors' code, github.com/mk-minchul/AdaFace.
    """

    def __init__(
        self,
        num_classes,
        scale=64.0,
        margin=0.4,
        h=0.333,
        t_alpha=0.01,
        sub_centers=1,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.margin = check_float(
            "margin", margin, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)"
        )
        self.h = check_float("h", h, low=0.0)
        self.t_alpha = check_float(
            "t_alpha", t_alpha, low=0.0, high=1.0, low_open=True, range_text="(0, 1]"
        )

    def build_state(self):
        self.norm_mean = self.add_training_state(
            "norm_mean", initializer=keras.initializers.Constant(20.0)
        )
        self.norm_std = self.add_training_state(
            "norm_std", initializer=keras.initializers.Constant(100.0)
        )

    def standardized_norm(self, norm, training=None):
        """``z = clip(h * (n - mu) / (sigma + eps), -1, 1)`` (float32 ``(B,)``, no gradient).

        With ``training=True`` the running statistics are first updated with this batch.
        """
        n = ops.stop_gradient(ops.clip(norm, *ADAFACE_NORM_RANGE))
        mean = ops.convert_to_tensor(self.norm_mean)
        std = ops.convert_to_tensor(self.norm_std)
        if training is True:
            mean, std = adaface_batch_statistics(n, mean, std, self.t_alpha)
            self.update_training_state(self.norm_mean, mean, training)
            self.update_training_state(self.norm_std, std, training)
        z = self.h * (n - mean) / (std + ADAFACE_EPS)
        return ops.stop_gradient(ops.clip(z, -1.0, 1.0))

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        z = self.standardized_norm(norm, training)
        eps, m = ADAFACE_EPS, self.margin
        theta = safe_arccos(ops.clip(cos_y, -1.0 + eps, 1.0 - eps))
        theta_m = ops.clip(theta - m * z, eps, math.pi - eps)
        return ops.cos(theta_m) - (m + m * z)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "h": self.h, "t_alpha": self.t_alpha})
        return config


__all__ = ["AdaFace"]
