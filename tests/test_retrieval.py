"""Retrieval metrics (keras_margins.evaluation.retrieval) against brute-force NumPy."""

import numpy as np
import pytest

import keras_margins as km
from tests.knn_reference import assert_valid_topk, ref_sim

# ---------------------------------------------------------------------------------------------
# Metrics on ranked lists
# ---------------------------------------------------------------------------------------------


def test_ranked_list_metrics_hand_example():
    ql = np.array([0, 1, 2])
    nl = np.array([[0, 1, 0, 0], [0, 1, 1, 2], [1, 1, 0, 0]])
    # P@1: only query 0's first neighbour matches -> 1/3.
    assert km.precision_at_k(ql, nl, k=1) == pytest.approx(1 / 3)
    # P@2: hits 1, 1, 0 out of 2 each -> (1/2 + 1/2 + 0)/3.
    assert km.precision_at_k(ql, nl, k=2) == pytest.approx(1 / 3)
    # Recall@2: queries 0 and 1 have a hit in the top 2 -> 2/3.
    assert km.recall_at_k(ql, nl, k=2) == pytest.approx(2 / 3)
    # MAP@R with R = (3, 2, 1):
    #   q0 hits at 1, 3 within R=3: (1/1 + 2/3)/3 = 5/9; q1 hit at 2 within R=2: (1/2)/2 = 1/4;
    #   q2 no hit in its first neighbour: 0.
    assert km.map_at_r(ql, nl, [3, 2, 1]) == pytest.approx((5 / 9 + 1 / 4 + 0) / 3)


def test_map_at_k_and_new_individual():
    # Whale-style: the true label at prediction i scores 1/i.
    assert km.map_at_k(["a", "b", "c"], [["a"], ["x", "y", "b"], ["x"] * 5], k=5) == pytest.approx(
        (1 + 1 / 3 + 0) / 3
    )
    assert km.map_at_k(["b"], [["x", "y", "z", "w", "v", "b"]], k=5) == 0.0  # beyond k
    preds = km.predict_labels(
        [[0.9, 0.85, 0.6, 0.4, 0.3, 0.2]],
        [[3, 3, 5, 7, 8, 9]],
        k=5,
        new_label=-1,
        new_threshold=0.5,
    )
    assert preds == [[3, 5, -1, 7, 8]]  # duplicate 3 dropped, "new" where similarity < 0.5
    preds = km.predict_labels(
        [[4.0, 1.0]], [[1, 2]], k=5, new_label=-1, new_threshold=2.0, metric="euclidean"
    )
    assert preds == [[-1, 1, 2]]  # distance 4 > 2: new individual first
    assert km.predict_labels([[0.9, 0.8]], [[1, 2]], k=5, new_label=-1, new_threshold=0.5) == [
        [1, 2, -1]
    ]


def ref_retrieval(q, ql, g, gl, metric, self_search):
    s = ref_sim(q, g, metric)
    p1, rec5, aps = [], [], []
    for i in range(len(q)):
        order = sorted(
            (j for j in range(len(g)) if not (self_search and j == i)), key=lambda j: (-s[i, j], j)
        )
        hits = [gl[j] == ql[i] for j in order]
        p1.append(hits[0])
        rec5.append(any(hits[:5]))
        r = sum(hits)
        if r:
            aps.append(sum(np.mean(hits[: n + 1]) for n in range(r) if hits[n]) / r)
    return np.mean(p1), np.mean(rec5), np.mean(aps)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_retrieval_metrics_match_brute_force(rng, metric):
    centres = rng.normal(size=(6, 4))
    ql = rng.integers(0, 6, 40)
    q = centres[ql] + 0.8 * rng.normal(size=(40, 4))
    gl = rng.integers(0, 6, 70)
    g = centres[gl] + 0.8 * rng.normal(size=(70, 4))
    out = km.retrieval_metrics(q, ql, g, gl, ks=(1, 5), metric=metric)
    p1, rec5, mapr = ref_retrieval(q, ql, g, gl, metric, False)
    assert out["precision@1"] == pytest.approx(p1)
    assert out["recall@1"] == pytest.approx(p1)
    assert out["recall@5"] == pytest.approx(rec5)
    assert out["map@r"] == pytest.approx(mapr)
    assert 0.2 < p1 < 0.95
    loo = km.retrieval_metrics(q, ql, ks=(5,), metric=metric)
    p1, rec5, mapr = ref_retrieval(q, ql, q, ql, metric, True)
    assert loo["precision@1"] == pytest.approx(p1)
    assert loo["recall@5"] == pytest.approx(rec5)
    assert loo["map@r"] == pytest.approx(mapr)


def test_retrieval_map5_new_individual(rng):
    g = np.eye(4)
    gl = np.array([10, 11, 12, 13])
    q = np.array([[1, 0.1, 0, 0], [0, 0, 0.1, 1], [0.5, 0.5, 0.5, 0.5]])
    ql = np.array([10, 13, 99])  # 99 is a new individual
    # Top labels: q0 -> 10 (0.995...), q1 -> 13, q2 -> all similarities 0.5 < 0.7 -> new first.
    out = km.retrieval_metrics(q, ql, g, gl, ks=(1,), new_label=-1, new_threshold=0.7)
    assert out["map@5"] == pytest.approx(1.0)
    out = km.retrieval_metrics(q, ql, g, gl, ks=(1,))
    assert out["map@5"] == pytest.approx(2 / 3)  # no threshold: the newcomer always misses


# ---------------------------------------------------------------------------------------------
# Match sets and F1
# ---------------------------------------------------------------------------------------------


def ref_match_f1(q, ql, g, gl, t, metric, self_search, include_self=True):
    s = ref_sim(q, g, metric)
    f1s = []
    for i in range(len(q)):
        pred, true = set(), set()
        for j in range(len(g)):
            if self_search and i == j:
                if include_self:
                    pred.add(j)
                    true.add(j)
                continue
            ok = s[i, j] >= t if metric == "cosine" else -s[i, j] <= t
            if ok:
                pred.add(j)
            if gl[j] == ql[i]:
                true.add(j)
        denom = len(pred) + len(true)
        f1s.append(1.0 if denom == 0 else 2 * len(pred & true) / denom)
    return np.mean(f1s)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("include_self", [True, False])
def test_match_f1_sweep_matches_brute_force(rng, metric, include_self):
    centres = rng.normal(size=(8, 4)) * 2
    ql = rng.integers(0, 8, 45)
    q = centres[ql] + 0.6 * rng.normal(size=(45, 4))
    thresholds = np.linspace(-0.5, 1, 16) if metric == "cosine" else np.linspace(0, 4, 17)
    out = km.match_f1_sweep(
        q, ql, thresholds=thresholds, metric=metric, include_self=include_self, max_block_bytes=5000
    )
    ref = [ref_match_f1(q, ql, q, ql, t, metric, True, include_self) for t in out["thresholds"]]
    np.testing.assert_allclose(out["f1"], ref, rtol=1e-12)
    best = int(np.argmax(ref))
    assert out["best_threshold"] == pytest.approx(out["thresholds"][best])
    assert out["best_f1"] == pytest.approx(ref[best])
    assert 0.5 < out["best_f1"] < 1.0
    t = out["best_threshold"]
    assert km.match_f1(q, ql, threshold=t, metric=metric, include_self=include_self) == (
        pytest.approx(ref[best])
    )


def test_match_f1_separate_gallery(rng):
    q = rng.normal(size=(20, 3))
    ql = rng.integers(0, 4, 20)
    g = rng.normal(size=(30, 3))
    gl = rng.integers(0, 6, 30)
    for t in (-0.2, 0.3, 0.9):
        assert km.match_f1(q, ql, g, gl, threshold=t) == pytest.approx(
            ref_match_f1(q, ql, g, gl, t, "cosine", False)
        )


def test_default_threshold_grid():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype="float32")
    out = km.match_f1_sweep(x, [0, 0, 1])
    assert out["thresholds"].size == 101 and out["thresholds"][0] == -1.0
    assert out["best_f1"] == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input and backends
# ---------------------------------------------------------------------------------------------


def test_errors(rng):
    x = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="`k` must be at most"):
        km.nearest_neighbors(x, x, k=6)
    with pytest.raises(ValueError, match="`k` must be at most"):
        km.nearest_neighbors(x, x, k=5, exclude_self=True)
    with pytest.raises(ValueError, match="`k`"):
        km.nearest_neighbors(x, x, k=0)
    with pytest.raises(ValueError, match="exclude_self"):
        km.nearest_neighbors(x[:3], x, k=1, exclude_self=True)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="gallery.*finite"):
        km.nearest_neighbors(x, bad, k=1)
    with pytest.raises(ValueError, match="empty"):
        km.nearest_neighbors(np.zeros((0, 3)), x, k=1)
    with pytest.raises(ValueError, match="embedding dimension"):
        km.nearest_neighbors(x[:, :2], x, k=1)
    with pytest.raises(ValueError, match="query_labels"):
        km.retrieval_metrics(x, [0, 1, 0])
    with pytest.raises(ValueError, match="given together"):
        km.retrieval_metrics(x, [0, 1, 0, 1, 0], gallery_embeddings=x)
    with pytest.raises(ValueError, match="ks"):
        km.retrieval_metrics(x, [0, 1, 0, 1, 0], ks=(5,))
    with pytest.raises(ValueError, match="`k`"):
        km.precision_at_k([0, 1], [[0], [1]], k=2)
    with pytest.raises(ValueError, match="num_relevant"):
        km.map_at_r([0, 1], [[0], [1]], [1])
    with pytest.raises(ValueError, match="thresholds"):
        km.match_f1_sweep(x, [0, 1, 0, 1, 0], thresholds=[np.nan])
    with pytest.raises(ValueError, match="new_label"):
        km.predict_labels([[0.1]], [[1]], new_threshold=0.5)
    with pytest.raises(ValueError, match="backend"):
        km.nearest_neighbors(x, x, k=1, backend="annoy")


def ref_map5(q, ql, g, gl, metric, self_search, new_label=None, new_threshold=None):
    """Kaggle MAP@5 from the whole ranked gallery (brute force, float64, from the definition:
    read neighbours best first, keep each label the first time it appears, insert the new
    label at the first neighbour beyond the threshold, or last if none is)."""
    s = ref_sim(q, g, metric)
    total = 0.0
    for i in range(len(q)):
        order = sorted(
            (j for j in range(len(g)) if not (self_search and j == i)), key=lambda j: (-s[i, j], j)
        )
        labels_present = {gl[j] for j in order}
        truth = ql[i] if ql[i] in labels_present else new_label
        preds, inserted = [], new_threshold is None
        for j in order:
            v = s[i, j] if metric == "cosine" else -s[i, j]
            if not inserted and (v < new_threshold if metric == "cosine" else v > new_threshold):
                preds.append(new_label)
                inserted = True
            if gl[j] not in preds:
                preds.append(gl[j])
        if not inserted:
            preds.append(new_label)
        preds = preds[:5]
        if truth in preds:
            total += 1.0 / (preds.index(truth) + 1)
    return total / len(q)


def test_map5_reads_past_the_first_neighbours():
    # Issue 12: 20 gallery items of label 0 around (1, 0), then one of label 1: the query of
    # label 1 finds its label at neighbour 21, the second distinct label (score 1/2). The old
    # search depth max(ks, 5, R) = 5 saw only label 0 (score 0).
    angles = np.linspace(0.0, 0.1, 20)
    g = np.concatenate([np.stack([np.cos(angles), np.sin(angles)], 1), [[0.0, 1.0]]])
    gl = np.array([0] * 20 + [1])
    q = np.array([[np.cos(0.2), np.sin(0.2)]])
    out = km.retrieval_metrics(q, [1], g, gl, ks=(1,))
    assert (
        out["map@5"]
        == pytest.approx(0.5)
        == pytest.approx(ref_map5(q, [1], g, gl, "cosine", False))
    )
    # With a threshold between neighbours 20 and 21 the new individual comes second and the
    # true label third (the old code put "new" second and never found label 1).
    out = km.retrieval_metrics(q, [1], g, gl, ks=(1,), new_label=-1, new_threshold=0.5)
    assert out["map@5"] == pytest.approx(1 / 3)
    out = km.retrieval_metrics(q, [7], g, gl, ks=(1,), new_label=-1, new_threshold=0.5)
    assert out["map@5"] == pytest.approx(1 / 2)  # a newcomer: "new" is the second guess


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("self_search", [True, False])
def test_map5_matches_full_list_reference(rng, metric, self_search):
    # Few labels, many items each: five distinct labels often lie far down the list.
    centres = rng.normal(size=(7, 3))
    gl = rng.choice(7, size=90, p=[0.6, 0.2, 0.1, 0.04, 0.03, 0.02, 0.01])
    g = centres[gl] + 0.5 * rng.normal(size=(90, 3))
    ql = rng.integers(0, 9, 25)  # labels 7 and 8 are newcomers
    q = np.concatenate([centres, rng.normal(size=(2, 3))])[ql] + 0.5 * rng.normal(size=(25, 3))
    if self_search:
        q, ql, g, gl = g, gl, None, None
        qq, qql = q, ql
    else:
        qq, qql = g, gl
    thresholds = (None, 0.3, 0.8) if metric == "cosine" else (None, 0.5, 1.5)
    for t in thresholds:
        kwargs = {} if t is None else {"new_label": -1, "new_threshold": t}
        out = km.retrieval_metrics(
            q, ql, g, gl, ks=(1,), metric=metric, max_block_bytes=3000, **kwargs
        )
        ref = ref_map5(q, ql, qq, qql, metric, self_search, kwargs.get("new_label"), t)
        assert out["map@5"] == pytest.approx(ref, abs=1e-12)
        # ... and agrees with predict_labels + map_at_k on the full neighbour list.
        n = len(qq) - (1 if self_search else 0)
        values, idx = km.nearest_neighbors(q, qq, k=n, metric=metric, exclude_self=self_search)
        preds = km.predict_labels(values, np.asarray(qql)[idx], k=5, metric=metric, **kwargs)
        present = [
            lab
            if np.sum(np.asarray(qql) == lab) > (1 if self_search else 0)
            else kwargs.get("new_label")
            for lab in np.asarray(ql).tolist()
        ]
        assert out["map@5"] == pytest.approx(
            km.map_at_k(np.array(present, dtype=object), preds, k=5), abs=1e-12
        )


# ---------------------------------------------------------------------------------------------
# Magnitude of the embeddings and NaN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, scales",
    [
        ("float32", [2.0**-100, 2.0**-60, 1e-20, 1e20, 2.0**70, 2.0**100]),
        ("float64", [2.0**-1000, 1e-200, 1e160, 2.0**530, 2.0**1000]),
    ],
)
def test_results_do_not_depend_on_the_magnitude(rng, dtype, scales):
    # Issue 12: above ~1e19 (float32) the squared norms overflowed (cosines 0, wrong
    # neighbours), below ~1e-6 a 1e-12 norm floor shrank the cosines. Every scale must give the
    # unscaled answer; powers of two scale exactly, other factors within rounding.
    x = rng.normal(size=(40, 6))
    labels = rng.integers(0, 5, 40)
    base = x.astype(dtype)
    want = {}
    for metric in ("cosine", "euclidean"):
        ref = ref_sim(base, base, metric)
        want[metric] = km.nearest_neighbors(base, base, k=5, metric=metric, exclude_self=True)
        assert_valid_topk(want[metric][1], ref, 5, tol=1e-5, exclude_self=True)
    f1_cos = km.match_f1(base, labels, threshold=0.4)
    f1_euc = km.match_f1(base, labels, threshold=1.7, metric="euclidean")
    sweep = km.match_f1_sweep(base, labels, metric="euclidean")
    metrics = km.retrieval_metrics(base, labels, ks=(1, 5))
    for scale in scales:
        xs = (base * scale).astype(dtype)
        exact = np.log2(scale).is_integer()
        for metric in ("cosine", "euclidean"):
            values, idx = km.nearest_neighbors(xs, xs, k=5, metric=metric, exclude_self=True)
            unit = 1.0 if metric == "cosine" else scale
            np.testing.assert_allclose(values / unit, want[metric][0], rtol=1e-5, atol=1e-6)
            if exact:
                np.testing.assert_array_equal(idx, want[metric][1])
            else:
                assert_valid_topk(idx, ref_sim(base, base, metric), 5, tol=1e-5, exclude_self=True)
        if exact:
            assert km.match_f1(xs, labels, threshold=0.4) == f1_cos
            assert km.match_f1(xs, labels, threshold=1.7 * scale, metric="euclidean") == f1_euc
            out = km.match_f1_sweep(xs, labels, metric="euclidean")
            np.testing.assert_array_equal(out["f1"], sweep["f1"])
            np.testing.assert_allclose(out["thresholds"] / scale, sweep["thresholds"], rtol=1e-12)
            assert km.retrieval_metrics(xs, labels, ks=(1, 5)) == metrics


def test_nan_or_infinite_embeddings_are_a_value_error(rng):
    # NaN embeddings have no rank: every entry point names the argument instead of returning
    # plausible numbers.
    x = rng.normal(size=(8, 3))
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    for bad_value in (np.nan, np.inf):
        bad = x.copy()
        bad[3, 1] = bad_value
        with pytest.raises(ValueError, match="`queries` must contain only finite"):
            km.nearest_neighbors(bad, x, k=1)
        with pytest.raises(ValueError, match="`query_embeddings` must contain only finite"):
            km.retrieval_metrics(bad, labels)
        with pytest.raises(ValueError, match="`gallery_embeddings` must contain only finite"):
            km.retrieval_metrics(x, labels, bad, labels)
        with pytest.raises(ValueError, match="`query_embeddings` must contain only finite"):
            km.match_f1(bad, labels)
        with pytest.raises(ValueError, match="`query_embeddings` must contain only finite"):
            km.match_f1_sweep(bad, labels, metric="euclidean")
    with pytest.raises(ValueError, match="`neighbor_values` must not contain NaN"):
        km.predict_labels([[0.9, np.nan]], [[1, 2]])


def test_argument_errors_name_the_argument(rng):
    # Issue 12: ks=(1.5,) must not be truncated, ks=() was "max() arg is an empty sequence",
    # negative or fractional num_relevant gave numbers, string flags were truthy.
    x = rng.normal(size=(6, 3))
    labels = [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"`ks` must contain only integers.*1\.5"):
        km.retrieval_metrics(x, labels, ks=(1.5,))
    with pytest.raises(ValueError, match=r"`ks` must not be empty. Received: ks=\(\)"):
        km.retrieval_metrics(x, labels, ks=())
    with pytest.raises(TypeError, match="`ks` must be a sequence"):
        km.retrieval_metrics(x, labels, ks=2)
    with pytest.raises(ValueError, match="`ks`"):
        km.retrieval_metrics(x, labels, ks=(True,))
    assert km.retrieval_metrics(x, labels, ks=np.array([1, 2]))["recall@2"] >= 0
    with pytest.raises(ValueError, match=r"`num_relevant` must be >= 0.*-1"):
        km.map_at_r([0, 1], [[0], [1]], [1, -1])
    with pytest.raises(ValueError, match=r"`num_relevant` must hold whole numbers.*1\.5"):
        km.map_at_r([0, 1], [[0, 1], [1, 0]], [1, 1.5])
    with pytest.raises(ValueError, match="`num_relevant` must be a 1-D"):
        km.map_at_r([0, 1], [[0, 1], [1, 0]], [[1], [1]])
    assert km.map_at_r([0, 1], [[0, 1], [1, 0]], [1.0, 2.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="`include_self` must be True or False.*'no'"):
        km.match_f1(x, labels, include_self="no")
    with pytest.raises(ValueError, match="`include_self`"):
        km.match_f1_sweep(x, labels, include_self=1)
    with pytest.raises(ValueError, match="`exclude_self` must be True or False.*'no'"):
        km.nearest_neighbors(x, x, k=1, exclude_self="no")
    with pytest.raises(ValueError, match=r"`thresholds` must be a 1-D array.*\(1, 2\)"):
        km.match_f1_sweep(x, labels, thresholds=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="`thresholds`"):
        km.match_f1_sweep(x, labels, thresholds="high")
    with pytest.raises(ValueError, match="`query_labels` must not contain NaN"):
        km.retrieval_metrics(x, [0, 0, 1, 1, np.nan, np.nan])
    with pytest.raises(ValueError, match="`gallery_labels` must not contain NaN"):
        km.match_f1(x, labels, x, [0, 0, 1, 1, 2, np.nan])
