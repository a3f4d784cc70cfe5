"""The shared math of heads, distances and losses: safe elementwise functions, norms, products.

Everything here takes and returns float32 tensors (callers cast), uses ``keras.ops`` only and
runs under XLA on TensorFlow, JAX and PyTorch. Nothing here knows about layers or labels.
"""

import keras
from keras import ops

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


def max_along(x, axis, keepdims=False, initial=-float("inf")):
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
    m = max_along(ops.abs(x), axis, keepdims=True, initial=0.0)  # batch 0 allowed
    plain = ops.logical_and(m >= 2.0**-19, m <= 2.0**40)
    r = ops.rsqrt(ops.where(m > 0, m, ops.ones_like(m)))
    return ops.stop_gradient(ops.where(plain, ops.ones_like(r), r))


def _scaled_squared_norm(x, axis):
    """``(y, sq, r)``: ``y = x * r * r`` (largest entry about 1), its floored squared norm."""
    x = ops.convert_to_tensor(x)
    r = _inverse_sqrt_max_abs(x, axis)
    y = (x * r) * r
    sq = ops.maximum(ops.sum(ops.square(y), axis=axis, keepdims=True), NORM_EPS)
    return y, sq, r


def l2_normalize(x, axis=-1):
    """``x / ||x||`` along ``axis``, for any float32 magnitude; a zero vector stays finite (0).

    The vector is first scaled so that its largest absolute entry is about 1 (one extra pass
    over ``x``), so the result does not depend on the magnitude of ``x`` anywhere in the float32
    range (1e-30 and 1e30 give the same direction); the 1e-12 floor of the squared norm then
    only keeps the all-zero vector at 0 rather than NaN. NaN or inf in gives NaN out.
    """
    y, sq, _ = _scaled_squared_norm(x, axis)
    return y * ops.rsqrt(sq)


def feature_norm(x, axis=-1):
    """``||x||`` along ``axis`` (kept), without overflow or underflow where it is representable.

    Computed on ``x`` scaled to a largest entry of about 1, then scaled back. The all-zero
    vector gets ``sqrt(1e-12) = 1e-6`` (a finite scale; its cosines are 0 anyway).
    """
    _, sq, r = _scaled_squared_norm(x, axis)
    return (ops.sqrt(sq) / r) / r


def normalize_with_norm(x, axis=-1):
    """``(l2_normalize(x), feature_norm(x))`` bit for bit, from one scaling pass over ``x``."""
    y, sq, r = _scaled_squared_norm(x, axis)
    return y * ops.rsqrt(sq), (ops.sqrt(sq) / r) / r


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
            out_y = max_along(options, 1)  # batch 0 allowed
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


def finite_mean(values):
    """``(mean, count)`` of the finite entries of the ``(B,)`` tensor ``values``.

    For batch statistics kept as training state (AdaFace's norms, CurricularFace's target
    cosines): a NaN or inf row is left out, so it cannot poison the saved state. The mean is 0
    when no entry is finite (an empty batch, or every row NaN); ``count`` is float32.
    """
    finite = ops.isfinite(values)
    count = ops.sum(ops.cast(finite, "float32"))
    total = ops.sum(ops.where(finite, values, ops.zeros_like(values)))
    return total / ops.maximum(count, 1.0), count


def max_over_sub_centers(values, sub_centers):
    """``(B, C * K)`` -> ``(B, C)``: each class's maximum over its ``K`` sub-centre columns."""
    if sub_centers == 1:
        return values
    num_classes = values.shape[1] // sub_centers
    # The batch size from the tensor, not -1: a batch of 0 (an empty replica) has no -1 to infer.
    values = ops.reshape(values, (ops.shape(values)[0], num_classes, sub_centers))
    return max_along(values, -1)


# ---------------------------------------------------------------- distances' elementwise helpers

# Floor of a squared distance below which the distance is reported as exactly 0. The derivative
# of sqrt(d2) is 1 / (2 sqrt(d2)): at d2 = 0 (identical embeddings, and always on the diagonal)
# it is infinite, and an infinite factor times the zero derivative of d2 gives NaN. Below the
# floor the value is 0 and the gradient is 0; above it the derivative is bounded by
# 1 / (2 * 1e-6) = 5e5. The distances below apply it to embeddings rescaled to a max-abs near 1,
# so the floor is relative: distances below ~1e-6 of the largest coordinate are not resolved by
# the float32 expansion ||a||^2 + ||b||^2 - 2 a.b anyway (its rounding error is ~1e-7 ||a||^2).
SQRT_FLOOR = 1e-12


def safe_sqrt(x):
    """``sqrt(x)`` for ``x >= 0`` with a finite gradient everywhere, NaN kept.

    Returns 0 (with a zero gradient) where ``x <= SQRT_FLOOR`` and ``sqrt(x)`` elsewhere, so
    zero distances (identical embeddings) give finite gradients. A NaN stays NaN (NaN in, NaN
    out: a NaN embedding must not look like a zero distance).
    """
    keep = x > SQRT_FLOOR
    # x * 0 is 0 for a finite x (gradient 0) and NaN for a NaN x.
    return ops.where(keep, ops.sqrt(ops.where(keep, x, 1.0)), x * 0.0)


def relu(x):
    """``max(x, 0)`` that keeps NaN (``maximum`` may return 0 for a NaN on some backends)."""
    return ops.where(x < 0.0, 0.0, x)


def zero_diagonal(matrix):
    """``matrix`` with an exact zero diagonal (NaN kept: 0 * NaN is NaN)."""
    n = ops.shape(matrix)[0]
    return ops.where(ops.eye(n, dtype="bool"), matrix * 0.0, matrix)


# Largest coordinates between 2^-40 and 2^40 keep squared norms well inside float32's normal
# range (2^-126 .. 2^128, for any realistic dimension): they are used unscaled.
_UNSCALED_RANGE = (2.0**-40, 2.0**40)


def power_of_two_scale(max_abs):
    """A power of two near ``max_abs`` where it lies outside ``[2^-40, 2^40]``, else 1.

    Without gradient. Dividing by a power of two is exact in floating point (short of
    underflow), so rescaling embeddings by it changes no value; it only keeps squared norms of
    huge (beyond ~1e19) or tiny embeddings representable in float32. Embeddings in the usual
    range are not rescaled at all (the result is then bit-for-bit the unscaled formula).
    """
    max_abs = ops.stop_gradient(max_abs)
    low, high = _UNSCALED_RANGE
    usual = ops.logical_or(
        ops.logical_and(max_abs >= low, max_abs <= high), ops.equal(max_abs, 0.0)
    )
    safe = ops.where(usual, 1.0, max_abs)
    return ops.where(usual, 1.0, ops.power(2.0, ops.round(ops.log2(safe))))


def row_normalize(x, axis=-1):
    """``x / ||x||`` along ``axis`` for any magnitude: rows are first rescaled by a power of two
    of their own max-abs (which leaves the direction unchanged), then L2-normalized. An all-zero
    row stays zero; NaN stays NaN."""
    s = power_of_two_scale(ops.max(ops.abs(x), axis=axis, keepdims=True, initial=0.0))
    return l2_normalize(x / s, axis=axis)
