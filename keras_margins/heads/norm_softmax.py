"""NormSoftmax (NSL / NormFace): normalized features and class centres, no margin."""

import keras

from keras_margins.heads.base import MarginHead


@keras.saving.register_keras_serializable(package="keras_margins")
class NormSoftmax(MarginHead):
    """Normalized softmax head (NSL, NormFace): cosine logits times a fixed scale.

    Both the embeddings and the class centres are L2-normalized; every logit, target or not, is

        logit_j = s * cos(theta_j)

    There is no margin; this is the baseline the margin heads improve on. The scale must be large
    enough for the softmax to saturate (with ``s = 1`` the loss cannot fall below ``log C``).

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 16.0.
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        kernel_initializer: Initializer of the class centres. Defaults to ``"glorot_uniform"``.
        kernel_regularizer: Regularizer of the class centres. Defaults to ``None``.
        kernel_constraint: Constraint of the class centres. Defaults to ``None``.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: ``embeddings`` of shape ``(B, D)``, or ``[embeddings, labels]``. Labels change
            nothing for this head; they are accepted so that every head is called alike.

    Returns:
        float32 logits of shape ``(B, num_classes)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.NormSoftmax(num_classes=10)
        >>> tuple(head(np.random.rand(4, 8).astype("float32")).shape)
        (4, 10)

    Reference:
        Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification", ACM MM 2017.
    """

    #: No margin: a training call without labels is this head's normal use (no warning).
    uses_labels = False

    def __init__(self, num_classes, scale=16.0, sub_centers=1, **kwargs):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
