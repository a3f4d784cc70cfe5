"""The shared product with normalized class centres and its hand-written gradient.

References: float64 NumPy written from the formula ``out[b, c] = xs_b . w_c / ||w_c||`` and
central finite differences of it. Runs on TensorFlow and JAX (tests/test_backends.py).
"""

import numpy as np
import pytest
from keras import ops

from keras_margins.heads.base import (
    NORM_EPS,
    normalized_matmul,
    normalized_matmul_with_target,
)
from tests.helpers import cast, compiled, grad_fn, numerical_gradient, to_numpy, value_and_grads


def ref_out(xs, w):
    xs, w = np.asarray(xs, np.float64), np.asarray(w, np.float64)
    out = np.zeros((xs.shape[0], w.shape[1]))
    for b in range(xs.shape[0]):
        for c in range(w.shape[1]):
            norm = np.sqrt(max(np.dot(w[:, c], w[:, c]), NORM_EPS))
            out[b, c] = np.dot(xs[b], w[:, c]) / norm
    return out


def ref_target(xs, w, index, scale, sub_centers):
    """Each row's maximum over its target class's sub-centre columns, divided by its scale."""
    out = ref_out(xs, w)
    return np.array(
        [
            max(out[b, index[b] * sub_centers + k] for k in range(sub_centers)) / scale[b]
            for b in range(len(index))
        ]
    )


@pytest.fixture
def inputs():
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(5, 4)).astype("float32")
    w = rng.normal(size=(4, 6)).astype("float32")
    g_out = rng.normal(size=(5, 6)).astype("float32")  # weights of a generic linear loss
    return xs, w, g_out


def test_values_match_reference(inputs):
    xs, w, _ = inputs
    got = to_numpy(normalized_matmul(cast(xs, "float32"), cast(w, "float32")))
    np.testing.assert_allclose(got, ref_out(xs, w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transposed", [False, True])
def test_gradients_match_finite_differences(inputs, transposed):
    xs, w, g_out = inputs

    def loss(a, b):
        return ops.sum(normalized_matmul(a, b, transposed) * cast(g_out, "float32"))

    _, (gx, gw) = value_and_grads(loss, xs, np.ascontiguousarray(w.T) if transposed else w)
    gw = gw.T if transposed else gw
    np.testing.assert_allclose(
        gx, numerical_gradient(lambda v: (ref_out(v, w) * g_out).sum(), xs), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        gw, numerical_gradient(lambda v: (ref_out(xs, v) * g_out).sum(), w), rtol=1e-4, atol=1e-5
    )


def test_zero_column_gives_zero_output_and_the_floor_branch_gradient(inputs):
    xs, w, g_out = inputs
    w = w.copy()
    w[:, 2] = 0.0

    def loss(a, b):
        return ops.sum(normalized_matmul(a, b) * cast(g_out, "float32"))

    value, (gx, gw) = value_and_grads(loss, xs, w)
    out = to_numpy(normalized_matmul(cast(xs, "float32"), cast(w, "float32")))
    assert np.all(out[:, 2] == 0.0)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gw))
    # With the norm floored, out[:, 2] = xs @ w_2 / sqrt(NORM_EPS): linear in w_2.
    expected = xs.astype(np.float64).T @ g_out[:, 2] / np.sqrt(NORM_EPS)
    np.testing.assert_allclose(gw[:, 2], expected, rtol=1e-5)
    # The other columns are unaffected by the zero one.
    np.testing.assert_allclose(
        gw[:, [0, 1, 3]],
        numerical_gradient(lambda v: (ref_out(xs, v) * g_out[:, [0, 1, 3]]).sum(), w[:, [0, 1, 3]]),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("sub_centers", [1, 3])
@pytest.mark.parametrize("use", ["both", "out", "target"])
def test_target_output_and_gradients_match_finite_differences(sub_centers, use, transposed):
    rng = np.random.default_rng(sub_centers)
    num_classes, batch, dim = 4, 5, 3
    xs = rng.normal(size=(batch, dim)).astype("float32")
    w = rng.normal(size=(dim, num_classes * sub_centers)).astype("float32")
    index = np.array([0, 3, 1, 3, 2], "int32")
    scale = rng.uniform(0.5, 3.0, size=batch).astype("float32")
    g_out = rng.normal(size=(batch, num_classes * sub_centers)).astype("float32")
    g_cos = rng.normal(size=batch).astype("float32")
    w_out, w_cos = {"both": (1.0, 1.0), "out": (1.0, 0.0), "target": (0.0, 1.0)}[use]

    def loss(a, b, inv_scale):
        out, cos_y = normalized_matmul_with_target(
            a,
            ops.transpose(b) if transposed else b,
            cast(index, "int32"),
            inv_scale,
            sub_centers,
            transposed,
        )
        total = 0.0
        if w_out:
            total = total + ops.sum(out * cast(g_out, "float32"))
        if w_cos:
            total = total + ops.sum(cos_y * cast(g_cos, "float32"))
        return total

    def ref(a, b, s_inv):
        total = 0.0
        if w_out:
            total += (ref_out(a, b) * g_out).sum()
        if w_cos:
            total += (ref_target(a, b, index, 1.0 / s_inv, sub_centers) * g_cos).sum()
        return total

    inv_scale = (1.0 / scale).astype("float32")
    out, cos_y = normalized_matmul_with_target(
        cast(xs, "float32"),
        cast(np.ascontiguousarray(w.T) if transposed else w, "float32"),
        cast(index, "int32"),
        cast(inv_scale, "float32"),
        sub_centers,
        transposed,
    )
    np.testing.assert_allclose(to_numpy(out), ref_out(xs, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(cos_y), ref_target(xs, w, index, scale, sub_centers), rtol=1e-5, atol=1e-6
    )

    _, (gx, gw, gs) = value_and_grads(loss, xs, w, inv_scale)
    for got, wrt, arg in ((gx, xs, 0), (gw, w, 1), (gs, inv_scale, 2)):
        args = [xs, w, inv_scale]

        def f(v, arg=arg, args=args):
            a = list(args)
            a[arg] = v
            return ref(*a)

        np.testing.assert_allclose(got, numerical_gradient(f, wrt), rtol=1e-4, atol=1e-5)


def test_compiled_matches_eager(inputs):
    xs, w, g_out = inputs
    index = np.array([1, 0, 5, 2, 2], "int32")

    def loss(a, b):
        out, cos_y = normalized_matmul_with_target(
            a, b, cast(index, "int32"), cast(np.full(5, 0.5), "float32")
        )
        return ops.sum(out * cast(g_out, "float32")) + ops.sum(cos_y)

    g = grad_fn(loss)
    xs_t, w_t = cast(xs, "float32"), cast(w, "float32")
    eager = g(xs_t, w_t)
    xla = compiled(g)(xs_t, w_t)
    np.testing.assert_allclose(to_numpy(xla[0]), to_numpy(eager[0]), rtol=1e-6)
    for a, b in zip(xla[1], eager[1]):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
