"""Match lists, ranked identities and submission CSVs against brute-force references."""

import csv

import numpy as np
import pytest

import keras_margins as km


def clustered(rng, n_classes=12, per_class=6, dim=8, noise=0.35):
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    return x.astype("float32"), labels


def cosine_matrix(q, g):
    q = np.asarray(q, np.float64)
    g = np.asarray(g, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    return q @ g.T


def ref_matches(x, ids, threshold, max_matches, min_matches):
    """Brute force: self first, then others by descending cosine (index breaks ties)."""
    sims = cosine_matrix(x, x)
    out = []
    for i in range(len(x)):
        order = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-sims[i, j], j))
        order = order[: max_matches - 1]
        chosen = [j for j in order if sims[i, j] >= threshold]
        if len(chosen) + 1 < min_matches:
            chosen = order[: min_matches - 1]
        out.append([ids[i]] + [ids[j] for j in chosen])
    return out


def ref_identities(q, g, labels, k, new_label, new_threshold):
    """Brute force over the fully sorted gallery."""
    sims = cosine_matrix(q, g)
    out = []
    for i in range(len(q)):
        order = sorted(range(len(g)), key=lambda j: (-sims[i, j], j))
        pred, inserted = [], new_threshold is None
        for j in order:
            if len(pred) == k:
                break
            if not inserted and sims[i, j] < new_threshold:
                pred.append(new_label)
                inserted = True
                if len(pred) == k:
                    break
            if labels[j] not in pred:
                pred.append(labels[j])
        if not inserted and len(pred) < k:
            pred.append(new_label)
        out.append(pred)
    return out


def no_near_ties(sims, threshold):
    """Skip rows whose similarity to some item is within float32 rounding of the threshold."""
    return np.min(np.abs(sims - threshold)) > 1e-5


@pytest.mark.parametrize("max_matches,min_matches,chunk", [(50, 1, 4096), (4, 2, 7), (3, 3, 1)])
def test_match_predictions_match_brute_force(rng, max_matches, min_matches, chunk):
    x, labels = clustered(rng)
    ids = [f"p{i}" for i in range(len(x))]
    threshold = 0.6
    assert no_near_ties(cosine_matrix(x, x), threshold)
    got = km.match_predictions(
        x,
        ids,
        threshold=threshold,
        max_matches=max_matches,
        min_matches=min_matches,
        chunk_size=chunk,
        max_block_bytes=2048,
    )
    assert got == ref_matches(x, ids, threshold, max_matches, min_matches)
    assert all(len(m) <= max_matches and len(m) >= min_matches for m in got)


def test_match_predictions_f1_equals_match_f1(rng):
    # The lists are the match sets of km.match_f1 (when the cap is never reached).
    x, labels = clustered(rng)
    threshold = 0.5
    preds = km.match_predictions(x, threshold=threshold, max_matches=len(x))
    f1 = []
    for i, pred in enumerate(preds):
        truth = set(np.flatnonzero(labels == labels[i]).tolist())
        hits = len(truth & set(pred))
        f1.append(2 * hits / (len(pred) + len(truth)))
    assert np.mean(f1) == pytest.approx(km.match_f1(x, labels, threshold=threshold), abs=1e-12)


def test_match_predictions_against_gallery_and_euclidean(rng):
    x, _ = clustered(rng)
    q, g = x[:20], x[20:]
    got = km.match_predictions(
        q,
        threshold=0.6,
        max_matches=5,
        min_matches=0,
        gallery_embeddings=g,
        gallery_ids=np.arange(20, len(x)),
    )
    sims = cosine_matrix(q, g)
    for i, row in enumerate(got):
        order = sorted(range(len(g)), key=lambda j: (-sims[i, j], j))[:5]
        assert row == [20 + j for j in order if sims[i, j] >= 0.6]
    # Euclidean: within a distance, nearest first.
    got = km.match_predictions(x, threshold=1.5, metric="euclidean")
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None].astype(np.float64), axis=2)
    for i, row in enumerate(got):
        others = sorted((j for j in range(len(x)) if j != i), key=lambda j: (d[i, j], j))
        assert row == [i] + [j for j in others if d[i, j] <= 1.5][:49]


def test_identity_predictions_match_brute_force(rng):
    x, labels = clustered(rng, n_classes=30, per_class=4)
    q, g, gl = x[::4], np.delete(x, np.s_[::4], axis=0), np.delete(labels, np.s_[::4])
    names = np.array([f"id{v}" for v in gl], dtype=object)
    for new_threshold in (None, 0.7):
        # chunk_size=3 and k=5 with only 3 samples per identity: the search must widen.
        got = km.identity_predictions(q, g, names, k=5, new_threshold=new_threshold, chunk_size=3)
        assert got == ref_identities(q, g, list(names), 5, "new_individual", new_threshold)
    # Equal to predict_labels on the full neighbour list.
    values, indices = km.nearest_neighbors(q, g, k=len(g))
    assert got == km.predict_labels(
        values, names[indices], k=5, new_label="new_individual", new_threshold=0.7
    )


def test_identity_widening_needed(rng):
    # 40 near-duplicates of one identity come first: a fixed depth of 32 would miss the others.
    g = np.concatenate(
        [
            np.tile([1.0, 0.0, 0.0], (40, 1)) + rng.normal(size=(40, 3)) * 1e-3,
            np.array([[0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]),
        ]
    )
    labels = ["a"] * 40 + ["b", "c", "d"]
    got = km.identity_predictions(np.array([[1.0, 0.0, 0.0]]), g, labels, k=4)
    assert got == [["a", "b", "c", "d"]]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_write_match_submission_round_trip(rng, tmp_path):
    x, _ = clustered(rng)
    ids = [f"train_{i}" for i in range(len(x))]
    path = tmp_path / "submission.csv"
    rows = km.write_match_submission(
        path, x, ids, threshold=0.6, max_matches=10, min_matches=2, chunk_size=5
    )
    assert rows == len(x)
    table = read_csv(path)
    assert table[0] == ["posting_id", "matches"]
    expected = ref_matches(x, ids, 0.6, 10, 2)
    assert [r[0] for r in table[1:]] == ids
    assert [r[1].split(" ") for r in table[1:]] == expected


def test_write_identity_submission_round_trip(rng, tmp_path):
    x, labels = clustered(rng, n_classes=10, per_class=5)
    q, g, gl = x[::5], np.delete(x, np.s_[::5], axis=0), np.delete(labels, np.s_[::5])
    names = [f"img_{i}.jpg" for i in range(len(q))]
    path = tmp_path / "submission.csv"
    km.write_identity_submission(path, q, names, g, gl, new_threshold=0.65, chunk_size=2)
    table = read_csv(path)
    assert table[0] == ["image", "predictions"]
    expected = ref_identities(q, g, list(gl), 5, "new_individual", 0.65)
    assert [r[1].split(" ") for r in table[1:]] == [[str(v) for v in e] for e in expected]
    assert [r[0] for r in table[1:]] == names


@pytest.mark.slow
def test_many_rows_streamed_in_bounded_memory(tmp_path):
    # 20 000 x 20 000 float32 scores would take 1.6 GB; the chunked search and the streamed
    # writer stay far below (70 000 rows, Shopee's test set, take the same memory and about
    # 3 minutes on a shared 2-core CPU). Groups of 5 near-identical items find each other.
    import tracemalloc

    rng = np.random.default_rng(0)
    n, dim = 20_000, 16
    centres = rng.normal(size=(n // 5, dim)).astype("float32")
    x = np.repeat(centres, 5, axis=0) + 0.01 * rng.normal(size=(n, dim)).astype("float32")
    path = tmp_path / "big.csv"
    tracemalloc.start()
    try:
        km.write_match_submission(
            path,
            x,
            np.arange(n),
            threshold=0.99,
            max_matches=50,
            chunk_size=2048,
            max_block_bytes=32 * 2**20,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, peak
    with open(path) as handle:
        next(handle)
        sizes = [len(line.split(",")[1].split()) for line in handle]
    assert len(sizes) == n
    assert np.mean(np.array(sizes) == 5) > 0.99


def test_write_submission_and_errors(tmp_path):
    path = tmp_path / "s.csv"
    assert (
        km.write_submission(
            path, ["a", "b"], iter([["x", 1], []]), columns=("image", "predictions")
        )
        == 2
    )
    assert read_csv(path) == [["image", "predictions"], ["a", "x 1"], ["b", ""]]
    with pytest.raises(ValueError, match="predictions"):
        km.write_submission(path, ["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="predictions"):
        km.write_submission(path, ["a"], [["x"], ["y"]])
    with pytest.raises(ValueError, match="predictions"):
        km.write_submission(path, ["a"], ["xy"])
    with pytest.raises(ValueError, match="columns"):
        km.write_submission(path, ["a"], [["x"]], columns=("a",))
    x = np.eye(3, dtype="float32")
    with pytest.raises(ValueError, match="min_matches"):
        km.match_predictions(x, min_matches=4, max_matches=3)
    with pytest.raises(ValueError, match="max_matches"):
        km.match_predictions(x, max_matches=0)
    with pytest.raises(ValueError, match="threshold"):
        km.match_predictions(x, threshold=float("nan"))
    with pytest.raises(ValueError, match="`ids`"):
        km.match_predictions(x, ids=["a"])
    with pytest.raises(ValueError, match="embeddings"):
        km.match_predictions(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="new_label"):
        km.identity_predictions(x, x, [0, 1, 2], new_label=None, new_threshold=0.5)
    with pytest.raises(ValueError, match="gallery_labels"):
        km.identity_predictions(x, x, [0, 1])
