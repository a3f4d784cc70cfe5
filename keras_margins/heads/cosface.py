"""CosFace (LMCL) / AM-Softmax: an additive cosine margin."""

import keras

from keras_margins.heads.base import MarginHead
from keras_margins.heads.class_margins import check_margin, margin_config, per_sample_margin


@keras.saving.register_keras_serializable(package="keras_margins")
class CosFace(MarginHead):
    """CosFace / AM-Softmax head: an additive margin on the target cosine.

        target logit     = s * (cos(theta_y) - m)
        non-target logit = s * cos(theta_j)

    The CosFace paper uses ``m = 0.35, s = 64`` (accuracy peaks at 0.35 and training stops
    converging past about 0.45); AM-Softmax uses ``m = 0.35, s = 30``.

    Called and returning as every head (see :class:`~keras_margins.heads.MarginHead`):
    ``[embeddings, labels]`` in training, ``embeddings`` alone for ``s * cos`` at inference;
    float32 logits ``(B, num_classes)`` for ``SparseCategoricalCrossentropy(from_logits=True)``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        margin: The cosine margin ``m``, in ``[0, 2)`` (past 2 no target can win), or a
            per-class vector of such margins (a list or NumPy array of length
            ``num_classes``, e.g. from :func:`~keras_margins.class_size_margins`): sample ``i``
            then uses ``margin[y_i]``. A vector is saved in the config as a list of floats.
            Defaults to 0.35.
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint`` and the
            base layer arguments.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.CosFace(num_classes=2, scale=10.0, margin=0.35, kernel_initializer="identity")
        >>> logits = head([np.array([[1.0, 0.0]], "float32"), np.array([0])])
        >>> np.round(np.asarray(logits, "float64"), 4).tolist()  # s (cos - m), s cos
        [[6.5, 0.0]]

    Reference:
        Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018
        (arXiv 1801.09414); Wang et al., "Additive Margin Softmax for Face Verification",
        IEEE SPL 2018 (arXiv 1801.05599).
    """

    def __init__(self, num_classes, scale=64.0, margin=0.35, sub_centers=1, **kwargs):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.margin = check_margin("margin", margin, num_classes, low=0.0, high=2.0, high_open=True)

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        return cos_y - per_sample_margin(self.margin, labels)  # a float, or the class's margin

    def get_config(self):
        config = super().get_config()
        config["margin"] = margin_config(self.margin)
        return config
