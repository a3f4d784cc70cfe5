"""CurricularFace against float64 NumPy references written from the formula sheet.

PAPERS.md section 3 (the authors' code, HuangYG123/CurricularFace ``head/metrics.py``):
``T = cos(theta_y + m)``; target ``T`` if ``c_y > cos(pi - m)`` else ``c_y - m sin m``; a
non-target ``j`` is hard when ``c_j > T`` (the raw ``T``) and becomes ``c_j (t + c_j)``;
``t <- t_alpha mean(c_y) + (1 - t_alpha) t`` before use, detached. The references below share
no code with keras_margins.
"""

import math
import warnings

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_all_close,
    assert_config_round_trip,
    cast,
    compiled,
    head_training_step,
    load_digits_split,
    numerical_gradient,
    ref_cosines,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
)

# --------------------------------------------------------------------------- float64 references


def ref_t(cos, labels, t, t_alpha):
    """The curriculum ``t`` after one training batch (mean of the target cosines)."""
    cos_y = [cos[i, y] for i, y in enumerate(labels)]
    return t_alpha * float(np.mean(cos_y)) + (1.0 - t_alpha) * t


def ref_logits(cos, labels, t, scale, margin):
    """CurricularFace's logits for cosines ``cos`` with the curriculum value ``t`` (in use)."""
    out = np.array(cos, np.float64)
    for i, y in enumerate(labels):
        c_y = cos[i, y]
        raw = math.cos(math.acos(c_y) + margin)
        for j in range(cos.shape[1]):
            if j != y and cos[i, j] > raw:
                out[i, j] = cos[i, j] * (t + cos[i, j])
        out[i, y] = raw if c_y > math.cos(math.pi - margin) else c_y - margin * math.sin(margin)
    return scale * out


def mask_margin(cos, labels, margin):
    """The smallest distance of a non-target cosine to its row's raw T (robustness of a test)."""
    gaps = []
    for i, y in enumerate(labels):
        raw = math.cos(math.acos(cos[i, y]) + margin)
        gaps += [abs(cos[i, j] - raw) for j in range(cos.shape[1]) if j != y]
    return min(gaps)


def built_head(kernel, **kwargs):
    head = km.CurricularFace(kernel.shape[1] // kwargs.get("sub_centers", 1), **kwargs)
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


# --------------------------------------------------------------------------- logits and state


@pytest.mark.parametrize("t_alpha,sub_centers", [(0.01, 1), (0.4, 1), (0.4, 3)])
def test_matches_reference_over_steps(t_alpha, sub_centers, rng):
    dim, num_classes, batch, margin = 8, 6, 12, 0.5
    kernel = rng.normal(size=(dim, num_classes * sub_centers)).astype("float32")
    head = built_head(kernel, margin=margin, t_alpha=t_alpha, sub_centers=sub_centers)
    assert float(to_numpy(head.t)) == 0.0
    t = 0.0
    hard_seen = easy_seen = 0
    for _ in range(5):
        # Embeddings leaning towards their class centre, more with each step (t grows).
        labels = rng.integers(0, num_classes, size=batch).astype("int32")
        x = rng.normal(size=(batch, dim)) + 2.0 * kernel[:, labels * sub_centers].T
        x = x.astype("float32")
        cos = ref_cosines(x, kernel, sub_centers)
        assert mask_margin(cos, labels, margin) > 1e-4  # no hard/easy decision at an ulp
        t = ref_t(cos, labels, t, t_alpha)  # updated before use
        got = to_numpy(head([x, labels], training=True))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref_logits(cos, labels, t, 64.0, margin), atol=5e-4)
        assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-6)
        # Inference-mode calls use the stored t and never move it.
        for training in (False, None):
            got = to_numpy(head([x, labels], training=training))
            np.testing.assert_allclose(got, ref_logits(cos, labels, t, 64.0, margin), atol=5e-4)
        np.testing.assert_allclose(to_numpy(head(x)), 64.0 * cos, atol=5e-4)
        assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-6)
        for i, y in enumerate(labels):
            raw = math.cos(math.acos(cos[i, y]) + margin)
            hard = [j for j in range(num_classes) if j != y and cos[i, j] > raw]
            hard_seen += len(hard)
            easy_seen += num_classes - 1 - len(hard)
    assert hard_seen > 10 and easy_seen > 10  # both kinds of negatives were exercised
    assert t > 0.05 if t_alpha > 0.1 else t > 0.0


def test_raw_T_decides_hard_negatives_past_pi():
    # x at theta_y = 2.9 rad from its class: theta_y + m > pi, the target takes the fallback
    # c_y - m sin m = -1.211, but the mask compares with the raw T = cos(3.4) = -0.967.
    # Class 1 (c = -0.969) is easy (below the raw T), class 2 (c = -0.95) is hard.
    c1, c2 = -0.969, -0.95
    kernel = np.array(
        [
            [math.cos(2.9), c1, c2],
            [math.sin(2.9), 0.0, 0.0],
            [0.0, math.sqrt(1 - c1 * c1), -math.sqrt(1 - c2 * c2)],
        ],
        "float32",
    )
    head = built_head(kernel, scale=1.0, margin=0.5, t_alpha=0.5)
    head.t.assign(0.3)
    x, labels = np.array([[1.0, 0.0, 0.0]], "float32"), np.array([0])
    got = to_numpy(head([x, labels]))[0]
    c_y = math.cos(2.9)
    np.testing.assert_allclose(got[0], c_y - 0.5 * math.sin(0.5), atol=1e-5)
    np.testing.assert_allclose(got[1], c1, atol=1e-5)  # easy: unchanged
    np.testing.assert_allclose(got[2], c2 * (0.3 + c2), atol=1e-5)  # hard
    cos = ref_cosines(x, kernel)
    np.testing.assert_allclose(got, ref_logits(cos, labels, 0.3, 1.0, 0.5)[0], atol=1e-5)


def test_bad_rows_and_empty_batch_leave_t_clean(rng):
    kernel = rng.normal(size=(6, 5)).astype("float32")
    head = built_head(kernel, scale=16.0, t_alpha=0.5)
    x = rng.normal(size=(4, 6)).astype("float32")
    labels = np.array([0, 3, 99, 2])  # 99 is not a class id: its row is NaN
    got = to_numpy(head([x, labels], training=True))
    assert np.isnan(got[2]).all() and np.isfinite(np.delete(got, 2, axis=0)).all()
    cos = ref_cosines(x, kernel)
    keep = [0, 1, 3]
    t = ref_t(cos[keep], labels[keep], 0.0, 0.5)  # the mean over the valid rows
    assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-6)
    np.testing.assert_allclose(got[keep], ref_logits(cos[keep], labels[keep], t, 16.0, 0.5), 1e-4)
    # An empty batch leaves t unchanged.
    head([x[:0], labels[:0]], training=True)
    assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-7)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_gradients_match_finite_differences(sub_centers, rng):
    # t is detached: the reference holds t at its value for the unperturbed batch.
    dim, num_classes, margin, scale, t0, t_alpha = 4, 4, 0.5, 4.0, 0.2, 0.5
    kernel = rng.normal(size=(dim, num_classes * sub_centers)).astype("float32")
    labels = np.array([0, 1, 2, 3, 1], "int32")
    x = (rng.normal(size=(5, dim)) + kernel[:, labels * sub_centers].T).astype("float32")
    head = built_head(kernel, scale=scale, margin=margin, t_alpha=t_alpha, sub_centers=sub_centers)
    head.t.assign(t0)
    cos0 = ref_cosines(x, kernel, sub_centers)
    assert mask_margin(cos0, labels, margin) > 1e-3
    t = ref_t(cos0, labels, t0, t_alpha)

    def ref_loss_x(xx):
        cos = ref_cosines(xx, kernel, sub_centers)
        return ref_cross_entropy(ref_logits(cos, labels, t, scale, margin), labels)

    def ref_loss_w(ww):
        cos = ref_cosines(x, ww, sub_centers)
        return ref_cross_entropy(ref_logits(cos, labels, t, scale, margin), labels)

    def loss_fn(xt):
        logits = head([xt, labels], training=True)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)

    _, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel], state=[head])
    assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-6)
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=2e-3, atol=2e-4)


# --------------------------------------------------------------------------- XLA, precision


def test_xla_matches_eager_and_updates_t(rng):
    kernel = rng.normal(size=(8, 6)).astype("float32")
    x = rng.normal(size=(8, 8)).astype("float32")
    labels = (np.arange(8) % 6).astype("int32")
    head = built_head(kernel, t_alpha=0.3)
    step = head_training_step(head)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    t_eager = float(to_numpy(head.t))
    expected_t = ref_t(ref_cosines(x, kernel), labels, 0.0, 0.3)
    assert t_eager == pytest.approx(expected_t, abs=1e-6)
    head.t.assign(0.0)
    xla = compiled(step)(xt, yt)
    assert float(to_numpy(head.t)) == pytest.approx(t_eager, abs=1e-6)
    assert_all_close(xla, eager)


def test_mixed_float16_gives_float32_logits_and_state(rng):
    keras.config.set_dtype_policy("mixed_float16")
    kernel = rng.normal(size=(8, 5)).astype("float32")
    head = built_head(kernel, scale=32.0, t_alpha=0.5)
    x = cast(rng.normal(size=(6, 8)), "float16")
    labels = np.array([0, 1, 2, 3, 4, 0])
    logits = head([x, labels], training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.t.dtype == "float32" and head.kernel.dtype == "float32"
    cos = ref_cosines(to_numpy(cast(x, "float32")), kernel)
    t = ref_t(cos, labels, 0.0, 0.5)
    assert float(to_numpy(head.t)) == pytest.approx(t, abs=1e-5)
    np.testing.assert_allclose(to_numpy(logits), ref_logits(cos, labels, t, 32.0, 0.5), atol=2e-4)


# --------------------------------------------------------------------------- Partial FC


def test_partial_fc_matches_reference_on_sampled_classes(rng):
    num_classes, dim, sub_centers = 20, 8, 2
    x = rng.normal(size=(6, dim)).astype("float32")
    labels = np.array([3, 17, 3, 0, 11, 8], "int32")
    layers = []
    for _ in range(2):  # the same seed draws the same classes: the second one tells which
        head = km.CurricularFace(num_classes, scale=16.0, t_alpha=0.5, sub_centers=sub_centers)
        pfc = km.PartialFC(head, sample_rate=0.4, seed=5)
        pfc.build([(None, dim), (None,)])
        layers.append(pfc)
    rows = rng.normal(size=(num_classes * sub_centers, dim)).astype("float32")
    for pfc in layers:
        pfc.kernel.assign(rows)
    logits = to_numpy(layers[0]([x, labels], training=True))
    classes, remapped = (to_numpy(v) for v in layers[1].sample(labels))
    assert logits.shape == (6, 8)
    cos = ref_cosines(x, rows.T, sub_centers)
    t = ref_t(cos, labels, 0.0, 0.5)  # the batch's target cosines, whatever was sampled
    assert float(to_numpy(layers[0].head.t)) == pytest.approx(t, abs=1e-6)
    expected = ref_logits(cos, labels, t, 16.0, 0.5)[:, classes]
    np.testing.assert_allclose(logits, expected, atol=2e-4)
    np.testing.assert_array_equal(classes[remapped], labels)
    # Evaluation: every class, the stored t.
    full = to_numpy(layers[0]([x, labels], training=False))
    np.testing.assert_allclose(full, ref_logits(cos, labels, t, 16.0, 0.5), atol=2e-4)
    assert float(to_numpy(layers[0].head.t)) == pytest.approx(t, abs=1e-6)
    # to_head carries t.
    assert float(to_numpy(layers[0].to_head().t)) == pytest.approx(t, abs=1e-6)


# --------------------------------------------------------------------------- fit, saving


def _digits_models(head):
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16)]
    )
    return km.build_models(backbone, head)


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA in fit: the layer harness; the update under XLA: test_xla_*
    )


def test_fit_on_digits_saves_t_and_resumes_identically(tmp_path):
    x_train, x_test, y_train, y_test = load_digits_split()
    x_train, y_train = x_train[:384], y_train[:384]
    head = km.CurricularFace(10, scale=16.0, t_alpha=0.1)
    model, _ = _digits_models(head)
    _compile(model)
    losses = model.fit([x_train, y_train], y_train, batch_size=32, epochs=4, verbose=0)
    losses = losses.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    t = float(to_numpy(head.t))
    assert 0.0 < t < 1.0
    model.evaluate([x_test, y_test], y_test, verbose=0)
    model.predict([x_test, y_test], verbose=0)
    assert float(to_numpy(head.t)) == t

    path = str(tmp_path / "curricular.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_head = next(layer for layer in loaded.layers if isinstance(layer, km.CurricularFace))
    assert float(to_numpy(loaded_head.t)) == t
    data = [x_test[:16], y_test[:16]]
    np.testing.assert_allclose(to_numpy(loaded(data)), to_numpy(model(data)), atol=1e-5)
    # Resumed training continues identically (same batches, optimizer state restored).
    for m in (model, loaded):
        m.fit([x_train, y_train], y_train, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert float(to_numpy(loaded_head.t)) == pytest.approx(float(to_numpy(head.t)), abs=1e-6)
    assert float(to_numpy(head.t)) != t
    np.testing.assert_allclose(to_numpy(loaded(data)), to_numpy(model(data)), atol=1e-3)


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    "kwargs,argname",
    [
        ({"t_alpha": -0.1}, "t_alpha"),
        ({"t_alpha": 1.5}, "t_alpha"),
        ({"t_alpha": float("nan")}, "t_alpha"),
        ({"margin": -0.1}, "margin"),
        ({"margin": 4.0}, "margin"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_bad_arguments_name_them(kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        km.CurricularFace(5, **kwargs)


def test_config_round_trip_and_no_label_warning():
    head = km.CurricularFace(7, scale=30.0, margin=0.4, t_alpha=0.99, sub_centers=2)
    clone = assert_config_round_trip(head)
    assert clone.t_alpha == 0.99 and clone.margin == 0.4 and clone.sub_centers == 2
    head.build((None, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head(np.ones((2, 4), "float32"), training=True)
    assert any("without labels" in str(w.message) for w in caught)
    assert float(to_numpy(head.t)) == 0.0
