"""PKSampler: class counts per batch, seeding, small classes, tf.data, training with it."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.sampler import PKSampler
from tests.helpers import load_digits_split


def _counts(labels, batch):
    return dict(zip(*np.unique(labels[batch], return_counts=True)))


def test_each_batch_has_p_classes_with_k_samples():
    labels = np.repeat(np.arange(12), 7)
    s = PKSampler(labels, p=5, k=4, seed=0)
    for _ in range(50):
        batch = s.batch_indices()
        assert batch.shape == (20,)
        counts = _counts(labels, batch)
        assert len(counts) == 5 and set(counts.values()) == {4}
        assert len(set(batch.tolist())) == 20  # no duplicates when every class has >= K


def test_seeded_and_reproducible():
    labels = np.repeat(np.arange(6), 5)
    a = [PKSampler(labels, 3, 2, seed=1).batch_indices() for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    s = PKSampler(labels, 3, 2, seed=1)
    assert not all(np.array_equal(s.batch_indices(), s.batch_indices()) for _ in range(5))


def test_small_classes_replace_uses_all_then_duplicates():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 2])  # class 0 has 2 < K, class 2 has 1 sample
    s = PKSampler(labels, p=2, k=4, seed=0)
    assert 2 not in s.classes
    for _ in range(20):
        batch = s.batch_indices()
        assert set(_counts(labels, batch).values()) == {4}
        if 0 in labels[batch]:
            assert {0, 1} <= set(batch.tolist())  # both samples of class 0 are in


def test_small_classes_drop():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    s = PKSampler(labels, p=2, k=4, small_classes="drop", seed=0)
    assert s.classes.tolist() == [1, 2]
    with pytest.raises(ValueError, match="`p`"):
        PKSampler(labels, p=3, k=4, small_classes="drop")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"p": 0}, "p"),
        ({"k": 1}, "k"),
        ({"small_classes": "pad"}, "small_classes"),
        ({"p": 2.0}, "p"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PKSampler(np.repeat(np.arange(4), 4), **kwargs)


def test_dataset_trains_a_triplet_model():
    x_train, x_test, y_train, y_test = load_digits_split()
    s = PKSampler(y_train, p=10, k=8, seed=0)
    ds = s.dataset(x_train, num_batches=20)
    xb, yb = next(iter(ds))
    assert xb.shape == (80, 64) and set(_counts(yb.numpy(), np.arange(80)).values()) == {8}
    np.testing.assert_array_equal(
        yb.numpy(), y_train[[int(np.flatnonzero((x_train == r).all(1))[0]) for r in xb.numpy()]]
    )
    epochs = [np.concatenate([b[1].numpy() for b in ds]) for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])  # a new draw each epoch
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(8),
            keras.layers.UnitNormalization(),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=km.TripletSemiHardLoss(margin=0.5))
    hist = model.fit(ds, epochs=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        (np.repeat(np.arange(4), 4), {"seed": -1}, "`seed` must be >= 0. Received: seed=-1"),
        (np.repeat(np.arange(4), 4), {"seed": 1.5}, "`seed` must be an integer"),
        (np.array([0, 0, 1, 1, np.nan, np.nan]), {"p": 2, "k": 2}, "`labels`.*NaN"),
        (np.array([0, 0, 1, 1, 1.6, 1.6]), {"p": 2, "k": 2}, r"`labels`.*\[1\.6, 1\.6\]"),
        (np.zeros((8, 2)), {"p": 1, "k": 2}, r"`labels` must have shape \(N,\).*\(8, 2\)"),
        (np.array([]), {}, "`labels` must not be empty"),
    ],
)
def test_bad_labels_and_seed_raise_when_built(labels, kwargs, message):
    # Issue 12: seed=-1 was NumPy's "expected non-negative integer", NaN labels a KeyError
    # at the first batch, (N, 2) labels were silently flattened.
    with pytest.raises(ValueError, match=message):
        PKSampler(labels, **kwargs)


def test_dataset_checks_lengths_when_built():
    labels = np.repeat(np.arange(4), 3)
    s = PKSampler(labels, p=2, k=2, seed=0)
    with pytest.raises(ValueError, match=r"`x` must have one row per label.*\(12\).*\(11, 3\)"):
        s.dataset(np.zeros((11, 3)))
    with pytest.raises(ValueError, match=r"`y` must have one entry per label.*\(12\)"):
        s.dataset(np.zeros((12, 3)), y=np.arange(13))
    # Integer-valued float labels and (N, 1) labels are class ids.
    s = PKSampler(labels.astype("float32").reshape(-1, 1), p=2, k=2, seed=0)
    xb, yb = next(iter(s.dataset(np.arange(12.0)[:, None])))  # feature = row index
    np.testing.assert_array_equal(yb.numpy(), labels[xb.numpy()[:, 0].astype(int)])
    assert sorted(np.unique(yb.numpy(), return_counts=True)[1].tolist()) == [2, 2]
