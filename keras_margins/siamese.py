"""Distance between the two outputs of a Siamese pair of towers, and a Siamese model builder."""

import keras
from keras import ops

from keras_margins.ops import power_of_two_scale, row_normalize, safe_sqrt

PAIR_METRICS = ("euclidean", "cosine")

# The triplet losses' `distance_metric` names for the same distances, named in the error message.
_PAIR_METRIC_HINTS = {"l2": "euclidean", "angular": "cosine"}


def _check_metric(metric):
    if isinstance(metric, str) and metric in PAIR_METRICS:
        return metric
    hint = _PAIR_METRIC_HINTS.get(str(metric).lower())
    hint = f" ({metric!r} is {hint!r} here)" if hint else ""
    raise ValueError(
        f"`metric` must be one of {list(PAIR_METRICS)}{hint}. Received: metric={metric!r}"
    )


@keras.saving.register_keras_serializable(package="keras_margins")
class PairDistance(keras.layers.Layer):
    """Distance between paired embeddings ``a_i`` and ``b_i`` (the head of a Siamese network).

        euclidean: d_i = ||a_i - b_i||      (a safe square root: finite gradient at d = 0)
        cosine:    d_i = 1 - cos(a_i, b_i)

    Computed in float32 whatever the dtype policy, for any magnitude (each row is rescaled by a
    power of two of its max-abs first, so nothing overflows below float32's range); a NaN
    embedding gives a NaN distance. Feeds :class:`keras_margins.ContrastiveLoss`. Both inputs
    must be ``(B, D)`` with the same ``B`` and ``D`` (they are not broadcast): a ``ValueError``
    otherwise, when the shapes are known.

    Args:
        metric: ``"euclidean"`` or ``"cosine"``. Defaults to ``"euclidean"``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``).

    Call arguments:
        inputs: ``[a, b]``, two tensors ``(B, D)`` (the two towers' outputs).

    Returns:
        float32 distances ``(B,)``.

    Examples:

        >>> import numpy as np
        >>> import keras_margins as km
        >>> a = np.array([[0.0, 0.0]], "float32"); b = np.array([[3.0, 4.0]], "float32")
        >>> np.asarray(km.PairDistance()([a, b])).tolist()
        [5.0]

    Reference:
        Bromley et al., "Signature Verification using a Siamese Time Delay Neural Network",
        NIPS 1993; Hadsell, Chopra, LeCun, CVPR 2006.
    """

    def __init__(self, metric="euclidean", **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.metric = _check_metric(metric)

    def build(self, input_shape):
        _check_pair_shapes(input_shape)
        self.built = True

    def call(self, inputs):
        _check_pair_shapes([getattr(t, "shape", None) for t in inputs])
        a, b = inputs
        a = ops.cast(a, "float32")
        b = ops.cast(b, "float32")
        if self.metric == "euclidean":
            v = a - b
            s = power_of_two_scale(ops.max(ops.abs(v), axis=-1, initial=0.0))
            return safe_sqrt(ops.sum(ops.square(v / s[:, None]), axis=-1)) * s
        return 1.0 - ops.sum(row_normalize(a) * row_normalize(b), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def compute_output_spec(self, inputs):
        _check_pair_shapes([t.shape for t in inputs])
        return keras.KerasTensor((inputs[0].shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["metric"] = self.metric
        return config


def _check_pair_shapes(input_shape):
    """Two shapes ``(B, D)`` with equal ``B`` and ``D`` where known; ``ValueError`` otherwise."""
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
        raise ValueError(
            f"`PairDistance` takes a list of two tensors. Received: input_shape={input_shape}"
        )
    shapes = [None if s is None else tuple(s) for s in input_shape]
    for s in shapes:
        if s is not None and len(s) != 2:
            raise ValueError(
                "`PairDistance` takes two batches of embeddings of shape (batch_size, dim). "
                f"Received: input_shape={shapes}"
            )
    if None in shapes:
        return
    for axis, what in ((0, "batch size"), (1, "embedding dimension")):
        x, y = shapes[0][axis], shapes[1][axis]
        if x is not None and y is not None and x != y:
            raise ValueError(
                f"The two inputs of `PairDistance` must have the same {what} (they are not "
                f"broadcast). Received: input_shape={shapes}"
            )


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
        >>> siamese = km.build_siamese_model(backbone)
        >>> siamese.compile(optimizer="adam", loss=km.ContrastiveLoss(margin=1.0))
    """
    _check_metric(metric)
    if not isinstance(backbone, keras.Model):
        raise TypeError(
            "`backbone` must be a keras.Model mapping one input to embeddings (batch_size, dim). "
            f"Received: backbone={backbone!r} of type {type(backbone).__name__}"
        )
    try:
        input_shape = backbone.input_shape
    except (AttributeError, ValueError) as error:
        raise ValueError(
            "`backbone` must be a built model with a defined input (e.g. start a Sequential "
            f"with keras.Input). Received: backbone={backbone.name!r} ({error})"
        ) from None
    if not isinstance(input_shape, tuple) or (input_shape and isinstance(input_shape[0], tuple)):
        raise ValueError(
            "`backbone` must have a single input. "
            f"Received: backbone={backbone.name!r} with input_shape={input_shape}"
        )
    shape = input_shape[1:]
    a = keras.Input(shape, name="input_a")
    b = keras.Input(shape, name="input_b")
    distance = PairDistance(metric, name="pair_distance")([backbone(a), backbone(b)])
    return keras.Model([a, b], distance, name=name)
