"""km.SparseCategoricalCrossentropy / km.sparse_categorical_crossentropy: label smoothing for
integer labels (issue 14), against a float64 brute force and Keras's one-hot losses."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    compiled,
    load_digits_split,
    skip_compiled_fit_on_torch,
    skip_unless_tensorflow,
    to_numpy,
    value_and_grads,
    xla_in_fit,
)

EPSILONS = [0.0, 0.1, 0.37, 1.0]


def reference(y, z, eps, from_logits):
    """float64 per-sample ``-Σ_j q_j log p_j``, ``q = (1 - eps) one_hot + eps / C``, by loops.

    Probabilities follow Keras's rule: divided by the row sum, clipped to [1e-7, 1 - 1e-7].
    """
    out = []
    for label, row in zip(y, np.asarray(z, np.float64)):
        c = len(row)
        if from_logits:
            top = max(row)
            lse = top + math.log(sum(math.exp(v - top) for v in row))
            log_p = [v - lse for v in row]
        else:
            total = sum(row)
            log_p = [math.log(min(max(v / total, 1e-7), 1 - 1e-7)) for v in row]
        q = [(1 - eps) * (j == label) + eps / c for j in range(c)]
        out.append(-sum(qj * lj for qj, lj in zip(q, log_p)))
    return np.array(out)


def per_sample(y, z, **kwargs):
    return to_numpy(km.sparse_categorical_crossentropy(y, z, **kwargs))


@pytest.fixture
def batch(rng):
    z = (3 * rng.normal(size=(12, 7))).astype("float32")
    y = rng.integers(0, 7, size=12).astype("int32")
    return y, z


@pytest.mark.parametrize("eps", EPSILONS)
def test_matches_float64_brute_force(batch, eps):
    y, z = batch
    np.testing.assert_allclose(
        per_sample(y, z, from_logits=True, label_smoothing=eps),
        reference(y, z, eps, True),
        rtol=1e-5,
        atol=1e-5,
    )
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    p[0, :] = [0.0, 1e-9, 0.3, 0.2, 0.2, 0.2, 0.1]  # entries below the clip
    np.testing.assert_allclose(
        per_sample(y, p.astype("float32"), label_smoothing=eps),
        reference(y, p, eps, False),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("eps", EPSILONS)
def test_equals_keras_categorical_crossentropy_on_one_hot(batch, eps):
    y, z = batch
    one_hot = np.eye(z.shape[1], dtype="float32")[y]
    w = np.linspace(0.5, 2.0, len(y)).astype("float32")
    for from_logits, pred in ((True, z), (False, to_numpy(keras.ops.softmax(z)))):
        ours = km.SparseCategoricalCrossentropy(from_logits=from_logits, label_smoothing=eps)
        keras_loss = keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=eps
        )
        np.testing.assert_allclose(
            float(ours(y, pred, sample_weight=w)),
            float(keras_loss(one_hot, pred, sample_weight=w)),
            rtol=1e-5,
        )
    # No smoothing: Keras's own sparse loss, labels (B, 1) included.
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        float(km.SparseCategoricalCrossentropy(from_logits=True)(y[:, None], z)),
        float(sparse(y, z)),
        rtol=1e-6,
    )


def test_huge_logits_of_a_scaled_head_stay_exact(rng):
    # s = 64 heads give logits of +-64 and beyond: logsumexp keeps the loss exact (no clip, no
    # overflow), unlike probabilities.
    z = (100 * rng.normal(size=(6, 5))).astype("float32")
    y = rng.integers(0, 5, size=6)
    got = per_sample(y, z, from_logits=True, label_smoothing=0.2)
    np.testing.assert_allclose(got, reference(y, z, 0.2, True), rtol=1e-5, atol=1e-3)
    assert np.all(np.isfinite(got))


def test_gradient_is_softmax_minus_smoothed_target(batch):
    y, z = batch
    eps = 0.3
    value, (grad,) = value_and_grads(
        lambda t: keras.ops.sum(
            km.sparse_categorical_crossentropy(y, t, from_logits=True, label_smoothing=eps)
        ),
        z,
    )
    z64 = z.astype(np.float64)
    softmax = np.exp(z64 - z64.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    q = (1 - eps) * np.eye(z.shape[1])[y] + eps / z.shape[1]
    np.testing.assert_allclose(grad, softmax - q, atol=2e-6)
    assert float(value) == pytest.approx(reference(y, z, eps, True).sum(), rel=1e-5)


def test_bad_labels_and_nan_inputs_give_nan_for_their_sample_only(batch):
    y, z = batch
    y = y.astype("float32")
    y[1], y[2], y[3] = 1.5, 7.0, -1.0  # not an integer, == C, negative
    z = z.copy()
    z[4, 2] = np.nan
    for from_logits, pred in ((True, z), (False, to_numpy(keras.ops.softmax(z)))):
        got = per_sample(y, pred, from_logits=from_logits, label_smoothing=0.1)
        assert np.all(np.isnan(got[1:5])), got
        assert np.all(np.isfinite(got[[0, *range(5, 12)]])), got
    # Integer labels out of range too, in their own width (int64 2**32 + 3 is not 3).
    labels = np.array([3, 2**32 + 3], dtype="int64")
    got = per_sample(labels, z[5:7], from_logits=True)
    assert np.isfinite(got[0]) and np.isnan(got[1])
    # Float labels holding integers are labels.
    np.testing.assert_allclose(
        per_sample(np.array([3.0, 1.0]), z[5:7], from_logits=True),
        per_sample(np.array([3, 1]), z[5:7], from_logits=True),
    )


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True])
def test_label_smoothing_outside_0_1_is_rejected(bad):
    with pytest.raises(ValueError, match="`label_smoothing`"):
        km.SparseCategoricalCrossentropy(label_smoothing=bad)
    with pytest.raises(ValueError, match="`label_smoothing`"):
        km.sparse_categorical_crossentropy([0], np.zeros((1, 2)), label_smoothing=bad)


def test_bad_arguments_and_shapes_name_the_argument():
    with pytest.raises(ValueError, match="`from_logits`"):
        km.SparseCategoricalCrossentropy(from_logits="yes")
    with pytest.raises(ValueError, match="`axis`"):
        km.sparse_categorical_crossentropy([0], np.zeros((1, 3)), axis=2)
    with pytest.raises(ValueError, match="`y_true`.*y_true.shape=\\(3,\\)"):
        km.sparse_categorical_crossentropy(np.zeros(3, "int32"), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="`y_true`"):
        km.sparse_categorical_crossentropy(np.array(["a"]), np.zeros((1, 4)))


def test_class_axis_and_higher_rank_labels(rng):
    # Per-position labels (B, T) with predictions (B, C, T) and axis=1, as Keras's function takes.
    z = rng.normal(size=(3, 5, 4)).astype("float32")
    y = rng.integers(0, 5, size=(3, 4))
    got = per_sample(y, z, from_logits=True, label_smoothing=0.2, axis=1)
    assert got.shape == (3, 4)
    moved = np.moveaxis(z, 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(
        got.reshape(-1), reference(y.reshape(-1), moved, 0.2, True), rtol=1e-5, atol=1e-6
    )


def test_float16_logits_are_computed_in_float32(batch):
    y, z = batch
    half = z.astype("float16")
    got = km.sparse_categorical_crossentropy(y, half, from_logits=True, label_smoothing=0.1)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(got), reference(y, half.astype(np.float64), 0.1, True), rtol=1e-5, atol=1e-5
    )


def test_xla_equals_eager(batch):
    y, z = batch
    loss = km.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.25)
    eager = to_numpy(loss(y, z))
    got = to_numpy(compiled(lambda a, b: loss(a, b))(y, z))
    np.testing.assert_allclose(got, eager, rtol=1e-6)


@skip_unless_tensorflow("inspects the ops of a TensorFlow graph")
def test_no_one_hot_is_built(batch):
    import tensorflow as tf

    y, z = batch
    fn = tf.function(
        lambda a, b: km.sparse_categorical_crossentropy(a, b, from_logits=True, label_smoothing=0.1)
    )
    graph = fn.get_concrete_function(tf.constant(y), tf.constant(z)).graph
    ops_used = {op.type for op in graph.get_operations()}
    assert "OneHot" not in ops_used
    # No (B, C) one-hot or mask of any dtype: the only (B, C) tensors are float logits.
    wide = [
        t.dtype
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank == 2 and tuple(t.shape) == z.shape
    ]
    assert wide and set(wide) == {tf.float32}, wide


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_model_fit_with_a_head_trains(policy):
    # The two-input pattern: integer labels go to the head and to the loss.
    skip_compiled_fit_on_torch(True)
    keras.config.set_dtype_policy(policy)
    x_train, _, y_train, _ = load_digits_split()
    x_train, y_train = x_train[:320], y_train[:320]
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(8)]
    )
    model, _ = km.build_models(backbone, km.ArcFace(10, scale=16.0, margin=0.2))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=km.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        jit_compile=xla_in_fit(),
    )
    history = model.fit([x_train, y_train], y_train, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.7 * losses[0], losses
