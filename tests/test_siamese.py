"""PairDistance and a Siamese contrastive model trained on digits."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km
from keras_margins.siamese import PairDistance, build_siamese_model
from tests.helpers import assert_config_round_trip, assert_keras_round_trip, load_digits_split


@pytest.fixture
def ab(rng):
    return rng.normal(size=(10, 6)).astype("float32"), rng.normal(size=(10, 6)).astype("float32")


def test_euclidean_matches_numpy(ab):
    a, b = ab
    got = np.asarray(PairDistance()([a, b]))
    ref = np.array([np.sqrt(np.sum((x - y) ** 2)) for x, y in zip(a.astype(float), b)])
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_cosine_matches_numpy(ab):
    a, b = ab
    got = np.asarray(PairDistance("cosine")([a, b]))
    ref = [1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a.astype(float), b)]
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_identical_pairs_have_finite_gradients(metric):
    a = tf.constant(np.ones((3, 4), "float32"))
    with tf.GradientTape() as tape:
        tape.watch(a)
        d = PairDistance(metric)([a, a])
        total = tf.reduce_sum(d)
    np.testing.assert_allclose(d.numpy(), 0.0, atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(total, a).numpy()))


def test_low_precision_inputs_give_float32(ab):
    a, b = ab
    keras.config.set_dtype_policy("mixed_bfloat16")
    d = PairDistance()([tf.cast(a, "bfloat16"), tf.cast(b, "bfloat16")])
    assert d.dtype == tf.float32


def test_config_and_keras_round_trip(ab, tmp_path):
    a, b = ab
    assert_config_round_trip(PairDistance("cosine"))
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model = build_siamese_model(backbone, metric="cosine")
    assert_keras_round_trip(model, [a, b], tmp_path)


def test_bad_metric_raises():
    with pytest.raises(ValueError, match="metric"):
        PairDistance("manhattan")
    with pytest.raises(ValueError, match="metric"):
        build_siamese_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), "l1")


def _pairs(x, y, n, seed):
    """Half similar, half dissimilar pairs drawn at random."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), n)
    same = rng.random(n) < 0.5
    j = np.empty(n, int)
    for t in range(n):
        pool = np.flatnonzero((y == y[i[t]]) == same[t])
        j[t] = rng.choice(pool)
    return x[i], x[j], (y[i] == y[j]).astype("float32")


def test_siamese_contrastive_fit_on_digits():
    from sklearn.metrics import silhouette_score

    x_train, x_test, y_train, y_test = load_digits_split()
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(8)]
    )
    siamese = build_siamese_model(backbone)
    a, b, same = _pairs(x_train, y_train, 4000, seed=0)
    siamese.compile(optimizer=keras.optimizers.Adam(3e-3), loss=km.ContrastiveLoss(margin=1.0))
    before = silhouette_score(backbone.predict(x_test, verbose=0), y_test)
    history = siamese.fit([a, b], same, batch_size=128, epochs=5, verbose=0)
    after = silhouette_score(backbone.predict(x_test, verbose=0), y_test)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert after > before + 0.1, (before, after)
    # Held-out pairs: similar pairs end up closer than dissimilar ones.
    ta, tb, tsame = _pairs(x_test, y_test, 1000, seed=1)
    d = siamese.predict([ta, tb], verbose=0)
    assert d[tsame == 1].mean() < 0.5 * d[tsame == 0].mean()


# ------------------------------------------------------------------ issue 12: bad inputs
@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((4, 8), (1, 8)), ((4, 8), (4, 7)), ((4, 8, 2), (4, 8, 2)), ((4,), (4,))],
)
def test_pair_shapes_are_not_broadcast(shape_a, shape_b):
    a, b = np.zeros(shape_a, "float32"), np.zeros(shape_b, "float32")
    with pytest.raises(ValueError, match="PairDistance"):
        PairDistance()([a, b])
    with pytest.raises(ValueError, match="PairDistance"):
        PairDistance("cosine")(
            [
                keras.Input(shape_a[1:], batch_size=shape_a[0]),
                keras.Input(shape_b[1:], batch_size=shape_b[0]),
            ]
        )


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nan_embedding_gives_nan_distance(ab, metric):
    a, b = ab
    a = a.copy()
    a[2, 1] = np.nan
    d = np.asarray(PairDistance(metric)([a, b]))
    assert np.isnan(d[2]) and np.all(np.isfinite(np.delete(d, 2)))


def test_nan_pair_gives_nan_contrastive_loss(ab):
    a, b = ab
    a = a.copy()
    a[0, 0] = np.nan
    d = PairDistance()([a, b])
    assert np.isnan(float(km.ContrastiveLoss()(np.ones(10), d)))


@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e36])
def test_distances_for_any_magnitude(ab, scale):
    a, b = ab
    ref = np.sqrt(((a.astype("float64") - b) ** 2).sum(1))
    got = np.asarray(PairDistance()([a * np.float32(scale), b * np.float32(scale)]))
    np.testing.assert_allclose(got / scale, ref, rtol=1e-5)
    cos = np.asarray(PairDistance("cosine")([a * np.float32(scale), b * np.float32(scale)]))
    np.testing.assert_allclose(cos, np.asarray(PairDistance("cosine")([a, b])), atol=1e-6)


@pytest.mark.parametrize(
    "backbone, error",
    [
        ("not a model", TypeError),
        (keras.layers.Dense(3), TypeError),
        (keras.Sequential([keras.layers.Dense(3)]), ValueError),
    ],
)
def test_wrong_backbone_names_the_argument(backbone, error):
    with pytest.raises(error, match="backbone"):
        build_siamese_model(backbone)


def test_two_input_backbone_is_rejected():
    i1, i2 = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([i1, i2], keras.layers.Add()([i1, i2]))
    with pytest.raises(ValueError, match="backbone"):
        build_siamese_model(two)


@pytest.mark.parametrize("name, hint", [("L2", "'euclidean' here"), ("angular", "'cosine' here")])
def test_triplet_vocabulary_gets_a_hint(name, hint):
    with pytest.raises(ValueError, match=f"metric.*{hint}.*Received: metric"):
        PairDistance(name)
