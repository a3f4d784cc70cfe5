"""SphereFace (A-Softmax) with lambda annealing, against float64 references from the paper.

psi(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m]; the target logit is
||x|| (lambda cos theta_y + psi(theta_y)) / (1 + lambda), lambda = max(lambda_min,
base (1 + gamma t)^-power). The references below share no code with keras_margins.
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km  # noqa: F401  (the package must import cleanly)
from keras_margins.heads.base import layer_metrics_supported
from keras_margins.heads.sphereface import SphereFace, sphereface_psi
from tests.helpers import (
    assert_all_close,
    assert_config_round_trip,
    assert_keras_round_trip,
    cast,
    compiled,
    head_model,
    head_training_step,
    load_digits_split,
    numerical_gradient,
    ref_cross_entropy,
    skip_compiled_fit_on_torch,
    to_numpy,
    value_and_grads,
    with_kernel,
    xla_in_fit,
)

MARGINS = [1, 1.5, 2, 2.5, 3, 3.7, 4, 5.25]

# --------------------------------------------------------------------------- float64 references


def ref_psi(theta, m):
    """psi from its definition: find the interval k with k pi/m <= theta <= (k+1) pi/m."""
    k = 0
    while theta > (k + 1) * math.pi / m:
        k += 1
    return (-1) ** k * math.cos(m * theta) - 2 * k


def ref_lambda(t, base=1000.0, gamma=0.12, power=1.0, lam_min=5.0):
    return max(lam_min, base * (1.0 + gamma * t) ** (-power))


def ref_logits(x, kernel, labels, m, lam, scale=None):
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    b, c = x.shape[0], w.shape[1]
    out = np.zeros((b, c))
    for i in range(b):
        norm = np.linalg.norm(x[i])
        s = norm if scale is None else scale
        for j in range(c):
            cos = np.clip(x[i] @ w[:, j] / (norm * np.linalg.norm(w[:, j])), -1.0, 1.0)
            if j == labels[i]:
                out[i, j] = s * (lam * cos + ref_psi(math.acos(cos), m)) / (1.0 + lam)
            else:
                out[i, j] = s * cos
    return out


def built_head(kernel, **kwargs):
    return with_kernel(SphereFace(kernel.shape[1], **kwargs), kernel)


def make_inputs(rng, batch=16, dim=6, num_classes=5):
    x = (rng.normal(size=(batch, dim)) * rng.uniform(0.5, 3.0, size=(batch, 1))).astype("float32")
    kernel = rng.normal(size=(dim, num_classes)).astype("float32")
    labels = rng.integers(0, num_classes, size=batch).astype("int32")
    return x, kernel, labels


def psi_of_theta(theta, m):
    return keras.ops.convert_to_numpy(sphereface_psi(cast(np.cos(theta), "float32"), m)).astype(
        np.float64
    )


# --------------------------------------------------------------------------- psi


@pytest.mark.parametrize("m", MARGINS)
def test_psi_matches_reference_on_the_half_circle(m):
    theta = np.linspace(0.0, math.pi, 4001)
    expected = np.array([ref_psi(t, m) for t in theta])
    # float32 cosines resolve theta to ~3.5e-4 rad near 0 and pi; psi's slope is at most ~m^2
    # there (integer m) or ~m / sin(theta) (non-integer m at pi): compare in cosine space.
    np.testing.assert_allclose(psi_of_theta(theta, m), expected, atol=2e-4 * m * m)


@pytest.mark.parametrize("m", MARGINS)
def test_psi_is_continuous_and_decreasing_at_every_boundary(m):
    n_boundaries = math.ceil(m) - 1
    for k in range(1, n_boundaries + 1):
        b = k * math.pi / m
        # The two pieces meet at 1 - 2k: left piece k-1, right piece k.
        left = (-1) ** (k - 1) * math.cos(m * b) - 2 * (k - 1)
        right = (-1) ** k * math.cos(m * b) - 2 * k
        assert abs(left - right) < 1e-12 and abs(right - (1 - 2 * k)) < 1e-12
        # The implementation on both sides of the boundary, close enough for float32 to
        # separate the angles: no jump, and strictly decreasing across it.
        for delta in (1e-2, 1e-3):
            lo, mid, hi = psi_of_theta(np.array([b - delta, b, b + delta]), m)
            assert lo > mid > hi, (m, k, delta, lo, mid, hi)
            assert abs(mid - (1 - 2 * k)) < 1e-4
            assert abs(lo - mid) < 2.5 * m * delta and abs(hi - mid) < 2.5 * m * delta
    # Monotone on a fine grid covering all pieces.
    values = psi_of_theta(np.linspace(0.0, math.pi, 20001), m)
    assert np.all(np.diff(values) <= 1e-6)
    assert np.all(np.isfinite(values))
    # End point: psi(pi) from the last (possibly partial) piece.
    assert abs(values[-1] - ref_psi(math.pi, m)) < 1e-3


def test_non_integer_margin_is_never_truncated():
    head = SphereFace(3, margin=1.5)
    assert head.margin == 1.5 and head.get_config()["margin"] == 1.5
    theta = np.array([0.5, 1.0, 2.0, 2.8])
    cos = cast(np.cos(theta), "float32")
    got = keras.ops.convert_to_numpy(sphereface_psi(cos, 1.5))
    np.testing.assert_allclose(got, [ref_psi(t, 1.5) for t in theta], atol=1e-5)
    # ... and differs from margin 1 (what truncation would give) by far more than rounding.
    assert np.all(np.abs(got - np.cos(theta)) > 0.05)


# ------------------------------------------------------------------------ logits, loss, gradients


@pytest.mark.parametrize("margin", [4, 2.5])
@pytest.mark.parametrize("scale", [None, 8.0])
def test_logits_match_reference(margin, scale, rng):
    x, kernel, labels = make_inputs(rng, batch=32)
    head = built_head(kernel, margin=margin, scale=scale)  # step 0: lambda = 1000
    got = keras.ops.convert_to_numpy(head([x, labels]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, ref_logits(x, kernel, labels, margin, 1000.0, scale), atol=2e-4 * (scale or 4)
    )

    plain = SphereFace(5, margin=margin, scale=scale, lambda_base=0.0, lambda_min=0.0)
    plain.build((None, 6))
    plain.kernel.assign(kernel)
    got = keras.ops.convert_to_numpy(plain([x, labels]))
    expected = ref_logits(x, kernel, labels, margin, 0.0, scale)
    np.testing.assert_allclose(got, expected, atol=2e-3 * (scale or 4))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, got)
    np.testing.assert_allclose(float(loss), ref_cross_entropy(expected, labels), rtol=1e-3)

    # Inference (no labels): ||x|| cos, or s cos.
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    cos = (x / norms) @ (kernel / np.linalg.norm(kernel, axis=0))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)),
        (norms if scale is None else scale) * cos,
        atol=1e-4 * 8,
    )


@pytest.mark.parametrize("margin,lam", [(4, 0.0), (2.5, 0.0), (3, 7.0)])
def test_gradients_match_finite_differences(margin, lam, rng):
    x, kernel, labels = make_inputs(rng, batch=5, dim=3, num_classes=4)
    head = built_head(kernel, margin=margin, lambda_base=lam, lambda_min=lam)

    def ref_loss_x(xx):
        return ref_cross_entropy(ref_logits(xx, kernel, labels, margin, lam), labels)

    def ref_loss_w(ww):
        return ref_cross_entropy(ref_logits(x, ww, labels, margin, lam), labels)

    def loss_fn(xt):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return loss(labels, head([xt, labels]))

    _, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel])
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=3e-3, atol=3e-4)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=3e-3, atol=3e-4)


@pytest.mark.parametrize("margin", [4, 1.5])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_edges_are_finite_in_values_and_gradients(margin, policy):
    keras.config.set_dtype_policy(policy)
    kernel = np.eye(4, 3, dtype="float32") * np.array([2.0, 0.5, 3.0], "float32")
    # cos = 1, cos = -1, cos = 0, an all-zero embedding.
    x = np.array(
        [[3.0, 0.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
        "float32",
    )
    labels = np.array([0, 1, 2, 2], "int32")
    head = built_head(kernel, margin=margin, lambda_base=0.0, lambda_min=0.0)

    def loss_fn(xt):
        logits = head([xt, labels])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return loss, logits

    loss, (gx, gw), logits = value_and_grads(loss_fn, x, variables=[head.kernel], has_aux=True)
    assert logits.dtype == np.float32
    for t in (logits, loss, gx, gw):
        assert np.all(np.isfinite(t)), f"non-finite under {policy}"
    expected = ref_logits(x[:3], kernel, labels[:3], margin, 0.0)
    np.testing.assert_allclose(logits[:3], expected, atol=1e-3)
    # psi(0) = 1 and psi(pi) = (-1)^k cos(m pi) - 2k at the two extremes.
    assert abs(logits[0, 0] - 3.0) < 1e-4
    assert abs(logits[1, 1] - 2.0 * ref_psi(math.pi, margin)) < 1e-3


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_in_float32(policy, rng):
    keras.config.set_dtype_policy(policy)
    x, kernel, labels = make_inputs(rng)
    head = built_head(kernel, margin=4)
    xh = cast(x, "float16" if policy == "mixed_float16" else "bfloat16")
    logits = head([xh, labels])
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.kernel.dtype == "float32"
    x_rounded = to_numpy(cast(xh, "float32")).astype(np.float64)
    expected = ref_logits(x_rounded, kernel, labels, 4, 1000.0)
    np.testing.assert_allclose(to_numpy(logits), expected, atol=1e-4)


# --------------------------------------------------------------------------- the lambda schedule


def test_lambda_schedule_over_steps(rng):
    x, kernel, labels = make_inputs(rng, batch=8)
    head = built_head(kernel, margin=4)
    for t in range(40):
        assert int(to_numpy(head.step)) == t
        assert head.current_lambda() == pytest.approx(ref_lambda(t), rel=1e-12)
        got = keras.ops.convert_to_numpy(head([x, labels], training=True))
        # The step uses lambda(t), then the counter advances.
        np.testing.assert_allclose(got, ref_logits(x, kernel, labels, 4, ref_lambda(t)), atol=1e-3)
    # Inference and evaluation calls never advance it.
    head([x, labels])
    head([x, labels], training=False)
    head(x, training=True)  # no labels: no target logit, no step
    assert int(to_numpy(head.step)) == 40
    # The floor: far in the schedule lambda is lambda_min.
    head.step.assign(10**6)
    assert head.current_lambda() == 5.0
    # Other schedule parameters.
    other = SphereFace(3, lambda_base=50.0, lambda_gamma=0.5, lambda_power=2.0, lambda_min=0.5)
    other.build((None, 4))
    for t in (0, 1, 3, 10, 100):
        other.step.assign(t)
        assert other.current_lambda() == pytest.approx(ref_lambda(t, 50.0, 0.5, 2.0, 0.5))
    assert SphereFace(3, lambda_base=0.0, lambda_min=0.0).current_lambda() == 0.0


def _digits_models(head):
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    return km.build_models(backbone, head)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_step_advances_once_per_fit_step_and_resumes_after_load(jit_compile, tmp_path):
    skip_compiled_fit_on_torch(jit_compile)
    x_train, x_test, y_train, y_test = load_digits_split()
    x_train, y_train = x_train[:320], y_train[:320]  # 10 batches of 32
    head = SphereFace(10)
    train_model, _ = _digits_models(head)
    train_model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    hist = train_model.fit(
        [x_train, y_train],
        y_train,
        batch_size=32,
        epochs=2,
        verbose=0,
        validation_data=([x_test, y_test], y_test),
    )
    assert int(to_numpy(head.step)) == 20
    assert head.current_lambda() == pytest.approx(ref_lambda(20))
    # The lambda metric in the logs: mean over the epoch's steps; validation sees lambda(20).
    # (Not on JAX, where heads own no metrics: see `layer_metrics_supported`.)
    key = f"{head.name}_lambda"
    if layer_metrics_supported():
        assert hist.history[key][0] == pytest.approx(
            np.mean([ref_lambda(t) for t in range(10)]), rel=1e-5
        )
        assert hist.history["val_" + key][-1] == pytest.approx(ref_lambda(20), rel=1e-5)
    else:
        assert head.lambda_tracker is None and key not in hist.history
    train_model.evaluate([x_test, y_test], y_test, verbose=0)
    train_model.predict([x_test, y_test], verbose=0)
    assert int(to_numpy(head.step)) == 20

    # Save mid-schedule and resume: the loaded model gives the same logits (lambda(20)) and
    # continues counting from 20.
    loaded = assert_keras_round_trip(train_model, [x_test[:16], y_test[:16]], tmp_path, atol=1e-5)
    loaded_head = [layer for layer in loaded.layers if isinstance(layer, SphereFace)][0]
    assert int(to_numpy(loaded_head.step)) == 20
    loaded.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    loaded.fit([x_train, y_train], y_train, batch_size=32, epochs=1, verbose=0)
    assert int(to_numpy(loaded_head.step)) == 30
    assert loaded_head.current_lambda() == pytest.approx(ref_lambda(30))


def test_xla_matches_eager_and_advances_the_step(rng):
    x, kernel, labels = make_inputs(rng, batch=16)
    head = built_head(kernel, margin=4)
    step = head_training_step(head)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    assert int(to_numpy(head.step)) == 1
    head.step.assign(0)
    xla = compiled(step)(xt, yt)
    assert int(to_numpy(head.step)) == 1
    assert_all_close(xla, eager)


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"margin": 0.5}, "margin"),
        ({"margin": "4"}, "margin"),
        ({"margin": float("nan")}, "margin"),
        ({"scale": 0.0}, "scale"),
        ({"lambda_base": -1.0}, "lambda_base"),
        ({"lambda_gamma": -0.1}, "lambda_gamma"),
        ({"lambda_power": -1.0}, "lambda_power"),
        ({"lambda_min": -5.0}, "lambda_min"),
        ({"sub_centers": 0}, "sub_centers"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argname):
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=f"`{argname}`"):
        SphereFace(**args)


def test_config_and_keras_round_trip(rng, tmp_path):
    head = SphereFace(5, margin=2.5, scale=None, lambda_base=100.0, lambda_min=1.0, sub_centers=2)
    clone = assert_config_round_trip(head)
    assert clone.margin == 2.5 and clone.scale is None
    model = head_model(head, 6)
    x, _, labels = make_inputs(rng)
    head([x, labels], training=True)
    head([x, labels], training=True)
    loaded = assert_keras_round_trip(model, [x, labels], tmp_path)
    assert int(to_numpy(loaded.layers[-1].step)) == 2


def test_training_on_digits_learns():
    """The default annealing schedule trains to a high held-out accuracy."""
    x_train, x_test, y_train, y_test = load_digits_split()
    head = SphereFace(10, margin=4)
    train_model, embed_model = _digits_models(head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    hist = train_model.fit([x_train, y_train], y_train, epochs=10, batch_size=64, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    emb = embed_model.predict(x_test, verbose=0)
    accuracy = np.mean(np.argmax(keras.ops.convert_to_numpy(head(emb)), axis=1) == y_test)
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} (chance is 0.1)"
