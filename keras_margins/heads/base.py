"""The base shared by every margin head: class centres, float32 cosines, labels, sub-centres.

The math (norms, the normalized product and its gradient, sub-centre maxima) lives in
:mod:`keras_margins.ops`; its names are re-exported here for existing imports.
"""

import inspect
import warnings

import keras
from keras import ops

from keras_margins._validation import (
    MAX_LOGIT_SCALE,
    check_float,
    check_float32_bound,
    check_int,
    check_notebook_arguments,
    class_ids,
)
from keras_margins.ops import (  # noqa: F401  re-exported: keras_margins.heads.base.* imports
    NORM_EPS,
    SIN2_FLOOR,
    feature_norm,
    l2_normalize,
    max_over_sub_centers,
    normalize_with_norm,
    normalized_matmul,
    normalized_matmul_with_target,
    safe_arccos,
    safe_sin_from_cos,
)


def layer_metrics_supported():
    """Whether a layer may update its own ``keras.metrics`` inside ``call`` during ``fit``.

    True on TensorFlow and PyTorch. On JAX, Keras's stateless training step does not carry the
    variables of metrics owned by layers, and updating one fails ("'NoneType' object is not
    callable", keras-team/keras#21639): heads then skip their monitoring metrics on JAX.
    """
    return keras.backend.backend() != "jax"


def check_head_arguments(cls, kwargs):
    """Reject a Kaggle-notebook argument name (``s``, ``m``, ``n_classes``, ...) clearly.

    Called from the heads' ``__new__``, before Python binds the arguments to ``__init__``
    (which would fail with "missing 'num_classes'" or "Unrecognized keyword arguments"). The
    names every ``__init__`` of the class's hierarchy accepts are never reported.
    """
    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    check_notebook_arguments(cls, kwargs, accepted)


def split_inputs(inputs, layer_name="A margin head"):
    """``(embeddings, labels)`` from a head's ``embeddings`` or ``[embeddings, labels]`` input.

    Works on tensors and on shapes (``build``): ``labels`` is ``None`` for a single input.
    """
    if (
        isinstance(inputs, (list, tuple))
        and inputs
        and (not isinstance(inputs[0], (int, type(None))))
    ):
        if len(inputs) != 2:
            raise ValueError(
                f"{layer_name} takes `embeddings` or `[embeddings, labels]`. "
                f"Received {len(inputs)} inputs: {inputs}"
            )
        return inputs[0], inputs[1]
    return inputs, None


def embedding_dim_of(input_shape, layer_name="A margin head"):
    """The embedding dimension ``D`` from a head's input shape(s); rank 2 and a known ``D``."""
    shape, _ = split_inputs(input_shape, layer_name)
    shape = tuple(shape)
    check_embedding_rank(shape)
    if shape[-1] is None:
        raise ValueError(
            "The last dimension of `embeddings` (embedding_dim) must be known. "
            f"Received: embeddings.shape={shape}"
        )
    return int(shape[-1])


def logits_shape(input_shape, num_classes, layer_name="A margin head"):
    """``(batch_size, num_classes)`` for a head's input shape(s)."""
    emb_shape, _ = split_inputs(input_shape, layer_name)
    batch_size, *_ = tuple(emb_shape)
    return (batch_size, num_classes)


def check_embedding_rank(shape):
    """``embeddings`` must be ``(batch_size, embedding_dim)``."""
    if len(shape) != 2:
        raise ValueError(
            "`embeddings` must be rank 2, of shape (batch_size, embedding_dim). "
            f"Received: embeddings.shape={tuple(shape)}"
        )


def check_embedding_dim(embeddings, dim, layer_name):
    """``embeddings``' last dimension must be ``dim``, the size the layer was built for."""
    got = embeddings.shape[-1]
    if got is not None and dim is not None and int(got) != int(dim):
        raise ValueError(
            f"`embeddings` must have embedding_dim {int(dim)}, the size {layer_name} was "
            f"built for. Received: embeddings.shape={tuple(embeddings.shape)}"
        )


@keras.saving.register_keras_serializable(package="keras_margins")
class MarginHead(keras.layers.Layer):
    """Base layer of every cosine-based margin head.

    Owns the class-centre kernel of shape ``(embedding_dim, num_classes * sub_centers)``
    (column ``c * sub_centers + k`` is sub-centre ``k`` of class ``c``), computes the cosines
    between L2-normalized embeddings and kernel columns in float32 whatever the dtype policy,
    takes the maximum over each class's sub-centres, and writes each sample's target logit back
    in place of its target cosine. A head is a subclass that overrides some of these hooks
    (see ``docs/guides/writing_a_head.md``):

    - :meth:`target_logit` ``(cos_y, norm, labels, training)``: the target value ``f(cos θ_y)``
      in cosine units (CosFace: ``cos_y - m``). The only hook most heads need.
    - :meth:`logit_scale` ``(norm)``: the factor multiplying every logit, a scalar or ``(B, 1)``
      (defaults to ``scale``; SphereFace returns the feature norm).
    - :meth:`combine` ``(cos, target, is_target, scale, cos_y, training)`` with
      ``rewrites_non_targets = True``: for heads that change non-target logits too (SV-Softmax,
      CurricularFace) or the scale from the batch's cosines (AdaCos); returns the scaled logits.
    - :meth:`build_state` ``()``: create training-time state with :meth:`add_training_state`,
      advanced in :meth:`target_logit` by :meth:`update_training_state` (SphereFace's step).
    - ``uses_labels = False`` for a head without a margin (no warning without labels).

    A wrapper that owns the class centres (Partial FC) builds the head with
    :meth:`build_without_kernel` and calls :meth:`compute_logits` / :meth:`cosine` with its
    centres as ``kernel``.

    Called as ``head([embeddings, labels])`` it returns ``scale * logits`` with the margin applied
    to each sample's target class (training); called as ``head(embeddings)`` it returns
    ``scale * cos`` (inference, closed-set prediction). Logits are always float32.

    Labels are integer class ids of shape ``(B,)`` or ``(B, 1)`` (any integer dtype; float
    values holding integers are accepted too, as Keras may feed them) or one-hot / soft labels of
    shape ``(B, num_classes)`` (the arg-max is used). A label that is not a class id (outside
    ``[0, num_classes)`` in its own integer width, a float that is not an integer such as 1.6,
    NaN) cannot be checked without Python control flow on tensor values (which would break XLA),
    so it turns the whole logit row of that sample into NaN, eagerly, in graphs and under XLA
    alike: the loss becomes NaN rather than a plausible number. String or bool labels are a
    ``TypeError``. Every keras_margins entry point that takes class labels follows this rule
    (see :func:`keras_margins._validation.normalize_class_labels`).

    Called without labels with ``training=True`` (a head inside a model trained without feeding
    it the labels) a head with a margin warns once: it would train with no margin.

    Args:
        num_classes: Number of classes (identities). Must be >= 1.
        scale: The scale ``s`` multiplying every logit, > 0. Defaults to 64.0.
        sub_centers: Number of sub-centres ``K`` per class (sub-center ArcFace). Defaults to 1.
        kernel_initializer: Initializer of the class centres. Defaults to ``"glorot_uniform"``.
        kernel_regularizer: Optional regularizer of the class centres. Defaults to ``None``.
        kernel_constraint: Optional constraint of the class centres. Defaults to ``None``.
        interclass_filtering_threshold: Optional threshold ``t`` in ``[-1, 1)`` of insightface's
            inter-class filtering: in training calls (``training=True``) with labels, every
            non-target cosine above ``t`` is set to 0 (its logit is ``s * 0``) and gets no
            gradient, before the margin is applied, so that a class centre too close to the
            sample (likely the same identity under another label, in noisy data) is not pushed
            away. The target is never filtered. insightface
            uses 0.4 on its noisiest data (WebFace12M-Conflict). ``None`` turns it off.
            Defaults to ``None``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    #: Whether the head's training logits depend on the labels (a margin): calling it without
    #: labels with ``training=True`` then warns.
    uses_labels = True

    #: Whether :meth:`combine` rewrites non-target logits too (SV-Softmax). ``False``: only each
    #: sample's target logit changes, and it is written in place of the scaled cosine (no
    #: ``(B, C)`` pass besides the product).
    rewrites_non_targets = False

    def __new__(cls, *args, **kwargs):
        # Before Python binds the arguments: `ArcFace(n_classes=10, s=30, m=0.5)` would fail
        # with "missing 'num_classes'" or "Unrecognized keyword arguments".
        check_head_arguments(cls, kwargs)
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        num_classes,
        scale=64.0,
        sub_centers=1,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        interclass_filtering_threshold=None,
        **kwargs,
    ):
        # The head computes in float32 itself: Keras must not cast its inputs or kernel to a
        # float16 compute dtype first (that would lose the cosine's precision before we start).
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        if scale is None:
            raise ValueError(
                f"`scale` must be a positive number for {type(self).__name__}. "
                f"Received: scale={scale}"
            )
        self.scale = check_float("scale", scale, low=0.0, low_open=True)
        check_float32_bound(
            "scale",
            self.scale,
            MAX_LOGIT_SCALE,
            "the logits (up to about 8 * scale apart) times the class centres' norms must "
            "stay finite in float32",
        )
        self.sub_centers = check_int("sub_centers", sub_centers, minimum=1)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        if interclass_filtering_threshold is not None:
            interclass_filtering_threshold = check_float(
                "interclass_filtering_threshold",
                interclass_filtering_threshold,
                low=-1.0,
                high=1.0,
                high_open=True,
                range_text="[-1, 1) (or None to turn the filtering off)",
            )
        self.interclass_filtering_threshold = interclass_filtering_threshold
        self.supports_masking = False
        self._warned_without_labels = False

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        self.embedding_dim = embedding_dim_of(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.embedding_dim, self.num_classes * self.sub_centers),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        self.build_state()
        self.built = True

    def build_without_kernel(self, embedding_dim):
        """Build the head's own state but no class centres, for a wrapper that owns them.

        Partial FC keeps the centres itself and always calls :meth:`compute_logits` and
        :meth:`cosine` with ``kernel=...``; the head then holds no second copy of them
        (``head.kernel`` is ``None``).
        """
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.kernel = None
        self.build_state()
        self.built = True

    def build_state(self):
        """Hook: create the head's training-time state (see :meth:`add_training_state`).

        Called once by :meth:`build` and :meth:`build_without_kernel`. Defaults to nothing.
        """

    def add_training_state(self, name, dtype="float32", shape=(), initializer="zeros"):
        """A non-trainable weight for state advanced in training steps (a step counter, statistics).

        Saved with the model (``.keras`` files and weights), so a resumed training continues
        from it. Under ``tf.distribute`` the first replica's update is kept: the same value on
        every replica for a step counter, the first replica's local batch for statistics of
        the batch (AdaFace's norms, CurricularFace's ``t``, AdaCos's scale). Update it only
        through :meth:`update_training_state`.
        """
        return self.add_weight(
            name=name,
            shape=shape,
            dtype=dtype,
            initializer=initializer,
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def update_training_state(self, variable, value, training):
        """Assign ``value`` to ``variable`` in a training call (``training=True``) only.

        Never in ``predict``/``evaluate`` or a call with ``training`` unset. ``training`` is a
        Python value, so the decision is made at trace time and the update runs under XLA.
        """
        if training is True:
            variable.assign(ops.cast(value, variable.dtype))

    def compute_output_shape(self, input_shape):
        return logits_shape(input_shape, self.num_classes)

    # ------------------------------------------------------------------ the shared computation
    def cosine(self, embeddings, kernel=None, kernel_transposed=False):
        """Float32 cosines between embeddings and classes, shape ``(B, num_classes)``.

        With sub-centres, a class's cosine is the maximum over its ``K`` sub-centres. The kernel
        columns are not rewritten normalized: the product with the raw kernel is scaled by the
        inverse column norms, which costs ``B * C`` instead of ``D * C`` operations.

        Args:
            embeddings: ``(B, D)`` embeddings, any float dtype.
            kernel: Optional ``(D, C' * K)`` subset of the class centres to use instead of the
                whole kernel (Partial FC samples one per step). Defaults to ``self.kernel``.
            kernel_transposed: ``kernel`` is given as ``(C' * K, D)``, one centre per row
                (Partial FC's layout; no transposed copy is made). Defaults to ``False``.
        """
        x = l2_normalize(ops.cast(embeddings, "float32"))
        cos = normalized_matmul(x, self.kernel_tensor(kernel), kernel_transposed)
        return ops.clip(max_over_sub_centers(cos, self.sub_centers), -1.0, 1.0)

    def kernel_tensor(self, kernel=None):
        """The class centres as a float32 tensor: ``kernel`` if given, else ``self.kernel``."""
        w = self.kernel if kernel is None else kernel
        return ops.cast(ops.convert_to_tensor(w), "float32")

    def logit_scale(self, norm):
        """Hook: the factor multiplying the cosines, a float32 scalar or ``(B, 1)``.

        Args:
            norm: float32 ``(B, 1)``: each embedding's L2 norm ``||x||``.

        Defaults to the fixed ``scale``; SphereFace returns ``norm`` with ``scale=None``.
        """
        return ops.convert_to_tensor(self.scale, dtype="float32")

    def prepare_labels(self, labels, batch_size=None):
        """int32 class ids of shape ``(B,)`` from any accepted label form; ``-1`` marks a bad one.

        A label that is not a class id in ``[0, num_classes)`` (see
        :func:`keras_margins._validation.normalize_class_labels`) becomes ``-1``; a one-hot
        row holding NaN or inf too.
        """
        return class_ids(labels, self.num_classes, "labels", batch_size, one_hot=True)

    def call(self, inputs, training=None):
        embeddings, labels = split_inputs(inputs)
        return self.compute_logits(embeddings, labels, training=training)

    def compute_logits(
        self,
        embeddings,
        labels=None,
        kernel=None,
        training=None,
        kernel_transposed=False,
        classes=None,
    ):
        """The head's logits for ``embeddings`` (and ``labels``), optionally on a kernel subset.

        This is ``call`` without the input unpacking. With ``kernel`` (shape
        ``(D, C' * sub_centers)``, e.g. the class centres Partial FC sampled for this step) the
        logits cover those ``C'`` classes only and ``labels`` must index into them. With
        ``kernel_transposed=True`` the given ``kernel`` is ``(C' * sub_centers, D)``, one class
        centre per row. ``classes`` (int ``(C',)``) gives the class id of each of those ``C'``
        classes, so that :meth:`target_logit` sees class ids (per-class margins); without it
        the kernel's classes are ``0 .. C' - 1``.
        """
        check_embedding_rank(tuple(embeddings.shape))
        w = self.kernel_tensor(kernel)
        t = bool(kernel_transposed)
        check_embedding_dim(embeddings, w.shape[1 if t else 0], self.name)
        x, norm = normalize_with_norm(ops.cast(embeddings, "float32"))
        scale = self.logit_scale(norm)  # a scalar, or (B, 1)
        if labels is None:
            if training is True:
                self._warn_without_labels()
            return max_over_sub_centers(normalized_matmul(x * scale, w, t), self.sub_centers)

        labels = self.prepare_labels(labels, batch_size=embeddings.shape[0])
        num_classes = w.shape[0 if t else 1] // self.sub_centers
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        index = ops.clip(labels, 0, num_classes - 1)
        # An out-of-range label turns its row into NaN through the per-row factor (a (B, D)
        # product, no extra (B, C) pass): the loss is then NaN, never a plausible number.
        nan = ops.convert_to_tensor(float("nan"), dtype="float32")
        row_factor = ops.where(valid, ops.ones_like(index, dtype="float32"), nan)[:, None]
        row_scale = ops.broadcast_to(scale, ops.shape(row_factor)) * row_factor
        # Only the target entry changes: the scale is folded into the embeddings before the
        # product and the target logit is written in place, so no (B, C) pass is spent on the
        # scale, a clip or a mask. A head that rewrites other logits too works on the cosines.
        # insightface filters in its training loss only: `evaluate` and `predict` see the
        # classifier as it is (a wrong class above the threshold can win there).
        filtering = self.interclass_filtering_threshold is not None and training is True
        rewrites = self.rewrites_non_targets or filtering
        folded = row_factor if rewrites else row_scale
        out, cos_y = normalized_matmul_with_target(
            x * folded, w, index, 1.0 / folded[:, 0], self.sub_centers, t
        )
        logits = max_over_sub_centers(out, self.sub_centers)
        cos_y = ops.clip(cos_y, -1.0, 1.0)
        class_labels = index if classes is None else ops.take(ops.cast(classes, "int32"), index)
        target = self.target_logit(cos_y, norm=norm[:, 0], labels=class_labels, training=training)
        if rewrites:
            is_target = ops.arange(num_classes, dtype="int32")[None, :] == index[:, None]
            if filtering:
                # insightface's filtering: on the cosines, before any margin; `where` passes no
                # gradient to the zeroed entries. A NaN row stays NaN (NaN > t is false).
                dirty = ops.logical_and(
                    logits > self.interclass_filtering_threshold, ops.logical_not(is_target)
                )
                logits = ops.where(dirty, ops.zeros_like(logits), logits)
            return self.combine(
                logits, target, is_target, scale=scale, cos_y=cos_y, training=training
            )
        rows = ops.arange(ops.shape(index)[0], dtype="int32")
        return ops.scatter_update(
            logits, ops.stack([rows, index], axis=1), target * row_scale[:, 0]
        )

    def _warn_without_labels(self):
        """Warn once per head (at trace time) that a training call without labels has no margin."""
        if not self.uses_labels or self._warned_without_labels:
            return
        self._warned_without_labels = True
        warnings.warn(
            f"{type(self).__name__} layer '{self.name}' is called without labels while "
            "training (training=True): it then returns the plain cosine logits with no margin, "
            "so the model trains as a normalized softmax without the margin. Pass the labels as "
            "a second input, head([embeddings, labels]) (see km.build_models), and call it "
            "without labels only for inference.",
            UserWarning,
            stacklevel=2,
        )

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        """Hook: the head's target value ``f(cos θ_y)`` in cosine units (before the scale).

        Args:
            cos_y: float32 ``(B,)`` target cosines, clipped to [-1, 1].
            norm: float32 ``(B,)`` feature norms ``||x||`` (for norm-aware margins).
            labels: int32 ``(B,)`` class ids in ``[0, num_classes)`` (for per-class margins;
                under Partial FC too, where the columns are a sample of the classes). A bad
                label's row is NaN whatever is returned; its id here is clipped into range.
            training: Keras training flag (a Python value); state changes go through
                :meth:`update_training_state`.

        Returns:
            float32 ``(B,)``. Defaults to ``cos_y`` (no margin).
        """
        return cos_y

    def combine(self, cos, target, is_target, scale, cos_y=None, training=None):
        """Hook (with ``rewrites_non_targets = True``): the ``(B, C)`` logits, scaled.

        Args:
            cos: float32 ``(B, C)`` cosines (max over sub-centres; inter-class filtered entries
                are 0; a bad label's row is NaN).
            target: float32 ``(B,)`` target values from :meth:`target_logit`.
            is_target: bool ``(B, C)``, true at each sample's target class.
            scale: float32 scalar or ``(B, 1)`` from :meth:`logit_scale`.
            cos_y: float32 ``(B,)`` target cosines before the margin (clipped to [-1, 1]).
            training: Keras training flag (a Python value), for state updates.

        Returns:
            float32 ``(B, C)`` logits. Defaults to the cosines with each target written in
            place, times ``scale``.
        """
        return ops.where(is_target, target[:, None], cos) * scale

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "scale": self.scale,
                "sub_centers": self.sub_centers,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "interclass_filtering_threshold": self.interclass_filtering_threshold,
            }
        )
        return config
