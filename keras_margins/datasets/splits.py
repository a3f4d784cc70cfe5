"""The containers every loader returns and the open-set split.

:class:`Dataset` (closed set: train and test share the labels), :class:`OpenSetSplit` (the test
classes never appear in training), :func:`open_set_split`, and :func:`as_images`, the image
layout of every loader: float32 ``(N, H, W, 1)``, or ``(N, H * W)`` with ``flat=True``.
"""

import dataclasses

import numpy as np

from keras_margins._validation import check_int

__all__ = ["Dataset", "OpenSetSplit", "open_set_split"]


@dataclasses.dataclass(eq=False)
class Dataset:
    """A closed-set dataset: train and test share one label space.

    Unpacks like Keras's loaders: ``(x_train, y_train), (x_test, y_test) = dataset``.

    Attributes:
        x_train, y_train, x_test, y_test: float32 images in ``[0, 1]`` and int32 labels.
        source: Where the data came from (``"keras"``, ``"debian"``, ``"digits"``).
        class_names: Name of each label.
        info: Details (for a fallback: why each earlier source failed).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    class_names: tuple = ()
    info: dict = dataclasses.field(default_factory=dict)

    def __iter__(self):
        return iter(((self.x_train, self.y_train), (self.x_test, self.y_test)))

    @property
    def num_classes(self):
        return len(self.class_names)

    def open_set(self, num_held_out, seed=0):
        """Pool train and test, then hold out ``num_held_out`` whole classes.

        See `open_set_split`.
        """
        x = np.concatenate([self.x_train, self.x_test])
        y = np.concatenate([self.y_train, self.y_test])
        split = open_set_split(x, y, num_held_out, seed=seed, class_names=self.class_names)
        split.source = self.source
        return split


@dataclasses.dataclass(eq=False)
class OpenSetSplit:
    """An open-set split: the test classes (identities) never appear in training.

    Labels are renumbered ``0..n-1`` on each side; ``train_classes[y_train]`` and
    ``test_classes[y_test]`` give back the original class ids. Unpacks like `Dataset`.

    Attributes:
        x_train, y_train: Samples of the training classes, labels in ``[0, num_train_classes)``.
        x_test, y_test: Samples of the held-out classes, labels in ``[0, num_test_classes)``.
        train_classes, test_classes: Original class ids, disjoint, sorted.
        train_names, test_names: Their names (empty if none were given).
        source: Where the data came from.
        info: Details (for the glyphs: fonts, font of each sample, timing, cache file).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_classes: np.ndarray
    test_classes: np.ndarray
    train_names: tuple = ()
    test_names: tuple = ()
    source: str = ""
    info: dict = dataclasses.field(default_factory=dict)

    def __iter__(self):
        return iter(((self.x_train, self.y_train), (self.x_test, self.y_test)))

    @property
    def num_train_classes(self):
        return len(self.train_classes)

    @property
    def num_test_classes(self):
        return len(self.test_classes)


def as_images(x, flat):
    x = np.asarray(x, dtype=np.float32)
    if flat:
        return x.reshape(len(x), -1)
    return x.reshape(*x.shape[:3], 1)


def open_set_split(x, y, num_held_out, seed=0, class_names=None):
    """Hold out whole classes: train on some classes, verify on classes never seen.

    The held-out classes are drawn at random (seeded) among the classes present in ``y``; every
    sample of a held-out class goes to the test side, every other sample to the training side.

    Args:
        x: Samples, first axis aligned with ``y``.
        y: Integer class labels, shape ``(N,)``.
        num_held_out: Number of held-out classes, in ``[1, num_classes - 1]``.
        seed: Seed of the choice of classes. Defaults to ``0``.
        class_names: Names indexed by the labels of ``y``. Defaults to ``None``.

    Returns:
        An `OpenSetSplit` with labels renumbered ``0..n-1`` on each side.

    Examples:

        >>> import numpy as np
        >>> x, y = np.arange(12.0).reshape(6, 2), np.array([0, 0, 1, 1, 2, 2])
        >>> split = open_set_split(x, y, num_held_out=1, seed=0)
        >>> len(set(split.train_classes) & set(split.test_classes))
        0
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`y` must be a 1-D array of integer labels. Received: y with dtype "
            f"{y.dtype} and shape {y.shape}"
        )
    if len(x) != len(y):
        raise ValueError(f"`x` and `y` must have the same length. Received: {len(x)} and {len(y)}")
    classes = np.unique(y)
    num_held_out = check_int("num_held_out", num_held_out, 1, max(1, len(classes) - 1))
    if len(classes) < 2:
        raise ValueError(f"`y` must hold at least 2 classes. Received: {len(classes)} class")
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    test_classes = np.sort(rng.permutation(classes)[:num_held_out])
    train_classes = np.setdiff1d(classes, test_classes)
    is_test = np.isin(y, test_classes)
    names = tuple(class_names) if class_names is not None else None
    return OpenSetSplit(
        x_train=np.asarray(x)[~is_test],
        y_train=np.searchsorted(train_classes, y[~is_test]).astype(np.int32),
        x_test=np.asarray(x)[is_test],
        y_test=np.searchsorted(test_classes, y[is_test]).astype(np.int32),
        train_classes=train_classes,
        test_classes=test_classes,
        train_names=tuple(names[c] for c in train_classes) if names else (),
        test_names=tuple(names[c] for c in test_classes) if names else (),
    )
