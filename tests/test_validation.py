"""Bad and edge inputs of the heads, Partial FC and the classification losses (issue 12).

One label rule everywhere (a label that is not a class id gives NaN, never another class's
value; strings are a TypeError), empty batches, float32 bounds of the arguments, embeddings of
any float32 magnitude, the warning for a head trained without labels, the Kaggle-notebook
argument names (issue 16) and the errors that name the argument. References are float64 NumPy
written from the formulas, and central finite differences.
"""

import math
import time
import warnings

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins._validation import normalize_class_labels
from keras_margins.heads.base import feature_norm, l2_normalize
from keras_margins.losses.softmax_mining import (
    FocalSoftmaxLoss,
    HardMiningSoftmaxLoss,
    focal_softmax_loss,
    hard_mining_softmax_loss,
)
from tests.helpers import (
    backend,
    compiled,
    numerical_gradient,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
    with_kernel,
)

C = 5

# Labels that are not class ids of a 5-class problem, with the dtype they come in.
BAD_LABELS = {
    "minus_one": (-1, "int32"),
    "num_classes": (C, "int32"),
    "large": (99, "int32"),
    "int64_wraps_to_3": (2**32 + 3, "int64"),
    "fractional": (1.6, "float32"),
    "half": (2.5, "float32"),
    "nan": (float("nan"), "float32"),
}


def labels_with(bad, batch=4, position=2):
    value, dtype = BAD_LABELS[bad]
    labels = (np.arange(batch) % C).astype(dtype)
    labels[position] = value
    return labels


def skip_int64_on_jax(bad):
    if bad == "int64_wraps_to_3" and backend() == "jax":
        pytest.skip("JAX without x64 turns int64 inputs into int32 before any layer sees them")


def ref_log_softmax(logits):
    z = np.asarray(logits, np.float64)
    top = z.max(axis=1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- the label rule


def test_label_normaliser_rule():
    got = to_numpy(normalize_class_labels(np.array([0, 4, 5, -1, 2**32 + 3], "int64"), C))
    np.testing.assert_array_equal(got, [0, 4, -1, -1, -1])
    floats = np.array([0.0, 3.0, 1.6, 2.5, -0.5, 5.0, np.nan, np.inf], "float32")
    np.testing.assert_array_equal(
        to_numpy(normalize_class_labels(floats, C)), [0, 3, -1, -1, -1, -1, -1, -1]
    )
    # Narrow integer dtypes are compared in a width that holds num_classes (no int8 overflow).
    np.testing.assert_array_equal(
        to_numpy(normalize_class_labels(np.array([100, 127, -3], "int8"), 1000)), [100, 127, -1]
    )
    np.testing.assert_array_equal(
        to_numpy(normalize_class_labels(np.array([4, 5, 255], "uint8"), C)), [4, -1, -1]
    )
    for bad in (np.array(["a", "b"]), np.array([True, False])):
        with pytest.raises(TypeError, match="labels"):
            normalize_class_labels(bad, C)


HEAD_FACTORIES = {
    "arcface": lambda: km.ArcFace(C, scale=16.0),
    "cosface": lambda: km.CosFace(C, scale=16.0),
    "combined": lambda: km.CombinedMargin(C, scale=16.0, m1=1.5, m2=0.2, m3=0.1),
    "sphereface": lambda: km.SphereFace(C, margin=3),
    "svsoftmax": lambda: km.SVSoftmax(C, t=1.3, margin=0.2, margin_type="cosine"),
    "arcface_subcenters": lambda: km.ArcFace(C, scale=16.0, sub_centers=2),
}


def _head_inputs(factory, rng):
    head = factory()
    x = rng.normal(size=(4, 6)).astype("float32")
    kernel = rng.normal(size=(6, C * head.sub_centers)).astype("float32")
    return with_kernel(head, kernel), x


@pytest.mark.parametrize("bad", sorted(BAD_LABELS))
@pytest.mark.parametrize("name", sorted(HEAD_FACTORIES))
def test_heads_give_nan_row_for_any_bad_label(name, bad, rng):
    skip_int64_on_jax(bad)
    head, x = _head_inputs(HEAD_FACTORIES[name], rng)
    labels = labels_with(bad)
    good = (np.arange(4) % C).astype("int32")
    logits = to_numpy(head([x, labels]))
    assert np.all(np.isnan(logits[2])), logits
    # The other rows are exactly what valid labels give (the bad row changes nothing else).
    expected = to_numpy(head([x, good]))
    np.testing.assert_allclose(np.delete(logits, 2, 0), np.delete(expected, 2, 0), rtol=1e-6)


@pytest.mark.parametrize("bad", ["minus_one", "num_classes", "fractional"])
def test_heads_give_nan_row_under_xla(bad, rng):
    head, x = _head_inputs(HEAD_FACTORIES["arcface"], rng)
    labels = labels_with(bad)
    logits = to_numpy(compiled(lambda a, b: head([a, b]))(x, labels))
    assert np.all(np.isnan(logits[2])) and np.all(np.isfinite(np.delete(logits, 2, 0)))


def test_integer_valued_float_labels_are_labels(rng):
    head, x = _head_inputs(HEAD_FACTORIES["cosface"], rng)
    labels = np.array([0, 3, 4, 1], "int32")
    np.testing.assert_allclose(
        to_numpy(head([x, labels.astype("float32")])), to_numpy(head([x, labels])), rtol=1e-6
    )


def test_partial_fc_int64_label_is_not_taken_modulo_2_32(rng):
    skip_int64_on_jax("int64_wraps_to_3")
    pfc = km.PartialFC(km.ArcFace(C, scale=16.0), sample_rate=1.0)
    x = rng.normal(size=(4, 6)).astype("float32")
    out = to_numpy(pfc([x, labels_with("int64_wraps_to_3")], training=True))
    assert np.all(np.isnan(out[2])) and np.isnan(to_numpy(pfc.losses[0]))


@pytest.mark.parametrize("bad", sorted(BAD_LABELS))
def test_mining_losses_give_nan_for_a_bad_label(bad, rng):
    skip_int64_on_jax(bad)
    logits = rng.normal(size=(4, C)).astype("float32")
    labels = labels_with(bad)
    good = np.arange(4) % C
    ref_ce = -ref_log_softmax(logits)[np.arange(4), good]
    focal = to_numpy(focal_softmax_loss(labels, logits, gamma=2.0))
    assert np.isnan(focal[2])
    p = np.exp(-ref_ce)
    ref_focal = -((1 - p) ** 2) * np.log(p)
    np.testing.assert_allclose(np.delete(focal, 2), np.delete(ref_focal, 2), rtol=1e-5)
    # HM-Softmax with every sample kept: the valid samples' cross-entropy, the bad one NaN.
    hm = to_numpy(hard_mining_softmax_loss(labels, logits, keep_ratio=1.0))
    assert np.isnan(hm[2])
    np.testing.assert_allclose(np.delete(hm, 2), np.delete(ref_ce, 2), rtol=1e-5)
    # ... and NaN whether or not the bad sample would be among the kept ones.
    for keep_ratio in (0.25, 0.5):
        assert np.isnan(float(HardMiningSoftmaxLoss(keep_ratio)(labels, logits)))
    assert np.isnan(float(FocalSoftmaxLoss()(labels, logits)))


@pytest.mark.parametrize("bad", ["minus_one", "num_classes", "fractional"])
def test_mining_losses_give_nan_under_xla(bad, rng):
    logits = rng.normal(size=(4, C)).astype("float32")
    labels = labels_with(bad)
    hm = to_numpy(compiled(lambda y, z: hard_mining_softmax_loss(y, z, 0.5))(labels, logits))
    focal = to_numpy(compiled(lambda y, z: focal_softmax_loss(y, z, 2.0))(labels, logits))
    assert np.isnan(hm[2]) and np.isnan(focal[2])
    assert np.all(np.isfinite(np.delete(focal, 2)))


def test_mining_losses_reject_mismatched_batches():
    with pytest.raises(ValueError, match="y_true"):
        focal_softmax_loss(np.zeros(3, "int32"), np.zeros((4, C), "float32"))
    with pytest.raises(TypeError, match="y_true"):
        hard_mining_softmax_loss(np.array(["a", "b"]), np.zeros((2, C), "float32"))


def _center_loss(initial):
    layer = km.CenterLoss(C, alpha=0.5, weight=1.0)
    layer.build([(None, 3), (None,)])
    layer.centers.assign(initial)
    return layer


@pytest.mark.parametrize("bad", sorted(BAD_LABELS))
def test_center_loss_bad_label_gives_nan_and_moves_no_centre(bad, rng):
    skip_int64_on_jax(bad)
    initial = rng.normal(size=(C, 3)).astype("float32")
    layer = _center_loss(initial)
    x = rng.normal(size=(4, 3)).astype("float32")
    labels = labels_with(bad)  # valid labels 0, 1, 3 at positions 0, 1, 3
    layer([x, labels], training=True)
    assert np.isnan(float(to_numpy(layer.losses[0])))
    centres = to_numpy(layer.centers)
    # The paper's rule for the valid samples only (n_j = 1 each): c_j - alpha (c_j - x) / 2.
    expected = initial.astype(np.float64).copy()
    for i in (0, 1, 3):
        j = i % C
        expected[j] = initial[j] - 0.5 * (initial[j] - x[i]) / 2.0
    np.testing.assert_allclose(centres, expected, rtol=1e-5, atol=1e-6)


def test_center_loss_bad_label_under_xla_fit(rng):
    initial = rng.normal(size=(C, 3)).astype("float32")
    inp = keras.Input((3,))
    lab = keras.Input((), dtype="int32")
    layer = km.CenterLoss(C, alpha=0.5, weight=1.0)
    dense = keras.layers.Dense(3)
    model = keras.Model([inp, lab], layer([dense(inp), lab]))
    layer.centers.assign(initial)
    model.compile("sgd", loss=None, jit_compile=backend() != "torch")
    x = rng.normal(size=(2, 3)).astype("float32")
    emb = x.astype(np.float64) @ to_numpy(dense.kernel) + to_numpy(dense.bias)
    labels = np.array([0, C], "int32")  # C would be clamped to C - 1 by an XLA gather
    history = model.fit([x, labels], epochs=1, batch_size=2, verbose=0)
    assert np.isnan(history.history["loss"][-1])
    centres = to_numpy(layer.centers)
    np.testing.assert_array_equal(centres[1:], initial[1:])  # the last centre did not move
    np.testing.assert_allclose(centres[0], initial[0] - 0.25 * (initial[0] - emb[0]), rtol=1e-5)


def test_center_loss_input_errors():
    layer = km.CenterLoss(C)
    with pytest.raises(ValueError, match=r"\[embeddings, labels\]"):
        layer(np.ones((4, 3), "float32"), training=True)
    if backend() == "tensorflow":  # only TensorFlow holds string tensors
        with pytest.raises(TypeError, match="labels"):
            km.CenterLoss(C)([np.ones((2, 3), "float32"), np.array(["a", "b"])], training=True)
    with pytest.raises(ValueError, match="labels"):
        km.CenterLoss(C)([np.ones((2, 3), "float32"), np.zeros(3, "int32")], training=True)


def test_support_vector_mask_rejects_a_bad_label(rng):
    head, x = _head_inputs(HEAD_FACTORIES["svsoftmax"], rng)
    with pytest.raises(ValueError, match="labels"):
        head.support_vector_mask(x, np.array([0, 1, 99, 2]))
    with pytest.raises(ValueError, match="labels"):
        head.support_vector_mask(x, np.array([0, 1, -1, 2]))
    assert to_numpy(head.support_vector_mask(x, np.array([0, 1, 4, 2]))).shape == (4, C)


def test_string_labels_are_a_type_error(rng):
    head, x = _head_inputs(HEAD_FACTORIES["arcface"], rng)
    if backend() != "tensorflow":
        pytest.skip("only TensorFlow holds string tensors; elsewhere Keras refuses them first")
    with pytest.raises(TypeError, match="labels"):
        head([x, np.array(["a", "b", "c", "d"])])


# --------------------------------------------------------------------------- empty batches


@pytest.mark.parametrize("sub_centers", [1, 3])
@pytest.mark.parametrize("sample_rate", [0.4, 1.0])
def test_empty_batch_adds_zero_loss(sub_centers, sample_rate):
    x = np.zeros((0, 6), "float32")
    y = np.zeros((0,), "int32")
    pfc = km.PartialFC(km.ArcFace(10, sub_centers=sub_centers), sample_rate=sample_rate, seed=0)
    out = pfc([x, y], training=True)
    assert tuple(out.shape) == (0, 4 if sample_rate < 1 else 10)
    assert float(to_numpy(pfc.losses[0])) == 0.0
    head = km.ArcFace(10, sub_centers=sub_centers)
    assert tuple(head([x, y]).shape) == (0, 10)
    assert tuple(head(x).shape) == (0, 10)
    center = km.CenterLoss(10, centers_initializer="ones")
    center([x, y], training=True)
    assert float(to_numpy(center.losses[0])) == 0.0
    np.testing.assert_array_equal(to_numpy(center.centers), 1.0)


def test_empty_batch_in_a_compiled_step():
    pfc = km.PartialFC(km.CosFace(10, sub_centers=2), sample_rate=0.5, seed=0)
    pfc.build([(None, 6), (None,)])

    def step(x, y):
        pfc([x, y], training=True)
        return pfc.losses[-1]

    loss = compiled(step)(np.zeros((0, 6), "float32"), np.zeros((0,), "int32"))
    assert float(to_numpy(loss)) == 0.0


# --------------------------------------------------------------------------- float32 bounds


@pytest.mark.parametrize(
    "make,argname",
    [
        (lambda: km.ArcFace(C, scale=1e39), "scale"),
        (lambda: km.CosFace(C, scale=1e38), "scale"),
        (lambda: km.SVSoftmax(C, t=1e39), "t"),
        (lambda: km.SVSoftmax(C, scale=64.0, t=1e35), "t"),
        (lambda: km.L2Softmax(C, alpha=1e39), "alpha"),
        (lambda: km.ScaledL2Normalization(alpha=1e39), "alpha"),
        (lambda: km.CombinedMargin(C, m1=1e39), "m1"),
        (lambda: km.SphereFace(C, margin=1e12), "margin"),
        (lambda: km.SphereFace(C, lambda_base=1e39), "lambda_base"),
        (lambda: km.SphereFace(C, lambda_min=1e39), "lambda_min"),
        (lambda: km.SphereFace(C, lambda_gamma=1e39), "lambda_gamma"),
        (lambda: FocalSoftmaxLoss(gamma=1e39), "gamma"),
        (lambda: km.CenterLoss(C, weight=1e39), "weight"),
    ],
)
def test_values_that_overflow_float32_are_rejected(make, argname):
    with pytest.raises(ValueError, match=rf"`{argname}` must be <= .*float32"):
        make()


def test_largest_accepted_values_stay_finite(rng):
    x = rng.normal(size=(4, 6)).astype("float32")
    kernel = rng.normal(size=(6, C)).astype("float32")
    kernel /= np.linalg.norm(kernel, axis=0)
    labels = np.array([0, 1, 2, 3])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    heads = [
        km.ArcFace(C, scale=5e36),
        km.SVSoftmax(C, scale=32.0, t=8e34),
        km.CombinedMargin(C, scale=16.0, m1=8e37),
    ]
    for head in heads:
        logits = to_numpy(with_kernel(head, kernel)([x, labels]))
        assert np.all(np.isfinite(logits)), type(head).__name__
        assert np.isfinite(float(loss_fn(labels, logits)))


# --------------------------------------------------------------------------- embedding magnitude

SCALES = [1e-30, 1e-8, 1.0, 1e20, 1e30]


@pytest.mark.parametrize("scale", SCALES)
def test_l2_normalize_is_scale_invariant(scale, rng):
    x = rng.normal(size=(3, 7))
    got = to_numpy(l2_normalize((x * scale).astype("float32")))
    np.testing.assert_allclose(
        got, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5, atol=1e-7
    )
    norms = to_numpy(feature_norm((x * scale).astype("float32")))[:, 0]
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1) * scale, rtol=1e-5)


def test_l2_normalize_zero_nan_and_inf():
    x = np.array([[0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0], [1e38, 3e38]], "float32")
    got = to_numpy(l2_normalize(x))
    np.testing.assert_array_equal(got[0], 0.0)
    assert np.all(np.isnan(got[1])) and np.all(np.isnan(got[2]))
    np.testing.assert_allclose(got[3], np.array([1.0, 3.0]) / math.sqrt(10.0), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(feature_norm(x[:1]))[0, 0], 1e-6, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e20])
def test_l2_normalize_gradient_matches_finite_differences(scale, rng):
    x = rng.normal(size=(2, 4))
    weights = rng.normal(size=(2, 4))

    def ref(xx):  # in units of the unscaled input, float64
        v = xx * scale
        return float(np.sum(weights * v / np.linalg.norm(v, axis=1, keepdims=True)))

    def fn(xt):
        return keras.ops.sum(keras.ops.convert_to_tensor(weights, "float32") * l2_normalize(xt))

    _, (g,) = value_and_grads(fn, (x * scale).astype("float32"))
    np.testing.assert_allclose(g * scale, numerical_gradient(ref, x), rtol=1e-3, atol=1e-5)


def ref_head_logits(x, kernel, labels, scale, target):
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = np.clip(xn @ (w / np.linalg.norm(w, axis=0)), -1, 1)
    s = np.linalg.norm(x, axis=1, keepdims=True) if scale is None else scale
    out = cos.copy()
    for i, y in enumerate(labels):
        out[i, y] = target(cos[i, y])
    return s * out


def ref_arcface_target(c, m=0.5):
    if c > math.cos(math.pi - m):
        return math.cos(math.acos(c) + m)
    return c - m * math.sin(m)


def ref_sphereface_target(c, m, lam):
    theta = math.acos(c)
    k = min(math.floor(m * theta / math.pi), math.ceil(m) - 1)
    psi = (-1) ** k * math.cos(m * theta) - 2 * k
    return (lam * c + psi) / (1 + lam)


@pytest.mark.parametrize("scale", SCALES)
def test_heads_at_any_embedding_magnitude(scale, rng):
    x = rng.normal(size=(4, 6))
    kernel = rng.normal(size=(6, C)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    xs = (x * scale).astype("float32")
    arc = with_kernel(km.ArcFace(C, scale=16.0), kernel)
    np.testing.assert_allclose(
        to_numpy(arc([xs, labels])),
        ref_head_logits(x, kernel, labels, 16.0, ref_arcface_target),
        rtol=1e-4,
        atol=1e-3,
    )
    sphere = with_kernel(km.SphereFace(C, margin=2, lambda_base=1.0, lambda_min=1.0), kernel)
    got = to_numpy(sphere([xs, labels]))
    expected = ref_head_logits(
        x * scale, kernel, labels, None, lambda c: ref_sphereface_target(c, 2, 1.0)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    l2 = km.L2Softmax(C, alpha=8.0, use_bias=False)
    l2.build((None, 6))
    l2.kernel.assign(kernel)
    np.testing.assert_allclose(
        to_numpy(l2(xs)),
        8.0 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ kernel.astype(np.float64),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_head_gradient_at_extreme_magnitudes_matches_finite_differences(scale, rng):
    x = rng.normal(size=(3, 4))
    kernel = rng.normal(size=(4, C)).astype("float32")
    labels = np.array([0, 2, 4])
    head = with_kernel(km.ArcFace(C, scale=8.0), kernel)

    def ref(xx):
        return ref_cross_entropy(
            ref_head_logits(xx, kernel, labels, 8.0, ref_arcface_target), labels
        )

    def fn(xt):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            labels, head([xt, labels])
        )

    _, (g,) = value_and_grads(fn, (x * scale).astype("float32"))
    np.testing.assert_allclose(g * scale, numerical_gradient(ref, x), rtol=2e-3, atol=2e-4)


# --------------------------------------------------------------------------- SphereFace margin


@pytest.mark.parametrize("margin", [17, 20.5])
def test_sphereface_large_margin_matches_reference(margin, rng):
    x = rng.normal(size=(16, 6))
    kernel = rng.normal(size=(6, C)).astype("float32")
    labels = np.arange(16) % C
    head = with_kernel(
        km.SphereFace(C, margin=margin, scale=4.0, lambda_base=0.5, lambda_min=0.5), kernel
    )
    got = to_numpy(head([x.astype("float32"), labels]))
    expected = ref_head_logits(
        x, kernel, labels, 4.0, lambda c: ref_sphereface_target(c, margin, 0.5)
    )
    # cos(m * theta) with theta from a float32 cosine: an error of about m * 1e-6 rad.
    np.testing.assert_allclose(got, expected, atol=4.0 * margin * 2e-5)


def test_sphereface_huge_margin_returns_quickly(rng):
    start = time.perf_counter()
    head = km.SphereFace(C, margin=1e6)
    logits = to_numpy(head([rng.normal(size=(4, 6)).astype("float32"), np.arange(4)]))
    assert time.perf_counter() - start < 10.0
    assert np.all(np.isfinite(logits))


# --------------------------------------------------------------------------- warnings and errors


def _fit_functional(head, with_labels):
    emb = keras.Input((6,))
    lab = keras.Input((), dtype="int32")
    inputs = [emb, lab] if with_labels else emb
    model = keras.Model(inputs, head([emb, lab] if with_labels else emb))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    y = np.arange(8) % C
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit([x, y] if with_labels else x, y, epochs=2, batch_size=4, verbose=0)
        model.predict([x, y] if with_labels else x, verbose=0)
    return [w for w in caught if "without labels" in str(w.message)]


def test_head_trained_without_labels_warns_once():
    found = _fit_functional(km.ArcFace(C, name="arc"), with_labels=False)
    assert len(found) == 1 and issubclass(found[0].category, UserWarning)
    assert "arc" in str(found[0].message) and "no margin" in str(found[0].message)
    assert _fit_functional(km.ArcFace(C), with_labels=True) == []
    assert _fit_functional(km.NormSoftmax(C), with_labels=False) == []  # no margin to lose


def test_embedding_dimension_differs_from_the_built_one():
    x8 = np.ones((2, 8), "float32")
    x6 = np.ones((2, 6), "float32")
    for layer in (km.ArcFace(C), km.L2Softmax(C), km.PartialFC(km.CosFace(C), sample_rate=1.0)):
        layer(x8)
        with pytest.raises(ValueError, match=r"embedding_dim 8.*\(2, 6\)"):
            layer(x6)


HEAD_CLASSES = [
    km.ArcFace,
    km.ArcMarginLayer,
    km.CosFace,
    km.NormSoftmax,
    km.CombinedMargin,
    km.SphereFace,
    km.SVSoftmax,
    km.L2Softmax,
]


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_notebook_argument_names_point_to_ours(cls):
    with pytest.raises(TypeError, match=r"`n_classes`.*`num_classes`.*n_classes=10"):
        cls(n_classes=10)
    scale_name = "alpha" if cls is km.L2Softmax else "scale"
    with pytest.raises(TypeError, match=rf"`s`.*`{scale_name}`.*s=30"):
        cls(10, s=30)
    margin_text = {
        km.CombinedMargin: "`m2`",
        km.NormSoftmax: "no margin",
        km.L2Softmax: "no margin",
    }.get(cls, "`margin`")
    with pytest.raises(TypeError, match=rf"`m`.*{margin_text}.*m=0.5"):
        cls(10, m=0.5)
    with pytest.raises(TypeError, match=r"`ls_eps`.*label_smoothing"):
        cls(10, ls_eps=0.1)
    if cls not in (km.ArcFace, km.ArcMarginLayer):
        with pytest.raises(TypeError, match=r"`easy_margin`.*ArcFace"):
            cls(10, easy_margin=True)
    else:
        assert cls(10, easy_margin=True).easy_margin is True
