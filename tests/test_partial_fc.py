"""Tests of Partial FC (sampled class centres around any margin head)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km
from keras_margins.heads.base import MarginHead
from keras_margins.partial_fc import PartialFC
from tests.helpers import assert_config_round_trip, assert_keras_round_trip, load_digits_split


# --------------------------------------------------------------------------- float64 reference
def reference_logits(x, kernel_rows, labels, kind, scale, margin, sub_centers=1):
    """Head logits from the papers' formulas, float64, brute force over samples and classes.

    ``kernel_rows`` is ``(C * K, D)``: row ``c * K + k`` is sub-centre ``k`` of class ``c``.
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel_rows, np.float64)
    num_classes = w.shape[0] // sub_centers
    out = np.zeros((x.shape[0], num_classes))
    for i in range(x.shape[0]):
        xi = x[i] / np.linalg.norm(x[i])
        for c in range(num_classes):
            cos = max(
                float(xi @ (w[c * sub_centers + k] / np.linalg.norm(w[c * sub_centers + k])))
                for k in range(sub_centers)
            )
            cos = min(1.0, max(-1.0, cos))
            if labels is not None and c == labels[i]:
                if kind == "cosface":
                    cos = cos - margin
                elif kind == "arcface":
                    theta = math.acos(cos)
                    if theta + margin <= math.pi:
                        cos = math.cos(theta + margin)
                    else:
                        cos = cos - margin * math.sin(margin)
            out[i, c] = scale * cos
    return out


def make_head(kind, num_classes, sub_centers=1):
    if kind == "cosface":
        return km.CosFace(num_classes, scale=30.0, margin=0.35, sub_centers=sub_centers)
    return km.ArcFace(num_classes, scale=30.0, margin=0.5, sub_centers=sub_centers)


MARGINS = {"cosface": 0.35, "arcface": 0.5}


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("num_classes,rate", [(50, 0.2), (101, 0.1), (7, 0.5)])
def test_sample_contains_every_batch_label_and_remaps(num_classes, rate, rng):
    pfc = PartialFC(km.CosFace(num_classes), sample_rate=rate, seed=3)
    k = pfc.num_sample
    assert k == math.ceil(rate * num_classes)
    for _ in range(20):
        # duplicates on purpose: fewer distinct labels than batch entries
        distinct = rng.choice(num_classes, size=rng.integers(1, k + 1), replace=False)
        labels = rng.choice(distinct, size=k + 3)
        classes, remapped = pfc.sample(labels.astype("int32"))
        classes = keras.ops.convert_to_numpy(classes)
        remapped = keras.ops.convert_to_numpy(remapped)
        assert classes.shape == (k,)
        assert np.all(np.diff(classes) > 0), "sampled classes must be distinct and sorted"
        assert classes.min() >= 0 and classes.max() < num_classes
        assert set(labels.tolist()) <= set(classes.tolist())
        np.testing.assert_array_equal(classes[remapped], labels)


def test_negatives_are_uniform():
    """Each non-batch class is drawn with probability (k - |P|) / (C - |P|)."""
    num_classes, rate = 40, 0.25  # k = 10
    pfc = PartialFC(km.CosFace(num_classes), sample_rate=rate, seed=0)
    labels = np.array([3, 3, 17, 25], dtype="int32")  # 3 positives
    draws = 3000
    counts = np.zeros(num_classes)
    sample = tf.function(pfc.sample)
    for _ in range(draws):
        classes, _ = sample(labels)
        counts[classes.numpy()] += 1
    assert np.all(counts[[3, 17, 25]] == draws)
    negatives = np.delete(counts, [3, 17, 25])
    p = (10 - 3) / (num_classes - 3)
    expected = draws * p
    sd = math.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(negatives - expected) < 5 * sd), negatives
    # and the sampled sets differ from step to step
    a, _ = sample(labels)
    b, _ = sample(labels)
    assert not np.array_equal(a.numpy(), b.numpy()) or not np.array_equal(
        sample(labels)[0].numpy(), a.numpy()
    )


def test_labels_outside_range_or_not_sampled_give_nan():
    pfc = PartialFC(km.CosFace(20, scale=10.0), sample_rate=0.1, seed=0)  # k = 2
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    out = keras.ops.convert_to_numpy(pfc([x, np.array([0, 1, 1, 0])], training=True))
    assert np.all(np.isfinite(out))
    # a label >= C: its row (only) becomes NaN, and so does the loss
    out = keras.ops.convert_to_numpy(pfc([x, np.array([0, 1, 25, 0])], training=True))
    assert np.all(np.isfinite(out[[0, 1, 3]])) and np.all(np.isnan(out[2]))
    assert np.isnan(keras.ops.convert_to_numpy(pfc.losses[0]))
    # 3 distinct labels but k = 2: one label cannot be in the sampled set
    out = keras.ops.convert_to_numpy(pfc([x, np.array([0, 1, 2, 0])], training=True))
    assert np.isnan(out).any()


# --------------------------------------------------------------------------- logits
@pytest.mark.parametrize("kind", ["cosface", "arcface"])
@pytest.mark.parametrize("sub_centers", [1, 2])
def test_training_logits_are_full_logits_on_sampled_columns(kind, sub_centers, rng):
    num_classes, dim, batch = 60, 8, 6
    x = rng.normal(size=(batch, dim)).astype("float32")
    labels = np.array([5, 17, 5, 59, 0, 33], dtype="int32")
    layers = []
    for _ in range(2):  # two layers with the same seed draw the same sampled set
        pfc = PartialFC(make_head(kind, num_classes, sub_centers), sample_rate=0.2, seed=11)
        pfc.build([(None, dim), (None,)])
        layers.append(pfc)
    kernel = rng.normal(size=(num_classes * sub_centers, dim)).astype("float32")
    for pfc in layers:
        pfc.kernel.assign(kernel)
    logits = keras.ops.convert_to_numpy(layers[0]([x, labels], training=True))
    classes, remapped = (keras.ops.convert_to_numpy(t) for t in layers[1].sample(labels))
    assert logits.shape == (batch, 12)
    np.testing.assert_array_equal(classes[remapped], labels)

    full = reference_logits(x, kernel, labels, kind, 30.0, MARGINS[kind], sub_centers=sub_centers)
    np.testing.assert_allclose(logits, full[:, classes], atol=2e-4, rtol=0)
    # the full cross-entropy restricted to the sampled classes is the added loss
    z = full[:, classes]
    ce = (
        np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
        + z.max(1)
        - z[np.arange(batch), remapped]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layers[0].losses[0]), ce.mean(), rtol=1e-4
    )
    # evaluation and inference use every centre
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layers[0]([x, labels], training=False)), full, atol=2e-4
    )
    no_label = reference_logits(x, kernel, None, kind, 30.0, 0.0, sub_centers=sub_centers)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layers[0](x)), no_label, atol=2e-4)


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_sample_rate_one_is_the_full_head(kind, rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    labels = np.array([1, 2, 3, 1, 9])
    pfc = PartialFC(make_head(kind, 10), sample_rate=1.0)
    out = pfc([x, labels], training=True)
    assert tuple(out.shape) == (5, 10)
    head = make_head(kind, 10)
    head.build((None, 8))
    head.kernel.assign(keras.ops.transpose(pfc.kernel))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out),
        keras.ops.convert_to_numpy(head([x, labels], training=True)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pfc.to_head()(x)), keras.ops.convert_to_numpy(head(x)), atol=1e-5
    )


# --------------------------------------------------------------------------- gradients
def test_kernel_gradient_is_sparse_indexed_slices(rng):
    pfc = PartialFC(km.ArcFace(1000, scale=30.0), sample_rate=0.05, seed=1)
    x = rng.normal(size=(8, 16)).astype("float32")
    labels = np.arange(8) * 100
    pfc.build([(None, 16), (None,)])
    with tf.GradientTape() as tape:
        pfc([x, labels], training=True)
        loss = pfc.losses[0]
    grad = tape.gradient(loss, pfc.kernel.value)
    assert isinstance(grad, tf.IndexedSlices)
    assert tuple(grad.values.shape) == (50, 16)
    assert set((np.arange(8) * 100).tolist()) <= set(grad.indices.numpy().tolist())


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.5),
        lambda: keras.optimizers.SGD(0.5, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
    ],
    ids=["sgd", "sgd_momentum", "adam"],
)
def test_training_step_changes_only_sampled_centres(optimizer, rng):
    num_classes, dim = 200, 12
    head = km.CosFace(num_classes, scale=16.0)
    pfc = PartialFC(head, sample_rate=0.1, seed=5)
    emb = keras.Input((dim,))
    lab = keras.Input((), dtype="int32")
    model = keras.Model([emb, lab], pfc([emb, lab]))
    model.compile(optimizer=optimizer(), loss=None)
    before = keras.ops.convert_to_numpy(pfc.kernel).copy()
    x = rng.normal(size=(16, dim)).astype("float32")
    y = rng.choice(num_classes, size=16, replace=False).astype("int32")
    model.fit([x, y], None, batch_size=16, epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(pfc.kernel)
    changed = np.flatnonzero(np.any(before != after, axis=1))
    assert set(y.tolist()) <= set(changed.tolist())
    assert changed.size <= pfc.num_sample  # 20 of 200
    assert np.isfinite(after).all()


# --------------------------------------------------------------------------- Keras integration
@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), "0.1", None])
def test_sample_rate_validation(bad):
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFC(km.CosFace(10), sample_rate=bad)


def test_head_and_seed_validation():
    with pytest.raises(ValueError, match="head"):
        PartialFC(keras.layers.Dense(10))
    with pytest.raises(ValueError, match="seed"):
        PartialFC(km.CosFace(10), seed=1.5)


def test_heads_all_wrap():
    """Every margin head of the package works inside PartialFC."""
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    y = np.array([0, 3, 3, 7])
    for name in km.heads.__all__:
        cls = getattr(km.heads, name)
        if not (isinstance(cls, type) and issubclass(cls, MarginHead)) or cls is MarginHead:
            continue
        try:
            head = cls(num_classes=40)
        except (TypeError, ValueError):
            continue
        pfc = PartialFC(head, sample_rate=0.25, seed=0)
        out = keras.ops.convert_to_numpy(pfc([x, y], training=True))
        assert out.shape == (4, 10), name
        assert np.isfinite(out).all(), name
        assert keras.ops.convert_to_numpy(pfc(x)).shape == (4, 40)


def test_config_and_keras_round_trip(tmp_path, rng):
    pfc = PartialFC(km.ArcFace(30, scale=20.0, margin=0.3, sub_centers=2), 0.3, seed=4)
    clone = assert_config_round_trip(pfc)
    assert isinstance(clone.head, km.ArcFace) and clone.head.sub_centers == 2
    assert clone.head.margin == 0.3 and clone.sample_rate == 0.3 and clone.seed == 4
    emb = keras.Input((8,))
    lab = keras.Input((), dtype="int32")
    model = keras.Model([emb, lab], pfc([emb, lab]))
    x = rng.normal(size=(5, 8)).astype("float32")
    y = np.array([1, 2, 3, 4, 29])
    loaded = assert_keras_round_trip(model, [x, y], tmp_path)
    layer = [lay for lay in loaded.layers if isinstance(lay, PartialFC)][0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(pfc.kernel)
    )


def _digits_model(head_layer, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16)]
    )
    return km.build_models(backbone, head_layer)


def _pk_order(y, classes_per_batch, per_class, epochs, seed=0):
    """Indices of P x K batches (P classes, K samples each), ``epochs`` passes, reshuffled."""
    rng = np.random.default_rng(seed)
    order = []
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    for _ in range(epochs):
        pools = {c: list(rng.permutation(idx)) for c, idx in by_class.items()}
        while True:
            alive = [c for c, pool in pools.items() if len(pool) >= per_class]
            if len(alive) < classes_per_batch:
                break
            for c in rng.choice(alive, size=classes_per_batch, replace=False):
                order.extend(pools[c][:per_class])
                del pools[c][:per_class]
    return np.array(order)


def test_fit_on_digits_close_to_full_head():
    """Digits in P x K batches (2 classes x 8): Partial FC with k = 5 of 10 classes per step
    reaches an accuracy close to the full head's."""
    x_tr, x_te, y_tr, y_te = load_digits_split()
    order = _pk_order(y_tr, classes_per_batch=2, per_class=8, epochs=3)
    results = {}
    for name, rate in [("full", 1.0), ("partial", 0.5)]:
        pfc = PartialFC(km.CosFace(10, scale=16.0, margin=0.2), sample_rate=rate, seed=0)
        train_model, embed_model = _digits_model(pfc)
        train_model.compile(
            optimizer=keras.optimizers.Adam(3e-3), loss=None, jit_compile=rate < 1.0
        )
        history = train_model.fit(
            [x_tr[order], y_tr[order]], None, batch_size=16, epochs=1, verbose=0, shuffle=False
        )
        assert np.isfinite(history.history["loss"][-1])
        # evaluation uses every class and the full cross-entropy
        eval_loss = train_model.evaluate([x_te, y_te], None, verbose=0)
        assert np.isfinite(eval_loss)
        logits = keras.ops.convert_to_numpy(pfc(embed_model.predict(x_te, verbose=0)))
        results[name] = float(np.mean(np.argmax(logits, -1) == y_te))
    assert results["full"] > 0.8, results
    assert results["partial"] > 0.8, results
    assert results["partial"] >= results["full"] - 0.05, results
