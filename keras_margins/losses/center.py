"""Center loss (Wen et al. 2016): a layer owning the class centers and updating them per batch."""

import keras
from keras import ops

from keras_margins._validation import (
    FLOAT32_MAX,
    check_float,
    check_float32_bound,
    check_int,
    class_ids,
)


def _is_pair(value):
    return isinstance(value, (list, tuple)) and len(value) == 2


@keras.saving.register_keras_serializable(package="keras_margins")
class CenterLoss(keras.layers.Layer):
    """Center loss: pulls each embedding towards the center of its class.

        L_C = weight * 1/2 * mean_i ||x_i - c_(y_i)||^2        (added with ``add_loss``)

    and after each training batch, for every class ``j`` present in the batch
    (``n_j`` samples):

        delta_c_j = sum_(i: y_i = j) (c_j - x_i) / (1 + n_j),    c_j <- c_j - alpha * delta_c_j

    The centers are a non-trainable weight ``(num_classes, D)`` (saved with the model); they
    are not moved by the optimizer, only by this rule, and not at all in inference
    (``training=False``), where no loss is added either. The layer returns the embeddings
    unchanged, so it sits between a backbone and a softmax or margin head:
    ``L = L_softmax + lambda * L_C`` as in the paper. The loss is the batch mean (as the
    authors' released code), not the sum, so ``weight`` does not depend on the batch size.
    Everything is computed in float32.

    Labels follow the heads' rule (see :class:`keras_margins.heads.MarginHead`): integer class
    ids, or floats holding integers. A label that is not a class id in ``[0, num_classes)``
    (outside the range, a float such as 1.6, NaN) makes the loss NaN and moves no centre;
    string labels are a ``TypeError``. An empty batch (a replica that gets no samples) adds a
    loss of 0 and moves nothing.

    Args:
        num_classes: Number of classes. Must be >= 1.
        alpha: Center learning rate ``alpha``, in ``[0, 1]``. Defaults to 0.5 (the paper's).
        weight: The weight ``lambda`` of the loss, >= 0. Defaults to 0.003 (the paper's face
            experiments).
        centers_initializer: Initializer of the centers. Defaults to ``"zeros"``.
        **kwargs: Base layer arguments (``name``, ``dtype``).

    Call arguments:
        inputs: ``[embeddings, labels]``: embeddings ``(B, D)``, integer labels ``(B,)`` or
            ``(B, 1)`` in ``[0, num_classes)``.
        training: Python bool; the loss and the update happen only when true.

    Returns:
        The embeddings, unchanged.

    Examples:

        >>> import keras, keras_margins as km
        >>> x = keras.Input((16,)); y = keras.Input((), dtype="int32")
        >>> emb = km.CenterLoss(num_classes=10, weight=0.01)([x, y])
        >>> model = keras.Model([x, y], keras.layers.Dense(10)(emb))

    Reference:
        Wen, Zhang, Li, Qiao, "A Discriminative Feature Learning Approach for Deep Face
        Recognition", ECCV 2016.
    """

    def __init__(self, num_classes, alpha=0.5, weight=0.003, centers_initializer="zeros", **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0)
        self.weight = check_float("weight", weight, low=0.0)
        check_float32_bound(
            "weight", self.weight, FLOAT32_MAX, "it must be representable in float32"
        )
        self.centers_initializer = keras.initializers.get(centers_initializer)

    def build(self, input_shape):
        if not _is_pair(input_shape) or not isinstance(input_shape[0], (list, tuple)):
            raise ValueError(
                "`CenterLoss` takes `[embeddings, labels]` (two tensors). "
                f"Received: input_shape={input_shape}"
            )
        emb_shape = tuple(input_shape[0])
        if len(emb_shape) != 2 or emb_shape[-1] is None:
            raise ValueError(
                "`embeddings` must have shape (batch_size, embedding_dim) with a known "
                f"embedding_dim. Received: embeddings.shape={emb_shape}"
            )
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, int(emb_shape[-1])),
            initializer=self.centers_initializer,
            trainable=False,
            dtype="float32",
            autocast=False,
        )
        self.built = True

    def call(self, inputs, training=False):
        if not _is_pair(inputs):
            raise ValueError(
                "`CenterLoss` takes `[embeddings, labels]` (two tensors). "
                f"Received: inputs={inputs!r}"
            )
        embeddings, labels = inputs
        labels = class_ids(labels, self.num_classes, "labels", batch_size=embeddings.shape[0])
        if not training:
            return embeddings
        x = ops.cast(embeddings, "float32")
        valid = labels >= 0
        index = ops.maximum(labels, 0)
        centers = ops.convert_to_tensor(self.centers)
        diff = x - ops.take(centers, index, axis=0)
        per_sample = ops.sum(ops.square(diff), axis=1)
        per_sample = ops.where(valid, per_sample, ops.full_like(per_sample, float("nan")))
        # The batch mean; an empty batch (a replica with no samples) adds 0, not 0 / 0.
        batch = ops.cast(ops.shape(per_sample)[0], "float32")
        mean = ops.sum(per_sample) / ops.maximum(batch, 1.0)
        self.add_loss(self.weight * 0.5 * mean)
        # The paper's update, for the classes of the batch only (n_j = 0 gives delta = 0). A bad
        # label's sample counts nowhere: no centre moves for it.
        x_stop = ops.where(valid[:, None], ops.stop_gradient(x), ops.zeros_like(x))
        sums = ops.segment_sum(x_stop, index, num_segments=self.num_classes)
        counts = ops.segment_sum(ops.cast(valid, "float32"), index, num_segments=self.num_classes)[
            :, None
        ]
        delta = (counts * centers - sums) / (1.0 + counts)
        self.centers.assign(centers - self.alpha * delta)
        return embeddings

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor(inputs[0].shape, dtype=inputs[0].dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "alpha": self.alpha,
                "weight": self.weight,
                "centers_initializer": keras.initializers.serialize(self.centers_initializer),
            }
        )
        return config
