"""Triplet losses against brute-force float64 references (tensorflow-addons' definitions)."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.losses.triplet import ActiveTripletFraction
from tests.helpers import (
    assert_config_round_trip,
    cast,
    compiled,
    grad_fn,
    load_digits_split,
    numerical_gradient,
    to_numpy,
    value_and_grads,
)


# ------------------------------------------------------------------ float64 references
def ref_distances(x, metric):
    x = np.asarray(x, dtype=np.float64)
    b = len(x)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            if metric == "L2":
                d[i, j] = np.sqrt(np.sum((x[i] - x[j]) ** 2))
            elif metric == "squared-L2":
                d[i, j] = np.sum((x[i] - x[j]) ** 2)
            else:
                ni = max(np.linalg.norm(x[i]), 1e-6)
                nj = max(np.linalg.norm(x[j]), 1e-6)
                d[i, j] = max(1.0 - x[i] @ x[j] / (ni * nj), 0.0)
    return d


def ref_semihard(y, x, margin=1.0, metric="L2", soft=False):
    """Every anchor-positive pair; its semi-hard negative; mean of the hinge (0 with no pairs)."""
    d = ref_distances(x, metric)
    y = np.ravel(y)
    total, pairs, active = 0.0, 0, 0
    for a in range(len(y)):
        negs = [d[a, n] for n in range(len(y)) if y[n] != y[a]]
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            pairs += 1
            if not negs:
                dn = d[a].min()  # tensorflow-addons' fallback without any negative
            else:
                farther = [v for v in negs if v > d[a, p]]
                dn = min(farther) if farther else max(negs)
            h = d[a, p] - dn + (0.0 if soft else margin)
            total += np.log1p(np.exp(d[a, p] - dn)) if soft else max(h, 0.0)
            active += h > 0
    return (total / pairs, active / pairs) if pairs else (0.0, 0.0)


def ref_hard(y, x, margin=1.0, metric="L2", soft=False):
    d = ref_distances(x, metric)
    y = np.ravel(y)
    losses, active = [], 0
    for a in range(len(y)):
        pos = [d[a, p] for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [d[a, n] for n in range(len(y)) if y[n] != y[a]]
        hp = max(pos) if pos else d[a].min()
        hn = min(neg) if neg else d[a].max()
        h = hp - hn + (0.0 if soft else margin)
        losses.append(np.log1p(np.exp(hp - hn)) if soft else max(h, 0.0))
        active += h > 0
    return float(np.mean(losses)), active / len(y)


def ref_all(y, x, margin=1.0, metric="L2"):
    d = ref_distances(x, metric)
    y = np.ravel(y)
    total, active, valid = 0.0, 0, 0
    b = len(y)
    for a in range(b):
        for p in range(b):
            if p == a or y[p] != y[a]:
                continue
            for n in range(b):
                if y[n] == y[a]:
                    continue
                valid += 1
                h = d[a, p] - d[a, n] + margin
                if h > 0:
                    total += h
                    active += 1
    return (total / active if active else 0.0), (active / valid if valid else 0.0)


def reference(mining, y, x, margin=1.0, metric="L2", soft=False):
    if mining == "semi-hard":
        return ref_semihard(y, x, margin, metric, soft)
    if mining == "hard":
        return ref_hard(y, x, margin, metric, soft)
    return ref_all(y, x, margin, metric)


def ours(mining, y, x, margin=1.0, metric="L2", soft=False):
    loss, frac = km.triplet_loss(
        y,
        x,
        margin=margin,
        mining=mining,
        distance_metric=metric,
        soft=soft,
        return_active_fraction=True,
    )
    return float(loss), float(frac)


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(24, 6)).astype("float32")
    y = rng.integers(0, 5, size=24)
    return x, y


MININGS = ["semi-hard", "hard", "all"]
METRICS = ["L2", "squared-L2", "angular"]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0])
def test_matches_reference(batch, mining, metric, margin):
    x, y = batch
    if metric == "angular":
        margin = margin / 4  # angular distances live in [0, 2]
    got, frac = ours(mining, y, x, margin, metric)
    want, want_frac = reference(mining, y, x, margin, metric)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(frac, want_frac, atol=1e-7)


@pytest.mark.parametrize("mining", ["semi-hard", "hard"])
def test_soft_matches_reference(batch, mining):
    x, y = batch
    got, frac = ours(mining, y, x, soft=True)
    want, want_frac = reference(mining, y, x, soft=True)
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert frac == pytest.approx(want_frac)


def test_named_twins_equal_general_form(batch):
    x, y = batch
    np.testing.assert_allclose(
        float(km.triplet_semihard_loss(y, x, 0.5)), ref_semihard(y, x, 0.5)[0], rtol=2e-5
    )
    np.testing.assert_allclose(
        float(km.TripletSemiHardLoss(margin=0.5)(y, x)), ref_semihard(y, x, 0.5)[0], rtol=2e-5
    )
    np.testing.assert_allclose(
        float(km.TripletHardLoss(margin=0.5, soft=False)(y, x)), ref_hard(y, x, 0.5)[0], rtol=2e-5
    )
    np.testing.assert_allclose(
        float(km.triplet_hard_loss(y, x, soft=True)), ref_hard(y, x, soft=True)[0], rtol=2e-5
    )


@pytest.mark.parametrize("mining", MININGS)
def test_exact_ties(mining):
    """Integer embeddings and squared-L2: many exactly equal distances, the strict > matters."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(20, 2)).astype("float32")
    y = rng.integers(0, 4, size=20)
    for margin in (0.0, 1.0, 2.0):
        got, frac = ours(mining, y, x, margin, "squared-L2")
        want, want_frac = reference(mining, y, x, margin, "squared-L2")
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert frac == pytest.approx(want_frac)


def test_labels_shape_b1_and_float_labels(batch):
    x, y = batch
    want = ref_semihard(y, x)[0]
    for labels in (y.reshape(-1, 1), y.astype("float32"), y.astype("int64")):
        np.testing.assert_allclose(float(km.triplet_semihard_loss(labels, x)), want, rtol=2e-5)


# ------------------------------------------------------------------ corner cases
def _value_and_grad(mining, y, x, metric="L2", soft=False, margin=1.0):
    loss, (grad,) = value_and_grads(
        lambda xt: km.triplet_loss(
            y, xt, margin=margin, mining=mining, distance_metric=metric, soft=soft
        ),
        x,
    )
    return float(loss), grad


CORNERS = {
    "identical": (np.ones((6, 3), "float32"), np.array([0, 0, 1, 1, 2, 2])),
    "one_class": (np.random.default_rng(1).normal(size=(6, 3)).astype("float32"), np.zeros(6, int)),
    "all_distinct": (np.random.default_rng(2).normal(size=(6, 3)).astype("float32"), np.arange(6)),
    # Each class is a pair of opposite unit vectors, the other classes are orthogonal: every
    # negative is closer to the anchor than its positive, so no anchor has a semi-hard negative.
    "no_semi_hard": (
        np.concatenate([np.eye(3), -np.eye(3)]).astype("float32"),
        np.array([0, 1, 2, 0, 1, 2]),
    ),
}


@pytest.mark.parametrize("corner", sorted(CORNERS))
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("metric", METRICS)
def test_corner_cases_defined_and_finite(corner, mining, metric):
    x, y = CORNERS[corner]
    value, grad = _value_and_grad(mining, y, x, metric)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    want = reference(mining, y, x, 1.0, metric)[0]
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)


def test_corner_values_spelled_out():
    # All labels distinct: no anchor-positive pair, the mean is defined as 0 (tfa: NaN).
    x, y = CORNERS["all_distinct"]
    assert float(km.triplet_semihard_loss(y, x)) == 0.0
    assert float(km.triplet_loss(y, x, mining="all")) == 0.0
    # Identical embeddings: every distance is 0, every hinge equals the margin.
    x, y = CORNERS["identical"]
    assert float(km.triplet_semihard_loss(y, x, margin=0.7)) == pytest.approx(0.7)
    assert float(km.triplet_hard_loss(y, x, margin=0.7)) == pytest.approx(0.7)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_matches_finite_differences(mining, metric):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(10, 3))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    margin = 0.5 if metric != "angular" else 0.2
    _, grad = _value_and_grad(mining, y, x.astype("float32"), metric, margin=margin)
    num = numerical_gradient(lambda v: reference(mining, y, v, margin, metric)[0], x, eps=1e-6)
    np.testing.assert_allclose(grad, num, atol=2e-4, rtol=1e-3)


def test_soft_hard_gradient_matches_finite_differences():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(8, 3))
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    _, grad = _value_and_grad("hard", y, x.astype("float32"), soft=True)
    num = numerical_gradient(lambda v: ref_hard(y, v, soft=True)[0], x)
    np.testing.assert_allclose(grad, num, atol=2e-4, rtol=1e-3)


# ------------------------------------------------------------------ precision and XLA
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mining", MININGS)
def test_low_precision_embeddings(batch, dtype, mining):
    x, y = batch
    low = cast(x, dtype)
    loss = km.triplet_loss(y, low, mining=mining)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    want = reference(mining, y, to_numpy(cast(low, "float32")))[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-4, atol=1e-5)


def test_loss_object_under_mixed_precision_policy(batch):
    x, y = batch
    keras.config.set_dtype_policy("mixed_float16")
    loss = km.TripletSemiHardLoss()(y, cast(x, "float16"))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    want = ref_semihard(y, to_numpy(cast(cast(x, "float16"), "float32")))[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)


@pytest.mark.parametrize(
    "mining",
    [
        "semi-hard",
        pytest.param("hard", marks=pytest.mark.slow),
        pytest.param("all", marks=pytest.mark.slow),
    ],
)
def test_jit_compile_matches_eager(batch, mining):
    x, y = batch

    @compiled
    def f(labels, emb):
        loss, (grad,) = grad_fn(lambda e: km.triplet_loss(labels, e, mining=mining, margin=0.5))(
            emb
        )
        return loss, grad

    loss, grad = f(keras.ops.convert_to_tensor(y), keras.ops.convert_to_tensor(x))
    np.testing.assert_allclose(float(to_numpy(loss)), reference(mining, y, x, 0.5)[0], rtol=2e-5)
    assert np.all(np.isfinite(to_numpy(grad)))


def test_large_batch_runs_in_quadratic_memory():
    """B = 1024 would need 4 GiB per float32 B^3 temporary; here it is a few (B, B) matrices."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 16)).astype("float32")
    y = rng.integers(0, 64, size=1024)
    for mining in MININGS:
        assert np.isfinite(float(km.triplet_loss(y, x, mining=mining)))


# ------------------------------------------------------------------ serialization and errors
@pytest.mark.parametrize(
    "obj",
    [
        km.TripletSemiHardLoss(margin=0.2, distance_metric="squared-L2"),
        km.TripletHardLoss(margin=0.3, soft=True, distance_metric="angular"),
        km.TripletLoss(margin=0.4, mining="all", distance_metric="L2"),
        ActiveTripletFraction(margin=0.1, mining="hard"),
    ],
)
def test_config_round_trip(obj):
    clone = assert_config_round_trip(obj)
    assert clone.margin == obj.margin


@keras.saving.register_keras_serializable(package="keras_margins_tests")
def manhattan_distance(e):
    return keras.ops.sum(keras.ops.abs(e[:, None, :] - e[None, :, :]), axis=-1)


def test_callable_metric_round_trip_and_value(batch):
    x, y = batch
    loss = km.TripletLoss(mining="hard", distance_metric=manhattan_distance)
    clone = assert_config_round_trip(loss)
    assert clone.distance_metric is manhattan_distance
    d = np.abs(x[:, None, :].astype("float64") - x[None, :, :]).sum(-1)
    hp = np.where((y[:, None] == y[None]) & ~np.eye(24, dtype=bool), d, -np.inf).max(1)
    hn = np.where(y[:, None] != y[None], d, np.inf).min(1)
    np.testing.assert_allclose(float(loss(y, x)), np.maximum(hp - hn + 1.0, 0).mean(), rtol=1e-5)


def test_keras_file_round_trip_keeps_the_loss(tmp_path, batch):
    x, y = batch
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=km.TripletSemiHardLoss(margin=0.3))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert float(loaded.evaluate(x, y, batch_size=24, verbose=0)) == pytest.approx(
        float(model.evaluate(x, y, batch_size=24, verbose=0)), rel=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"margin": -0.1}, "margin"),
        ({"margin": "1"}, "margin"),
        ({"mining": "easy"}, "mining"),
        ({"distance_metric": "cosine"}, "distance_metric"),
        ({"soft": 1}, "soft"),
        ({"soft": True, "mining": "all"}, "soft"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        km.TripletLoss(**kwargs)
    with pytest.raises(ValueError, match=name):
        km.triplet_loss(np.zeros(2), np.zeros((2, 2), "float32"), **kwargs)


def test_named_classes_reject_bad_arguments():
    with pytest.raises(ValueError, match="margin"):
        km.TripletSemiHardLoss(margin=float("nan"))
    with pytest.raises(ValueError, match="distance_metric"):
        km.TripletHardLoss(distance_metric="l2")


# ------------------------------------------------------------------ training on real data
def _silhouette(model, x, y):
    from sklearn.metrics import silhouette_score

    emb = model.predict(x, verbose=0)
    return silhouette_score(emb, y)


def _pk_batches(x, y, p=10, k=8, batches=30, seed=0):
    """P x K batches drawn by hand (independent of keras_margins.sampler)."""
    rng = np.random.default_rng(seed)
    idx = []
    for _ in range(batches):
        for c in rng.choice(np.unique(y), p, replace=False):
            idx.extend(rng.choice(np.flatnonzero(y == c), k, replace=False))
    idx = np.array(idx)
    return x[idx], y[idx]


@pytest.mark.parametrize(
    "loss",
    [
        km.TripletSemiHardLoss(margin=0.5),
        pytest.param(km.TripletHardLoss(margin=0.5), marks=pytest.mark.slow),
    ],
)
def test_fit_on_digits_separates_classes(loss):
    x_train, x_test, y_train, y_test = load_digits_split()
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(16),
            keras.layers.UnitNormalization(),
        ]
    )
    before = _silhouette(model, x_test, y_test)
    xb, yb = _pk_batches(x_train, y_train)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=loss,
        metrics=[loss.active_fraction_metric()],
    )
    history = model.fit(xb, yb, batch_size=80, epochs=6, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.85 * losses[0], losses
    after = _silhouette(model, x_test, y_test)
    assert after > before + 0.1, (before, after)
    fractions = history.history["active_triplet_fraction"]
    assert 0.0 <= fractions[-1] <= fractions[0] <= 1.0


# ------------------------------------------------------------------ issue 12: bad inputs
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("metric", METRICS)
def test_nan_embedding_gives_nan_loss(batch, mining, metric):
    x, y = batch
    bad = x.copy()
    bad[5, 2] = np.nan
    loss, frac = ours(mining, y, bad, 0.5, metric)
    assert np.isnan(loss) and np.isnan(frac)
    assert np.isnan(float(km.TripletLoss(mining=mining, distance_metric=metric)(y, bad)))


def test_nan_label_gives_nan_loss(batch):
    x, y = batch
    assert np.isnan(float(km.triplet_semihard_loss(np.where(y == 2, np.nan, y), x)))


@pytest.mark.parametrize("scale", [1e-25, 1e20, 1e30])
@pytest.mark.parametrize("mining", MININGS)
def test_huge_and_tiny_embeddings(batch, scale, mining):
    x, y = batch
    got, _ = ours(mining, y, x * np.float32(scale), margin=0.5 * scale)
    want = reference(mining, y, x.astype("float64") * scale, 0.5 * scale)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_margin_is_bounded_for_float32():
    with pytest.raises(ValueError, match="margin.*float32"):
        km.TripletLoss(margin=1e39)
    with pytest.raises(ValueError, match="margin"):
        km.triplet_semihard_loss(np.zeros(2), np.zeros((2, 2), "float32"), margin=1e39)
    assert km.TripletHardLoss(margin=1e38).margin == 1e38


@pytest.mark.parametrize(
    "labels, emb, match",
    [
        (np.zeros(5), np.zeros((4, 3)), "batch size"),
        (np.zeros((4, 2)), np.zeros((4, 3)), "y_true"),
        (np.zeros(4), np.zeros((4, 3, 2)), "y_pred"),
        (np.zeros(4), np.zeros(4), "y_pred"),
    ],
)
@pytest.mark.parametrize("mining", MININGS)
def test_shape_mismatches_name_the_argument(labels, emb, match, mining):
    with pytest.raises(ValueError, match=match):
        km.triplet_loss(labels, emb.astype("float32"), mining=mining)
    with pytest.raises(ValueError, match=match):
        km.TripletLoss(mining=mining)(labels, emb.astype("float32"))


def test_string_labels_are_a_type_error():
    with pytest.raises(TypeError, match="y_true"):
        km.triplet_semihard_loss(np.array(["a", "b"]), np.zeros((2, 2), "float32"))


@pytest.mark.parametrize("mining", MININGS)
def test_empty_batch_gives_zero(mining):
    y, x = np.zeros((0,), "int32"), np.zeros((0, 4), "float32")
    loss, frac = ours(mining, y, x)
    assert loss == 0.0 and frac == 0.0
    assert float(km.TripletLoss(mining=mining)(y, x)) == 0.0


def test_empty_batch_in_a_traced_function_gives_zero():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a dynamic batch size: TensorFlow")
    import tensorflow as tf

    f = tf.function(
        lambda y, x: km.TripletSemiHardLoss()(y, x),
        input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 4], tf.float32)],
    )
    assert float(f(np.zeros((0,), "int32"), np.zeros((0, 4), "float32"))) == 0.0


# ------------------------------------------------------------------ issue 15: tfa compatibility
def test_margin_as_tensor_and_variable(batch):
    x, y = batch
    m = keras.Variable(0.3, dtype="float32")
    loss = km.TripletSemiHardLoss(m)
    np.testing.assert_allclose(float(loss(y, x)), ref_semihard(y, x, 0.3)[0], rtol=2e-5)
    m.assign(0.8)  # a margin schedule
    np.testing.assert_allclose(float(loss(y, x)), ref_semihard(y, x, 0.8)[0], rtol=2e-5)
    assert loss.get_config()["margin"] == pytest.approx(0.8)
    t = keras.ops.convert_to_tensor(0.4)
    np.testing.assert_allclose(
        float(km.triplet_hard_loss(y, x, margin=t)), ref_hard(y, x, 0.4)[0], rtol=2e-5
    )
    m.assign(float("nan"))  # not checkable under tracing: NaN, not a plausible number
    assert np.isnan(float(loss(y, x)))


def test_margin_tensor_must_be_a_scalar():
    with pytest.raises(ValueError, match="margin"):
        km.TripletLoss(margin=keras.ops.ones((2,)))
    with pytest.raises(ValueError, match="margin"):
        km.TripletLoss(margin=np.array([0.5]))


@pytest.mark.parametrize(
    "reduction", ["sum", "sum_over_batch_size", "mean", "mean_with_sample_weight", "none", None]
)
@pytest.mark.parametrize("cls", [km.TripletSemiHardLoss, km.TripletHardLoss])
def test_reduction_gives_the_batch_loss(batch, cls, reduction):
    """As tensorflow-addons: the batch loss whatever the reduction (old code: sum gave B x)."""
    x, y = batch
    want = float(
        km.triplet_loss(y, x, mining="semi-hard" if cls is km.TripletSemiHardLoss else "hard")
    )
    got = cls(reduction=reduction)(y, x)
    assert tuple(got.shape) == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_positional_order_is_tfas(batch):
    x, y = batch
    loss = km.TripletSemiHardLoss(0.4, "squared-L2", "my_name")
    assert (loss.margin, loss.distance_metric, loss.name) == (0.4, "squared-L2", "my_name")
    loss = km.TripletHardLoss(0.4, True, "angular", "hard_name")
    assert (loss.margin, loss.soft, loss.distance_metric, loss.name) == (
        0.4,
        True,
        "angular",
        "hard_name",
    )


def test_functions_are_registered():
    for fn in (km.triplet_loss, km.triplet_semihard_loss, km.triplet_hard_loss):
        name = f"keras_margins>{fn.__name__}"
        assert keras.saving.get_registered_object(name) is fn
        assert keras.saving.get_registered_name(fn) == name


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="a variable read at run time by a compiled step: TensorFlow",
)
def test_margin_schedule_under_compiled_fit(batch):
    x, y = batch
    m = keras.Variable(0.2, dtype="float32", trainable=False)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=km.TripletSemiHardLoss(m), jit_compile=True)
    model.fit(x, y, batch_size=24, epochs=1, verbose=0)
    for value in (0.2, 0.9):
        m.assign(value)
        emb = model.predict(x, verbose=0)
        got = float(model.evaluate(x, y, batch_size=24, verbose=0))
        np.testing.assert_allclose(got, ref_semihard(y, emb, value)[0], rtol=1e-4)


def test_terminate_on_nan_fires_for_nan_embeddings(batch):
    """Old code: the safe square root turned NaN distances into 0 and the fit went on."""
    x, y = batch
    x = np.concatenate([x] * 3)
    y = np.concatenate([y] * 3)
    x[30, 0] = np.nan  # one bad sample in the second batch
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer="sgd", loss=km.TripletSemiHardLoss())
    history = model.fit(
        x,
        y,
        batch_size=24,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert model.stop_training and len(history.history["loss"]) == 1
