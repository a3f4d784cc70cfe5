"""The base shared by every margin head: class centres, float32 cosines, labels, sub-centres."""

import inspect
import warnings

import keras
from keras import ops

from keras_margins._validation import (
    MAX_LOGIT_SCALE,
    check_float,
    check_float32_bound,
    check_int,
    check_label_dtype,
    check_notebook_arguments,
    normalize_class_labels,
)

# Floor of sin^2(theta) = (1 - cos)(1 + cos) before its square root. For a float32 cosine in
# [-1, 1] this product is either exactly 0 (cos = +-1) or at least ~6e-8, so the floor changes no
# value float32 can resolve; it only keeps the square root's derivative finite at cos = +-1,
# where the floor's branch is taken and the derivative is 0. Elsewhere |d theta / d cos| =
# 1 / sin(theta) stays below ~4e3.
SIN2_FLOOR = 1e-30

# Floor for squared vector norms before dividing by them (an all-zero embedding or kernel
# column): the result is then 0, not NaN. Embeddings of extreme magnitude are first scaled to a
# largest entry of about 1 (see `l2_normalize`), so for them the floor only ever applies to the
# all-zero vector.
NORM_EPS = 1e-12


def safe_sin_from_cos(cos):
    """``sin(theta) = sqrt(1 - cos^2)`` for ``theta`` in [0, pi], with a finite gradient."""
    return ops.sqrt(ops.maximum((1.0 - cos) * (1.0 + cos), SIN2_FLOOR))


def safe_arccos(cos):
    """``arccos`` accurate on the whole of [-1, 1] and with a finite derivative everywhere.

    Computed as ``atan2(sin, cos)`` with :func:`safe_sin_from_cos`: exact at +-1 (``0`` and
    ``pi``), as precise as float32 allows near them (plain ``arccos`` of a clipped cosine is off
    by up to 5e-4 rad there), and its gradient is 0 rather than infinite at exactly +-1.
    """
    return ops.arctan2(safe_sin_from_cos(cos), cos)


def layer_metrics_supported():
    """Whether a layer may update its own ``keras.metrics`` inside ``call`` during ``fit``.

    True on TensorFlow and PyTorch. On JAX, Keras's stateless training step does not carry the
    variables of metrics owned by layers, and updating one fails ("'NoneType' object is not
    callable", keras-team/keras#21639): heads then skip their monitoring metrics on JAX.
    """
    return keras.backend.backend() != "jax"


def _max_along(x, axis, keepdims=False, initial=-float("inf")):
    """``max`` along a non-empty ``axis`` that also accepts a batch of 0 rows on every backend.

    Keras's ``ops.max`` refuses an empty tensor without ``initial`` (TensorFlow, JAX) and, on
    PyTorch, returns a wrongly shaped result for one with it; ``initial`` must not change the
    maximum of a non-empty row.
    """
    if keras.backend.backend() == "torch":
        return ops.amax(x, axis=axis, keepdims=keepdims)
    return ops.max(x, axis=axis, keepdims=keepdims, initial=initial)


def _inverse_sqrt_max_abs(x, axis):
    """``1 / sqrt(m)`` with ``m`` the largest ``|x|`` along ``axis`` (kept), without gradient.

    Multiplying ``x`` by it twice makes the vector's largest entry about +-1, so its squared
    norm lies in about ``[1, D]``: no overflow (norms above ~1e19) and no underflow into the
    norm floor (norms below ~1e-6). The factor is applied as two multiplications by
    ``1 / sqrt(m)``, a normal float32 for every ``m`` in the float32 range, rather than one by
    ``1 / m``, which is subnormal for ``m`` above ~8.5e37 and flushed to zero by XLA on CPU.
    Where ``m`` lies in ``[2**-19, 2**40]`` (every realistic embedding) the factor is exactly 1:
    the squared norm neither overflows nor reaches the floor there, and the result is then the
    plain ``x / ||x||`` bit for bit (a vector along a class centre keeps a cosine of exactly 1).
    Treating the factor as a constant keeps every gradient exact: ``x / ||x||`` does not depend
    on it. An all-zero vector gets 1; a NaN or inf entry still gives a NaN result.
    """
    m = _max_along(ops.abs(x), axis, keepdims=True, initial=0.0)  # batch 0 allowed
    plain = ops.logical_and(m >= 2.0**-19, m <= 2.0**40)
    r = ops.rsqrt(ops.where(m > 0, m, ops.ones_like(m)))
    return ops.stop_gradient(ops.where(plain, ops.ones_like(r), r))


def l2_normalize(x, axis=-1):
    """``x / ||x||`` along ``axis``, for any float32 magnitude; a zero vector stays finite (0).

    The vector is first scaled so that its largest absolute entry is about 1 (one extra pass
    over ``x``), so the result does not depend on the magnitude of ``x`` anywhere in the float32
    range (1e-30 and 1e30 give the same direction); the 1e-12 floor of the squared norm then
    only keeps the all-zero vector at 0 rather than NaN. NaN or inf in gives NaN out.
    """
    x = ops.convert_to_tensor(x)
    r = _inverse_sqrt_max_abs(x, axis)
    y = (x * r) * r
    sq = ops.sum(ops.square(y), axis=axis, keepdims=True)
    return y * ops.rsqrt(ops.maximum(sq, NORM_EPS))


def feature_norm(x, axis=-1):
    """``||x||`` along ``axis`` (kept), without overflow or underflow where it is representable.

    Computed on ``x`` scaled to a largest entry of about 1, then scaled back. The all-zero
    vector gets ``sqrt(1e-12) = 1e-6`` (a finite scale; its cosines are 0 anyway).
    """
    x = ops.convert_to_tensor(x)
    r = _inverse_sqrt_max_abs(x, axis)
    y = (x * r) * r
    norm = ops.sqrt(ops.maximum(ops.sum(ops.square(y), axis=axis, keepdims=True), NORM_EPS))
    return (norm / r) / r


def _column_inverse_norms(w, transposed=False):
    """Squared norms of the class centres in ``w`` and their floored inverse square roots, ``(N,)``.

    The centres are the columns of a ``(D, N)`` ``w``, or the rows of a ``(N, D)`` one
    (``transposed``).
    """
    sq = ops.sum(ops.square(w), axis=1 if transposed else 0)
    return sq, ops.rsqrt(ops.maximum(sq, NORM_EPS))


def _product(xs, w, transposed):
    """``xs @ w`` for a ``(D, N)`` ``w``, ``xs @ w.T`` for a ``(N, D)`` one."""
    return ops.matmul(xs, ops.transpose(w) if transposed else w)


def _upstream(args, upstream):
    """The output gradient(s) handed to a ``keras.ops.custom_gradient`` backward function.

    TensorFlow passes one positional argument per output, JAX one tuple, PyTorch ``upstream``.
    """
    if upstream is not None:
        return upstream
    if len(args) == 1:
        return args[0]
    return args


def _normalized_matmul_backward(xs, w, sq, inv, out, g, transposed=False):
    """Gradients of ``out = (xs @ w) * inv`` (``inv`` the floored inverse column norms of ``w``).

    With ``out[b, c] = xs_b . w_c / ||w_c||``::

        d out[b, c] / d xs_b = w_c / ||w_c||
        d out[b, c] / d w_c  = xs_b / ||w_c|| - out[b, c] * w_c / ||w_c||^2

    so ``dxs = (g * inv) @ w.T`` and ``dw = xs.T @ (g * inv) - w * r`` with
    ``r_c = sum_b g[b, c] * out[b, c] / ||w_c||^2``. A column whose norm is floored (an all-zero
    centre) has no second term: the floor does not depend on ``w``. Autodiff of the same forward
    pass builds the same result from several ``(D, N)`` and ``(B, N)`` temporaries; this needs
    one of each. For a ``(N, D)`` ``w`` (``transposed``) the same holds row by row.
    """
    dz = g * inv
    r = ops.where(sq > NORM_EPS, ops.sum(g * out, axis=0) * ops.square(inv), 0.0)
    if transposed:
        dxs = ops.matmul(dz, w)
        dw = ops.matmul(ops.transpose(dz), xs) - w * r[:, None]
    else:
        dxs = ops.matmul(dz, ops.transpose(w))
        dw = ops.matmul(ops.transpose(xs), dz) - w * r
    return dxs, dw


def normalized_matmul(xs, w, transposed=False):
    """``xs @ w`` with every column of ``w`` divided by its norm, shape ``(B, N)``.

    ``xs`` is usually the L2-normalized embeddings times the logit scale, so the result is
    ``scale * cos``. The kernel is not rewritten normalized: the product is scaled by the inverse
    column norms. The gradient is hand-written (exact, see :func:`_normalized_matmul_backward`).

    Args:
        xs: float32 ``(B, D)``.
        w: float32 ``(D, N)`` class centres (zero columns give zero outputs, not NaN).
        transposed: ``w`` is ``(N, D)``, one class centre per row (Partial FC's layout).
    """

    @ops.custom_gradient
    def forward(xs, w):
        sq, inv = _column_inverse_norms(w, transposed)
        out = _product(xs, w, transposed) * inv

        def grad(*args, upstream=None):
            g = _upstream(args, upstream)
            return _normalized_matmul_backward(xs, w, sq, inv, out, g, transposed)

        return out, grad

    return forward(xs, w)


def normalized_matmul_with_target(xs, w, index, inv_scale, sub_centers=1, transposed=False):
    """:func:`normalized_matmul` plus each sample's target cosine, with one backward pass.

    Gathering the target cosine out of the ``(B, N)`` result with autodiff would cost a
    ``(B, N)`` scatter in the backward pass; here the target's gradient is added to the
    target entry of the output gradient in place.

    Args:
        xs: float32 ``(B, D)``: normalized embeddings times the per-sample scale ``s_b``.
        w: float32 ``(D, C * sub_centers)`` class centres.
        index: int32 ``(B,)`` target class ids, already in ``[0, C)``.
        inv_scale: float32 ``(B,)``: ``1 / s_b``, to return the target in cosine units.
        sub_centers: ``K``; the target cosine is the maximum over the class's ``K`` columns.
        transposed: ``w`` is ``(C * K, D)``, one class centre per row.

    Returns:
        ``(out, cos_y)``: ``out = s * cos`` of shape ``(B, C * K)`` and the ``(B,)`` target
        cosines ``out[b, target column] / s_b``.
    """
    rows = ops.arange(ops.shape(index)[0], dtype="int32")

    def values(xs, w, inv_scale):
        sq, inv = _column_inverse_norms(w, transposed)
        out = _product(xs, w, transposed) * inv
        if sub_centers == 1:
            column = index
            out_y = ops.take_along_axis(out, column[:, None], axis=1)[:, 0]
        else:
            candidates = index[:, None] * sub_centers + ops.arange(sub_centers, dtype="int32")
            options = ops.take_along_axis(out, candidates, axis=1)
            column = index * sub_centers + ops.cast(ops.argmax(options, axis=1), "int32")
            out_y = _max_along(options, 1)  # batch 0 allowed
        return sq, inv, out, column, out_y

    if keras.backend.backend() not in ("tensorflow", "jax"):
        # Keras's custom gradients take one output only on PyTorch: plain autodiff there.
        _, _, out, _, out_y = values(xs, w, inv_scale)
        return out, out_y * inv_scale

    @ops.custom_gradient
    def forward(xs, w, inv_scale):
        sq, inv, out, column, out_y = values(xs, w, inv_scale)
        cos_y = out_y * inv_scale
        position = ops.stack([rows, column], axis=1)

        def grad(*args, upstream=None):
            g_out, g_cos = _upstream(args, upstream)
            if g_out is None:  # only the target cosines are used
                g_out = ops.zeros_like(out)
            if g_cos is not None:
                g_at_target = ops.take_along_axis(g_out, column[:, None], axis=1)[:, 0]
                g_out = ops.scatter_update(g_out, position, g_at_target + g_cos * inv_scale)
                g_inv_scale = g_cos * out_y
            else:
                g_inv_scale = ops.zeros_like(inv_scale)
            dxs, dw = _normalized_matmul_backward(xs, w, sq, inv, out, g_out, transposed)
            return dxs, dw, g_inv_scale

        return (out, cos_y), grad

    return forward(xs, w, inv_scale)


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


def max_over_sub_centers(values, sub_centers):
    """``(B, C * K)`` -> ``(B, C)``: each class's maximum over its ``K`` sub-centre columns."""
    if sub_centers == 1:
        return values
    num_classes = values.shape[1] // sub_centers
    # The batch size from the tensor, not -1: a batch of 0 (an empty replica) has no -1 to infer.
    values = ops.reshape(values, (ops.shape(values)[0], num_classes, sub_centers))
    return _max_along(values, -1)


@keras.saving.register_keras_serializable(package="keras_margins")
class MarginHead(keras.layers.Layer):
    """Base layer of every cosine-based margin head.

    Owns the class-centre kernel of shape ``(embedding_dim, num_classes * sub_centers)``
    (column ``c * sub_centers + k`` is sub-centre ``k`` of class ``c``), computes the cosines
    between L2-normalized embeddings and kernel columns in float32 whatever the dtype policy,
    takes the maximum over each class's sub-centres, and writes each sample's target logit back
    in place of its target cosine. Subclasses only define :meth:`target_logit`.

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
        scale: The scale ``s`` multiplying every logit. ``None`` is allowed only by heads that
            use the embedding norm instead (SphereFace).
        sub_centers: Number of sub-centres ``K`` per class (sub-center ArcFace). Defaults to 1.
        kernel_initializer: Initializer of the class centres. Defaults to ``"glorot_uniform"``.
        kernel_regularizer: Optional regularizer of the class centres. Defaults to ``None``.
        kernel_constraint: Optional constraint of the class centres. Defaults to ``None``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    #: Whether ``scale=None`` (use ``||x||`` as the scale) is allowed for this head.
    allows_norm_scale = False

    #: Whether the head's training logits depend on the labels (a margin): calling it without
    #: labels with ``training=True`` then warns.
    uses_labels = True

    def __new__(cls, *args, **kwargs):
        # Before Python binds the arguments: `ArcFace(n_classes=10, s=30, m=0.5)` would fail
        # with "missing 'num_classes'" or "Unrecognized keyword arguments".
        check_head_arguments(cls, kwargs)
        return super().__new__(cls, *args, **kwargs)

    #: Set by a wrapper that owns the class centres (PartialFC) before the head is built.
    kernel_is_external = False

    def __init__(
        self,
        num_classes,
        scale=64.0,
        sub_centers=1,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        **kwargs,
    ):
        # The head computes in float32 itself: Keras must not cast its inputs or kernel to a
        # float16 compute dtype first (that would lose the cosine's precision before we start).
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        if scale is None and self.allows_norm_scale:
            self.scale = None
        else:
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
        self.supports_masking = False
        self._warned_without_labels = False

    # ------------------------------------------------------------------ building
    @staticmethod
    def _split_shapes(input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (list, tuple)
        ):
            if len(input_shape) != 2:
                raise ValueError(
                    "A margin head takes `embeddings` or `[embeddings, labels]`. "
                    f"Received {len(input_shape)} inputs with shapes {input_shape}"
                )
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), None

    def _check_embedding_shape(self, shape):
        if len(shape) != 2:
            raise ValueError(
                "`embeddings` must be rank 2, of shape (batch_size, embedding_dim). "
                f"Received: embeddings.shape={shape}"
            )

    def build(self, input_shape):
        emb_shape, _ = self._split_shapes(input_shape)
        self._check_embedding_shape(emb_shape)
        if emb_shape[-1] is None:
            raise ValueError(
                "The last dimension of `embeddings` (embedding_dim) must be known. "
                f"Received: embeddings.shape={emb_shape}"
            )
        self.embedding_dim = int(emb_shape[-1])
        # A wrapper that owns the class centres itself (PartialFC) sets `kernel_is_external`
        # before building: the head then keeps only its other state and is always called with
        # `compute_logits(..., kernel=...)`.
        if not self.kernel_is_external:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(self.embedding_dim, self.num_classes * self.sub_centers),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
                autocast=False,
            )
        self.built = True

    def compute_output_shape(self, input_shape):
        emb_shape, _ = self._split_shapes(input_shape)
        return (emb_shape[0], self.num_classes)

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
        cos = normalized_matmul(x, self._kernel_tensor(kernel), kernel_transposed)
        return ops.clip(max_over_sub_centers(cos, self.sub_centers), -1.0, 1.0)

    def _kernel_tensor(self, kernel=None):
        w = self.kernel if kernel is None else kernel
        return ops.cast(ops.convert_to_tensor(w), "float32")

    def logit_scale(self, embeddings):
        """The factor multiplying the cosines: ``scale``, or ``||x||`` per sample (B, 1)."""
        if self.scale is not None:
            return ops.convert_to_tensor(self.scale, dtype="float32")
        return feature_norm(ops.cast(embeddings, "float32"))

    def prepare_labels(self, labels, batch_size=None):
        """int32 class ids of shape ``(B,)`` from any accepted label form; ``-1`` marks a bad one.

        A label that is not a class id in ``[0, num_classes)`` (see
        :func:`keras_margins._validation.normalize_class_labels`) becomes ``-1``; a one-hot
        row holding NaN or inf too.
        """
        labels = check_label_dtype(labels, "labels")
        labels = ops.convert_to_tensor(labels)
        shape = tuple(labels.shape)
        rank = len(shape)
        if rank == 2 and shape[-1] == self.num_classes and self.num_classes > 1:
            finite = ops.isfinite(ops.sum(ops.cast(labels, "float32"), axis=-1))
            labels = ops.where(finite, ops.cast(ops.argmax(labels, axis=-1), "int32"), -1)
        elif rank == 2 and shape[-1] == 1:
            labels = ops.reshape(labels, (-1,))
        elif rank != 1:
            raise ValueError(
                "`labels` must be integer class ids of shape (batch_size,) or (batch_size, 1), "
                f"or one-hot of shape (batch_size, {self.num_classes}). "
                f"Received: labels.shape={shape}"
            )
        if batch_size is not None and shape[0] is not None and shape[0] != batch_size:
            raise ValueError(
                "`labels` must have one entry per embedding. Received: "
                f"labels.shape={shape} for embeddings with batch size {batch_size}"
            )
        if rank == 2 and shape[-1] == self.num_classes and self.num_classes > 1:
            return labels
        return normalize_class_labels(labels, self.num_classes, "labels")

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    "A margin head takes `embeddings` or `[embeddings, labels]`. "
                    f"Received {len(inputs)} inputs"
                )
            embeddings, labels = inputs
        else:
            embeddings, labels = inputs, None
        return self.compute_logits(embeddings, labels, training=training)

    def compute_logits(
        self, embeddings, labels=None, kernel=None, training=None, kernel_transposed=False
    ):
        """The head's logits for ``embeddings`` (and ``labels``), optionally on a kernel subset.

        This is ``call`` without the input unpacking. With ``kernel`` (shape
        ``(D, C' * sub_centers)``, e.g. the class centres Partial FC sampled for this step) the
        logits cover those ``C'`` classes only and ``labels`` must index into them. With
        ``kernel_transposed=True`` the given ``kernel`` is ``(C' * sub_centers, D)``, one class
        centre per row.
        """
        self._check_embedding_shape(tuple(embeddings.shape))
        w = self._kernel_tensor(kernel)
        t = bool(kernel_transposed)
        self._check_embedding_dim(embeddings, w.shape[1 if t else 0])
        x = l2_normalize(ops.cast(embeddings, "float32"))
        scale = self.logit_scale(embeddings)  # a scalar, or (B, 1) for the feature norm
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

        if type(self).combine is MarginHead.combine:
            # Only the target entry changes: the scale is folded into the embeddings before the
            # product and the target logit is written in place, so no (B, C) pass is spent on
            # the scale, a clip or a mask.
            row_scale = ops.broadcast_to(scale, ops.shape(row_factor)) * row_factor
            out, cos_y = normalized_matmul_with_target(
                x * row_scale, w, index, 1.0 / row_scale[:, 0], self.sub_centers, t
            )
            target = self.target_logit(
                ops.clip(cos_y, -1.0, 1.0), embeddings=embeddings, training=training
            )
            rows = ops.arange(ops.shape(index)[0], dtype="int32")
            return ops.scatter_update(
                max_over_sub_centers(out, self.sub_centers),
                ops.stack([rows, index], axis=1),
                target * row_scale[:, 0],
            )

        # A head that rewrites other logits too (SV-Softmax) works on the cosines themselves.
        out, cos_y = normalized_matmul_with_target(
            x * row_factor, w, index, ops.ones_like(row_factor[:, 0]), self.sub_centers, t
        )
        cos = max_over_sub_centers(out, self.sub_centers)
        target = self.target_logit(
            ops.clip(cos_y, -1.0, 1.0), embeddings=embeddings, training=training
        )
        is_target = ops.expand_dims(ops.arange(num_classes, dtype="int32"), 0) == index[:, None]
        return self.combine(cos, target, is_target, training=training) * scale

    def _check_embedding_dim(self, embeddings, dim):
        got = embeddings.shape[-1]
        if got is not None and dim is not None and int(got) != int(dim):
            raise ValueError(
                f"`embeddings` must have embedding_dim {int(dim)}, the size {self.name} was "
                f"built for. Received: embeddings.shape={tuple(embeddings.shape)}"
            )

    def _warn_without_labels(self):
        """Warn once per head (at trace time) that a training call without labels has no margin."""
        if not self.uses_labels or self._warned_without_labels:
            return
        self._warned_without_labels = True
        warnings.warn(
            f"{type(self).__name__} layer '{self.name}' is called without labels while "
            "training (training=True): it then returns the plain cosine logits with no margin, "
            "so the model trains as a normalized softmax without the margin. Pass the labels as a second input, "
            "head([embeddings, labels]) (see km.build_models), and call it without labels only "
            "for inference.",
            UserWarning,
            stacklevel=2,
        )

    def target_columns(self, cos, labels):
        """Each sample's target cosine, the boolean target mask, and which labels are valid.

        Args:
            cos: ``(B, C)`` cosines.
            labels: int32 ``(B,)`` class ids, as returned by :meth:`prepare_labels` (``-1`` for a
                bad label).

        Returns:
            ``(cos_y, is_target, valid)``: ``(B,)`` target cosines, ``(B, C)`` boolean mask of
            the target column, ``(B,)`` whether the label lies in ``[0, C)``. An invalid label's
            gather is clipped into range and its mask row is all False; the caller turns its
            row into NaN or rejects it.
        """
        num_classes = cos.shape[1]
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        index = ops.clip(labels, 0, num_classes - 1)
        cos_y = ops.take_along_axis(cos, index[:, None], axis=1)[:, 0]
        is_target = ops.expand_dims(ops.arange(num_classes, dtype="int32"), 0) == labels[:, None]
        return cos_y, is_target, valid

    def combine(self, cos, target, is_target, training=None):
        """Put each sample's target logit (in cosine units) in place of its target cosine."""
        return ops.where(is_target, target[:, None], cos)

    def target_logit(self, cos_y, embeddings=None, training=None):
        """The head's target value ``f(cos θ_y)`` in cosine units (before the scale).

        Args:
            cos_y: float32 tensor ``(B,)`` of target cosines, clipped to [-1, 1].
            embeddings: the raw embeddings (for heads that need the feature norm).
            training: Keras training flag.
        """
        return cos_y

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
            }
        )
        return config
