"""P x K batches for online mining: P identities and K samples of each per batch."""

import numpy as np

from keras_margins._validation import check_choice, check_int

SMALL_CLASS_POLICIES = ("replace", "drop")


def _check_sampler_labels(labels):
    """Labels as a 1-D array: shape ``(N,)`` or ``(N, 1)``, no NaN, whole numbers if float."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(
            "`labels` must have shape (N,) or (N, 1): one class per sample (one-hot or "
            f"multi-label arrays are not class ids). Received: labels with shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError(f"`labels` must not be empty. Received: labels with shape {labels.shape}")
    if labels.dtype == object:
        raise ValueError(
            "`labels` must be an array of integers (or strings). Received: labels of dtype object"
        )
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if np.any(bad):
            raise ValueError(
                "`labels` must be class ids: integers, or floats with integer values (no NaN, "
                f"no 1.6). Received: labels with {int(np.sum(bad))} such values, e.g. "
                f"{labels[bad][:3].tolist()}"
            )
    return labels


class PKSampler:
    """Draws batches of ``P`` distinct classes with ``K`` samples each (``P * K`` per batch).

    Online triplet mining needs several samples of each identity in every batch (FaceNet used
    about 40 faces per identity; Hermans et al. use ``P = 32, K = 4``). Each batch draws ``P``
    classes uniformly without replacement, then ``K`` samples of each class without
    replacement. A class with fewer than ``K`` samples is handled by ``small_classes``:

    - ``"replace"`` (default): all its samples are used, and the batch is filled up to ``K``
      with samples of that class drawn again at random (so it contains duplicates);
    - ``"drop"``: the class is never drawn.

    Classes with a single sample are always dropped (they give no positive pair). Batches are
    a reproducible function of ``seed``; each pass over :meth:`dataset` (each epoch) continues
    the same random stream, so epochs differ from each other.

    Args:
        labels: Integer labels of the dataset, shape ``(N,)`` or ``(N, 1)`` (floats must have
            integer values; NaN, other shapes and non-integer floats are a ``ValueError``).
        p: Classes per batch, >= 1. Defaults to 8.
        k: Samples per class, >= 2. Defaults to 4.
        small_classes: ``"replace"`` or ``"drop"``. Defaults to ``"replace"``.
        seed: Seed of the random stream, an integer >= 0. Defaults to ``None`` (not
            reproducible).

    Examples:

        >>> import numpy as np
        >>> import keras_margins as km
        >>> labels = np.repeat(np.arange(10), 6)
        >>> sampler = km.PKSampler(labels, p=4, k=3, seed=0)
        >>> batch = sampler.batch_indices()
        >>> sorted(np.unique(labels[batch], return_counts=True)[1].tolist())
        [3, 3, 3, 3]

    Reference:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 1703.07737 (P x K batches).
    """

    def __init__(self, labels, p=8, k=4, small_classes="replace", seed=None):
        self.labels = _check_sampler_labels(labels)
        self.p = check_int("p", p, minimum=1)
        self.k = check_int("k", k, minimum=2)
        self.small_classes = check_choice("small_classes", small_classes, SMALL_CLASS_POLICIES)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)
        classes, counts = np.unique(self.labels, return_counts=True)
        minimum = self.k if small_classes == "drop" else 2
        self.classes = classes[counts >= minimum]
        if len(self.classes) < self.p:
            raise ValueError(
                f"`p` must be <= the number of classes with at least {minimum} samples "
                f"({len(self.classes)}). Received: p={self.p}"
            )
        self._members = {c: np.flatnonzero(self.labels == c) for c in self.classes}
        self._rng = np.random.default_rng(seed)

    @property
    def batch_size(self):
        return self.p * self.k

    def batch_indices(self):
        """Indices into the dataset of one batch, shape ``(P * K,)``, grouped by class."""
        out = []
        for c in self._rng.choice(self.classes, self.p, replace=False):
            members = self._members[c]
            if len(members) >= self.k:
                out.append(self._rng.choice(members, self.k, replace=False))
            else:
                extra = self._rng.choice(members, self.k - len(members), replace=True)
                out.append(np.concatenate([self._rng.permutation(members), extra]))
        return np.concatenate(out)

    def steps_per_epoch(self):
        """``N // (P * K)`` batches, about one pass over the data (at least 1)."""
        return max(1, len(self.labels) // self.batch_size)

    def dataset(self, x, y=None, num_batches=None):
        """A ``tf.data.Dataset`` of ``(x_batch, y_batch)`` P x K batches.

        Args:
            x: Features, an array indexable along its first axis (``N`` rows, one per label:
                a different length is a ``ValueError``).
            y: Labels to return, ``N`` of them. Defaults to ``None``: the sampler's labels.
            num_batches: Batches per pass. Defaults to ``None``: :meth:`steps_per_epoch`.

        Returns:
            A finite dataset of ``num_batches`` batches; iterating it again (next epoch) draws
            new batches from the same seeded stream.
        """
        import tensorflow as tf

        x = np.asarray(x)
        n = len(self.labels)
        if x.ndim == 0 or x.shape[0] != n:
            raise ValueError(
                f"`x` must have one row per label of the sampler ({n}). Received: x with shape "
                f"{x.shape}"
            )
        if y is None:
            y = self.labels
        else:
            y = np.asarray(y)
            if y.ndim == 0 or y.shape[0] != n:
                raise ValueError(
                    f"`y` must have one entry per label of the sampler ({n}). Received: y with "
                    f"shape {y.shape}"
                )
        n = (
            self.steps_per_epoch()
            if num_batches is None
            else check_int("num_batches", num_batches, minimum=1)
        )

        def indices():
            for _ in range(n):
                yield self.batch_indices()

        # The generator's length is known: say so, or Keras warns that the input "ran out of
        # data" at the end of every epoch.
        idx = tf.data.Dataset.from_generator(
            indices, output_signature=tf.TensorSpec((self.batch_size,), tf.int64)
        ).apply(tf.data.experimental.assert_cardinality(n))
        xt, yt = tf.constant(x), tf.constant(y)
        return idx.map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)))
