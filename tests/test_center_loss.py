"""CenterLoss: the added loss, the paper's center update, inference, saving."""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_config_round_trip,
    assert_keras_round_trip,
    cast,
    load_digits_split,
    skip_compiled_fit_on_torch,
    to_numpy,
    value_and_grads,
)

NUM_CLASSES, DIM = 10, 8


def ref_update(centers, x, y, alpha):
    """The paper's rule, with loops: only the classes present in the batch move."""
    centers = np.array(centers, dtype=np.float64)
    new = centers.copy()
    for j in range(len(centers)):
        members = [i for i in range(len(y)) if y[i] == j]
        if not members:
            continue
        delta = sum(centers[j] - x[i] for i in members) / (1 + len(members))
        new[j] = centers[j] - alpha * delta
    return new


def ref_loss(centers, x, y, weight):
    return weight * 0.5 * np.mean([np.sum((x[i] - centers[y[i]]) ** 2) for i in range(len(y))])


def make_model(alpha=0.5, weight=0.1):
    inputs = keras.Input((64,), name="pixels")
    labels = keras.Input((), dtype="int32", name="labels")
    backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(DIM)], name="backbone")
    center = km.CenterLoss(
        NUM_CLASSES, alpha=alpha, weight=weight, centers_initializer="random_normal", name="center"
    )
    emb = center([backbone(inputs), labels])
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(emb)
    return keras.Model([inputs, labels], logits), backbone, center


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_center_update_after_a_training_step(digits, jit_compile):
    skip_compiled_fit_on_torch(jit_compile)
    x_train, _, y_train, _ = digits
    xb, yb = x_train[:32], y_train[:32]
    yb = np.where(yb == 9, 0, yb)  # class 9 absent from the batch: its center must not move
    model, backbone, center = make_model(alpha=0.5)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    c0 = keras.ops.convert_to_numpy(center.centers).astype("float64")
    emb = backbone.predict(xb, verbose=0).astype("float64")  # embeddings before the step
    model.train_on_batch([xb, yb], yb)
    c1 = keras.ops.convert_to_numpy(center.centers)
    np.testing.assert_allclose(c1, ref_update(c0, emb, yb, 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(c1[9], c0[9].astype("float32"))
    assert not np.allclose(c1[:9], c0[:9])


def test_no_update_and_no_loss_in_inference(digits):
    x_train, _, y_train, _ = digits
    model, _, center = make_model()
    c0 = keras.ops.convert_to_numpy(center.centers).copy()
    model.predict([x_train[:50], y_train[:50]], verbose=0)
    model([x_train[:50], y_train[:50]], training=False)
    assert model.losses == []
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(center.centers), c0)


def test_added_loss_and_gradient_match_formula(rng):
    x = rng.normal(size=(16, DIM)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, 16)
    layer = km.CenterLoss(NUM_CLASSES, weight=0.3, centers_initializer="random_normal")
    layer.build([(None, DIM), (None,)])
    c0 = keras.ops.convert_to_numpy(layer.centers).astype("float64")

    def loss_fn(xt):
        out = layer([xt, y], training=True)
        return layer.losses[0], out

    loss, (grad,), out = value_and_grads(loss_fn, x, has_aux=True, state=[layer])
    np.testing.assert_array_equal(out, x)
    np.testing.assert_allclose(float(loss), ref_loss(c0, x.astype("float64"), y, 0.3), rtol=1e-5)
    np.testing.assert_allclose(grad, 0.3 * (x - c0[y]) / 16, rtol=1e-4, atol=1e-7)


def test_labels_shape_b1(rng):
    x = rng.normal(size=(6, DIM)).astype("float32")
    y = np.array([0, 0, 1, 1, 2, 2])
    layer = km.CenterLoss(NUM_CLASSES, alpha=1.0)
    layer([x, y.reshape(-1, 1)], training=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.centers),
        ref_update(np.zeros((10, DIM)), x, y, 1.0),
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_embeddings(rng, dtype):
    x = cast(rng.normal(size=(8, DIM)), dtype)
    y = rng.integers(0, NUM_CLASSES, 8)
    layer = km.CenterLoss(NUM_CLASSES, weight=1.0)
    out = layer([x, y], training=True)
    assert out.dtype == x.dtype
    assert layer.centers.dtype == "float32"
    assert keras.backend.standardize_dtype(layer.losses[0].dtype) == "float32"
    x64 = to_numpy(cast(x, "float32")).astype("float64")
    want = ref_loss(np.zeros((10, DIM)), x64, y, 1.0)
    np.testing.assert_allclose(float(layer.losses[0]), want, rtol=1e-5)


def test_fit_with_center_loss_tightens_classes(digits):
    x_train, x_test, y_train, y_test = digits
    model, backbone, center = make_model(alpha=0.5, weight=0.5)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    hist = model.fit([x_train, y_train], y_train, batch_size=64, epochs=8, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0], hist.history
    assert hist.history["accuracy"][-1] > 0.85, hist.history
    emb = backbone.predict(x_test, verbose=0)
    c = keras.ops.convert_to_numpy(center.centers)
    own = np.linalg.norm(emb - c[y_test], axis=1)
    others = np.linalg.norm(emb[:, None, :] - c[None], axis=2)
    others[np.arange(len(y_test)), y_test] = np.inf
    # The learned centers are meaningful: most test points lie closest to their own center.
    assert np.mean(own < others.min(axis=1)) > 0.85


def test_keras_round_trip_saves_centers(digits, tmp_path):
    x_train, _, y_train, _ = digits
    model, _, center = make_model()
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.train_on_batch([x_train[:32], y_train[:32]], y_train[:32])
    loaded = assert_keras_round_trip(model, [x_train[:8], y_train[:8]], tmp_path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.get_layer("center").centers),
        keras.ops.convert_to_numpy(center.centers),
    )
    assert not loaded.get_layer("center").centers.trainable


def test_config_round_trip():
    clone = assert_config_round_trip(km.CenterLoss(7, alpha=0.2, weight=0.01))
    assert (clone.num_classes, clone.alpha, clone.weight) == (7, 0.2, 0.01)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": 3, "alpha": 1.5}, "alpha"),
        ({"num_classes": 3, "alpha": -0.1}, "alpha"),
        ({"num_classes": 3, "weight": -1.0}, "weight"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        km.CenterLoss(**kwargs)
