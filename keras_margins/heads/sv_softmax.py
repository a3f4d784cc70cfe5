"""SV-Softmax (support vector guided softmax) and its cosine- and arc-margin variants."""

import math

import keras
from keras import ops

from keras_margins._validation import (
    MAX_LOGIT_SCALE,
    check_choice,
    check_float,
    check_float32_bound,
)
from keras_margins.heads.arcface import angular_margin_target
from keras_margins.heads.base import MarginHead, layer_metrics_supported

_MARGIN_TYPES = (None, "cosine", "arc")


def _concrete(tensor):
    """The NumPy value of ``tensor`` when it holds concrete values (eager), else ``None``."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    try:
        return ops.convert_to_numpy(tensor)
    except Exception:  # noqa: BLE001  a traced tensor: each backend raises its own type
        return None


@keras.saving.register_keras_serializable(package="keras_margins")
class SVSoftmax(MarginHead):
    """SV-Softmax head: re-weights the non-target classes a sample is mis-classified against.

        target logit     = s * f(theta_y)
        non-target logit = s * (t * cos(theta_k) + t - 1)   if cos(theta_k) > f(theta_y)
                           s * cos(theta_k)                 otherwise

    with ``f = cos(theta_y)`` (SV-Softmax, ``margin_type=None``), ``f = cos(theta_y) - m``
    (SV-AM-Softmax, ``margin_type="cosine"``) or ``f = cos(theta_y + m)`` (SV-Arc-Softmax,
    ``margin_type="arc"``, kept decreasing past ``theta_y + m = pi`` as in :class:`ArcFace`).
    A pair ``(i, k)`` with ``cos(theta_k) > f(theta_y)`` (strictly) is a support vector: its
    logit is raised by ``(t - 1) * (cos(theta_k) + 1) >= 0``, which focuses the loss on the
    hard negatives. The indicator is a comparison and carries no gradient. ``t = 1`` gives back
    the underlying (margin) softmax exactly.

    The layer reports, for every call with labels, the fraction of non-target
    ``(sample, class)`` pairs that are support vectors (``B * (C - 1)`` pairs per batch) as the
    metric ``"<layer name>_sv_fraction"`` (``head.support_vector_fraction``; in ``model.fit``
    logs it is the running mean over the epoch's batches). :meth:`support_vector_mask` returns
    the boolean mask itself.

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 32.0.
        t: The re-weighting parameter, >= 1 (1 = no re-weighting). Defaults to 1.2.
        margin: The margin ``m``: must be 0 with ``margin_type=None``; in ``[0, 2)`` for
            ``"cosine"``; in ``[0, pi)`` radians for ``"arc"``. Defaults to 0.0.
        margin_type: ``None``, ``"cosine"`` or ``"arc"``. Defaults to ``None``.
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint`` and the
            base layer arguments.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.SVSoftmax(num_classes=3, scale=1.0, t=1.5, kernel_initializer="identity")
        >>> x, y = np.array([[1.0, 0.0, 0.0]], "float32"), np.array([1])  # cos = (1, 0, 0)
        >>> np.asarray(head.support_vector_mask(x, y)).tolist()  # cos_0 = 1 > cos_y = 0
        [[True, False, False]]
        >>> np.asarray(head([x, y])).tolist()  # t * 1 + t - 1 = 2 for the support vector
        [[2.0, 0.0, 0.0]]

    Reference:
        Wang, Zhang, Wang, Shi, Mei, "Support Vector Guided Softmax Loss for Face Recognition",
        arXiv 1812.11317 (2018).
    """

    #: The support vectors' logits are rewritten too (see :meth:`combine`).
    rewrites_non_targets = True

    def __init__(
        self,
        num_classes,
        scale=32.0,
        t=1.2,
        margin=0.0,
        margin_type=None,
        sub_centers=1,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.t = check_float("t", t, low=1.0)
        check_float32_bound(
            "t",
            self.t,
            MAX_LOGIT_SCALE / (2.0 * self.scale),
            f"the re-weighted logits scale * (t * cos + t - 1), up to (2 t - 1) * scale with "
            f"scale={self.scale}, must stay finite in float32",
        )
        self.margin_type = check_choice("margin_type", margin_type, _MARGIN_TYPES)
        if margin_type is None:
            margin = check_float("margin", margin)
            if margin != 0.0:
                raise ValueError(
                    "`margin` must be 0 when `margin_type=None` (choose margin_type='cosine' or "
                    f"'arc' for a margin). Received: margin={margin}"
                )
            self.margin = 0.0
        elif margin_type == "cosine":
            self.margin = check_float("margin", margin, low=0.0, high=2.0, high_open=True)
        else:
            self.margin = check_float(
                "margin", margin, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)"
            )
        # In the fit logs (not on JAX: a Keras limitation, see `layer_metrics_supported`;
        # `support_vector_mask()` works on every backend).
        self.support_vector_fraction = (
            keras.metrics.Mean(name=f"{self.name}_sv_fraction")
            if layer_metrics_supported()
            else None
        )

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        if self.margin_type == "cosine":
            return cos_y - self.margin
        if self.margin_type == "arc":
            return angular_margin_target(cos_y, 1.0, self.margin, 0.0)
        return cos_y

    def _mask(self, cos, target, is_target):
        return ops.logical_and(cos > target[:, None], ops.logical_not(is_target))

    def combine(self, cos, target, is_target, scale, cos_y=None, training=None):
        sv = self._mask(cos, target, is_target)
        if layer_metrics_supported():  # not on JAX: see layer_metrics_supported
            pairs = ops.cast(ops.shape(cos)[0] * (ops.shape(cos)[1] - 1), "float32")
            self.support_vector_fraction.update_state(
                ops.divide_no_nan(ops.sum(ops.cast(sv, "float32")), pairs)
            )
        reweighted = ops.where(sv, self.t * cos + (self.t - 1.0), cos)
        return ops.where(is_target, target[:, None], reweighted) * scale

    def support_vector_mask(self, embeddings, labels):
        """Boolean ``(B, num_classes)`` mask of the support vectors (target columns False).

        Labels follow the heads' rule (see :class:`MarginHead`). A mask cannot hold NaN, so a
        label that is not a class id in ``[0, num_classes)`` is a ``ValueError`` when the labels
        are concrete values (eager call); in a traced function, where they cannot be read, its
        row is all False.
        """
        embeddings = ops.convert_to_tensor(embeddings)
        if not self.built:
            self.build(tuple(embeddings.shape))
        cos = self.cosine(embeddings)
        labels = self.prepare_labels(labels, batch_size=cos.shape[0])
        concrete = _concrete(labels)
        if concrete is not None and (concrete < 0).any():
            bad = [int(i) for i in (concrete < 0).nonzero()[0]]
            raise ValueError(
                f"`labels` must be class ids in [0, {self.num_classes}) (integers, or floats "
                f"holding integers). Received: labels with invalid entries at positions {bad}"
            )
        # A label -1 (not a class id) matches no column: its row stays all False.
        is_target = ops.arange(self.num_classes, dtype="int32")[None, :] == labels[:, None]
        cos_y = ops.take_along_axis(cos, ops.maximum(labels, 0)[:, None], axis=1)[:, 0]
        mask = self._mask(cos, self.target_logit(cos_y, labels=labels), is_target)
        return ops.logical_and(mask, (labels >= 0)[:, None])

    def get_config(self):
        config = super().get_config()
        config.update({"t": self.t, "margin": self.margin, "margin_type": self.margin_type})
        return config
