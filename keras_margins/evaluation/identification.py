"""Identification metrics: closed-set rank-k / CMC, distractors (MegaFace-style), DIR at FAR.

A *gallery* holds enrolled samples with identities; each *probe* is searched against it. A
gallery identity's score for a probe is the best score over that identity's gallery samples
(cosine similarity, or minus the Euclidean distance). Results do not depend on the magnitude
of the embeddings (rows are scaled by powers of two first, see
:mod:`keras_margins.evaluation.search`); NaN or infinite embeddings are a ``ValueError``.
The *rank* of a probe is the number of
gallery identities (and distractors) scoring at least as well as its true identity, so ties
are counted against the probe: a model that maps everything to one point gets rank = number of
identities, not rank 1.
"""

from typing import NamedTuple

import numpy as np

from keras_margins._validation import check_choice, check_int
from keras_margins.evaluation._common import (
    METRICS,
    check_embeddings,
    check_fars,
    check_int_sequence,
    check_labels,
    check_same_dim,
    far_operating_points,
    score_block,
)
from keras_margins.evaluation.search import duplicate_groups, global_exponent, normalize_rows


def _prepare(probe_embeddings, gallery_embeddings, metric):
    """Checked float64 probes and gallery, normalized (cosine) or scaled by a common power of
    two (Euclidean, exact), and that power's exponent (scores are ``2^exponent`` times the
    scaled ones)."""
    p = check_embeddings("probe_embeddings", probe_embeddings, dtype=np.float64)
    g = check_embeddings("gallery_embeddings", gallery_embeddings, dtype=np.float64)
    check_same_dim("probe_embeddings", p, "gallery_embeddings", g)
    if metric == "cosine":
        return normalize_rows(p), normalize_rows(g), 0
    common = global_exponent(p, g)
    return np.ldexp(p, -common), np.ldexp(g, -common), common


def _rows_per_block(cols, max_block_bytes):
    return max(1, max_block_bytes // (8 * 3 * max(cols, 1)))


def _identity_scores(p, g, gallery_labels, metric, max_block_bytes):
    """Yield ``(row_slice, identity_scores)`` with the best score per gallery identity."""
    ids, inv = np.unique(gallery_labels, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, inv[order][1:] != inv[order][:-1]])
    g_sorted = g[order]
    # Bit-identical gallery rows (the same sample enrolled under two identities) must tie
    # exactly: score each distinct row once (a BLAS product may round copies differently).
    groups = duplicate_groups(g_sorted)
    rows = _rows_per_block(g.shape[0], max_block_bytes)
    for r0 in range(0, p.shape[0], rows):
        r1 = min(p.shape[0], r0 + rows)
        if groups is None:
            s = score_block(p[r0:r1], g_sorted, metric)
        else:
            first, inverse = groups
            s = score_block(p[r0:r1], g_sorted[first], metric)[:, inverse]
        yield slice(r0, r1), np.maximum.reduceat(s, starts, axis=1), ids


class _MatedScores(NamedTuple):
    """What :func:`_mated_scores` measures for each probe, and the prepared inputs.

    ``probes`` and ``gallery`` are the checked float64 rows, normalized (cosine) or scaled by
    ``2^-exponent`` (Euclidean); scores are in those scaled units.
    """

    probes: np.ndarray  # (num_probes, D)
    gallery: np.ndarray  # (num_gallery, D)
    ranks: np.ndarray  # rank of the true identity, ties against the probe (non-mated: all)
    true_scores: np.ndarray  # score of the true identity (-inf for non-mated probes)
    top_scores: np.ndarray  # best score over all gallery identities
    mated: np.ndarray  # whether the probe's identity is in the gallery
    num_identities: int
    exponent: int  # Euclidean scores are 2^exponent times the scaled ones (0 for cosine)


def _mated_scores(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    metric,
    max_block_bytes,
    require_mated=True,
):
    """Per probe: rank of its true identity, its true score, and its best gallery score."""
    check_choice("metric", metric, METRICS)
    p, g, common = _prepare(probe_embeddings, gallery_embeddings, metric)
    pl = check_labels("probe_labels", probe_labels, p.shape[0], "probe_embeddings")
    gl = check_labels("gallery_labels", gallery_labels, g.shape[0], "gallery_embeddings")
    ids = np.unique(gl)
    mated = np.isin(pl, ids)
    if require_mated and not mated.all():
        missing = np.unique(pl[~mated])[:5].tolist()
        raise ValueError(
            "Closed-set identification needs every probe identity in the gallery. Received: "
            f"probe_labels with {int((~mated).sum())} probe(s) of absent identities, e.g. "
            f"{missing}"
        )
    pos = np.searchsorted(ids, pl)
    pos = np.where(mated, pos, 0)
    ranks = np.zeros(p.shape[0], dtype=np.int64)
    true = np.full(p.shape[0], -np.inf)
    top = np.empty(p.shape[0])
    for sl, id_scores, _ in _identity_scores(p, g, gl, metric, max_block_bytes):
        t = id_scores[np.arange(id_scores.shape[0]), pos[sl]]
        t = np.where(mated[sl], t, -np.inf)
        true[sl] = t
        ranks[sl] = np.count_nonzero(id_scores >= t[:, None], axis=1)
        top[sl] = id_scores.max(axis=1)
    return _MatedScores(p, g, ranks, true, top, mated, ids.size, common)


def identification_ranks(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    metric="cosine",
    max_block_bytes=64 * 2**20,
):
    """Rank of each probe's true identity among the gallery identities (1 = best).

    ``rank(q) = #{identities c : score(q, c) >= score(q, label(q))}``, with
    ``score(q, c) = max`` over ``c``'s gallery samples; ties count against the probe.

    Args:
        probe_embeddings: ``(num_probes, D)``.
        probe_labels: ``(num_probes,)``; every identity must be in the gallery.
        gallery_embeddings: ``(num_gallery, D)``.
        gallery_labels: ``(num_gallery,)``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 64 MiB.

    Returns:
        Int64 array of shape ``(num_probes,)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> g = np.eye(3)
        >>> km.identification_ranks([[1, 0.5, 0], [1, 0.9, 0]], [1, 1], g, [0, 1, 2]).tolist()
        [2, 2]
    """
    return _mated_scores(
        probe_embeddings, probe_labels, gallery_embeddings, gallery_labels, metric, max_block_bytes
    ).ranks


def cmc_curve(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    max_rank=None,
    metric="cosine",
    max_block_bytes=64 * 2**20,
):
    """Cumulative match characteristic: ``CMC(k) = mean(rank <= k)`` for ``k = 1..max_rank``.

    Args:
        probe_embeddings: ``(num_probes, D)``.
        probe_labels: ``(num_probes,)``; every identity must be in the gallery.
        gallery_embeddings: ``(num_gallery, D)``.
        gallery_labels: ``(num_gallery,)``.
        max_rank: Last rank of the curve, at most the number of gallery identities.
            Defaults to ``None`` (all identities).
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        max_block_bytes: Memory bound of one block of scores. Defaults to 64 MiB.

    Returns:
        ``(ranks, cmc)``: ``ranks = [1, ..., max_rank]`` and the identification rate at each.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> ranks, cmc = km.cmc_curve([[1, 0.2, 0], [0.1, 0, 1]], [1, 2], np.eye(3), [0, 1, 2])
        >>> cmc.tolist()
        [0.5, 1.0, 1.0]
    """
    m = _mated_scores(
        probe_embeddings, probe_labels, gallery_embeddings, gallery_labels, metric, max_block_bytes
    )
    ranks, n_ids = m.ranks, m.num_identities
    if max_rank is None:
        max_rank = n_ids
    max_rank = check_int("max_rank", max_rank, minimum=1)
    if max_rank > n_ids:
        raise ValueError(
            f"`max_rank` must be at most the number of gallery identities ({n_ids}). "
            f"Received: max_rank={max_rank}"
        )
    k = np.arange(1, max_rank + 1)
    cmc = np.mean(ranks[:, None] <= k[None, :], axis=0)
    return k, cmc


def rank_k_accuracy(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    k=1,
    metric="cosine",
    max_block_bytes=64 * 2**20,
):
    """Closed-set identification rate at rank ``k``: ``mean(rank <= k)``.

    Args:
        probe_embeddings: ``(num_probes, D)``.
        probe_labels: ``(num_probes,)``; every identity must be in the gallery.
        gallery_embeddings: ``(num_gallery, D)``.
        gallery_labels: ``(num_gallery,)``.
        k: Rank, at most the number of gallery identities. Defaults to ``1``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        max_block_bytes: Memory bound. Defaults to 64 MiB.

    Returns:
        A float in ``[0, 1]``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> km.rank_k_accuracy([[1, 0.2, 0], [0.1, 0, 1]], [1, 2], np.eye(3), [0, 1, 2], k=1)
        0.5
    """
    k = check_int("k", k, minimum=1)
    _, cmc = cmc_curve(
        probe_embeddings,
        probe_labels,
        gallery_embeddings,
        gallery_labels,
        max_rank=k,
        metric=metric,
        max_block_bytes=max_block_bytes,
    )
    return float(cmc[-1])


def rank1_with_distractors(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    distractor_embeddings,
    num_distractors=(0, 10, 100, 1000, 10000, 100000, 1000000),
    seed=0,
    metric="cosine",
    max_block_bytes=64 * 2**20,
):
    """MegaFace-style rank-1 identification as distractors are added to the gallery.

    Distractors are samples of identities that no probe has. For each size ``n`` the first
    ``n`` distractors of one seeded permutation join the gallery (so the sets are nested, as
    MegaFace's 10 ... 1M are), and a probe is identified at rank 1 when no gallery identity and
    no distractor scores at least as well as its true identity.

    Args:
        probe_embeddings: ``(num_probes, D)``.
        probe_labels: ``(num_probes,)``; every identity must be in the gallery.
        gallery_embeddings: ``(num_gallery, D)``.
        gallery_labels: ``(num_gallery,)``.
        distractor_embeddings: ``(num_distractors_total, D)``.
        num_distractors: Sizes to evaluate; sizes above the number of distractors available
            are dropped. Defaults to ``(0, 10, 100, ..., 1e6)``.
        seed: Seed of the distractor permutation. Defaults to ``0``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        max_block_bytes: Memory bound. Defaults to 64 MiB.

    Returns:
        A dict ``{n: rank-1 rate}`` for each evaluated size.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> out = km.rank1_with_distractors([[1, 0.2, 0]], [0], [[1, 0, 0]], [0],
        ...                                 [[0, 0, 1], [1, 0.3, 0]], num_distractors=(0, 2))
        >>> out
        {0: 1.0, 2: 0.0}
    """
    seed = check_int("seed", seed, minimum=0)
    m = _mated_scores(
        probe_embeddings, probe_labels, gallery_embeddings, gallery_labels, metric, max_block_bytes
    )
    p, ranks, true, common = m.probes, m.ranks, m.true_scores, m.exponent
    d = check_embeddings("distractor_embeddings", distractor_embeddings, dtype=np.float64)
    check_same_dim("probe_embeddings", p, "distractor_embeddings", d)
    if metric == "cosine":
        d = normalize_rows(d)
    else:
        # Probes and gallery were scaled by 2^-common; if the distractors are larger, scale
        # everything down further (exactly) so that the three sets share one range.
        extra = max(0, global_exponent(d) - common)
        p, true = np.ldexp(p, -extra), np.ldexp(true, -extra)
        d = np.ldexp(d, -(common + extra))
    sizes = sorted(set(check_int_sequence("num_distractors", num_distractors, minimum=0)))
    sizes = [n for n in sizes if n <= d.shape[0]]
    if not sizes:
        raise ValueError(
            f"`num_distractors` must include a size <= the {d.shape[0]} distractors given. "
            f"Received: num_distractors={num_distractors}"
        )
    perm = np.random.default_rng(seed).permutation(d.shape[0])[: sizes[-1]]
    d = d[perm]
    beaten = {n: np.zeros(p.shape[0], dtype=np.int64) for n in sizes}
    rows = _rows_per_block(d.shape[0], max_block_bytes)
    for r0 in range(0, p.shape[0], rows):
        r1 = min(p.shape[0], r0 + rows)
        ge = score_block(p[r0:r1], d, metric) >= true[r0:r1, None]
        csum = np.concatenate([np.zeros((r1 - r0, 1), np.int64), np.cumsum(ge, axis=1)], axis=1)
        for n in sizes:
            beaten[n][r0:r1] = csum[:, n]
    return {n: float(np.mean(ranks + beaten[n] == 1)) for n in sizes}


def dir_at_far(
    probe_embeddings,
    probe_labels,
    gallery_embeddings,
    gallery_labels,
    far_targets=(1e-1, 1e-2, 1e-3),
    rank=1,
    metric="cosine",
    max_block_bytes=64 * 2**20,
):
    """Open-set identification: detection and identification rate (DIR) at false alarm rates.

    Probes whose identity is in the gallery are *mated*, the others *non-mated*. A search
    raises an alarm at threshold ``t`` when its best gallery score is ``>= t``.
    ``FAR(t) = #{non-mated: top score >= t} / #non-mated`` and
    ``DIR(t) = #{mated: rank <= rank_k and true score >= t} / #mated``. For each target ``f``
    the threshold is the lowest one whose false alarms do not exceed ``floor(f * #non-mated)``;
    targets with ``f * #non-mated < 1`` are unresolved.

    Args:
        probe_embeddings: ``(num_probes, D)``, mated and non-mated together.
        probe_labels: ``(num_probes,)``.
        gallery_embeddings: ``(num_gallery, D)``.
        gallery_labels: ``(num_gallery,)``.
        far_targets: Target false alarm rates in ``(0, 1]``. Defaults to
            ``(1e-1, 1e-2, 1e-3)``.
        rank: Rank within which the mate must be found. Defaults to ``1``.
        metric: ``"cosine"`` or ``"euclidean"``. Defaults to ``"cosine"``.
        max_block_bytes: Memory bound. Defaults to 64 MiB.

    Returns:
        A dict: ``dir`` and ``threshold`` (score units: cosine similarity, or minus the
        Euclidean distance) per resolved target, ``unresolved`` (tuple), ``num_mated``,
        ``num_non_mated``.

    Reference:
        Grother, Ngan, Hanaoka, "Face Recognition Vendor Test (FRVT) Part 2: Identification",
        NIST IR 8271, 2019.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> probes = [[1, 0.1, 0], [0.1, 1, 0], [0, 0.2, 1], [0.6, 0.6, 0.5]]
        >>> out = km.dir_at_far(probes, [0, 1, 7, 8], np.eye(2, 3), [0, 1], far_targets=(0.5,))
        >>> out["dir"]
        {0.5: 1.0}
    """
    rank = check_int("rank", rank, minimum=1)
    fars = check_fars(far_targets)
    m = _mated_scores(
        probe_embeddings,
        probe_labels,
        gallery_embeddings,
        gallery_labels,
        metric,
        max_block_bytes,
        require_mated=False,
    )
    ranks, true, top, mated = m.ranks, m.true_scores, m.top_scores, m.mated
    n_ids = m.num_identities
    if rank > n_ids:
        raise ValueError(
            f"`rank` must be at most the number of gallery identities ({n_ids}). "
            f"Received: rank={rank}"
        )
    n_m, n_nm = int(mated.sum()), int((~mated).sum())
    if n_m == 0 or n_nm == 0:
        raise ValueError(
            "`probe_labels` must include both mated probes (identity in the gallery) and "
            f"non-mated probes. Received: {n_m} mated and {n_nm} non-mated probes"
        )
    nm_top = np.sort(top[~mated])[::-1]
    found = (ranks <= rank)[mated]
    true_m = true[mated]
    resolved, unresolved = far_operating_points(fars, n_nm)
    out = {
        "dir": {},
        "threshold": {},
        "unresolved": unresolved,
        "num_mated": n_m,
        "num_non_mated": n_nm,
    }
    for f, allowed in resolved:
        if allowed >= n_nm:
            t = -np.inf
        else:
            # Any t above the (allowed+1)-th highest non-mated score keeps alarms <= allowed.
            t = float(np.nextafter(nm_top[allowed], np.inf))
        out["dir"][f] = float(np.mean(found & (true_m >= t)))
        out["threshold"][f] = float(np.ldexp(t, m.exponent))  # back to the embeddings' units
    return out


__all__ = [
    "identification_ranks",
    "cmc_curve",
    "rank_k_accuracy",
    "rank1_with_distractors",
    "dir_at_far",
]
