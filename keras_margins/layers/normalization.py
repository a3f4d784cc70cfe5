"""L2 normalisation of embeddings that holds over the whole float32 range."""

import keras

from keras_margins.ops import l2_normalize


@keras.saving.register_keras_serializable(package="keras_margins")
class L2Normalization(keras.layers.Layer):
    """Divide each embedding by its L2 norm, in float32, at any magnitude.

    ``e = x / ||x||`` along the last axis, computed as the heads compute it: the row is first
    scaled so that its largest absolute entry is about 1, so embeddings of magnitude 1e-30 or
    1e30 give the same direction (``keras.layers.UnitNormalization`` overflows its squared norm
    above about 1e19 and meets its norm floor below about 1e-6). A zero row stays 0; NaN or inf
    in gives NaN out. The output is float32 whatever the dtype policy.

    Call arguments:
        inputs: Embeddings of shape ``(..., D)``.

    Returns:
        float32 tensor of the same shape with unit rows.

    Example:

        >>> import numpy as np, keras_margins as km
        >>> x = np.array([[3e30, 4e30], [3e-30, 4e-30]], dtype="float32")
        >>> e = km.L2Normalization()(x).numpy()
        >>> bool(np.allclose(e, [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6))
        True
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return l2_normalize(keras.ops.cast(inputs, "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


__all__ = ["L2Normalization"]
