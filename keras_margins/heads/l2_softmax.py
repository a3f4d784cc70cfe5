"""L2-Softmax: L2-normalized, alpha-scaled features in front of an ordinary softmax classifier."""

import math

import keras
from keras import ops

from keras_margins._validation import (
    MAX_LOGIT_SCALE,
    check_flag,
    check_float,
    check_float32_bound,
    check_int,
)
from keras_margins.heads.base import (
    check_embedding_dim,
    check_head_arguments,
    embedding_dim_of,
    logits_shape,
    split_inputs,
)
from keras_margins.ops import l2_normalize

_ALPHA_REASON = (
    "alpha * x / ||x|| and the logits (times the class weights' norms) must stay finite in float32"
)


def l2_softmax_alpha_lower_bound(num_classes, p=0.9):
    """The L2-Softmax paper's lower bound on the feature scale ``alpha``.

        alpha_low = log(p * (C - 2) / (1 - p))

    For the softmax to reach an average class probability ``p`` on ``C`` classes, the features'
    norm must be at least ``alpha_low`` (Ranjan et al. 2017, section 3.3).

    Args:
        num_classes: Number of classes ``C``, an integer >= 3 (the bound is undefined below).
        p: The average class probability to reach, in (0, 1). Defaults to 0.9.

    Returns:
        The bound as a Python float (it can be negative when ``p`` is small).

    Examples:

        >>> import keras_margins as km
        >>> round(km.l2_softmax_alpha_lower_bound(10), 4)
        4.2767

    Reference:
        Ranjan, Castillo, Chellappa, "L2-constrained Softmax Loss for Discriminative Face
        Verification", arXiv 1703.09507 (2017).
    """
    num_classes = check_int("num_classes", num_classes, minimum=3)
    p = check_float("p", p, low=0.0, high=1.0, low_open=True, high_open=True)
    return math.log(p * (num_classes - 2) / (1.0 - p))


@keras.saving.register_keras_serializable(package="keras_margins")
class ScaledL2Normalization(keras.layers.Layer):
    """Scales L2-normalized features to a fixed (or learned) norm ``alpha``: ``alpha * x/||x||``.

    The feature part of L2-Softmax, usable alone in front of any classifier. Computes in float32
    and returns float32 whatever the dtype policy. With ``trainable_alpha=True`` alpha is learned
    as ``exp(log_alpha)``, so it stays positive.

    Args:
        alpha: The target norm, > 0. Defaults to 16.0.
        trainable_alpha: Learn alpha with the network. Defaults to ``False``.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: features of shape ``(..., D)``.

    Returns:
        float32 tensor of the same shape, each vector of norm ``alpha`` (a zero vector stays 0).

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> y = km.ScaledL2Normalization(alpha=10.0)(np.array([[3.0, 4.0]], "float32"))
        >>> np.round(np.asarray(y), 4).tolist()
        [[6.0, 8.0]]

    Reference:
        Ranjan, Castillo, Chellappa, "L2-constrained Softmax Loss for Discriminative Face
        Verification", arXiv 1703.09507 (2017).
    """

    def __init__(self, alpha=16.0, trainable_alpha=False, **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.alpha = check_float("alpha", alpha, low=0.0, low_open=True)
        check_float32_bound("alpha", self.alpha, MAX_LOGIT_SCALE, _ALPHA_REASON)
        self.trainable_alpha = check_flag("trainable_alpha", trainable_alpha)

    def build(self, input_shape):
        if self.trainable_alpha:
            self.log_alpha = self.add_weight(
                name="log_alpha",
                shape=(),
                initializer=keras.initializers.Constant(math.log(self.alpha)),
                trainable=True,
                autocast=False,
            )
        self.built = True

    def alpha_value(self):
        """The current alpha as a float32 tensor."""
        if self.trainable_alpha:
            return ops.exp(ops.cast(self.log_alpha, "float32"))
        return ops.convert_to_tensor(self.alpha, dtype="float32")

    def current_alpha(self):
        """The current alpha as a Python float."""
        return float(ops.convert_to_numpy(self.alpha_value()))

    def call(self, inputs):
        return self.alpha_value() * l2_normalize(ops.cast(inputs, "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "trainable_alpha": self.trainable_alpha})
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class L2Softmax(keras.layers.Layer):
    """L2-Softmax head: a dense softmax classifier on features of fixed norm ``alpha``.

        logit_j = W_j . (alpha * x / ||x||) + b_j

    Unlike the cosine heads, the class weights are not normalized and there is a bias: only the
    features are constrained to the hypersphere of radius ``alpha``. ``alpha`` must be large
    enough for the softmax to reach a high class probability (with ``alpha = 1`` training does
    not converge); ``alpha=None`` uses the paper's lower bound for ``p = 0.9``,
    ``log(0.9 * (C - 2) / 0.1)`` (see :func:`l2_softmax_alpha_lower_bound`). The paper found a
    fixed alpha works better than a learned one; ``trainable_alpha=True`` learns it
    (as ``exp(log_alpha)``, so it stays positive).

    Called as ``head([embeddings, labels])`` (labels are accepted and ignored, so every head is
    called alike) or ``head(embeddings)``. Computes in float32 and returns float32 logits.

    Args:
        num_classes: Number of classes ``C``, >= 1. Defaults: none (required).
        alpha: The feature norm, > 0, or ``None`` for the lower bound at ``p = 0.9`` (needs
            ``num_classes >= 3``). Defaults to ``None``.
        trainable_alpha: Learn alpha. Defaults to ``False``.
        use_bias: Add a bias per class. Defaults to ``True``.
        kernel_initializer: Initializer of the class weights. Defaults to ``"glorot_uniform"``.
        bias_initializer: Initializer of the bias. Defaults to ``"zeros"``.
        kernel_regularizer: Regularizer of the class weights. Defaults to ``None``.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: ``embeddings`` of shape ``(B, D)`` or ``[embeddings, labels]``.

    Returns:
        float32 logits of shape ``(B, num_classes)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.L2Softmax(num_classes=10)
        >>> round(head.alpha, 4)
        4.2767
        >>> tuple(head(np.random.rand(4, 8).astype("float32")).shape)
        (4, 10)

    Reference:
        Ranjan, Castillo, Chellappa, "L2-constrained Softmax Loss for Discriminative Face
        Verification", arXiv 1703.09507 (2017).
    """

    def __new__(cls, *args, **kwargs):
        check_head_arguments(cls, kwargs)  # `s`, `n_classes`, ...: point to the right name
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        num_classes,
        alpha=None,
        trainable_alpha=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        if alpha is None:
            if self.num_classes < 3:
                raise ValueError(
                    "`alpha=None` uses the lower bound log(0.9 (C - 2) / 0.1), which needs "
                    "num_classes >= 3: pass `alpha` explicitly. "
                    f"Received: alpha=None, num_classes={num_classes}"
                )
            alpha = l2_softmax_alpha_lower_bound(self.num_classes, 0.9)
            self._alpha_arg = None
        else:
            alpha = check_float("alpha", alpha, low=0.0, low_open=True)
            check_float32_bound("alpha", alpha, MAX_LOGIT_SCALE, _ALPHA_REASON)
            self._alpha_arg = alpha
        self.alpha = alpha
        self.trainable_alpha = check_flag("trainable_alpha", trainable_alpha)
        self.use_bias = check_flag("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.feature_scale = ScaledL2Normalization(
            alpha=alpha, trainable_alpha=trainable_alpha, name="feature_scale"
        )

    def build(self, input_shape):
        dim = embedding_dim_of(input_shape, "L2Softmax")
        self.feature_scale.build((None, dim))
        self.kernel = self.add_weight(
            name="kernel",
            shape=(dim, self.num_classes),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_classes,),
                initializer=self.bias_initializer,
                autocast=False,
            )
        self.built = True

    def current_alpha(self):
        """The alpha in use (the learned one with ``trainable_alpha=True``), a Python float."""
        return self.feature_scale.current_alpha()

    def call(self, inputs):
        inputs, _ = split_inputs(inputs, "L2Softmax")  # labels change nothing here
        embedding_dim_of(inputs.shape, "L2Softmax")
        check_embedding_dim(inputs, self.kernel.shape[0], self.name)
        features = self.feature_scale(inputs)
        logits = ops.matmul(features, ops.cast(self.kernel, "float32"))
        if self.use_bias:
            logits = logits + ops.cast(self.bias, "float32")
        return logits

    def compute_output_shape(self, input_shape):
        return logits_shape(input_shape, self.num_classes, "L2Softmax")

    def compute_output_spec(self, inputs):
        emb = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return keras.KerasTensor((emb.shape[0], self.num_classes), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "alpha": self._alpha_arg,
                "trainable_alpha": self.trainable_alpha,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
