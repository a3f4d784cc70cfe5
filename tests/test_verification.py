"""Verification metrics against scikit-learn and brute-force NumPy references."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

import keras_margins as km
from keras_margins.evaluation import verification as ver

# ---------------------------------------------------------------------------------------------
# Independent references (plain loops over the definitions)
# ---------------------------------------------------------------------------------------------


def ref_rules(scores, issame):
    """All 'accept iff s >= t' rules, strictest first, each with its accuracy (loops)."""
    uniq = sorted(set(float(s) for s in scores), reverse=True)
    cands = [np.nextafter(uniq[0], np.inf)]
    cands += [(uniq[i] + uniq[i + 1]) / 2 for i in range(len(uniq) - 1)]
    cands += [uniq[-1]]
    out = []
    for t in cands:
        correct = sum(1 for s, y in zip(scores, issame) if (s >= t) == bool(y))
        out.append((t, correct / len(scores)))
    return out


def ref_kfold(scores, issame, n_folds):
    n = len(scores)
    bounds = np.linspace(0, n, n_folds + 1)  # not used for sizes: replicate array_split by hand
    sizes = [n // n_folds + (1 if i < n % n_folds else 0) for i in range(n_folds)]
    del bounds
    accs, thrs, start = [], [], 0
    for size in sizes:
        test = list(range(start, start + size))
        train = [i for i in range(n) if i not in test]
        rules = ref_rules([scores[i] for i in train], [issame[i] for i in train])
        best_acc = max(a for _, a in rules)
        t = next(t for t, a in rules if a == best_acc)
        thrs.append(t)
        accs.append(np.mean([(scores[i] >= t) == bool(issame[i]) for i in test]))
        start += size
    return np.array(accs), np.array(thrs)


def ref_tar_at_far(scores, issame, f):
    scores = np.asarray(scores)
    issame = np.asarray(issame, bool)
    n_imp = (~issame).sum()
    allowed = np.floor(f * n_imp + 1e-9)
    best = 0.0
    for t in list(np.unique(scores)) + [np.inf]:
        fa = np.sum(scores[~issame] >= t)
        if fa <= allowed:
            best = max(best, np.mean(scores[issame] >= t))
    return best


def noisy_scores(rng, n=400, ties=False):
    issame = rng.integers(0, 2, size=n).astype(bool)
    scores = rng.normal(size=n) + 1.2 * issame
    if ties:
        scores = np.round(scores, 1)
    return scores, issame


# ---------------------------------------------------------------------------------------------
# k-fold accuracy
# ---------------------------------------------------------------------------------------------


def test_kfold_hand_checked_example():
    # Three folds of two pairs: [0.9 G, 0.4 I] [0.6 G, 0.5 I] [0.7 I, 0.2 G].
    scores = [0.9, 0.4, 0.6, 0.5, 0.7, 0.2]
    issame = [1, 0, 1, 0, 0, 1]
    # Fold 0, train on 0.7 I, 0.6 G, 0.5 I, 0.2 G (descending). Rules and train accuracy:
    #   accept none 2/4, t=0.65 1/4, t=0.55 2/4, t=0.35 1/4, accept all (t=0.2) 2/4.
    #   Best 0.5, the strictest is "accept none": t just above 0.7. Test: 0.9 G accepted,
    #   0.4 I rejected -> 1.0.
    # Fold 1, train on 0.9 G, 0.7 I, 0.4 I, 0.2 G: t=0.8 accepts only 0.9 -> 3/4 (best).
    #   Test: 0.6 G rejected (wrong), 0.5 I rejected (right) -> 0.5.
    # Fold 2, train on 0.9 G, 0.6 G, 0.5 I, 0.4 I: t=0.55 -> 4/4.
    #   Test: 0.7 I accepted (wrong), 0.2 G rejected (wrong) -> 0.0.
    out = km.kfold_accuracy(scores, issame, n_folds=3)
    np.testing.assert_allclose(out["accuracies"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(out["thresholds"], [np.nextafter(0.7, 1), 0.8, 0.55])
    assert out["mean"] == pytest.approx(0.5)
    assert out["std"] == pytest.approx(np.sqrt(1 / 6))  # population std of [1, .5, 0]
    # Choosing the threshold on all pairs instead (the pitfall) gives a higher number: the best
    # rule on all six pairs (t = 0.8 or t = 0.55) gets 4 of 6 right.
    _, acc_all = km.best_threshold(scores, issame)
    assert acc_all == pytest.approx(4 / 6)
    assert acc_all > out["mean"]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n_folds", [2, 5, 10])
def test_kfold_matches_brute_force(rng, ties, n_folds):
    scores, issame = noisy_scores(rng, n=203, ties=ties)  # 203: folds of unequal size
    out = km.kfold_accuracy(scores, issame, n_folds=n_folds)
    accs, thrs = ref_kfold(list(scores), list(issame), n_folds)
    np.testing.assert_allclose(out["accuracies"], accs)
    np.testing.assert_allclose(out["thresholds"], thrs)
    assert out["mean"] == pytest.approx(accs.mean())
    assert out["std"] == pytest.approx(accs.std())


@pytest.mark.parametrize("ties", [False, True])
def test_best_threshold_matches_brute_force(rng, ties):
    scores, issame = noisy_scores(rng, ties=ties)
    t, acc = km.best_threshold(scores, issame)
    rules = ref_rules(list(scores), list(issame))
    best = max(a for _, a in rules)
    assert acc == pytest.approx(best)
    assert t == pytest.approx(next(t for t, a in rules if a == best))
    assert np.mean((scores >= t) == issame) == pytest.approx(acc)


# ---------------------------------------------------------------------------------------------
# ROC, AUC, EER, TAR@FAR
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(rng, ties):
    scores, issame = noisy_scores(rng, ties=ties)
    far, tar, thr = km.roc_curve(scores, issame)
    sk_far, sk_tar, sk_thr = sk_roc_curve(issame, scores, drop_intermediate=False)
    np.testing.assert_allclose(far, sk_far)
    np.testing.assert_allclose(tar, sk_tar)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.isinf(thr[0])
    assert km.auc_score(scores, issame) == pytest.approx(roc_auc_score(issame, scores), abs=1e-12)


def test_auc_is_mann_whitney_with_ties():
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.1])
    issame = np.array([1, 0, 1, 1, 0], bool)
    gen, imp = scores[issame], scores[~issame]
    pairs = [(g > i) + 0.5 * (g == i) for g in gen for i in imp]
    assert km.auc_score(scores, issame) == pytest.approx(np.mean(pairs))


@pytest.mark.parametrize("ties", [False, True])
def test_eer_matches_dense_interpolation(rng, ties):
    scores, issame = noisy_scores(rng, ties=ties)
    eer, t = km.equal_error_rate(scores, issame)
    sk_far, sk_tar, _ = sk_roc_curve(issame, scores, drop_intermediate=False)
    # Walk the piecewise-linear ROC densely and find where FAR = 1 - TAR.
    seg = np.linspace(0, 1, 2001)[:, None]
    fa = (sk_far[:-1] + seg * np.diff(sk_far)).T.ravel()
    ta = (sk_tar[:-1] + seg * np.diff(sk_tar)).T.ravel()
    i = np.argmin(np.abs(fa - (1 - ta)))
    assert eer == pytest.approx(fa[i], abs=2e-3)
    # The threshold sits between the scores that bracket the crossing.
    frr_at_t = np.mean(scores[issame] < t)
    far_at_t = np.mean(scores[~issame] >= t)
    assert min(frr_at_t, far_at_t) - 0.02 <= eer <= max(frr_at_t, far_at_t) + 0.02


def test_eer_separable_and_inverted():
    assert km.equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])[0] == 0.0
    assert km.equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == 1.0


@pytest.mark.parametrize("ties", [False, True])
def test_tar_at_far_matches_brute_force_and_reports_unresolved(rng, ties):
    scores, issame = noisy_scores(rng, n=600, ties=ties)
    n_imp = int((~issame).sum())
    assert 100 < n_imp < 1000
    out = km.tar_at_far(scores, issame)
    # 1e-1 and 1e-2 are resolvable (>= 1 false accept allowed), 1e-3 .. 1e-6 are not.
    assert set(out["tar"]) == {1e-1, 1e-2}
    assert out["unresolved"] == (1e-3, 1e-4, 1e-5, 1e-6)
    for f, v in out["tar"].items():
        assert v == pytest.approx(ref_tar_at_far(scores, issame, f))
        t = out["threshold"][f]
        assert np.sum(scores[~issame] >= t) <= np.floor(f * n_imp)
        assert np.mean(scores[issame] >= t) == pytest.approx(v)


# ---------------------------------------------------------------------------------------------
# Pair generation and the one-call API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [np.repeat(np.arange(10), 7), np.repeat(np.arange(30), 100), np.repeat([0, 1], 2100)],
    ids=["enumerated", "impostor-rejection", "genuine-rejection"],
)
def test_generate_pairs_properties(labels):
    a, b, same = km.generate_pairs(labels, num_pairs=200, seed=3)
    assert a.shape == b.shape == same.shape == (200,)
    np.testing.assert_array_equal(same, np.arange(200) % 2 == 0)  # alternating, balanced
    np.testing.assert_array_equal(labels[a] == labels[b], same)
    assert np.all(a != b)
    keys = {(min(i, j), max(i, j)) for i, j in zip(a, b)}
    assert len(keys) == 200  # no duplicate pair
    a2, b2, _ = km.generate_pairs(labels, num_pairs=200, seed=3)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    a3, _, _ = km.generate_pairs(labels, num_pairs=200, seed=4)
    assert not np.array_equal(a, a3)


def test_generate_pairs_uses_every_genuine_pair_when_asked():
    labels = np.array([0, 0, 0, 1, 1])  # 3 + 1 = 4 genuine pairs
    a, b, same = km.generate_pairs(labels, num_pairs=8)
    gen = {(min(i, j), max(i, j)) for i, j, s in zip(a, b, same) if s}
    assert gen == {(0, 1), (0, 2), (1, 2), (3, 4)}
    with pytest.raises(ValueError, match="num_pairs"):
        km.generate_pairs(labels, num_pairs=10)
    with pytest.raises(ValueError, match="impostor"):
        km.generate_pairs(np.zeros(10), num_pairs=4)


def test_verify_embeddings_separable_vs_random(rng):
    labels = np.repeat(np.arange(8), 12)
    centres = rng.normal(size=(8, 16))
    good = centres[labels] + 0.1 * rng.normal(size=(96, 16))
    rep = km.verify_embeddings(good, labels, num_pairs=400, seed=0)
    assert rep.accuracy == 1.0 and rep.auc == 1.0 and rep.eer == 0.0
    assert rep.num_genuine == rep.num_impostor == 200
    assert rep.unresolved_fars == (1e-3, 1e-4, 1e-5, 1e-6)
    noise = km.verify_embeddings(rng.normal(size=(96, 16)), labels, num_pairs=400, seed=0)
    assert 0.35 < noise.accuracy < 0.65 and 0.35 < noise.auc < 0.65
    scalars = rep.scalars()
    assert set(scalars) == {
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar@far=1e-01",
        "tar@far=1e-02",
    }
    assert "TAR@FAR=1e-01" in rep.summary()


def test_evaluate_verification_cosine_and_euclidean_consistency(rng):
    a = rng.normal(size=(300, 8))
    issame = rng.integers(0, 2, 300).astype(bool)
    b = np.where(issame[:, None], a + 0.8 * rng.normal(size=a.shape), rng.normal(size=a.shape))
    cos = km.evaluate_verification(a, b, issame, metric="cosine")
    ref_cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(cos.scores, ref_cos, rtol=1e-12)
    assert cos.auc == pytest.approx(roc_auc_score(issame, ref_cos))
    euc = km.evaluate_verification(a, b, issame, metric="euclidean", n_folds=5)
    dist = np.linalg.norm(a - b, axis=1)
    np.testing.assert_allclose(euc.scores, dist, rtol=1e-12)
    assert euc.auc == pytest.approx(roc_auc_score(issame, -dist))
    # Euclidean thresholds are distances: accept iff distance <= threshold.
    folds = np.array_split(np.arange(300), 5)
    accs = [np.mean((dist[f] <= t) == issame[f]) for f, t in zip(folds, euc.fold_thresholds)]
    np.testing.assert_allclose(euc.fold_accuracies, accs)
    assert np.mean((dist <= euc.eer_threshold) == issame) > 0.5


def test_float32_and_float64_inputs_agree(rng):
    labels = np.repeat(np.arange(6), 10)
    x = rng.normal(size=(60, 8))
    r64 = km.verify_embeddings(x, labels, num_pairs=300)
    r32 = km.verify_embeddings(x.astype("float32"), labels, num_pairs=300)
    assert r64.auc == pytest.approx(r32.auc, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="issame"):
        km.roc_curve([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="both genuine"):
        km.kfold_accuracy([0.1, 0.2, 0.3], [1, 1, 1], n_folds=2)
    with pytest.raises(ValueError, match="both genuine"):
        km.auc_score([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="scores"):
        km.auc_score([], [])
    with pytest.raises(ValueError, match="finite"):
        km.auc_score([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="n_folds"):
        km.kfold_accuracy([0.1, 0.2], [0, 1], n_folds=3)
    with pytest.raises(ValueError, match="far_targets"):
        km.tar_at_far([0.1, 0.2], [0, 1], far_targets=[0.0])
    with pytest.raises(ValueError, match="issame"):
        km.best_threshold([0.1, 0.2], [0, 2])
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="embeddings_b"):
        km.evaluate_verification(x, np.ones((3, 3)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="issame"):
        km.evaluate_verification(x, x, [0, 1, 0])
    bad = x.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="embeddings_a.*finite"):
        km.evaluate_verification(bad, x, [0, 1, 0, 1])
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="embeddings.*finite"):
        km.verify_embeddings(bad, [0, 0, 1, 1], num_pairs=2)
    with pytest.raises(ValueError, match="labels"):
        km.verify_embeddings(x, [0, 0, 1], num_pairs=2)
    with pytest.raises(ValueError, match="empty"):
        km.verify_embeddings(np.zeros((0, 3)), [], num_pairs=2)
    with pytest.raises(ValueError, match="metric"):
        km.pair_scores(x, x, metric="manhattan")
    assert ver.DEFAULT_FARS == (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1e20, 1e160, 1e300])
def test_any_magnitude_gives_the_unscaled_scores(rng, scale):
    # Issue 12: at 1e160 the squared norms overflowed float64 and verify_embeddings rejected
    # finite embeddings with a message about `scores`; tiny ones hit a norm floor.
    labels = np.repeat(np.arange(6), 10)
    x = rng.normal(size=(60, 8))
    a, b = x[:30], x[30:]
    ref_cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    ref_dist = np.linalg.norm(a - b, axis=1)
    np.testing.assert_allclose(km.pair_scores(a * scale, b * scale), ref_cos, rtol=1e-12)
    np.testing.assert_allclose(
        km.pair_scores(a * scale, b * scale, metric="euclidean") / scale, ref_dist, rtol=1e-12
    )
    for metric in ("cosine", "euclidean"):
        want = km.verify_embeddings(x, labels, num_pairs=300, metric=metric)
        got = km.verify_embeddings(x * scale, labels, num_pairs=300, metric=metric)
        assert got.accuracy == want.accuracy and got.auc == want.auc and got.eer == want.eer
    if scale >= 1e20:
        x32 = (x * 1e30).astype("float32")  # float32 near its top: |x|^2 ~ 1e61 overflowed
        got = km.verify_embeddings(x32, labels, num_pairs=300)
        assert got.auc == pytest.approx(
            km.verify_embeddings(x, labels, num_pairs=300).auc, abs=1e-3
        )


def test_far_targets_and_labels_errors():
    with pytest.raises(ValueError, match="`far_targets` must be a list of numbers.*'x'"):
        km.tar_at_far([0.1, 0.9], [0, 1], far_targets="x")
    with pytest.raises(ValueError, match="`far_targets` must be a 1-D"):
        km.tar_at_far([0.1, 0.9], [0, 1], far_targets=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="`labels` must not contain NaN"):
        km.generate_pairs([0.0, 0.0, 1.0, np.nan], num_pairs=2)
