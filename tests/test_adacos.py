"""AdaCos against float64 NumPy references written from the formula sheet.

PAPERS.md section 5 (the paper; the dynamic update as in the unofficial port
4uiiurz1/pytorch-adacos): fixed ``s_f = sqrt(2) log(C - 1)``; dynamic, per training batch and
before scaling it, ``B_avg = mean_i sum_{k != y_i} exp(s_prev c_ik)``, ``theta_med`` = the lower
middle target angle (``torch.median``), ``s = log(B_avg) / cos(min(pi/4, theta_med))``; the
logits are ``s c`` (no margin). The references below share no code with keras_margins.
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


def ref_fixed_scale(num_classes):
    return math.log(num_classes - 1) / math.cos(math.pi / 4)


def lower_middle(values):
    """torch.median: the lower of the two middle values for an even count."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def ref_dynamic_scale(cos, labels, s_prev):
    """One dynamic update, by loops (float64 holds exp(s c) for the scales tested)."""
    total = 0.0
    for i, y in enumerate(labels):
        total += sum(math.exp(s_prev * cos[i, k]) for k in range(cos.shape[1]) if k != y)
    b_avg = total / len(labels)
    eps = 1e-7
    theta = [math.acos(min(1 - eps, max(-1 + eps, cos[i, y]))) for i, y in enumerate(labels)]
    return math.log(b_avg) / math.cos(min(math.pi / 4, lower_middle(theta)))


def built_head(kernel, num_classes, **kwargs):
    head = km.AdaCos(num_classes, **kwargs)
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


def near_centres(rng, kernel, labels, sub_centers=1, pull=3.0):
    """Embeddings close to their class centre: target angles mostly below pi/4."""
    centres = kernel[:, labels * sub_centers].T
    centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return (pull * centres + rng.normal(size=centres.shape)).astype("float32")


# --------------------------------------------------------------------------- fixed scale


@pytest.mark.parametrize("num_classes", [3, 10, 1000])
def test_fixed_scale_is_sqrt2_log_c_minus_1(num_classes, rng):
    kernel = rng.normal(size=(8, num_classes)).astype("float32")
    head = built_head(kernel, num_classes)
    s_f = ref_fixed_scale(num_classes)
    assert head.current_scale() == pytest.approx(s_f, rel=1e-12) and head.s is None
    x = rng.normal(size=(6, 8)).astype("float32")
    labels = rng.integers(0, num_classes, size=6)
    expected = s_f * ref_cosines(x, kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no margin: no warning without labels
        for training in (True, False, None):
            np.testing.assert_allclose(
                to_numpy(head([x, labels], training=training)), expected, atol=1e-4
            )
            np.testing.assert_allclose(to_numpy(head(x, training=training)), expected, atol=1e-4)


def test_num_classes_below_3_and_scale_are_rejected():
    for bad in (1, 2):
        with pytest.raises(ValueError, match=r"`num_classes` must be >= 3.*log"):
            km.AdaCos(bad)
    with pytest.raises(ValueError, match="`num_classes`"):
        km.AdaCos(0)
    with pytest.raises(ValueError, match="`scale`"):
        km.AdaCos(10, scale=30.0)
    with pytest.raises(ValueError, match="`dynamic`"):
        km.AdaCos(10, dynamic="yes")


# --------------------------------------------------------------------------- dynamic scale


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_dynamic_matches_reference_over_steps(sub_centers, rng):
    num_classes, dim, batch = 6, 8, 8  # an even batch: the lower middle angle is taken
    kernel = rng.normal(size=(dim, num_classes * sub_centers)).astype("float32")
    head = built_head(kernel, num_classes, dynamic=True, sub_centers=sub_centers)
    s = ref_fixed_scale(num_classes)
    assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-6)
    medians_mattered = 0
    for _ in range(5):
        labels = rng.integers(0, num_classes, size=batch)
        x = near_centres(rng, kernel, labels, sub_centers)
        cos = ref_cosines(x, kernel, sub_centers)
        theta = np.arccos(cos[np.arange(batch), labels])
        if lower_middle(theta) < math.pi / 4 - 1e-2:
            # np.median (the mean of the two middle angles) would give another scale.
            medians_mattered += abs(lower_middle(theta) - np.median(theta)) > 1e-3
        s = ref_dynamic_scale(cos, labels, s)  # computed before the batch is scaled
        got = to_numpy(head([x, labels], training=True))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, s * cos, rtol=1e-5, atol=1e-5 * s)
        assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-5)
        # Inference: the stored scale, unchanged, with or without labels.
        for training in (False, None):
            got = to_numpy(head([x, labels], training=training))
            np.testing.assert_allclose(got, s * cos, rtol=1e-5, atol=1e-5 * s)
            np.testing.assert_allclose(to_numpy(head(x, training=training)), s * cos, atol=1e-4)
        assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-5)
    assert medians_mattered >= 2


def test_large_scale_does_not_overflow(rng):
    # exp(300 * c) overflows float32 for c > 0.3; the update works in log space.
    kernel = rng.normal(size=(8, 5)).astype("float32")
    head = built_head(kernel, 5, dynamic=True)
    head.s.assign(300.0)
    labels = np.array([0, 1, 2, 3, 4, 0])
    x = (rng.normal(size=(6, 8)) + kernel[:, [1, 2, 3, 4, 0, 1]].T).astype("float32")
    cos = ref_cosines(x, kernel)
    assert (300.0 * cos.max()) > 89.0  # beyond float32's exp range
    s = ref_dynamic_scale(cos, labels, 300.0)
    got = to_numpy(head([x, labels], training=True))
    assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-5)
    np.testing.assert_allclose(got, s * cos, rtol=1e-4, atol=1e-4 * abs(s))


def test_bad_rows_and_empty_batch_leave_the_scale_clean(rng):
    kernel = rng.normal(size=(8, 5)).astype("float32")
    head = built_head(kernel, 5, dynamic=True)
    labels = np.array([0, 3, -1, 2, 4])  # -1 is not a class id: its row is NaN
    x = near_centres(rng, kernel, np.array([0, 3, 1, 2, 4]))
    got = to_numpy(head([x, labels], training=True))
    assert np.isnan(got[2]).all() and np.isfinite(np.delete(got, 2, axis=0)).all()
    keep = [0, 1, 3, 4]
    cos = ref_cosines(x, kernel)
    s = ref_dynamic_scale(cos[keep], labels[keep], ref_fixed_scale(5))
    assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-5)
    np.testing.assert_allclose(got[keep], s * cos[keep], rtol=1e-5, atol=1e-5)
    head([x[:0], labels[:0]], training=True)  # an empty batch keeps the scale
    assert float(to_numpy(head.s)) == pytest.approx(s, rel=1e-6)


def test_dynamic_without_labels_warns_and_keeps_the_scale(rng):
    kernel = rng.normal(size=(4, 5)).astype("float32")
    head = built_head(kernel, 5, dynamic=True)
    with pytest.warns(UserWarning, match="without labels"):
        head(rng.normal(size=(3, 4)).astype("float32"), training=True)
    assert float(to_numpy(head.s)) == pytest.approx(ref_fixed_scale(5), rel=1e-6)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("dynamic", [False, True])
def test_gradients_match_finite_differences(dynamic, rng):
    # The dynamic scale has no gradient: the reference holds it at its value for this batch.
    num_classes, dim = 5, 4
    kernel = rng.normal(size=(dim, num_classes)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 1])
    x = near_centres(rng, kernel, labels, pull=1.5)
    head = built_head(kernel, num_classes, dynamic=dynamic)
    s_f = ref_fixed_scale(num_classes)
    s = ref_dynamic_scale(ref_cosines(x, kernel), labels, s_f) if dynamic else s_f

    def ref_loss_x(xx):
        return ref_cross_entropy(s * ref_cosines(xx, kernel), labels)

    def ref_loss_w(ww):
        return ref_cross_entropy(s * ref_cosines(x, ww), labels)

    def loss_fn(xt):
        logits = head([xt, labels], training=True)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)

    _, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel], state=[head])
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=2e-3, atol=2e-4)
    assert head.current_scale() == pytest.approx(s, rel=1e-5)


# --------------------------------------------------------------------------- XLA, precision


def test_xla_matches_eager_and_updates_the_scale(rng):
    kernel = rng.normal(size=(8, 6)).astype("float32")
    labels = (np.arange(8) % 6).astype("int32")
    x = near_centres(rng, kernel, labels)
    head = built_head(kernel, 6, dynamic=True)
    step = head_training_step(head)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    s = ref_dynamic_scale(ref_cosines(x, kernel), labels, ref_fixed_scale(6))
    assert head.current_scale() == pytest.approx(s, rel=1e-5)
    head.s.assign(ref_fixed_scale(6))
    xla = compiled(step)(xt, yt)
    assert head.current_scale() == pytest.approx(s, rel=1e-5)
    assert_all_close(xla, eager)


def test_mixed_float16_gives_float32_logits_and_state(rng):
    keras.config.set_dtype_policy("mixed_float16")
    kernel = rng.normal(size=(8, 5)).astype("float32")
    head = built_head(kernel, 5, dynamic=True)
    labels = np.array([0, 1, 2, 3, 4, 0])
    x = cast(near_centres(rng, kernel, labels), "float16")
    logits = head([x, labels], training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.s.dtype == "float32" and head.kernel.dtype == "float32"
    cos = ref_cosines(to_numpy(cast(x, "float32")), kernel)
    s = ref_dynamic_scale(cos, labels, ref_fixed_scale(5))
    assert head.current_scale() == pytest.approx(s, rel=1e-4)
    np.testing.assert_allclose(to_numpy(logits), s * cos, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- Partial FC


@pytest.mark.parametrize("dynamic", [False, True])
def test_partial_fc_matches_reference_on_sampled_classes(dynamic, rng):
    num_classes, dim = 20, 8
    labels = np.array([3, 17, 3, 0, 11, 8], "int32")
    layers = []
    for _ in range(2):  # the same seed draws the same classes: the second one tells which
        pfc = km.PartialFC(km.AdaCos(num_classes, dynamic=dynamic), sample_rate=0.4, seed=5)
        pfc.build([(None, dim), (None,)])
        layers.append(pfc)
    rows = rng.normal(size=(num_classes, dim)).astype("float32")
    for pfc in layers:
        pfc.kernel.assign(rows)
    x = near_centres(rng, rows.T, labels)
    logits = to_numpy(layers[0]([x, labels], training=True))
    classes, remapped = (to_numpy(v) for v in layers[1].sample(labels))
    assert logits.shape == (6, 8)
    cos = ref_cosines(x, rows.T)
    s = ref_fixed_scale(num_classes)  # from the total C, not the 8 sampled classes
    if dynamic:  # B_avg over the sampled classes, the softmax trained in this step
        s = ref_dynamic_scale(cos[:, classes], remapped, s)
    np.testing.assert_allclose(logits, s * cos[:, classes], rtol=1e-5, atol=1e-5)
    assert layers[0].head.current_scale() == pytest.approx(s, rel=1e-5)
    full = to_numpy(layers[0]([x, labels], training=False))
    np.testing.assert_allclose(full, s * cos, rtol=1e-5, atol=1e-5)
    assert layers[0].to_head().current_scale() == pytest.approx(s, rel=1e-5)


# --------------------------------------------------------------------------- fit, saving


def test_fit_on_digits_saves_the_scale_and_resumes_identically(tmp_path):
    x_train, x_test, y_train, y_test = load_digits_split()
    x_train, y_train = x_train[:384], y_train[:384]
    head = km.AdaCos(10, dynamic=True)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(16)]
    )
    model, _ = km.build_models(backbone, head)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA in fit: the layer harness; the update under XLA: test_xla_*
    )
    history = model.fit([x_train, y_train], y_train, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    s = head.current_scale()
    assert s != pytest.approx(ref_fixed_scale(10)) and np.isfinite(s)
    model.evaluate([x_test, y_test], y_test, verbose=0)
    model.predict([x_test, y_test], verbose=0)
    assert head.current_scale() == s

    path = str(tmp_path / "adacos.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_head = next(layer for layer in loaded.layers if isinstance(layer, km.AdaCos))
    assert loaded_head.current_scale() == s and loaded_head.dynamic
    data = [x_test[:16], y_test[:16]]
    np.testing.assert_allclose(to_numpy(loaded(data)), to_numpy(model(data)), atol=1e-5)
    for m in (model, loaded):
        m.fit([x_train, y_train], y_train, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert loaded_head.current_scale() == pytest.approx(head.current_scale(), rel=1e-5)
    assert head.current_scale() != s
    np.testing.assert_allclose(to_numpy(loaded(data)), to_numpy(model(data)), atol=1e-3)


# --------------------------------------------------------------------------- API


def test_config_has_no_scale_and_round_trips():
    head = km.AdaCos(12, dynamic=True, sub_centers=2)
    config = head.get_config()
    assert "scale" not in config and config["dynamic"] is True
    clone = assert_config_round_trip(head)
    assert clone.dynamic and clone.sub_centers == 2
    assert clone.current_scale() == pytest.approx(ref_fixed_scale(12))
    # A config that carries the computed scale is accepted; a different one is not.
    assert km.AdaCos.from_config({**config, "scale": ref_fixed_scale(12)}).dynamic
    with pytest.raises(ValueError, match="`scale`"):
        km.AdaCos.from_config({**config, "scale": 30.0})
