"""Keras callbacks: evaluate an embedding model on held-out identities during ``fit``."""

import numbers
import re
import warnings

import keras
import numpy as np

from keras_margins._validation import check_choice, check_float, check_int
from keras_margins.evaluation._common import METRICS
from keras_margins.evaluation.retrieval import match_f1_sweep, retrieval_metrics
from keras_margins.evaluation.verification import (
    evaluate_verification,
    generate_pairs,
)

_TASKS = ("verification", "retrieval", "match_f1")


def _log_key(prefix, name):
    """A Keras/TensorBoard-safe log name: ``tar@far=1e-03`` -> ``tar_at_far_1e-03``."""
    name = name.replace("@", "_at_").replace("=", "_")
    return prefix + re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def _is_array(x):
    return isinstance(x, np.ndarray) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "element_spec")
    )


def _is_tf_dataset(x):
    return hasattr(x, "element_spec") and hasattr(x, "__iter__")


def _is_sequence_dataset(x):
    """A ``keras.utils.PyDataset`` (or legacy ``Sequence``): batches by index."""
    return (
        hasattr(x, "__getitem__")
        and (hasattr(x, "num_batches") or hasattr(x, "__len__"))
        and not isinstance(x, (list, tuple, dict, str, bytes))
        and not _is_array(x)
    )


def _labels_of_batch(name, labels):
    """Class labels of one batch as a 1-D array; strict one-hot rows become indices."""
    labels = keras.ops.convert_to_numpy(labels) if not isinstance(labels, np.ndarray) else labels
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and np.issubdtype(labels.dtype, np.number):
        one_hot = np.all((labels == 0) | (labels == 1), axis=1) & (labels.sum(axis=1) == 1)
        if not np.all(one_hot):
            raise ValueError(
                f"`{name}` must yield one class label per sample (shape (batch,)) or one-hot rows. "
                f"Received: labels of shape {labels.shape} that are not one-hot"
            )
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1:
        raise ValueError(
            f"`{name}` must yield one class label per sample (shape (batch,)). "
            f"Received: labels of shape {labels.shape}"
        )
    return labels


class _Source:
    """Held-out data: in-memory arrays, or batches streamed from a dataset or generator."""

    def __init__(self, name, x, y, y_name):
        self.name = name
        self.y_name = y_name
        self.kind = None
        self.y = None
        if isinstance(x, (list, tuple)) and x and all(_is_array(t) for t in x):
            self.kind = "arrays"
        elif _is_array(x):
            self.kind = "arrays"
        elif _is_tf_dataset(x):
            self.kind = "tf_data"
        elif _is_sequence_dataset(x):
            self.kind = "py_dataset"
        elif callable(x):
            self.kind = "callable"
        elif hasattr(x, "__next__") or hasattr(x, "send"):
            raise ValueError(
                f"`{name}` is a one-shot generator/iterator, which can be read only once, but "
                "the evaluation runs every few epochs. Pass the generator function instead "
                f"(e.g. `{name}=make_batches` rather than `make_batches()`), a "
                f"`keras.utils.PyDataset` or a `tf.data.Dataset`. Received: {name}={x!r}"
            )
        else:
            raise ValueError(
                f"`{name}` must be a NumPy array (or a list of arrays for a multi-input model), "
                "a batched `tf.data.Dataset`, a `keras.utils.PyDataset`, or a function returning "
                f"an iterator of batches. Received: {name} of type {type(x).__name__}"
            )
        self.x = x
        if self.kind == "arrays":
            if y is None:
                raise ValueError(
                    f"`{y_name}` is required when `{name}` is an array. Received: None"
                )
            self.y = np.asarray(y).reshape(-1) if np.ndim(y) <= 1 else _labels_of_batch(y_name, y)
            n = self.num_samples()
            if self.y.shape[0] != n:
                raise ValueError(
                    f"`{y_name}` must have one label per sample of `{name}` ({n}). "
                    f"Received: {y_name} with {self.y.shape[0]} labels"
                )
            return
        self.yields_labels = None
        if self.kind == "tf_data":
            spec = x.element_spec
            self.yields_labels = isinstance(spec, (tuple, list)) and len(spec) >= 2
            if self.yields_labels and y is not None:
                raise ValueError(
                    f"`{name}` yields (inputs, labels) tuples, so `{y_name}` must be None. "
                    f"Received: {y_name} with {np.size(y)} entries"
                )
            if not self.yields_labels and y is None:
                raise ValueError(
                    f"`{name}` yields inputs only: give their labels in `{y_name}`, or make it "
                    f"yield (inputs, labels). Received: {y_name}=None"
                )
        if y is not None:
            self.y = np.asarray(y).reshape(-1) if np.ndim(y) <= 1 else _labels_of_batch(y_name, y)
            self.yields_labels = False

    def num_samples(self):
        first = self.x[0] if isinstance(self.x, (list, tuple)) else self.x
        return int(np.shape(first)[0])

    def num_batches(self, batch_size):
        if self.kind == "arrays":
            return -(-self.num_samples() // batch_size)
        if self.kind == "tf_data":
            n = int(self.x.cardinality())
            return n if n >= 0 else None
        if self.kind == "py_dataset":
            n = getattr(self.x, "num_batches", None)
            if n is None and hasattr(self.x, "__len__"):
                n = len(self.x)
            return n
        return None

    def _elements(self, batch_size):
        if self.kind == "arrays":
            for start in range(0, self.num_samples(), batch_size):
                if isinstance(self.x, (list, tuple)):
                    yield [np.asarray(t)[start : start + batch_size] for t in self.x]
                else:
                    yield np.asarray(self.x)[start : start + batch_size]
        elif self.kind == "tf_data":
            yield from self.x
        elif self.kind == "py_dataset":
            n = self.num_batches(batch_size)
            if n is None:
                raise ValueError(
                    f"`{self.name}` must be a finite PyDataset (with `num_batches` or `__len__`)."
                )
            for i in range(n):
                yield self.x[i]
        else:
            batches = self.x()
            if batches is None or not hasattr(batches, "__iter__"):
                raise ValueError(
                    f"`{self.name}` must return an iterator of batches when called. "
                    f"Received: {batches!r}"
                )
            yield from batches

    def batches(self, batch_size):
        """Yield ``(inputs, labels_or_None)`` per batch."""
        for element in self._elements(batch_size):
            if self.kind == "arrays":
                yield element, None
                continue
            if isinstance(element, (tuple, list)) and len(element) >= 2:
                if self.y is not None:
                    raise ValueError(
                        f"`{self.name}` yields (inputs, labels) tuples, so `{self.y_name}` must "
                        "be None."
                    )
                yield element[0], _labels_of_batch(self.name, element[1])
            else:
                if isinstance(element, (tuple, list)):
                    element = element[0]
                if self.y is None:
                    raise ValueError(
                        f"`{self.name}` yields inputs only: give their labels in "
                        f"`{self.y_name}`, or make it yield (inputs, labels)."
                    )
                yield element, None


def _check_ks(ks):
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"`ks` must be a sequence of positive integers. Received: ks={ks!r}")
    ks = tuple(ks)
    if not ks:
        raise ValueError(f"`ks` must not be empty. Received: ks={ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"`ks` must hold positive integers. Received: ks={ks!r}")
    return tuple(int(k) for k in ks)


def _check_far_targets(far_targets):
    if isinstance(far_targets, (str, bytes)) or not hasattr(far_targets, "__iter__"):
        raise ValueError(
            f"`far_targets` must be a sequence of FARs in (0, 1). Received: "
            f"far_targets={far_targets!r}"
        )
    far_targets = tuple(far_targets)
    if not far_targets:
        raise ValueError(f"`far_targets` must not be empty. Received: far_targets={far_targets!r}")
    for f in far_targets:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 < float(f) < 1.0:
            raise ValueError(
                f"`far_targets` must hold FARs in (0, 1). Received: far_targets={far_targets!r}"
            )
    return tuple(float(f) for f in far_targets)


def _inter_class_cosine(emb, labels):
    """Mean cosine similarity over all pairs of samples of different classes (exact, O(N D))."""
    x = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    total = x.sum(axis=0)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.size < 2:
        return None
    per_class = np.zeros((counts.size, x.shape[1]))
    np.add.at(per_class, inverse, x)
    n = x.shape[0]
    pairs = float(n) ** 2 - float(np.sum(counts.astype(np.float64) ** 2))
    return float((total @ total - np.sum(per_class * per_class)) / pairs)


class EmbeddingEvaluation(keras.callbacks.Callback):
    """Evaluate embeddings of held-out data every ``every_n_epochs`` epochs, into ``logs``.

    With ``task="verification"``, balanced genuine/impostor pairs are drawn once (seeded) from
    the labels with :func:`keras_margins.generate_pairs`, and each evaluation reports the
    LFW-protocol k-fold accuracy (mean and std), AUC, EER and TAR at the FARs the number of
    impostor pairs resolves (:func:`keras_margins.evaluate_verification`). With
    ``task="retrieval"``, ``x`` are queries searched against the gallery (or against
    themselves, leaving each query out) and the callback reports precision@1, recall@k, MAP@R
    and MAP@5 (:func:`keras_margins.retrieval_metrics`; with ``new_label``/``new_threshold``
    the Happywhale MAP@5 with a "new individual" guess). With ``task="match_f1"``, every
    sample's predicted match set is the samples within a cosine threshold (itself included),
    and the callback reports the best mean row-wise F1 over the threshold sweep and the
    threshold that reaches it (:func:`keras_margins.match_f1_sweep`, the Shopee metric).

    The held-out data can be in-memory arrays ``x``/``y`` or streamed, so a validation fold of
    full-size images need not fit in memory: a batched ``tf.data.Dataset`` yielding inputs, or
    ``(inputs, labels)`` / ``(inputs, labels, ...)`` tuples (e.g. from
    ``keras.utils.image_dataset_from_directory``), a ``keras.utils.PyDataset``, or a function
    that returns a fresh iterator of such batches (a generator function). Batches are embedded
    one at a time and only the embeddings and labels are kept. A tuple element is read as
    ``(inputs, labels, ...)`` as in ``model.fit``, so a multi-input model takes
    ``((x1, x2), labels)``. One-hot label rows are turned into class indices. With
    verification, a stream must yield its samples in the same order every epoch (do not
    shuffle it): the pairs are indices into that order.

    The numbers are written into the epoch's ``logs`` as ``{prefix}{name}``, e.g.
    ``val_verification_accuracy``, ``val_verification_tar_at_far_1e-02``,
    ``val_retrieval_map_at_r`` or ``val_match_f1_best_f1``, so ``History``, ``TensorBoard``,
    ``EarlyStopping`` and ``ModelCheckpoint`` see them. Put this callback **before** those in
    the ``callbacks`` list (Keras calls callbacks in order), and give
    ``EarlyStopping``/``ModelCheckpoint`` an explicit ``mode="max"`` (``"min"`` for EER):
    Keras cannot infer the direction of a metric it does not own. On epochs that are not
    evaluated nothing is written.

    Collapse check: when the mean cosine similarity between embeddings of *different* classes
    reaches ``collapse_threshold``, the embeddings carry almost no identity information (e.g. a
    backbone trained from scratch whose BatchNorm statistics lag, or a diverging run) and a
    ``UserWarning`` says so. The value of each evaluation is kept in ``inter_class_cosine``.

    Args:
        x: Held-out inputs: an array (or a list of arrays for a multi-input model), a batched
            ``tf.data.Dataset``, a ``keras.utils.PyDataset`` or a function returning an
            iterator of batches (see above); typically identities never seen in training.
        y: Their identity labels, shape ``(num_samples,)``; ``None`` when ``x`` yields
            ``(inputs, labels)``. Defaults to ``None``.
        embedding_model: The model mapping ``x`` to embeddings (the second output of
            :func:`keras_margins.build_models`). Defaults to ``None``: the model being trained.
        task: ``"verification"``, ``"retrieval"`` or ``"match_f1"``. Defaults to
            ``"verification"``.
        every_n_epochs: Evaluate at the end of epochs ``n, 2n, ...``. Defaults to ``1``.
        num_pairs: Verification pairs to draw (half genuine). Defaults to ``6000``.
        seed: Seed of the pair sampler. Defaults to ``0``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        n_folds: Folds of the verification accuracy protocol. Defaults to ``10``.
        far_targets: FARs in ``(0, 1)`` for TAR@FAR (unresolvable ones are skipped).
            Defaults to ``(1e-1, 1e-2, 1e-3)``.
        gallery_x: Retrieval/match gallery inputs (same kinds as ``x``). Defaults to ``None``
            (search ``x`` against itself).
        gallery_y: Retrieval gallery labels (``None`` when ``gallery_x`` yields labels).
            Defaults to ``None``.
        ks: Positive integer cut-offs of recall@k for retrieval. Defaults to ``(1, 5)``.
        prefix: Prefix of the log names, a string. Defaults to ``None``:
            ``"val_verification_"``, ``"val_retrieval_"`` or ``"val_match_f1_"``.
        batch_size: Batch size used to embed in-memory arrays (streams keep their own).
            Defaults to ``256``.
        verbose: ``0`` silent; ``1`` a progress bar over the embedding batches and a line with
            the metrics; ``"auto"`` the same as ``1`` only when evaluation takes at least
            ``50`` batches (of a known number). Defaults to ``"auto"``.
        new_label: Retrieval only: the "new individual" label of MAP@5; queries whose label is
            absent from the gallery are scored against it. Defaults to ``None``.
        new_threshold: Retrieval only: similarity (distance) below (above) which ``new_label``
            is inserted in the ranked predictions. Defaults to ``None``.
        thresholds: ``match_f1`` only: the thresholds swept. Defaults to ``None``: 101 values
            on ``[-1, 1]`` (cosine).
        collapse_threshold: Mean inter-class cosine in ``(0, 1]`` at which to warn, or
            ``None`` to disable the check. Defaults to ``0.95``.

    Attributes:
        reports: ``{epoch: report}``, the full :class:`keras_margins.VerificationReport` (or
            retrieval dict, or ``match_f1_sweep`` dict) of each evaluated epoch.
        inter_class_cosine: ``{epoch: float}``, the collapse statistic of each evaluation.

    Examples:

        >>> import numpy as np, keras, keras_margins as km
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(64, 8)).astype("float32"), np.repeat(np.arange(8), 8)
        >>> backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        >>> train_model, embed_model = km.build_models(backbone, km.ArcFace(num_classes=8))
        >>> train_model.compile("adam",
        ...                     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> cb = km.EmbeddingEvaluation(x, y, embed_model, num_pairs=200, n_folds=5)
        >>> history = train_model.fit([x, y], y, epochs=1, callbacks=[cb], verbose=0)
        >>> "val_verification_auc" in history.history
        True
    """

    def __init__(
        self,
        x,
        y=None,
        embedding_model=None,
        task="verification",
        every_n_epochs=1,
        num_pairs=6000,
        seed=0,
        metric="cosine",
        n_folds=10,
        far_targets=(1e-1, 1e-2, 1e-3),
        gallery_x=None,
        gallery_y=None,
        ks=(1, 5),
        prefix=None,
        batch_size=256,
        verbose="auto",
        new_label=None,
        new_threshold=None,
        thresholds=None,
        collapse_threshold=0.95,
    ):
        super().__init__()
        self.task = check_choice("task", task, _TASKS)
        self.metric = check_choice("metric", metric, METRICS)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.num_pairs = check_int("num_pairs", num_pairs, minimum=2)
        self.seed = check_int("seed", seed, minimum=0)
        self.n_folds = check_int("n_folds", n_folds, minimum=2)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if isinstance(verbose, bool) or verbose not in (0, 1, "auto"):
            raise ValueError(
                f"`verbose` must be one of [0, 1, 'auto']. Received: verbose={verbose!r}"
            )
        self.verbose = verbose
        if embedding_model is not None and not isinstance(embedding_model, keras.Model):
            raise ValueError(
                "`embedding_model` must be a Keras model or None. "
                f"Received: embedding_model={embedding_model!r}"
            )
        self.embedding_model = embedding_model
        self.far_targets = _check_far_targets(far_targets)
        self.ks = _check_ks(ks)
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError(f"`prefix` must be a string or None. Received: prefix={prefix!r}")
        self.prefix = prefix if prefix is not None else f"val_{task}_"
        if new_threshold is not None:
            new_threshold = check_float("new_threshold", new_threshold)
            if new_label is None:
                raise ValueError("`new_label` is required with `new_threshold`. Received: None")
        if (new_label is not None or new_threshold is not None) and task != "retrieval":
            raise ValueError(
                "`new_label` and `new_threshold` are only used with task='retrieval'. "
                f"Received: task={task!r}"
            )
        self.new_label = new_label
        self.new_threshold = new_threshold
        if thresholds is not None:
            if task != "match_f1":
                raise ValueError(
                    f"`thresholds` is only used with task='match_f1'. Received: task={task!r}"
                )
            t = np.asarray(thresholds)
            if (
                t.ndim != 1
                or t.size == 0
                or not np.issubdtype(t.dtype, np.number)
                or not np.all(np.isfinite(t))
            ):
                raise ValueError(
                    "`thresholds` must be a non-empty 1-D array of finite numbers. "
                    f"Received: thresholds={thresholds!r}"
                )
            thresholds = t.astype(np.float64)
        self.thresholds = thresholds
        if collapse_threshold is not None:
            collapse_threshold = check_float(
                "collapse_threshold", collapse_threshold, 0.0, 1.0, low_open=True
            )
        self.collapse_threshold = collapse_threshold
        self._source = _Source("x", x, y, "y")
        if (gallery_x is None) and (gallery_y is not None):
            raise ValueError(
                "`gallery_y` needs `gallery_x`. Received: gallery_x is None, gallery_y is not None"
            )
        if gallery_x is not None and task == "verification":
            raise ValueError(
                "`gallery_x` is only used with task='retrieval' or 'match_f1'. "
                "Received: task='verification'"
            )
        self._gallery = (
            None if gallery_x is None else _Source("gallery_x", gallery_x, gallery_y, "gallery_y")
        )
        if self._gallery is not None and self._gallery.kind == "arrays" and gallery_y is None:
            raise ValueError("`gallery_x` and `gallery_y` must be given together.")
        self.x = x
        self.y = self._source.y
        self.gallery_x = gallery_x
        self.gallery_y = None if self._gallery is None else self._gallery.y
        if self.task == "retrieval" and self._source.y is not None:
            available = (
                self._source.y.shape[0] - 1
                if self._gallery is None
                else None
                if self._gallery.y is None
                else self._gallery.y.shape[0]
            )
            if available is not None and max(self.ks) > available:
                raise ValueError(
                    f"`ks` must not exceed the number of gallery items ({available}). "
                    f"Received: ks={self.ks}"
                )
        if self.task == "verification" and self.num_pairs < self.n_folds:
            raise ValueError(
                f"`n_folds` must be at most `num_pairs` ({self.num_pairs}). "
                f"Received: n_folds={self.n_folds}"
            )
        self.pairs = None
        if self.task == "verification" and self._source.y is not None:
            self.pairs = generate_pairs(self._source.y, num_pairs=self.num_pairs, seed=self.seed)
        self._stream_labels = None
        self.reports = {}
        self.inter_class_cosine = {}

    def _embed(self, model, source, progbar):
        out, labels = [], []
        for step, (inputs, batch_labels) in enumerate(source.batches(self.batch_size)):
            emb = model.predict_on_batch(inputs)
            emb = keras.ops.convert_to_numpy(emb).astype(np.float64, copy=False)
            if emb.ndim != 2:
                raise ValueError(
                    f"The embedding model must return (batch, dim) embeddings for `{source.name}`"
                    f" (is the dataset batched?). Received: shape {emb.shape}"
                )
            if batch_labels is not None and batch_labels.shape[0] != emb.shape[0]:
                raise ValueError(
                    f"`{source.name}` yields {batch_labels.shape[0]} labels for a batch of "
                    f"{emb.shape[0]} inputs."
                )
            out.append(emb)
            if batch_labels is not None:
                labels.append(batch_labels)
            if progbar is not None:
                progbar.update(step + 1)
        if not out:
            raise ValueError(f"`{source.name}` yielded no batches.")
        emb = np.concatenate(out, axis=0)
        if source.y is not None:
            y = source.y
            if y.shape[0] != emb.shape[0]:
                raise ValueError(
                    f"`{source.y_name}` must have one label per sample of `{source.name}` "
                    f"({emb.shape[0]}). Received: {source.y_name} with {y.shape[0]} labels"
                )
        else:
            y = np.concatenate(labels, axis=0)
        return emb, y

    def _verification_pairs(self, y):
        if self._source.y is not None:
            return self.pairs
        if self._stream_labels is None:
            self._stream_labels = y
            self.pairs = generate_pairs(y, num_pairs=self.num_pairs, seed=self.seed)
        elif y.shape != self._stream_labels.shape or not np.array_equal(y, self._stream_labels):
            raise ValueError(
                "`x` yielded its samples in a different order (or number) than at the first "
                "evaluation; verification pairs are drawn once, by position. Do not shuffle the "
                "validation dataset (or use task='retrieval', which does not depend on order)."
            )
        return self.pairs

    def evaluate(self, model=None):
        """Run the evaluation now and return ``(scalars, report)``."""
        if model is None:
            model = self.embedding_model if self.embedding_model is not None else self.model
        if model is None:
            raise ValueError("No model to evaluate: pass `embedding_model` or use inside fit().")
        n_batches = self._source.num_batches(self.batch_size)
        if self._gallery is not None and n_batches is not None:
            g_batches = self._gallery.num_batches(self.batch_size)
            n_batches = None if g_batches is None else n_batches + g_batches
        show = self.verbose == 1 or (
            self.verbose == "auto" and n_batches is not None and n_batches >= 50
        )
        progbar = keras.utils.Progbar(n_batches, unit_name="batch") if show else None
        emb, y = self._embed(model, self._source, progbar)
        gallery = gallery_y = None
        if self._gallery is not None:
            gallery, gallery_y = self._embed(model, self._gallery, None)
        finite = np.all(np.isfinite(emb))
        if gallery is not None:
            finite = finite and np.all(np.isfinite(gallery))
        if not finite:
            warnings.warn(
                "EmbeddingEvaluation: the model produced NaN or infinite embeddings; "
                "metrics are logged as NaN for this epoch.",
                stacklevel=2,
            )
            last = next(reversed(self.reports.values()), None) if self.reports else None
            names = self._scalar_names(last)
            return {name: float("nan") for name in names}, None
        self._last_collapse = None
        if self.collapse_threshold is not None:
            both = emb if gallery is None else np.concatenate([emb, gallery])
            both_y = (
                y
                if gallery is None
                else np.concatenate(
                    [np.asarray(y, dtype=object), np.asarray(gallery_y, dtype=object)]
                )
            )
            value = _inter_class_cosine(both, both_y)
            self._last_collapse = value
            if value is not None and value >= self.collapse_threshold:
                warnings.warn(
                    "EmbeddingEvaluation: the embeddings have collapsed: samples of different "
                    f"classes have a mean cosine similarity of {value:.4f} (>= "
                    f"collapse_threshold={self.collapse_threshold}), so they are nearly "
                    "identical and every metric is close to chance. Common causes: a backbone "
                    "trained from scratch whose BatchNorm moving statistics lag (lower "
                    "BatchNorm momentum, or train longer), too high a learning rate, or a "
                    "margin too large for the data.",
                    stacklevel=2,
                )
        if self.task == "verification":
            a, b, issame = self._verification_pairs(y)
            report = evaluate_verification(
                emb[a],
                emb[b],
                issame,
                metric=self.metric,
                n_folds=self.n_folds,
                far_targets=self.far_targets,
            )
            scalars = report.scalars()
        elif self.task == "retrieval":
            report = retrieval_metrics(
                emb,
                y,
                gallery,
                gallery_y,
                ks=self.ks,
                metric=self.metric,
                new_label=self.new_label,
                new_threshold=self.new_threshold,
            )
            scalars = dict(report)
        else:
            report = match_f1_sweep(
                emb, y, gallery, gallery_y, thresholds=self.thresholds, metric=self.metric
            )
            scalars = {"best_f1": report["best_f1"], "best_threshold": report["best_threshold"]}
        return scalars, report

    def _scalar_names(self, report):
        if report is None:
            return []
        if self.task == "verification":
            return list(report.scalars())
        if self.task == "match_f1":
            return ["best_f1", "best_threshold"]
        return list(report)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        scalars, report = self.evaluate()
        if report is not None:
            self.reports[epoch] = report
            if getattr(self, "_last_collapse", None) is not None:
                self.inter_class_cosine[epoch] = self._last_collapse
        values = {_log_key(self.prefix, k): float(v) for k, v in scalars.items()}
        if logs is not None:
            logs.update(values)
        if self.verbose == 1:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
            print(f"Epoch {epoch + 1} evaluation: {text}")


__all__ = ["EmbeddingEvaluation"]
