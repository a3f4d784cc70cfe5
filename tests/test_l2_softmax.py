"""L2-Softmax, its feature-scaling layer and the alpha lower bound, against float64 references.

logit_j = W_j . (alpha x / ||x||) + b_j; alpha_low = log(p (C - 2) / (1 - p)) (Ranjan et al.).
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km  # noqa: F401
from keras_margins.heads.l2_softmax import (
    L2Softmax,
    ScaledL2Normalization,
    l2_softmax_alpha_lower_bound,
)
from tests.helpers import (
    assert_config_round_trip,
    assert_keras_round_trip,
    cast,
    compiled,
    grad_fn,
    head_model,
    load_digits_split,
    numerical_gradient,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
    xla_in_fit,
)


def ref_logits(x, kernel, bias, alpha):
    x = np.asarray(x, np.float64)
    out = np.zeros((x.shape[0], kernel.shape[1]))
    for i in range(x.shape[0]):
        n = np.linalg.norm(x[i])
        f = alpha * x[i] / n if n > 0 else np.zeros_like(x[i])
        for j in range(kernel.shape[1]):
            out[i, j] = f @ np.asarray(kernel[:, j], np.float64) + (
                0.0 if bias is None else bias[j]
            )
    return out


@pytest.mark.parametrize(
    "c,p", [(3, 0.9), (10, 0.9), (100, 0.9), (10575, 0.9), (10, 0.5), (50, 0.99)]
)
def test_alpha_lower_bound_values(c, p):
    expected = math.log(p * (c - 2) / (1 - p))
    assert l2_softmax_alpha_lower_bound(c, p) == pytest.approx(expected, rel=1e-12)
    # The defining relation of the bound: (1 - p) e^alpha_low = p (C - 2).
    assert (1 - p) * math.exp(l2_softmax_alpha_lower_bound(c, p)) == pytest.approx(p * (c - 2))


def test_alpha_lower_bound_known_numbers():
    # Worked values: C = 10 -> log(72); C = 10575 (CASIA-WebFace), p = 0.9 -> log(95157).
    assert l2_softmax_alpha_lower_bound(10) == pytest.approx(math.log(72.0))
    assert l2_softmax_alpha_lower_bound(10575) == pytest.approx(11.4633, abs=1e-4)


@pytest.mark.parametrize(
    "args,argname",
    [
        ((2, 0.9), "num_classes"),
        ((1, 0.9), "num_classes"),
        ((10, 0.0), "p"),
        ((10, 1.0), "p"),
        ((10, 1.5), "p"),
        ((10.0, 0.9), "num_classes"),
    ],
)
def test_alpha_lower_bound_rejects_bad_input(args, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        l2_softmax_alpha_lower_bound(*args)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("alpha", [None, 12.0])
def test_logits_match_reference(alpha, use_bias, rng):
    x = (rng.normal(size=(16, 6)) * rng.uniform(0.1, 5, size=(16, 1))).astype("float32")
    labels = rng.integers(0, 7, size=16).astype("int32")
    head = L2Softmax(7, alpha=alpha, use_bias=use_bias, bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(head([x, labels]))
    a = math.log(0.9 * 5 / 0.1) if alpha is None else alpha
    assert head.alpha == pytest.approx(a) and head.current_alpha() == pytest.approx(a, rel=1e-6)
    bias = keras.ops.convert_to_numpy(head.bias) if use_bias else None
    expected = ref_logits(x, keras.ops.convert_to_numpy(head.kernel), bias, a)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Labels change nothing; the single-input form gives the same logits.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head(x)), out)


def test_feature_scaling_layer_alone(rng):
    x = (rng.normal(size=(8, 5)) * 7).astype("float32")
    x[3] = 0.0
    y = keras.ops.convert_to_numpy(ScaledL2Normalization(alpha=3.5)(x))
    norms = np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 3.5, rtol=1e-6)
    assert np.all(y[3] == 0.0)
    np.testing.assert_allclose(
        y[0], 3.5 * x[0] / np.linalg.norm(x[0].astype(np.float64)), rtol=1e-6
    )
    # In front of an ordinary classifier.
    model = keras.Sequential(
        [keras.Input((5,)), ScaledL2Normalization(alpha=8.0), keras.layers.Dense(3)]
    )
    assert model(x).shape == (8, 3)


@pytest.mark.parametrize("trainable_alpha", [False, True])
def test_gradients_match_finite_differences(trainable_alpha, rng):
    x = rng.normal(size=(5, 3)).astype("float32")
    labels = rng.integers(0, 4, size=5).astype("int32")
    head = L2Softmax(
        4, alpha=6.0, trainable_alpha=trainable_alpha, bias_initializer="random_normal"
    )
    head.build((None, 3))
    kernel = keras.ops.convert_to_numpy(head.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(head.bias).astype(np.float64)

    watched = [head.kernel, head.bias]
    if trainable_alpha:
        watched.append(head.feature_scale.log_alpha)
    _, grads = value_and_grads(
        lambda xt: keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, head(xt)),
        x,
        variables=watched,
    )
    np.testing.assert_allclose(
        grads[0],
        numerical_gradient(
            lambda v: ref_cross_entropy(ref_logits(v, kernel, bias, 6.0), labels), x
        ),
        rtol=2e-3,
        atol=2e-5,
    )
    np.testing.assert_allclose(
        grads[1],
        numerical_gradient(
            lambda w: ref_cross_entropy(ref_logits(x, w, bias, 6.0), labels), kernel
        ),
        rtol=2e-3,
        atol=2e-5,
    )
    if trainable_alpha:
        # alpha = exp(log_alpha): d loss / d log_alpha = alpha * d loss / d alpha.
        d_alpha = numerical_gradient(
            lambda a: ref_cross_entropy(ref_logits(x, kernel, bias, a[0]), labels), np.array([6.0])
        )[0]
        assert float(grads[3]) == pytest.approx(6.0 * d_alpha, rel=2e-3)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_and_edges(policy, rng):
    keras.config.set_dtype_policy(policy)
    x = rng.normal(size=(6, 4)).astype("float32")
    if policy == "float32":
        # An all-zero embedding: finite, but the normalization's gradient there is ~1/sqrt(1e-12)
        # times the weights, which overflows a float16 input gradient (documented pitfall).
        x[0] = 0.0
    x[1] = 1e4  # huge norm
    labels = rng.integers(0, 5, size=6).astype("int32")
    head = L2Softmax(5, trainable_alpha=True)
    dtype = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    xt = cast(x, dtype)
    head([xt, labels])  # build, so that the gradient can name the weights

    def loss_fn(xv):
        logits = head([xv, labels])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return loss, logits

    loss, grads, logits = grad_fn(loss_fn, head.trainable_weights, has_aux=True)(xt)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.kernel.dtype == "float32"
    for g in [logits, loss, *grads]:
        assert np.all(np.isfinite(to_numpy(cast(g, "float32"))))
    expected = ref_logits(
        to_numpy(cast(xt, "float32")).astype(np.float64),
        keras.ops.convert_to_numpy(head.kernel),
        keras.ops.convert_to_numpy(head.bias),
        head.alpha,
    )
    np.testing.assert_allclose(to_numpy(logits), expected, atol=1e-5)


def test_xla_matches_eager(rng):
    x = rng.normal(size=(16, 6)).astype("float32")
    labels = rng.integers(0, 7, size=16).astype("int32")
    head = L2Softmax(7, trainable_alpha=True)
    head.build((None, 6))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(xx, yy):
        loss, grads = grad_fn(lambda xv: loss_fn(yy, head([xv, yy])), head.trainable_weights)(xx)
        return (loss, *grads)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    xla = compiled(step)(xt, yt)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"num_classes": 2}, "alpha"),  # alpha=None needs C >= 3
        ({"num_classes": 0}, "num_classes"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -3.0}, "alpha"),
        ({"alpha": "8"}, "alpha"),
        ({"trainable_alpha": 1}, "trainable_alpha"),
        ({"use_bias": "yes"}, "use_bias"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argname):
    args = {"num_classes": 5, **kwargs}
    with pytest.raises(ValueError, match=f"`{argname}`"):
        L2Softmax(**args)


def test_scaling_layer_bad_arguments():
    with pytest.raises(ValueError, match="`alpha`"):
        ScaledL2Normalization(alpha=0.0)
    with pytest.raises(ValueError, match="`trainable_alpha`"):
        ScaledL2Normalization(trainable_alpha="no")


def test_two_classes_with_explicit_alpha_work():
    head = L2Softmax(2, alpha=5.0)
    assert head(np.ones((3, 4), "float32")).shape == (3, 2)


def test_config_and_keras_round_trip(rng, tmp_path):
    x = rng.normal(size=(8, 6)).astype("float32")
    labels = rng.integers(0, 5, size=8).astype("int32")
    for head in (L2Softmax(5), L2Softmax(5, alpha=10.0, trainable_alpha=True, use_bias=False)):
        clone = assert_config_round_trip(head)
        assert clone.alpha == pytest.approx(head.alpha)
        model = head_model(head, 6)
        if head.trainable_alpha:
            head.feature_scale.log_alpha.assign(math.log(7.0))  # a "learned" alpha must be saved
        loaded = assert_keras_round_trip(model, [x, labels], tmp_path)
        assert loaded.layers[-1].current_alpha() == pytest.approx(head.current_alpha())
    layer = ScaledL2Normalization(alpha=4.0, trainable_alpha=True)
    assert_config_round_trip(layer)
    model = keras.Sequential([keras.Input((6,)), layer])
    assert_keras_round_trip(model, x, tmp_path)


@pytest.mark.parametrize("trainable_alpha", [False, True])
def test_training_on_digits_learns(trainable_alpha):
    x_train, x_test, y_train, y_test = load_digits_split()
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    head = L2Softmax(10, trainable_alpha=trainable_alpha)
    train_model, _ = km.build_models(backbone, head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    hist = train_model.fit([x_train, y_train], y_train, epochs=8, batch_size=64, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    logits = train_model.predict([x_test, y_test], verbose=0)
    accuracy = np.mean(np.argmax(logits, axis=1) == y_test)
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} (chance is 0.1)"
    if trainable_alpha:
        assert head.current_alpha() > 0 and head.current_alpha() != pytest.approx(head.alpha)
