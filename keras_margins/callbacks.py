"""Keras callbacks: evaluate an embedding model on held-out identities during ``fit``."""

import re
import warnings

import keras
import numpy as np

from keras_margins._validation import check_choice, check_int
from keras_margins.evaluation.retrieval import METRICS, retrieval_metrics
from keras_margins.evaluation.verification import (
    evaluate_verification,
    generate_pairs,
)

_TASKS = ("verification", "retrieval")


def _log_key(prefix, name):
    """A Keras/TensorBoard-safe log name: ``tar@far=1e-03`` -> ``tar_at_far_1e-03``."""
    name = name.replace("@", "_at_").replace("=", "_")
    return prefix + re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


class EmbeddingEvaluation(keras.callbacks.Callback):
    """Evaluate embeddings of held-out data every ``every_n_epochs`` epochs, into ``logs``.

    With ``task="verification"``, balanced genuine/impostor pairs are drawn once (seeded) from
    ``(x, y)`` with :func:`keras_margins.generate_pairs`, and each evaluation reports the
    LFW-protocol k-fold accuracy (mean and std), AUC, EER and TAR at the FARs the number of
    impostor pairs resolves (:func:`keras_margins.evaluate_verification`). With
    ``task="retrieval"``, ``(x, y)`` are queries searched against ``(gallery_x, gallery_y)``
    (or against themselves, leaving each query out) and the callback reports precision@1,
    recall@k, MAP@R and MAP@5 (:func:`keras_margins.retrieval_metrics`).

    The numbers are written into the epoch's ``logs`` as ``{prefix}{name}``, e.g.
    ``val_verification_accuracy``, ``val_verification_tar_at_far_1e-02`` or
    ``val_retrieval_map_at_r``, so ``History``, ``TensorBoard``, ``EarlyStopping`` and
    ``ModelCheckpoint`` see them. Put this callback **before** those in the ``callbacks`` list
    (Keras calls callbacks in order), and give ``EarlyStopping``/``ModelCheckpoint`` an explicit
    ``mode="max"`` (``"min"`` for EER): Keras cannot infer the direction of a metric it does not
    own. On epochs that are not evaluated nothing is written.

    Args:
        x: Held-out inputs (NumPy array, or a list of arrays for a multi-input model), typically
            of identities never seen in training.
        y: Their identity labels, shape ``(num_samples,)``.
        embedding_model: The model mapping ``x`` to embeddings (the second output of
            :func:`keras_margins.build_models`). Defaults to ``None``: the model being trained.
        task: ``"verification"`` or ``"retrieval"``. Defaults to ``"verification"``.
        every_n_epochs: Evaluate at the end of epochs ``n, 2n, ...``. Defaults to ``1``.
        num_pairs: Verification pairs to draw (half genuine). Defaults to ``6000``.
        seed: Seed of the pair sampler. Defaults to ``0``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        n_folds: Folds of the verification accuracy protocol. Defaults to ``10``.
        far_targets: FARs for TAR@FAR (unresolvable ones are skipped). Defaults to
            ``(1e-1, 1e-2, 1e-3)``.
        gallery_x: Retrieval gallery inputs. Defaults to ``None`` (leave-one-out on ``x``).
        gallery_y: Retrieval gallery labels. Defaults to ``None``.
        ks: Cut-offs of recall@k for retrieval. Defaults to ``(1, 5)``.
        prefix: Prefix of the log names. Defaults to ``None``: ``"val_verification_"`` or
            ``"val_retrieval_"``.
        batch_size: Batch size used to compute embeddings. Defaults to ``256``.
        verbose: ``0`` silent; ``1`` a progress bar over the embedding batches and a line with
            the metrics; ``"auto"`` the same as ``1`` only when evaluation takes at least
            ``50`` batches. Defaults to ``"auto"``.

    Attributes:
        reports: ``{epoch: report}``, the full :class:`keras_margins.VerificationReport` (or
            retrieval dict) of each evaluated epoch, e.g. for plotting the ROC afterwards.

    Examples:

        >>> import numpy as np, keras, keras_margins as km
        >>> from keras_margins.callbacks import EmbeddingEvaluation
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(64, 8)).astype("float32"), np.repeat(np.arange(8), 8)
        >>> backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        >>> train_model, embed_model = km.build_models(backbone, km.ArcFace(num_classes=8))
        >>> train_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> cb = EmbeddingEvaluation(x, y, embed_model, num_pairs=200, n_folds=5)
        >>> history = train_model.fit([x, y], y, epochs=1, callbacks=[cb], verbose=0)
        >>> "val_verification_auc" in history.history
        True
    """

    def __init__(
        self,
        x,
        y,
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
    ):
        super().__init__()
        self.task = check_choice("task", task, _TASKS)
        self.metric = check_choice("metric", metric, METRICS)
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs, minimum=1)
        self.num_pairs = check_int("num_pairs", num_pairs, minimum=2)
        self.seed = check_int("seed", seed, minimum=0)
        self.n_folds = check_int("n_folds", n_folds, minimum=2)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.verbose = check_choice("verbose", verbose, (0, 1, "auto"))
        if embedding_model is not None and not isinstance(embedding_model, keras.Model):
            raise ValueError(
                "`embedding_model` must be a Keras model or None. "
                f"Received: embedding_model={embedding_model!r}"
            )
        self.embedding_model = embedding_model
        self.far_targets = tuple(float(f) for f in far_targets)
        self.ks = tuple(int(k) for k in ks)
        self.prefix = prefix if prefix is not None else f"val_{task}_"
        self.x = x
        self.y = np.asarray(y).reshape(-1)
        n = self._num_samples(x)
        if self.y.shape[0] != n:
            raise ValueError(
                f"`y` must have one label per sample of `x` ({n}). "
                f"Received: y with {self.y.shape[0]} labels"
            )
        if (gallery_x is None) != (gallery_y is None):
            raise ValueError(
                "`gallery_x` and `gallery_y` must be given together. Received: "
                f"gallery_x is None: {gallery_x is None}, gallery_y is None: {gallery_y is None}"
            )
        if gallery_x is not None and task != "retrieval":
            raise ValueError(
                "`gallery_x` is only used with task='retrieval'. Received: task='verification'"
            )
        self.gallery_x = gallery_x
        self.gallery_y = None if gallery_y is None else np.asarray(gallery_y).reshape(-1)
        if self.task == "verification":
            self.pairs = generate_pairs(self.y, num_pairs=self.num_pairs, seed=self.seed)
            if self.num_pairs < self.n_folds:
                raise ValueError(
                    f"`n_folds` must be at most `num_pairs` ({self.num_pairs}). "
                    f"Received: n_folds={self.n_folds}"
                )
        self.reports = {}

    @staticmethod
    def _num_samples(x):
        first = x[0] if isinstance(x, (list, tuple)) else x
        return int(np.shape(first)[0])

    @staticmethod
    def _slice(x, start, stop):
        if isinstance(x, (list, tuple)):
            return [np.asarray(t)[start:stop] for t in x]
        return np.asarray(x)[start:stop]

    def _embed(self, model, x, progbar):
        n = self._num_samples(x)
        out = []
        for step, start in enumerate(range(0, n, self.batch_size)):
            batch = self._slice(x, start, start + self.batch_size)
            emb = model.predict_on_batch(batch)
            out.append(keras.ops.convert_to_numpy(emb).astype(np.float64, copy=False))
            if progbar is not None:
                progbar.update(step + 1)
        return np.concatenate(out, axis=0)

    def evaluate(self, model=None):
        """Run the evaluation now and return ``(scalars, report)``."""
        if model is None:
            model = self.embedding_model if self.embedding_model is not None else self.model
        if model is None:
            raise ValueError("No model to evaluate: pass `embedding_model` or use inside fit().")
        n_batches = -(-self._num_samples(self.x) // self.batch_size)
        if self.gallery_x is not None:
            n_batches += -(-self._num_samples(self.gallery_x) // self.batch_size)
        show = self.verbose == 1 or (self.verbose == "auto" and n_batches >= 50)
        progbar = keras.utils.Progbar(n_batches, unit_name="batch") if show else None
        emb = self._embed(model, self.x, progbar)
        if not np.all(np.isfinite(emb)):
            warnings.warn(
                "EmbeddingEvaluation: the model produced NaN or infinite embeddings; "
                "metrics are logged as NaN for this epoch.",
                stacklevel=2,
            )
            last = next(reversed(self.reports.values()), None) if self.reports else None
            names = self._scalar_names(last)
            return {name: float("nan") for name in names}, None
        if self.task == "verification":
            a, b, issame = self.pairs
            report = evaluate_verification(
                emb[a], emb[b], issame, metric=self.metric, n_folds=self.n_folds,
                far_targets=self.far_targets,
            )
            scalars = report.scalars()
        else:
            gallery = None
            if self.gallery_x is not None:
                gallery = self._embed(model, self.gallery_x, None)
            report = retrieval_metrics(
                emb, self.y, gallery, self.gallery_y, ks=self.ks, metric=self.metric
            )
            scalars = dict(report)
        return scalars, report

    def _scalar_names(self, report):
        if report is None:
            return []
        if self.task == "verification":
            return list(report.scalars())
        return list(report)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        scalars, report = self.evaluate()
        if report is not None:
            self.reports[epoch] = report
        values = {_log_key(self.prefix, k): float(v) for k, v in scalars.items()}
        if logs is not None:
            logs.update(values)
        if self.verbose == 1:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in values.items())
            print(f"Epoch {epoch + 1} evaluation: {text}")


__all__ = ["EmbeddingEvaluation"]
