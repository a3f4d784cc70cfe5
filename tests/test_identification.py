"""Identification metrics against brute-force loops."""

import numpy as np
import pytest

import keras_margins as km


def ref_scores(p, g, metric):
    out = np.empty((len(p), len(g)))
    for i, a in enumerate(p):
        for j, b in enumerate(g):
            if metric == "cosine":
                out[i, j] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            else:
                out[i, j] = -np.linalg.norm(a - b)
    return out


def ref_ranks(p, pl, g, gl, metric, extra=None):
    """Pessimistic rank: identities (and distractors) scoring >= the true identity."""
    s = ref_scores(p, g, metric)
    ranks = []
    for i in range(len(p)):
        best = {c: max(s[i, j] for j in range(len(g)) if gl[j] == c) for c in set(gl.tolist())}
        true = best[pl[i]]
        r = sum(1 for v in best.values() if v >= true)
        if extra is not None:
            r += sum(1 for v in ref_scores(p[i : i + 1], extra, metric)[0] if v >= true)
        ranks.append(r)
    return np.array(ranks)


def make_split(rng, n_ids=12, per_id=3, n_probes=40, d=6, noise=0.7):
    centres = rng.normal(size=(n_ids, d))
    gl = np.repeat(np.arange(n_ids), per_id)
    g = centres[gl] + noise * rng.normal(size=(len(gl), d))
    pl = rng.integers(0, n_ids, size=n_probes)
    p = centres[pl] + noise * rng.normal(size=(n_probes, d))
    return p, pl, g, gl


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ranks_and_cmc_match_brute_force(rng, metric):
    p, pl, g, gl = make_split(rng)
    ranks = km.identification_ranks(p, pl, g, gl, metric=metric)
    expected = ref_ranks(p, pl, g, gl, metric)
    np.testing.assert_array_equal(ranks, expected)
    assert 0 < np.mean(expected == 1) < 1  # the data is neither trivial nor hopeless
    k, cmc = km.cmc_curve(p, pl, g, gl, metric=metric)
    np.testing.assert_array_equal(k, np.arange(1, 13))
    np.testing.assert_allclose(cmc, [np.mean(expected <= r) for r in range(1, 13)])
    assert cmc[-1] == 1.0 and np.all(np.diff(cmc) >= 0)
    for r in (1, 5):
        assert km.rank_k_accuracy(p, pl, g, gl, k=r, metric=metric) == pytest.approx(
            np.mean(expected <= r)
        )


def test_small_blocks_give_the_same_answer(rng):
    p, pl, g, gl = make_split(rng)
    full = km.identification_ranks(p, pl, g, gl)
    tiny = km.identification_ranks(p, pl, g, gl, max_block_bytes=1)  # one probe per block
    np.testing.assert_array_equal(full, tiny)


def test_ties_count_against_the_probe():
    # Every embedding identical: every identity ties with the true one -> rank = #identities.
    g = np.ones((4, 3))
    ranks = km.identification_ranks(np.ones((2, 3)), [0, 1], g, [0, 1, 2, 3])
    np.testing.assert_array_equal(ranks, [4, 4])
    assert km.rank_k_accuracy(np.ones((2, 3)), [0, 1], g, [0, 1, 2, 3], k=1) == 0.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rank1_with_distractors_matches_brute_force(rng, metric):
    p, pl, g, gl = make_split(rng, n_probes=25)
    d = rng.normal(size=(60, 6)) * 1.5
    sizes = (0, 5, 20, 60, 1000)
    out = km.rank1_with_distractors(
        p, pl, g, gl, d, num_distractors=sizes, seed=7, metric=metric, max_block_bytes=2000
    )
    assert list(out) == [0, 5, 20, 60]  # 1000 > available distractors: dropped
    perm = np.random.default_rng(7).permutation(60)
    for n in out:
        ranks = ref_ranks(p, pl, g, gl, metric, extra=d[perm[:n]] if n else None)
        assert out[n] == pytest.approx(np.mean(ranks == 1))
    values = list(out.values())
    assert all(a >= b for a, b in zip(values, values[1:]))  # nested sets: rank-1 never rises
    assert out[0] == km.rank_k_accuracy(p, pl, g, gl, k=1, metric=metric)


def ref_dir(p, pl, g, gl, f, rank):
    s = ref_scores(p, g, "cosine")
    mated = np.isin(pl, gl)
    ranks = np.zeros(len(p), int)
    ranks[mated] = ref_ranks(p[mated], pl[mated], g, gl, "cosine")
    true = np.array([max(s[i, gl == pl[i]]) if mated[i] else -np.inf for i in range(len(p))])
    top = s.max(axis=1)
    n_nm = (~mated).sum()
    best = 0.0
    for t in sorted(set(top.tolist()) | set(true.tolist()) | {np.inf}):
        if np.sum(top[~mated] >= t) <= np.floor(f * n_nm + 1e-9):
            best = max(best, np.mean((ranks[mated] <= rank) & (true[mated] >= t)))
    return best


@pytest.mark.parametrize("rank", [1, 3])
def test_dir_at_far_matches_brute_force(rng, rank):
    p, pl, g, gl = make_split(rng, n_probes=60)
    # Identities 8..11 leave the gallery: their probes become non-mated.
    keep = gl < 8
    g, gl = g[keep], gl[keep]
    out = km.dir_at_far(p, pl, g, gl, far_targets=(0.5, 0.1, 0.05, 1e-3), rank=rank)
    n_nm = out["num_non_mated"]
    assert n_nm == np.sum(pl >= 8) and 10 < n_nm < 100
    assert out["unresolved"] == (1e-3,)
    for f in (0.5, 0.1, 0.05):
        assert out["dir"][f] == pytest.approx(ref_dir(p, pl, g, gl, f, rank))
    assert out["dir"][0.5] >= out["dir"][0.1] >= out["dir"][0.05]


def test_errors(rng):
    p, pl, g, gl = make_split(rng)
    with pytest.raises(ValueError, match="in the gallery"):
        km.cmc_curve(p, pl + 100, g, gl)
    with pytest.raises(ValueError, match="max_rank"):
        km.cmc_curve(p, pl, g, gl, max_rank=13)
    with pytest.raises(ValueError, match="`k`"):
        km.rank_k_accuracy(p, pl, g, gl, k=0)
    with pytest.raises(ValueError, match="max_rank"):
        km.rank_k_accuracy(p, pl, g, gl, k=50)
    with pytest.raises(ValueError, match="probe_labels"):
        km.cmc_curve(p, pl[:-1], g, gl)
    with pytest.raises(ValueError, match="gallery_labels"):
        km.cmc_curve(p, pl, g, gl[:-1])
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="probe_embeddings.*finite"):
        km.cmc_curve(bad, pl, g, gl)
    with pytest.raises(ValueError, match="empty"):
        km.cmc_curve(np.zeros((0, 6)), [], g, gl)
    with pytest.raises(ValueError, match="embedding dimension"):
        km.cmc_curve(p[:, :3], pl, g, gl)
    with pytest.raises(ValueError, match="non-mated"):
        km.dir_at_far(p, pl, g, gl)
    with pytest.raises(ValueError, match="far_targets"):
        km.dir_at_far(p, pl, g, gl, far_targets=(2.0,))
    with pytest.raises(ValueError, match="num_distractors"):
        km.rank1_with_distractors(p, pl, g, gl, g[:3], num_distractors=(10,))
    with pytest.raises(ValueError, match="metric"):
        km.cmc_curve(p, pl, g, gl, metric="dot")


@pytest.mark.parametrize("scale", [2.0**-900, 1e-30, 1e30, 1e160, 2.0**1000])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_any_magnitude_gives_the_unscaled_ranks(rng, metric, scale):
    # Issue 12: at 1e160 Euclidean scores overflowed (inf - inf) and every probe got a
    # "perfect" rank 1.
    p, pl, g, gl = make_split(rng)
    d = rng.normal(size=(30, 6)) * 1.5
    expected = ref_ranks(p, pl, g, gl, metric)
    np.testing.assert_array_equal(
        km.identification_ranks(p * scale, pl, g * scale, gl, metric=metric), expected
    )
    want = km.rank1_with_distractors(p, pl, g, gl, d, num_distractors=(0, 10, 30), metric=metric)
    got = km.rank1_with_distractors(
        p * scale, pl, g * scale, gl, d * scale, num_distractors=(0, 10, 30), metric=metric
    )
    assert got == want
    keep = gl < 8
    want = km.dir_at_far(p, pl, g[keep], gl[keep], far_targets=(0.5, 0.1), metric=metric)
    got = km.dir_at_far(
        p * scale, pl, g[keep] * scale, gl[keep], far_targets=(0.5, 0.1), metric=metric
    )
    assert got["dir"] == want["dir"]
    unit = 1.0 if metric == "cosine" else scale
    for f, t in want["threshold"].items():
        assert got["threshold"][f] / unit == pytest.approx(t, rel=1e-9)


def test_duplicate_gallery_rows_tie_exactly():
    # The same sample enrolled under two identities ties exactly: counted against the probe.
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 8))[[0, 1, 2, 0, 1, 2, 0]]
    gl = np.arange(7)
    ranks = km.identification_ranks(g, gl, g, gl)
    np.testing.assert_array_equal(ranks, [3, 2, 2, 3, 2, 2, 3])


def test_num_distractors_and_far_targets_errors(rng):
    p, pl, g, gl = make_split(rng)
    with pytest.raises(ValueError, match=r"`num_distractors` must contain only integers.*2\.7"):
        km.rank1_with_distractors(p, pl, g, gl, g[:5], num_distractors=(2.7,))
    with pytest.raises(TypeError, match="`num_distractors` must be a sequence"):
        km.rank1_with_distractors(p, pl, g, gl, g[:5], num_distractors=3)
    with pytest.raises(ValueError, match="`num_distractors` must not be empty"):
        km.rank1_with_distractors(p, pl, g, gl, g[:5], num_distractors=())
    with pytest.raises(ValueError, match=">= 0"):
        km.rank1_with_distractors(p, pl, g, gl, g[:5], num_distractors=(-1, 2))
    keep = gl < 8
    with pytest.raises(ValueError, match="`far_targets` must be a list of numbers"):
        km.dir_at_far(p, pl, g[keep], gl[keep], far_targets="a")
    with pytest.raises(ValueError, match="`far_targets` must be a 1-D"):
        km.dir_at_far(p, pl, g[keep], gl[keep], far_targets=[[0.1], [0.2]])
    with pytest.raises(ValueError, match="`probe_labels` must not contain NaN"):
        km.identification_ranks(p, np.where(pl == 0, np.nan, pl), g, gl)
