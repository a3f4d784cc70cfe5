"""Distance between the two outputs of a Siamese pair of towers, and a Siamese model builder."""

import keras
from keras import ops

from keras_margins._validation import check_choice
from keras_margins.distances import safe_sqrt
from keras_margins.heads.base import l2_normalize

PAIR_METRICS = ("euclidean", "cosine")


@keras.saving.register_keras_serializable(package="keras_margins")
class PairDistance(keras.layers.Layer):
    """Distance between paired embeddings ``a_i`` and ``b_i`` (the head of a Siamese network).

        euclidean: d_i = ||a_i - b_i||      (a safe square root: finite gradient at d = 0)
        cosine:    d_i = 1 - cos(a_i, b_i)

    Computed in float32 whatever the dtype policy; feeds :class:`keras_margins.ContrastiveLoss`.

    Args:
        metric: ``"euclidean"`` or ``"cosine"``. Defaults to ``"euclidean"``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``).

    Call arguments:
        inputs: ``[a, b]``, two tensors ``(B, D)`` (the two towers' outputs).

    Returns:
        float32 distances ``(B,)``.

    Examples:

        >>> import numpy as np
        >>> from keras_margins.siamese import PairDistance
        >>> a = np.array([[0.0, 0.0]], "float32"); b = np.array([[3.0, 4.0]], "float32")
        >>> np.asarray(PairDistance()([a, b])).tolist()
        [5.0]

    Reference:
        Bromley et al., "Signature Verification using a Siamese Time Delay Neural Network",
        NIPS 1993; Hadsell, Chopra, LeCun, CVPR 2006.
    """

    def __init__(self, metric="euclidean", **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.metric = check_choice("metric", metric, PAIR_METRICS)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                f"`PairDistance` takes a list of two tensors. Received: input_shape={input_shape}"
            )
        self.built = True

    def call(self, inputs):
        a, b = inputs
        a = ops.cast(a, "float32")
        b = ops.cast(b, "float32")
        if self.metric == "euclidean":
            return safe_sqrt(ops.sum(ops.square(a - b), axis=-1))
        return 1.0 - ops.sum(l2_normalize(a) * l2_normalize(b), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs[0].shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["metric"] = self.metric
        return config


def build_siamese_model(backbone, metric="euclidean", name="siamese"):
    """A two-input model ``[a, b] -> distance`` sharing one backbone between both towers.

    Args:
        backbone: A Keras model mapping one input to an embedding ``(B, D)``.
        metric: ``"euclidean"`` or ``"cosine"``. Defaults to ``"euclidean"``.
        name: Model name. Defaults to ``"siamese"``.

    Returns:
        A ``keras.Model`` with inputs ``[a, b]`` and float32 distances ``(B,)`` as output; train
        it with :class:`keras_margins.ContrastiveLoss` and keep using ``backbone`` for embeddings.

    Examples:

        >>> import keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        >>> from keras_margins.siamese import build_siamese_model
        >>> siamese = build_siamese_model(backbone)
        >>> siamese.compile(optimizer="adam", loss=km.ContrastiveLoss(margin=1.0))
    """
    check_choice("metric", metric, PAIR_METRICS)
    shape = backbone.input_shape[1:]
    a = keras.Input(shape, name="input_a")
    b = keras.Input(shape, name="input_b")
    distance = PairDistance(metric, name="pair_distance")([backbone(a), backbone(b)])
    return keras.Model([a, b], distance, name=name)
