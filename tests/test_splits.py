"""keras_margins.datasets.splits: open-set splits and the Dataset container."""

import numpy as np
import pytest

from keras_margins import datasets


def test_open_set_split_disjoint_complete_and_seeded(rng):
    y = rng.integers(0, 12, size=600)
    x = np.arange(600)[:, None] * np.ones((1, 3))
    split = datasets.open_set_split(x, y, num_held_out=4, seed=7, class_names=list("abcdefghijkl"))
    assert len(split.test_classes) == 4 and len(split.train_classes) == 8
    assert not set(split.train_classes) & set(split.test_classes)
    # Every sample is on exactly one side, with its original label recoverable.
    ids = np.concatenate([split.x_train[:, 0], split.x_test[:, 0]]).astype(int)
    assert sorted(ids) == list(range(600))
    for xs, ys, classes in (
        (split.x_train, split.y_train, split.train_classes),
        (split.x_test, split.y_test, split.test_classes),
    ):
        np.testing.assert_array_equal(classes[ys], y[xs[:, 0].astype(int)])
    assert split.y_train.max() == 7 and split.y_test.max() == 3
    assert split.test_names == tuple("abcdefghijkl"[c] for c in split.test_classes)
    again = datasets.open_set_split(x, y, num_held_out=4, seed=7)
    np.testing.assert_array_equal(again.test_classes, split.test_classes)
    held = {tuple(datasets.open_set_split(x, y, 4, seed=s).test_classes) for s in range(10)}
    assert len(held) > 5  # different seeds, different held-out classes


def test_dataset_open_set_pools_train_and_test():
    data = datasets.load_digits()
    split = data.open_set(num_held_out=3, seed=1)
    assert split.source == "digits"
    assert len(split.x_train) + len(split.x_test) == 1797
    assert split.num_test_classes == 3 and split.num_train_classes == 7
    assert set(split.test_names) == {str(c) for c in split.test_classes}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_held_out": 0}, "num_held_out"),
        ({"num_held_out": 10}, "num_held_out"),
        ({"num_held_out": 2.0}, "num_held_out"),
        ({"num_held_out": 2, "seed": -1}, "seed"),
    ],
)
def test_open_set_split_bad_arguments(kwargs, name):
    y = np.arange(10).repeat(3)
    with pytest.raises(ValueError, match=f"`{name}`"):
        datasets.open_set_split(np.zeros((30, 2)), y, **kwargs)
