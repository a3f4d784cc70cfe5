"""The margin heads against float64 references: logits, gradients, edges, labels, saving, XLA.

The formulas of ArcFace and CombinedMargin on their own are in test_arcface.py and
test_combined_margin.py; the hooks of the base in test_head_base.py.

The references below are written from the papers' formulas (PAPERS.md), with plain loops over
the samples, and share no code with keras_margins.
"""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
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
    with_kernel,
    xla_in_fit,
)

# --------------------------------------------------------------------------- float64 references


def ref_cosines(x, kernel, num_classes, sub_centers):
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    b = x.shape[0]
    cos = np.zeros((b, num_classes))
    for i in range(b):
        for c in range(num_classes):
            best = -np.inf
            for k in range(sub_centers):
                col = w[:, c * sub_centers + k]
                best = max(best, x[i] @ col / (np.linalg.norm(x[i]) * np.linalg.norm(col)))
            cos[i, c] = min(1.0, max(-1.0, best))
    return cos


def ref_target_normsoftmax(c):
    return c


def ref_target_cosface(c, m):
    return c - m


def ref_target_arcface(c, m, easy_margin=False):
    theta = math.acos(c)
    if easy_margin:
        return math.cos(theta + m) if c > 0 else c
    # Past theta + m = pi, the rule of the issue: cos(theta) - m * sin(m).
    if c > math.cos(math.pi - m):
        return math.cos(theta + m)
    return c - m * math.sin(m)


def ref_target_combined(c, m1, m2, m3):
    theta = math.acos(c)
    if m1 * theta + m2 <= math.pi:
        return math.cos(m1 * theta + m2) - m3
    # Past pi: the documented continuation, which must start at or below the main branch's
    # value there (-1 - m3) and then decrease.
    theta_t = (math.pi - m2) / m1
    offset = max(m2 * math.sin(m2), 1 + math.cos(theta_t))
    return c - m3 - offset


def ref_logits(x, kernel, labels, num_classes, scale, target_fn, sub_centers=1):
    cos = ref_cosines(x, kernel, num_classes, sub_centers)
    out = scale * cos.copy()
    for i, y in enumerate(labels):
        out[i, y] = scale * target_fn(cos[i, y])
    return out


# --------------------------------------------------------------------------- the heads under test

HEADS = {
    "normsoftmax": (
        lambda c, **kw: km.NormSoftmax(c, scale=16.0, **kw),
        lambda c: ref_target_normsoftmax(c),
        16.0,
    ),
    "cosface": (
        lambda c, **kw: km.CosFace(c, scale=30.0, margin=0.35, **kw),
        lambda c: ref_target_cosface(c, 0.35),
        30.0,
    ),
    "arcface": (
        lambda c, **kw: km.ArcFace(c, scale=32.0, margin=0.5, **kw),
        lambda c: ref_target_arcface(c, 0.5),
        32.0,
    ),
    "arcface_easy": (
        lambda c, **kw: km.ArcFace(c, scale=32.0, margin=0.5, easy_margin=True, **kw),
        lambda c: ref_target_arcface(c, 0.5, easy_margin=True),
        32.0,
    ),
    "arcface_big_margin": (
        lambda c, **kw: km.ArcFace(c, scale=10.0, margin=1.2, **kw),
        lambda c: ref_target_arcface(c, 1.2),
        10.0,
    ),
    "combined": (
        lambda c, **kw: km.CombinedMargin(c, scale=20.0, m1=1.2, m2=0.3, m3=0.2, **kw),
        lambda c: ref_target_combined(c, 1.2, 0.3, 0.2),
        20.0,
    ),
}


def make_inputs(rng, batch=6, dim=5, num_classes=7, sub_centers=1):
    x = rng.normal(size=(batch, dim)).astype("float32")
    kernel = rng.normal(size=(dim, num_classes * sub_centers)).astype("float32")
    labels = rng.integers(0, num_classes, size=batch).astype("int32")
    return x, kernel, labels


def built_head(factory, kernel, num_classes, **kwargs):
    return with_kernel(factory(num_classes, **kwargs), kernel)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("sub_centers", [1, 3])
def test_logits_and_loss_match_reference(name, sub_centers, rng):
    factory, target_fn, scale = HEADS[name]
    num_classes = 7
    x, kernel, labels = make_inputs(rng, batch=32, num_classes=num_classes, sub_centers=sub_centers)
    head = built_head(factory, kernel, num_classes, sub_centers=sub_centers)

    got = keras.ops.convert_to_numpy(head([x, labels]))
    expected = ref_logits(x, kernel, labels, num_classes, scale, target_fn, sub_centers)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 * scale)

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, got)
    np.testing.assert_allclose(
        float(loss), ref_cross_entropy(expected, labels), rtol=1e-4, atol=1e-5
    )

    # Without labels: scale * cos, no margin.
    plain = keras.ops.convert_to_numpy(head(x))
    np.testing.assert_allclose(
        plain,
        scale * ref_cosines(x, kernel, num_classes, sub_centers),
        rtol=1e-5,
        atol=1e-4 * scale,
    )


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradients_match_finite_differences(name, rng):
    factory, target_fn, scale = HEADS[name]
    num_classes = 4
    x, kernel, labels = make_inputs(rng, batch=5, dim=3, num_classes=num_classes, sub_centers=2)
    head = built_head(factory, kernel, num_classes, sub_centers=2)

    def ref_loss_x(xx):
        return ref_cross_entropy(
            ref_logits(xx, kernel, labels, num_classes, scale, target_fn, 2), labels
        )

    def ref_loss_w(ww):
        return ref_cross_entropy(
            ref_logits(x, ww, labels, num_classes, scale, target_fn, 2), labels
        )

    def loss_fn(xt):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            labels, head([xt, labels])
        )

    _, (gx, gw) = value_and_grads(loss_fn, x, variables=[head.kernel])
    np.testing.assert_allclose(gx, numerical_gradient(ref_loss_x, x), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(gw, numerical_gradient(ref_loss_w, kernel), rtol=2e-3, atol=2e-4)


def _edge_inputs():
    # Sample 0 equals its class centre (cos = 1), sample 1 is exactly opposite (cos = -1),
    # sample 2 is orthogonal (cos = 0), sample 3 lies past theta + m > pi for m = 0.5.
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
    return x, kernel, labels


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_edges_are_finite_in_values_and_gradients(name, policy):
    keras.config.set_dtype_policy(policy)
    factory, target_fn, scale = HEADS[name]
    x, kernel, labels = _edge_inputs()
    head = built_head(factory, kernel, 3)

    def loss_fn(xt):
        logits = head([xt, labels])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        return loss, logits

    loss, (gx, gw), logits = value_and_grads(loss_fn, x, variables=[head.kernel], has_aux=True)
    assert logits.dtype == np.float32
    for t in (logits, loss, gx, gw):
        assert np.all(np.isfinite(t)), f"non-finite values under {policy}"
    # The edge values still follow the formula, to float32 precision.
    expected = ref_logits(x, kernel, labels, 3, scale, target_fn)
    np.testing.assert_allclose(logits, expected, atol=scale * 2e-6, rtol=1e-6)


# --------------------------------------------------------------------------- labels


def test_label_forms_give_the_same_logits(rng):
    x, kernel, labels = make_inputs(rng, batch=8)
    head = built_head(HEADS["arcface"][0], kernel, 7)
    expected = keras.ops.convert_to_numpy(head([x, labels]))
    forms = [
        labels.astype("int64"),
        labels.astype("int8"),
        labels.astype("uint8"),
        labels.reshape(-1, 1),
        labels.astype("float32"),
        np.eye(7, dtype="float32")[labels],
    ]
    for form in forms:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(head([x, form])), expected, atol=1e-5)


@pytest.mark.parametrize("bad_label", [7, 100, -1])
def test_out_of_range_label_gives_nan_not_a_plausible_loss(bad_label, rng):
    x, kernel, labels = make_inputs(rng, batch=4)
    labels[2] = bad_label
    head = built_head(HEADS["cosface"][0], kernel, 7)
    logits = keras.ops.convert_to_numpy(head([x, labels]))
    assert np.all(np.isnan(logits[2]))
    assert np.all(np.isfinite(np.delete(logits, 2, axis=0)))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        np.where(labels < 0, 0, np.minimum(labels, 6)), logits
    )
    assert np.isnan(float(loss))


def test_labels_of_wrong_shape_are_rejected(rng):
    x, kernel, labels = make_inputs(rng, batch=4)
    head = built_head(HEADS["arcface"][0], kernel, 7)
    with pytest.raises(ValueError, match="labels"):
        head([x, labels[:3]])
    with pytest.raises(ValueError, match="labels"):
        head([x, np.zeros((4, 3), "int32")])
    with pytest.raises(ValueError, match="labels"):
        head([x, np.zeros((4, 1, 1), "int32")])


def test_embeddings_must_be_rank_2():
    head = km.ArcFace(3)
    with pytest.raises(ValueError, match="embeddings"):
        head(np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError, match="embeddings"):
        head(np.zeros((4,), "float32"))


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "cls,kwargs,argname",
    [
        (km.ArcFace, {"num_classes": 0}, "num_classes"),
        (km.ArcFace, {"num_classes": 2.5}, "num_classes"),
        (km.ArcFace, {"num_classes": 3, "scale": 0.0}, "scale"),
        (km.ArcFace, {"num_classes": 3, "scale": -1.0}, "scale"),
        (km.ArcFace, {"num_classes": 3, "scale": float("inf")}, "scale"),
        (km.ArcFace, {"num_classes": 3, "scale": None}, "scale"),
        (km.ArcFace, {"num_classes": 3, "margin": -0.1}, "margin"),
        (km.ArcFace, {"num_classes": 3, "margin": math.pi}, "margin"),
        (km.ArcFace, {"num_classes": 3, "margin": float("nan")}, "margin"),
        (km.ArcFace, {"num_classes": 3, "sub_centers": 0}, "sub_centers"),
        (km.ArcFace, {"num_classes": 3, "easy_margin": "yes"}, "easy_margin"),
        (km.CosFace, {"num_classes": 3, "margin": -0.2}, "margin"),
        (km.CosFace, {"num_classes": 3, "margin": 2.0}, "margin"),
        (km.CosFace, {"num_classes": 3, "margin": float("nan")}, "margin"),
        (km.NormSoftmax, {"num_classes": -3}, "num_classes"),
        (km.NormSoftmax, {"num_classes": 3, "scale": float("nan")}, "scale"),
        (km.CombinedMargin, {"num_classes": 3, "m1": 0.5}, "m1"),
        (km.CombinedMargin, {"num_classes": 3, "m2": 4.0}, "m2"),
        (km.CombinedMargin, {"num_classes": 3, "m3": -0.1}, "m3"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(cls, kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`.*Received: {argname}="):
        cls(**kwargs)


# --------------------------------------------------------------------------- Keras integration


@pytest.mark.parametrize("name", sorted(HEADS))
def test_config_and_keras_round_trip(name, rng, tmp_path):
    factory, _, _ = HEADS[name]
    head = factory(7, sub_centers=2)
    assert_config_round_trip(head)
    model = head_model(head, 5)
    x, _, labels = make_inputs(rng)
    loaded = assert_keras_round_trip(model, [x, labels], tmp_path)
    assert type(loaded.layers[-1]) is type(head)
    # Inference form too.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.layers[-1](x)), keras.ops.convert_to_numpy(head(x))
    )


@pytest.mark.parametrize("name", sorted(HEADS))
def test_xla_matches_eager_in_values_and_gradients(name, rng):
    factory, _, _ = HEADS[name]
    x, kernel, labels = make_inputs(rng, batch=16, sub_centers=3)
    head = built_head(factory, kernel, 7, sub_centers=3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(xx, yy):
        loss, grads = grad_fn(lambda xv: loss_fn(yy, head([xv, yy])), [head.kernel])(xx)
        return (loss, *grads)

    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(labels)
    eager = step(xt, yt)
    xla = compiled(step)(xt, yt)
    for a, b in zip(eager, xla):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_in_float32(policy, rng):
    keras.config.set_dtype_policy(policy)
    x, kernel, labels = make_inputs(rng, batch=16)
    head = built_head(HEADS["arcface"][0], kernel, 7)
    half = np.float16 if policy == "mixed_float16" else None
    xh = cast(x, "float16" if half else "bfloat16")
    logits = head([xh, labels])
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert head.kernel.dtype == "float32"
    # The only rounding is the input's: the result equals the float64 reference on the rounded
    # embeddings to float32 precision (a float16 computation would be off by ~1e-2 * scale).
    x_rounded = to_numpy(cast(xh, "float32")).astype(np.float64)
    expected = ref_logits(x_rounded, kernel, labels, 7, 32.0, HEADS["arcface"][1])
    np.testing.assert_allclose(to_numpy(logits), expected, atol=32.0 * 2e-6, rtol=1e-5)


# --------------------------------------------------------------------------- real training


def digits_backbone():
    return keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)],
        name="digits_mlp",
    )


TRAINING_HEADS = {
    "normsoftmax": lambda: km.NormSoftmax(10),
    "cosface": lambda: km.CosFace(10),
    "arcface": lambda: km.ArcFace(10),
    "arcmarginlayer_subcenters": lambda: km.ArcMarginLayer(10, scale=30.0, sub_centers=3),
    "combined": lambda: km.CombinedMargin(10, m1=1.0, m2=0.3, m3=0.2),
}


@pytest.mark.parametrize("name", sorted(TRAINING_HEADS))
def test_training_on_digits_learns(name):
    x_train, x_test, y_train, y_test = load_digits_split()
    head = TRAINING_HEADS[name]()
    train_model, embed_model = km.build_models(digits_backbone(), head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    history = train_model.fit([x_train, y_train], y_train, epochs=8, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses

    # Closed-set prediction on held-out samples: the head without labels (scale * cos).
    emb = embed_model.predict(x_test, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    predictions = np.argmax(keras.ops.convert_to_numpy(head(emb)), axis=1)
    accuracy = np.mean(predictions == y_test)
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} (chance is 0.1)"
