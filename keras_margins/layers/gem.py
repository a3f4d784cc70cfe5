"""Generalized-mean (GeM) pooling with a trainable exponent, computed in float32."""

import keras

from keras_margins._validation import check_choice, check_flag, check_float


@keras.saving.register_keras_serializable(package="keras_margins")
class GeMPooling2D(keras.layers.Layer):
    """Generalized-mean pooling over the spatial axes of a feature map (Radenović et al.).

    For each channel ``c`` of a feature map ``x`` of ``H x W`` positions::

        f_c = ( (1 / HW) * sum_{h,w} max(x_{hwc}, eps) ** p ) ** (1 / p)

    ``p = 1`` is average pooling and ``p -> inf`` tends to max pooling; ``p`` is one scalar
    shared by all channels and, by default, a trainable weight initialised at ``3`` (the
    official ``cirtorch`` layer and the Kaggle landmark and whale winners). The clamp at
    ``eps`` keeps ``x ** p`` and the gradient with respect to ``p`` (which contains ``log x``)
    finite for ReLU outputs that are exactly zero.

    The whole computation runs in float32 whatever the dtype policy: under ``mixed_float16``
    ``x ** 3`` overflows float16 (max 65504) as soon as an activation exceeds about 40. The
    result is cast back to the layer's compute dtype (it is at most ``max x``, so it fits). The
    exponent is a float32 variable that is never autocast to float16.

    This is **not** the function of tensorflow-similarity's ``GeneralizedMeanPooling2D``: that
    layer has a fixed (non-trainable) ``p``, no ``eps`` clamp, and computes
    ``M_p(x - min x + 1) + min x - 1``, which differs from ``M_p(x)`` because the power mean is
    not shift-equivariant. Weights trained with one do not give the same features with the other.

    Args:
        p: Initial exponent, ``> 0``. Defaults to ``3.0``.
        eps: Lower clamp of the activations, ``> 0``. Defaults to ``1e-6``.
        trainable_p: Learn ``p`` (the official layer does; the paper's training also gives it
            10x the learning rate and no weight decay, which you can do with a separate
            optimizer or ``keras.optimizers.Optimizer.exclude_from_weight_decay``). Defaults to
            ``True``.
        data_format: ``"channels_last"`` ``(B, H, W, C)`` or ``"channels_first"``
            ``(B, C, H, W)``. Defaults to ``None``: ``keras.config.image_data_format()``.
        keepdims: Keep the spatial axes with size 1. Defaults to ``False``: output ``(B, C)``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Returns:
        ``(B, C)`` (or ``(B, 1, 1, C)`` / ``(B, C, 1, 1)`` with ``keepdims=True``).

    Example:

        >>> import numpy as np, keras, keras_margins as km
        >>> x = np.ones((2, 4, 4, 3), "float32") * 2.0
        >>> km.GeMPooling2D()(x).shape
        TensorShape([2, 3])
        >>> float(km.GeMPooling2D()(x)[0, 0])  # constant map: GeM = the constant
        2.0

    Reference:
        F. Radenović, G. Tolias, O. Chum, "Fine-tuning CNN Image Retrieval with No Human
        Annotation", TPAMI 2018 (code: filipradenovic/cnnimageretrieval-pytorch, ``GeM``).
    """

    def __init__(
        self, p=3.0, eps=1e-6, trainable_p=True, data_format=None, keepdims=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.init_p = check_float("p", p, low=0.0, low_open=True)
        self.eps = check_float("eps", eps, low=0.0, low_open=True)
        self.trainable_p = check_flag("trainable_p", trainable_p)
        if data_format is None:
            data_format = keras.config.image_data_format()
        self.data_format = check_choice(
            "data_format", data_format, ("channels_last", "channels_first")
        )
        self.keepdims = check_flag("keepdims", keepdims)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p",
            shape=(1,),
            initializer=keras.initializers.Constant(self.init_p),
            trainable=self.trainable_p,
            dtype="float32",
            autocast=False,
        )
        self.built = True

    def _axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        p = keras.ops.cast(self.p, "float32")
        x = keras.ops.maximum(x, self.eps)
        pooled = keras.ops.mean(keras.ops.power(x, p), axis=self._axes(), keepdims=self.keepdims)
        out = keras.ops.power(pooled, 1.0 / p)
        return keras.ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            b, _, _, c = input_shape
            return (b, 1, 1, c) if self.keepdims else (b, c)
        b, c, _, _ = input_shape
        return (b, c, 1, 1) if self.keepdims else (b, c)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "p": self.init_p,
                "eps": self.eps,
                "trainable_p": self.trainable_p,
                "data_format": self.data_format,
                "keepdims": self.keepdims,
            }
        )
        return config


__all__ = ["GeMPooling2D"]
