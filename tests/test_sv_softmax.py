"""SV-Softmax, SV-AM-Softmax and SV-Arc-Softmax against float64 references from the paper.

Target s f(theta_y); non-target k: s (t cos theta_k + t - 1) if cos theta_k > f(theta_y)
(a support vector), else s cos theta_k. The references share no code with keras_margins.
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.heads.base import layer_metrics_supported
from keras_margins.heads.sv_softmax import SVSoftmax
from tests.helpers import (
    assert_config_round_trip,
    assert_keras_round_trip,
    compiled,
    grad_fn,
    head_model,
    load_digits_split,
    numerical_gradient,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
    with_kernel,
    xla_in_fit,
)


def ref_f(cos, margin_type, m):
    if margin_type is None:
        return cos
    if margin_type == "cosine":
        return cos - m
    theta = math.acos(cos)
    if theta + m <= math.pi:
        return math.cos(theta + m)
    return cos - m * math.sin(m)  # ArcFace's rule past theta + m = pi


def ref_logits(x, kernel, labels, scale, t, margin_type, m):
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    b, c = x.shape[0], w.shape[1]
    out = np.zeros((b, c))
    sv = np.zeros((b, c), bool)
    for i in range(b):
        cos = [
            float(np.clip(x[i] @ w[:, j] / (np.linalg.norm(x[i]) * np.linalg.norm(w[:, j])), -1, 1))
            for j in range(c)
        ]
        f = ref_f(cos[labels[i]], margin_type, m)
        for j in range(c):
            if j == labels[i]:
                out[i, j] = scale * f
            elif cos[j] > f:
                sv[i, j] = True
                out[i, j] = scale * (t * cos[j] + t - 1)
            else:
                out[i, j] = scale * cos[j]
    return out, sv


def built_head(kernel, **kwargs):
    return with_kernel(SVSoftmax(kernel.shape[1], **kwargs), kernel)


def make_inputs(rng, batch=24, dim=6, num_classes=5):
    x = rng.normal(size=(batch, dim)).astype("float32")
    kernel = rng.normal(size=(dim, num_classes)).astype("float32")
    labels = rng.integers(0, num_classes, size=batch).astype("int32")
    return x, kernel, labels


VARIANTS = [(None, 0.0), ("cosine", 0.35), ("arc", 0.5)]


@pytest.mark.parametrize("margin_type,m", VARIANTS)
@pytest.mark.parametrize("t", [1.0, 1.2, 2.0])
def test_logits_and_support_vector_fraction_match_reference(margin_type, m, t, rng):
    x, kernel, labels = make_inputs(rng)
    head = built_head(kernel, scale=16.0, t=t, margin=m, margin_type=margin_type)
    got = keras.ops.convert_to_numpy(head([x, labels]))
    expected, sv = ref_logits(x, kernel, labels, 16.0, t, margin_type, m)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=16.0 * 2e-5)
    assert sv.sum() > 0, "the sample should contain support vectors"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(head.support_vector_mask(x, labels)), sv
    )
    if layer_metrics_supported():
        assert float(head.support_vector_fraction.result()) == pytest.approx(
            sv.sum() / (len(labels) * 4), rel=1e-6
        )
    else:  # JAX: heads own no metrics (keras_margins.heads.base.layer_metrics_supported)
        assert head.support_vector_fraction is None
    # Inference: s cos.
    plain = keras.ops.convert_to_numpy(head(x))
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0))
    np.testing.assert_allclose(plain, 16.0 * cos, atol=16.0 * 2e-6)


@pytest.mark.parametrize(
    "margin_type,m,equivalent",
    [
        (None, 0.0, lambda: km.NormSoftmax(5, scale=16.0)),
        ("cosine", 0.35, lambda: km.CosFace(5, scale=16.0, margin=0.35)),
        ("arc", 0.5, lambda: km.ArcFace(5, scale=16.0, margin=0.5)),
    ],
)
def test_t_equal_one_reduces_to_the_underlying_softmax(margin_type, m, equivalent, rng):
    x, kernel, labels = make_inputs(rng, batch=64)
    sv_head = built_head(kernel, scale=16.0, t=1.0, margin=m, margin_type=margin_type)
    other = equivalent()
    other.build((None, 6))
    other.kernel.assign(kernel)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(sv_head([x, labels])),
        keras.ops.convert_to_numpy(other([x, labels])),
    )


def test_indicator_at_the_boundary_is_strict_and_carries_no_gradient():
    # Class 0 target, class 1 exactly as close as the target (cos_1 == f = cos_0): not a
    # support vector; class 2 just past it: a support vector.
    kernel = np.array([[1.0, 0.6], [1.0, -0.6], [1.0, -0.59]], "float32").T
    x = np.array([[1.0, 0.0]], "float32")
    labels = np.array([0], "int32")
    head = built_head(kernel, scale=1.0, t=1.5)
    cos = keras.ops.convert_to_numpy(head.cosine(x))[0]
    assert cos[0] == cos[1] and cos[2] > cos[0]
    mask = keras.ops.convert_to_numpy(head.support_vector_mask(x, labels))[0]
    np.testing.assert_array_equal(mask, [False, False, True])
    logits = keras.ops.convert_to_numpy(head([x, labels]))[0]
    np.testing.assert_allclose(logits, [cos[0], cos[1], 1.5 * cos[2] + 0.5], rtol=1e-6)
    # Gradient with respect to the non-target cosine is t for a support vector, 1 otherwise:
    # no term from the indicator (a step function), checked through the cosine of class 2.
    is_target = keras.ops.convert_to_tensor(np.array([[True, False, False]]))
    _, (grad,) = value_and_grads(
        lambda cos_t: keras.ops.sum(head.combine(cos_t, cos_t[:, 0], is_target, 1.0)), cos[None, :]
    )
    grad = grad[0]
    np.testing.assert_allclose(grad, [1.0, 1.0, 1.5])


@pytest.mark.parametrize("margin_type,m", VARIANTS)
def test_gradients_match_finite_differences(margin_type, m, rng):
    x, kernel, labels = make_inputs(rng, batch=6, dim=3, num_classes=4)
    head = built_head(kernel, scale=8.0, t=1.3, margin=m, margin_type=margin_type)

    def ref_loss_x(xx):
        return ref_cross_entropy(
            ref_logits(xx, kernel, labels, 8.0, 1.3, margin_type, m)[0], labels
        )

    def ref_loss_w(ww):
        return ref_cross_entropy(ref_logits(x, ww, labels, 8.0, 1.3, margin_type, m)[0], labels)

    def loss_fn(xt):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return loss(labels, head([xt, labels]))

    _, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel])
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("margin_type,m", VARIANTS)
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_edges_are_finite(margin_type, m, policy):
    keras.config.set_dtype_policy(policy)
    kernel = np.eye(4, 3, dtype="float32") * np.array([2.0, 0.5, 3.0], "float32")
    theta = math.pi - 0.2
    x = np.array(
        [
            [3.0, 0.0, 0.0, 0.0],
            [0.0, -2.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, math.cos(theta), math.sin(theta)],
        ],
        "float32",
    )
    labels = np.array([0, 1, 2, 2], "int32")
    head = built_head(kernel, scale=16.0, t=1.2, margin=m, margin_type=margin_type)

    def loss_fn(xt):
        logits = head([xt, labels])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return loss, logits

    loss, (gx, gw), logits = value_and_grads(loss_fn, x, variables=[head.kernel], has_aux=True)
    assert logits.dtype == np.float32
    for v in (logits, loss, gx, gw):
        assert np.all(np.isfinite(v))
    expected, _ = ref_logits(x, kernel, labels, 16.0, 1.2, margin_type, m)
    np.testing.assert_allclose(logits, expected, atol=16.0 * 1e-3)


def test_xla_matches_eager(rng):
    x, kernel, labels = make_inputs(rng)
    head = built_head(kernel, scale=16.0, t=1.2, margin=0.5, margin_type="arc")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(xx, yy):
        loss, grads = grad_fn(lambda xv: loss_fn(yy, head([xv, yy])), [head.kernel])(xx)
        return (loss, *grads)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    xla = compiled(step)(xt, yt)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"t": 0.9}, "t"),
        ({"t": "1.2"}, "t"),
        ({"scale": -1.0}, "scale"),
        ({"margin_type": "additive"}, "margin_type"),
        ({"margin": 0.3}, "margin"),  # a margin needs a margin_type
        ({"margin": 2.5, "margin_type": "cosine"}, "margin"),
        ({"margin": 3.5, "margin_type": "arc"}, "margin"),
        ({"margin": -0.1, "margin_type": "arc"}, "margin"),
        ({"sub_centers": 0}, "sub_centers"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        SVSoftmax(3, **kwargs)


def test_config_and_keras_round_trip(rng, tmp_path):
    head = SVSoftmax(5, scale=20.0, t=1.4, margin=0.3, margin_type="cosine", sub_centers=2)
    clone = assert_config_round_trip(head)
    assert (clone.t, clone.margin, clone.margin_type) == (1.4, 0.3, "cosine")
    x, _, labels = make_inputs(rng)
    assert_keras_round_trip(head_model(head, 6), [x, labels], tmp_path)


def test_training_on_digits_learns_and_logs_the_support_vector_fraction():
    x_train, x_test, y_train, y_test = load_digits_split()
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    head = SVSoftmax(10, scale=16.0, t=1.2, margin=0.2, margin_type="cosine")
    train_model, embed_model = km.build_models(backbone, head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    hist = train_model.fit([x_train, y_train], y_train, epochs=8, batch_size=64, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    if layer_metrics_supported():
        fractions = hist.history[f"{head.name}_sv_fraction"]
        assert all(0.0 <= f <= 1.0 for f in fractions)
        assert fractions[-1] < fractions[0], fractions  # fewer mis-classified pairs as it learns
    else:  # JAX: heads own no metrics (keras_margins.heads.base.layer_metrics_supported)
        assert head.support_vector_fraction is None
    emb = embed_model.predict(x_test, verbose=0)
    accuracy = np.mean(np.argmax(keras.ops.convert_to_numpy(head(emb)), axis=1) == y_test)
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} (chance is 0.1)"
