"""Face-verification metrics: LFW-style k-fold accuracy, ROC, AUC, EER and TAR at FAR.

A verification pair is *genuine* (same identity, ``issame=True``) or *impostor*. The functions
that take ``scores`` expect higher = more likely genuine (a cosine similarity, or a negated
distance). :func:`evaluate_verification` and :func:`verify_embeddings` take embeddings and a
``metric`` and report thresholds in that metric's own units: a cosine similarity above which a
pair is accepted, or a Euclidean distance below which it is.
"""

import dataclasses

import numpy as np

from keras_margins._validation import check_choice, check_int
from keras_margins.evaluation._common import (
    METRICS,
    check_embeddings,
    check_fars,
    check_labels,
    far_operating_points,
    trapezoid_auc,
)
from keras_margins.evaluation.search import normalize_rows, row_exponents, scale_rows

DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# Enumerate every candidate pair below this many; sample with rejection above it.
_ENUMERATE_LIMIT = 2_000_000


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_scores(scores, issame):
    scores = np.asarray(scores, dtype=np.float64)
    issame_arr = np.asarray(issame)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(
            f"`scores` must be a non-empty 1-D array. Received: scores with shape {scores.shape}"
        )
    if issame_arr.ndim != 1 or issame_arr.shape[0] != scores.shape[0]:
        raise ValueError(
            f"`issame` must be a 1-D array with one entry per score ({scores.shape[0]}). "
            f"Received: issame with shape {issame_arr.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "`scores` must be finite. Received: scores with "
            f"{int(np.sum(~np.isfinite(scores)))} NaN or infinite values"
        )
    if issame_arr.dtype != bool:
        uniq = np.unique(issame_arr)
        if not np.all(np.isin(uniq, [0, 1])):
            raise ValueError(
                f"`issame` must be boolean or 0/1. Received: issame with values {uniq[:5].tolist()}"
            )
        issame_arr = issame_arr.astype(bool)
    n_gen = int(issame_arr.sum())
    if n_gen == 0 or n_gen == issame_arr.size:
        raise ValueError(
            "`issame` must contain both genuine (True) and impostor (False) pairs. Received: "
            f"{n_gen} genuine and {issame_arr.size - n_gen} impostor pairs"
        )
    return scores, issame_arr


# --------------------------------------------------------------------------------------------
# Pair scores
# --------------------------------------------------------------------------------------------


def pair_scores(embeddings_a, embeddings_b, metric="cosine"):
    """Score each pair ``(embeddings_a[i], embeddings_b[i])``.

    ``cosine``: ``a.b / (|a| |b|)``; ``euclidean``: ``|a - b|`` (a distance, lower = more
    similar). Computed in float64, on rows scaled by powers of two, so any finite magnitude
    works (no overflow of squared norms, no norm floor). NaN or infinite embeddings are a
    ``ValueError``.

    Args:
        embeddings_a: ``(num_pairs, D)``.
        embeddings_b: ``(num_pairs, D)``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.

    Returns:
        Float64 array of shape ``(num_pairs,)``.

    Examples:

        >>> import keras_margins as km
        >>> km.pair_scores([[1.0, 0.0]], [[0.0, 2.0]]).tolist()
        [0.0]
    """
    check_choice("metric", metric, METRICS)
    a = check_embeddings("embeddings_a", embeddings_a, dtype=np.float64)
    b = check_embeddings("embeddings_b", embeddings_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            "`embeddings_a` and `embeddings_b` must have the same shape (one row per pair). "
            f"Received: embeddings_a.shape={a.shape}, embeddings_b.shape={b.shape}"
        )
    if metric == "cosine":
        return np.sum(normalize_rows(a) * normalize_rows(b), axis=1)
    # Each pair scaled by one power of two (exact), so neither a - b nor the squared distance
    # overflows or underflows at any magnitude; the distance is scaled back.
    e = np.maximum(row_exponents(a), row_exponents(b))
    diff = scale_rows(a, e) - scale_rows(b, e)
    return np.ldexp(np.sqrt(np.sum(diff * diff, axis=1)), e)


# --------------------------------------------------------------------------------------------
# Threshold metrics on scores (higher = genuine)
# --------------------------------------------------------------------------------------------


def _cut_points(scores, issame):
    """Every distinct decision rule ``accept iff score >= t`` and its accuracy.

    Returns ``(thresholds, accuracies)`` ordered from the strictest rule (accept nothing) to
    the loosest (accept everything). Interior thresholds are midpoints between consecutive
    distinct scores.
    """
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = issame[order]
    n = s.size
    gen_above = np.concatenate([[0], np.cumsum(y)])  # genuine among the top j, j = 0..n
    imp_above = np.arange(n + 1) - gen_above
    total_imp = n - gen_above[-1]
    acc = (gen_above + (total_imp - imp_above)) / n
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[:-1] != s[1:]  # cut between j-1 and j only where scores differ
    thr = np.empty(n + 1)
    thr[0] = np.nextafter(s[0], np.inf)
    thr[n] = s[-1]
    thr[1:n] = (s[:-1] + s[1:]) / 2.0
    return thr[valid], acc[valid]


def best_threshold(scores, issame):
    """The threshold ``t`` maximizing the accuracy of ``accept iff score >= t``.

    Candidate thresholds are the midpoints between consecutive distinct scores, plus one above
    the highest score and the lowest score itself. Among equally accurate thresholds the
    strictest (highest) is returned.

    Args:
        scores: Pair scores, higher = more likely genuine, shape ``(num_pairs,)``.
        issame: Booleans, ``True`` for genuine pairs.

    Returns:
        ``(threshold, accuracy)``.

    Examples:

        >>> import keras_margins as km
        >>> km.best_threshold([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
        (0.55, 1.0)
    """
    scores, issame = _check_scores(scores, issame)
    thr, acc = _cut_points(scores, issame)
    i = int(np.argmax(acc))
    return float(thr[i]), float(acc[i])


def kfold_accuracy(scores, issame, n_folds=10):
    """LFW-protocol accuracy: each fold is scored with the threshold fitted on the others.

    The pairs are split, in order, into ``n_folds`` contiguous folds (``np.array_split``), as
    the LFW ``pairs.txt`` folds are. For fold ``i`` the threshold is :func:`best_threshold` on
    the other ``n_folds - 1`` folds and fold ``i``'s accuracy is
    ``mean([score >= t] == issame)`` over its pairs. Choosing the threshold on the test fold
    itself would overstate accuracy; this never does.

    Args:
        scores: Pair scores, higher = more likely genuine.
        issame: Booleans, ``True`` for genuine pairs.
        n_folds: Number of folds, ``2 <= n_folds <= num_pairs``. Defaults to ``10``.

    Returns:
        A dict: ``accuracies`` (per fold), ``thresholds`` (per fold), ``mean``, ``std``
        (population standard deviation over folds, as LFW reports).

    Examples:

        >>> import keras_margins as km
        >>> out = km.kfold_accuracy([0.9, 0.2, 0.8, 0.1], [1, 0, 1, 0], n_folds=2)
        >>> out["mean"]
        1.0
    """
    scores, issame = _check_scores(scores, issame)
    n_folds = check_int("n_folds", n_folds, minimum=2, maximum=scores.size)
    folds = np.array_split(np.arange(scores.size), n_folds)
    accuracies, thresholds = [], []
    for test in folds:
        train = np.ones(scores.size, dtype=bool)
        train[test] = False
        thr_train, acc_train = _cut_points(scores[train], issame[train])
        t = float(thr_train[int(np.argmax(acc_train))])  # first maximum = strictest
        thresholds.append(t)
        accuracies.append(float(np.mean((scores[test] >= t) == issame[test])))
    accuracies = np.array(accuracies)
    return {
        "accuracies": accuracies,
        "thresholds": np.array(thresholds),
        "mean": float(accuracies.mean()),
        "std": float(accuracies.std()),
    }


def roc_curve(scores, issame):
    """ROC curve of ``accept iff score >= t`` over every distinct score ``t``.

    ``FAR(t) = #{impostor: score >= t} / #impostor`` and
    ``TAR(t) = #{genuine: score >= t} / #genuine``. The first point is ``(0, 0)`` at
    ``t = +inf``; tied scores form a single point. This matches
    ``sklearn.metrics.roc_curve(issame, scores, drop_intermediate=False)``.

    Args:
        scores: Pair scores, higher = more likely genuine.
        issame: Booleans, ``True`` for genuine pairs.

    Returns:
        ``(far, tar, thresholds)``, each 1-D, ``thresholds`` decreasing.

    Examples:

        >>> import keras_margins as km
        >>> far, tar, thr = km.roc_curve([0.9, 0.5, 0.1], [1, 0, 1])
        >>> far.tolist(), tar.tolist()
        ([0.0, 0.0, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0])
    """
    scores, issame = _check_scores(scores, issame)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = issame[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    far = np.r_[0.0, fps / fps[-1]]
    tar = np.r_[0.0, tps / tps[-1]]
    thresholds = np.r_[np.inf, s[last]]
    return far, tar, thresholds


def auc_score(scores, issame):
    """Area under the ROC curve (trapezoidal; ties count one half).

    Equals the probability that a random genuine pair scores above a random impostor pair,
    plus half the probability of a tie (the Mann-Whitney statistic).

    Args:
        scores: Pair scores, higher = more likely genuine.
        issame: Booleans, ``True`` for genuine pairs.

    Returns:
        A float in ``[0, 1]``.

    Examples:

        >>> import keras_margins as km
        >>> km.auc_score([0.9, 0.5, 0.1], [1, 0, 1])
        0.5
    """
    far, tar, _ = roc_curve(scores, issame)
    return trapezoid_auc(far, tar)


def equal_error_rate(scores, issame):
    """Equal error rate: where the FAR equals the false rejection rate ``1 - TAR``.

    The ROC is interpolated linearly between its points and the crossing of ``FAR`` with
    ``1 - TAR`` is returned, with the threshold interpolated the same way.

    Args:
        scores: Pair scores, higher = more likely genuine.
        issame: Booleans, ``True`` for genuine pairs.

    Returns:
        ``(eer, threshold)``.

    Examples:

        >>> import keras_margins as km
        >>> km.equal_error_rate([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])[0]
        0.0
    """
    far, tar, thr = roc_curve(scores, issame)
    d = far - (1.0 - tar)  # increasing from -1 to 1
    i = int(np.argmax(d >= 0))
    if d[i] == 0:
        t = thr[i] if np.isfinite(thr[i]) else thr[i + 1]
        return float(far[i]), float(t)
    alpha = -d[i - 1] / (d[i] - d[i - 1])
    eer = far[i - 1] + alpha * (far[i] - far[i - 1])
    t_lo = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    t = t_lo + alpha * (thr[i] - t_lo)
    return float(eer), float(t)


def tar_at_far(scores, issame, far_targets=DEFAULT_FARS):
    """True accept rate at fixed false accept rates, where the impostor count resolves them.

    For a target ``f`` the allowed number of false accepts is ``floor(f * num_impostor)``; the
    reported TAR is the highest TAR among thresholds that accept at most that many impostors
    (no interpolation). A target with ``f * num_impostor < 1`` cannot be told apart from
    ``FAR = 0`` and is reported in ``unresolved`` instead: resolving ``FAR = 1e-6`` needs at
    least a million impostor pairs.

    Args:
        scores: Pair scores, higher = more likely genuine.
        issame: Booleans, ``True`` for genuine pairs.
        far_targets: Target FARs in ``(0, 1]``. Defaults to ``(1e-1, ..., 1e-6)``.

    Returns:
        A dict: ``tar`` and ``threshold`` and ``far`` (achieved) mapping each resolved target
        to a float, and ``unresolved``, a tuple of the targets left out.

    Examples:

        >>> import keras_margins as km
        >>> out = km.tar_at_far([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 0, 1, 0, 0],
        ...                     far_targets=(0.5, 0.1))
        >>> out["tar"], out["unresolved"]
        ({0.5: 1.0}, (0.1,))
    """
    fars = check_fars(far_targets)
    far, tar, thr = roc_curve(scores, issame)
    _, issame = _check_scores(scores, issame)
    n_imp = int(np.sum(~issame))
    fps = np.rint(far * n_imp)
    resolved, unresolved = far_operating_points(fars, n_imp)
    out = {"tar": {}, "threshold": {}, "far": {}, "unresolved": unresolved}
    for f, allowed in resolved:
        # FAR and TAR never decrease along the ROC: the last admissible point has the best TAR.
        j = int(np.flatnonzero(fps <= allowed)[-1])
        out["tar"][f] = float(tar[j])
        out["threshold"][f] = float(thr[j])
        out["far"][f] = float(far[j])
    return out


# --------------------------------------------------------------------------------------------
# Pair generation
# --------------------------------------------------------------------------------------------


def _sample_genuine(labels, inv, counts, num, rng):
    members = [np.flatnonzero(inv == c) for c in range(counts.size)]
    per_class = counts * (counts - 1) // 2
    total = int(per_class.sum())
    if total <= _ENUMERATE_LIMIT:
        pairs = [
            np.stack([m[i], m[j]], axis=1)
            for m in members
            if m.size > 1
            for i, j in [np.triu_indices(m.size, k=1)]
        ]
        pairs = np.concatenate(pairs)
        pick = rng.choice(pairs.shape[0], size=num, replace=False)
        return pairs[pick]
    weights = per_class / total
    seen, out = set(), []
    while len(out) < num:
        classes = rng.choice(counts.size, size=2 * (num - len(out)), p=weights)
        for c in classes:
            m = members[c]
            i, j = rng.choice(m.size, size=2, replace=False)
            key = (min(m[i], m[j]), max(m[i], m[j]))
            if key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == num:
                    break
    return np.array(out, dtype=np.int64)


def _sample_impostor(labels, inv, num, rng):
    n = inv.size
    if n * (n - 1) // 2 <= _ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, k=1)
        keep = inv[i] != inv[j]
        i, j = i[keep], j[keep]
        pick = rng.choice(i.size, size=num, replace=False)
        return np.stack([i[pick], j[pick]], axis=1)
    seen, out = set(), []
    while len(out) < num:
        cand = rng.integers(0, n, size=(2 * (num - len(out)), 2))
        for a, b in cand:
            if inv[a] == inv[b]:
                continue
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == num:
                    break
    return np.array(out, dtype=np.int64)


def generate_pairs(labels, num_pairs=6000, seed=0):
    """Balanced, seeded genuine/impostor pairs from a labelled set.

    Genuine pairs are drawn uniformly without replacement among all unordered pairs of distinct
    samples with the same label; impostor pairs among all pairs with different labels. Pairs
    alternate genuine, impostor, genuine, ... so every even-length contiguous block (every
    fold of :func:`kfold_accuracy` when ``num_pairs`` is a multiple of ``2 * n_folds``) is
    balanced, as LFW's folds are.

    Args:
        labels: Identity of each sample, shape ``(num_samples,)``.
        num_pairs: Total number of pairs; ``num_pairs // 2`` genuine and the rest impostor.
            Defaults to ``6000`` (LFW's size).
        seed: Seed of ``numpy.random.default_rng``. Defaults to ``0``.

    Returns:
        ``(index_a, index_b, issame)``: int64 indices into ``labels`` and booleans.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> a, b, same = km.generate_pairs([0, 0, 1, 1, 2, 2], num_pairs=4)
        >>> same.tolist()
        [True, False, True, False]
    """
    labels = check_labels("labels", labels)
    num_pairs = check_int("num_pairs", num_pairs, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n_gen = num_pairs // 2
    n_imp = num_pairs - n_gen
    total_gen = int(np.sum(counts * (counts - 1) // 2))
    n = labels.size
    total_imp = int((n * n - np.sum(counts.astype(np.int64) ** 2)) // 2)
    if n_gen > total_gen:
        raise ValueError(
            f"`num_pairs` asks for {n_gen} genuine pairs but `labels` allow only {total_gen} "
            f"(identities need at least two samples). Received: num_pairs={num_pairs}"
        )
    if n_imp > total_imp:
        raise ValueError(
            f"`num_pairs` asks for {n_imp} impostor pairs but `labels` allow only {total_imp} "
            f"(at least two identities are needed). Received: num_pairs={num_pairs}"
        )
    rng = np.random.default_rng(seed)
    gen = _sample_genuine(labels, inv, counts, n_gen, rng)
    imp = _sample_impostor(labels, inv, n_imp, rng)
    pairs = np.empty((num_pairs, 2), dtype=np.int64)
    issame = np.zeros(num_pairs, dtype=bool)
    pairs[0 : 2 * n_gen : 2] = gen
    issame[0 : 2 * n_gen : 2] = True
    pairs[1 : 2 * n_gen : 2] = imp[:n_gen]
    pairs[2 * n_gen :] = imp[n_gen:]
    return pairs[:, 0], pairs[:, 1], issame


# --------------------------------------------------------------------------------------------
# One-call evaluation
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VerificationReport:
    """Everything :func:`evaluate_verification` measures.

    Thresholds are in the metric's units: cosine similarity (accept iff ``>=``) or Euclidean
    distance (accept iff ``<=``). ``scalars()`` flattens the headline numbers into a dict of
    floats (the keys the evaluation callback writes into Keras ``logs``).
    """

    metric: str
    num_genuine: int
    num_impostor: int
    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    best_threshold: float
    auc: float
    eer: float
    eer_threshold: float
    far: np.ndarray
    tar: np.ndarray
    roc_thresholds: np.ndarray
    tar_at_far: dict
    tar_at_far_thresholds: dict
    unresolved_fars: tuple
    scores: np.ndarray
    issame: np.ndarray

    def scalars(self):
        """Headline metrics as a flat ``{name: float}`` dict (``tar@far=1e-03`` style keys)."""
        out = {
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "auc": self.auc,
            "eer": self.eer,
        }
        for f, v in self.tar_at_far.items():
            out[f"tar@far={f:.0e}"] = v
        return out

    def summary(self):
        """A short human-readable report."""
        lines = [
            f"pairs: {self.num_genuine} genuine, {self.num_impostor} impostor ({self.metric})",
            f"{len(self.fold_accuracies)}-fold accuracy: {self.accuracy:.4f} "
            f"+- {self.accuracy_std:.4f}",
            f"AUC: {self.auc:.4f}  EER: {self.eer:.4f}",
        ]
        for f, v in self.tar_at_far.items():
            lines.append(f"TAR@FAR={f:.0e}: {v:.4f}")
        if self.unresolved_fars:
            lines.append(
                "not resolved by the impostor count: FAR="
                + ", ".join(f"{f:.0e}" for f in self.unresolved_fars)
            )
        return "\n".join(lines)


def _to_metric_units(t, metric):
    return t if metric == "cosine" else -t


def evaluate_verification(
    embeddings_a,
    embeddings_b,
    issame,
    metric="cosine",
    n_folds=10,
    far_targets=DEFAULT_FARS,
):
    """All verification metrics of a list of embedding pairs.

    Scores the pairs (:func:`pair_scores`), then computes the LFW-protocol k-fold accuracy
    (:func:`kfold_accuracy`), the ROC curve, AUC, EER and TAR at the resolvable FARs.

    Args:
        embeddings_a: ``(num_pairs, D)``, first member of each pair.
        embeddings_b: ``(num_pairs, D)``, second member.
        issame: ``(num_pairs,)`` booleans, ``True`` for genuine pairs.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        n_folds: Folds of the accuracy protocol. Defaults to ``10``.
        far_targets: FARs for TAR@FAR. Defaults to ``(1e-1, ..., 1e-6)``.

    Returns:
        A :class:`VerificationReport`.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> a = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype="float32")
        >>> b = np.array([[1, 0.1], [0, 1], [0.1, 1], [1, 0]], dtype="float32")
        >>> km.evaluate_verification(a, b, [1, 0, 1, 0], n_folds=2).accuracy
        1.0
    """
    check_choice("metric", metric, METRICS)
    raw = pair_scores(embeddings_a, embeddings_b, metric)
    scores = raw if metric == "cosine" else -raw
    if np.asarray(issame).shape[:1] != scores.shape:
        raise ValueError(
            f"`issame` must have one entry per pair ({scores.shape[0]}). "
            f"Received: issame with shape {np.asarray(issame).shape}"
        )
    scores, issame = _check_scores(scores, issame)
    folds = kfold_accuracy(scores, issame, n_folds)
    t_best, _ = best_threshold(scores, issame)
    far, tar, thr = roc_curve(scores, issame)
    eer, eer_t = equal_error_rate(scores, issame)
    taf = tar_at_far(scores, issame, far_targets)
    u = lambda t: _to_metric_units(t, metric)  # noqa: E731
    return VerificationReport(
        metric=metric,
        num_genuine=int(issame.sum()),
        num_impostor=int((~issame).sum()),
        accuracy=folds["mean"],
        accuracy_std=folds["std"],
        fold_accuracies=folds["accuracies"],
        fold_thresholds=u(folds["thresholds"]),
        best_threshold=u(t_best),
        auc=trapezoid_auc(far, tar),
        eer=eer,
        eer_threshold=u(eer_t),
        far=far,
        tar=tar,
        roc_thresholds=u(thr),
        tar_at_far=taf["tar"],
        tar_at_far_thresholds={f: u(t) for f, t in taf["threshold"].items()},
        unresolved_fars=taf["unresolved"],
        scores=raw,
        issame=issame,
    )


def verify_embeddings(
    embeddings,
    labels,
    num_pairs=6000,
    seed=0,
    metric="cosine",
    n_folds=10,
    far_targets=DEFAULT_FARS,
):
    """Open-set verification on a labelled set of (held-out) identities, in one call.

    Draws balanced seeded pairs with :func:`generate_pairs` and evaluates them with
    :func:`evaluate_verification`. ``num_pairs`` is capped by what the labels allow: pass a
    smaller value for small sets.

    Args:
        embeddings: ``(num_samples, D)``.
        labels: ``(num_samples,)`` identities (e.g. classes never seen in training).
        num_pairs: Number of pairs (half genuine). Defaults to ``6000``.
        seed: Seed of the pair sampler. Defaults to ``0``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        n_folds: Folds of the accuracy protocol. Defaults to ``10``.
        far_targets: FARs for TAR@FAR. Defaults to ``(1e-1, ..., 1e-6)``.

    Returns:
        A :class:`VerificationReport`.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(4), 10)
        >>> x = np.eye(4)[labels] + 0.05 * rng.normal(size=(40, 4))
        >>> km.verify_embeddings(x, labels, num_pairs=200).accuracy
        1.0
    """
    x = check_embeddings("embeddings", embeddings)
    labels = check_labels("labels", labels, x.shape[0], "embeddings")
    a, b, issame = generate_pairs(labels, num_pairs=num_pairs, seed=seed)
    return evaluate_verification(
        x[a], x[b], issame, metric=metric, n_folds=n_folds, far_targets=far_targets
    )


__all__ = [
    "VerificationReport",
    "pair_scores",
    "best_threshold",
    "kfold_accuracy",
    "roc_curve",
    "auc_score",
    "equal_error_rate",
    "tar_at_far",
    "generate_pairs",
    "evaluate_verification",
    "verify_embeddings",
]
