"""km.subcenter_cleaning (sub-center ArcFace's drop.py recipe, issue 14) against a float64
brute force, on planted label noise, and the K=1 head it builds."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import to_numpy

C, K, D = 6, 3, 8


def brute_force(centers, x, y, threshold):
    """float64 loops over classes and samples: votes, dominant, cosine, outliers.

    ``centers`` is ``(C, K, D)``; every vector is normalized by hand.
    """
    c_count, k_count, _ = centers.shape

    def unit(v):
        v = np.asarray(v, np.float64)
        return v / math.sqrt(sum(t * t for t in v))

    votes = np.zeros((c_count, k_count), dtype=int)
    cos = {}
    for i, (xi, yi) in enumerate(zip(x, y)):
        u = unit(xi)
        cos[i] = [float(np.dot(u, unit(centers[yi, k]))) for k in range(k_count)]
        best = max(range(k_count), key=lambda k: (cos[i][k], -k))
        votes[yi, best] += 1
    dominant = []
    for c in range(c_count):
        if votes[c].sum() == 0:
            dominant.append(-1)
        else:
            dominant.append(max(range(k_count), key=lambda k: (votes[c, k], -k)))
    cosine = np.array([cos[i][dominant[yi]] for i, yi in enumerate(y)])
    outliers = cosine < math.cos(math.radians(threshold))
    return votes, np.array(dominant), cosine, outliers


def head_with_centers(centers, **kwargs):
    """An ArcFace head (or another head class) whose sub-centre ``k`` of class ``c`` is
    ``centers[c, k]``."""
    cls = kwargs.pop("cls", km.ArcFace)
    c, k, d = centers.shape
    head = cls(num_classes=c, sub_centers=k, **kwargs)
    head.build((None, d))
    head.kernel.assign(centers.reshape(c * k, d).T.astype("float32"))
    return head


@pytest.fixture
def random_case(rng):
    centers = rng.normal(size=(C, K, D)).astype("float32")
    x = rng.normal(size=(60, D)).astype("float32")
    y = rng.integers(0, C, size=60)
    return centers, x, y


@pytest.mark.parametrize("threshold", [75.0, 88.0])
def test_matches_brute_force(random_case, threshold):
    centers, x, y = random_case
    head = head_with_centers(centers)
    votes, dominant, cosine, outliers = brute_force(centers, x, y, threshold)
    for batch_size in (None, 7):
        got = km.subcenter_cleaning(head, x, y, threshold=threshold, batch_size=batch_size)
        np.testing.assert_array_equal(got.votes, votes)
        np.testing.assert_array_equal(got.dominant, dominant)
        np.testing.assert_allclose(got.cosine, cosine, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(got.outliers, outliers)
        np.testing.assert_array_equal(got.keep, ~outliers)
    assert 0 < outliers.sum() < len(y)  # the case exercises both sides of the threshold


def planted_case(rng, n_per_class=12, flipped=3):
    """Classes whose samples sit near a dominant sub-centre ``d_c = c % K``, plus samples of
    another class labelled ``c`` (near a second sub-centre of ``c``, where sub-center ArcFace
    gathers them)."""
    basis = np.linalg.qr(rng.normal(size=(2 * C, 2 * C)))[0][:, : 2 * C]  # orthonormal
    dim = 2 * C
    true = basis[:C]  # the clean direction of each class
    centers = rng.normal(size=(C, K, dim)) * 0.3
    x, y, planted = [], [], []
    for c in range(C):
        d = c % K
        centers[c, d] = 2.0 * true[c]
        other = (c + 1) % C
        noisy_k = (d + 1) % K
        centers[c, noisy_k] = 2.0 * (true[other] + 0.5 * basis[C + c])
        for _ in range(n_per_class):
            x.append(true[c] + 0.1 * rng.normal(size=dim))
            y.append(c)
            planted.append(False)
        for _ in range(flipped):  # images of `other` labelled c
            x.append(true[other] + 0.5 * basis[C + c] + 0.1 * rng.normal(size=dim))
            y.append(c)
            planted.append(True)
    return centers.astype("float32"), np.array(x, "float32"), np.array(y), np.array(planted)


def test_planted_mislabelled_samples_are_the_outliers(rng):
    centers, x, y, planted = planted_case(rng)
    result = km.subcenter_cleaning(head_with_centers(centers), x, y)
    np.testing.assert_array_equal(result.dominant, np.arange(C) % K)
    np.testing.assert_array_equal(result.outliers, planted)
    for c in range(C):  # 12 votes for the dominant sub-centre, 3 for the noisy one
        assert result.votes[c, c % K] == 12 and result.votes[c, (c % K + 1) % K] == 3
    assert len(result.empty_classes) == 0 and len(result.dropped_classes) == 0


def test_k1_head_holds_the_dominant_centres(random_case):
    centers, x, y = random_case
    head = head_with_centers(centers, scale=20.0, margin=0.3)
    result = km.subcenter_cleaning(head, x, y)
    new = result.to_head()
    assert type(new) is km.ArcFace and new.sub_centers == 1 and new.num_classes == C
    config, old = new.get_config(), head.get_config()
    for key in ("scale", "margin", "easy_margin", "interclass_filtering_threshold"):
        assert config[key] == old[key], key
    assert new.name != head.name
    # Inference logits: scale * cosine to each class's dominant sub-centre (float64 reference).
    dom = centers[np.arange(C), result.dominant].astype(np.float64)
    xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    expected = 20.0 * xn @ (dom / np.linalg.norm(dom, axis=1, keepdims=True)).T
    got = to_numpy(new(x))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    np.testing.assert_allclose(got[np.arange(len(y)), y] / 20.0, result.cosine, atol=1e-5)
    # Those are the original head's cosines to the dominant sub-centres.
    full = to_numpy(head.cosine(x))  # the max over all sub-centres is never below it
    assert np.all(full >= got / 20.0 - 1e-5)


def test_classes_without_samples_are_never_given_a_centre(random_case):
    centers, x, y = random_case
    y = np.where(y == 4, 0, y)  # class 4 has no sample
    head = head_with_centers(centers)
    result = km.subcenter_cleaning(head, x, y)
    assert result.dominant[4] == -1 and result.empty_classes.tolist() == [4]
    assert np.all(np.isnan(result.centers[4]))
    assert result.votes[4].sum() == 0
    with pytest.raises(ValueError, match="drop_classes=True"):
        result.to_head()
    new, class_map = result.to_head(drop_classes=True)
    kept = [c for c in range(C) if c not in result.dropped_classes]
    assert 4 in result.dropped_classes and new.num_classes == len(kept)
    np.testing.assert_array_equal(class_map[kept], np.arange(len(kept)))
    assert np.all(class_map[result.dropped_classes] == -1)
    np.testing.assert_array_equal(
        to_numpy(new.kernel).T, centers[kept, result.dominant[kept]].astype("float32")
    )
    assert np.all(class_map[y[result.keep]] >= 0)


def test_partial_fc(random_case):
    centers, x, y = random_case
    pfc = km.PartialFC(km.ArcFace(C, sub_centers=K, scale=16.0), sample_rate=0.5, seed=3)
    pfc.build((None, D))
    pfc.kernel.assign(centers.reshape(C * K, D))  # row c * K + k
    result = km.subcenter_cleaning(pfc, x, y)
    plain = km.subcenter_cleaning(head_with_centers(centers), x, y)
    np.testing.assert_array_equal(result.dominant, plain.dominant)
    np.testing.assert_array_equal(result.outliers, plain.outliers)
    new = result.to_head()
    assert isinstance(new, km.PartialFC) and new.sample_rate == 0.5 and new.seed == 3
    assert new.head.sub_centers == 1 and new.head.scale == 16.0
    np.testing.assert_array_equal(to_numpy(new.kernel), centers[np.arange(C), result.dominant])
    np.testing.assert_allclose(
        to_numpy(new(x))[np.arange(len(y)), y] / 16.0, result.cosine, atol=1e-5
    )
    # The wrapped head alone holds no centres: a clear error pointing to the PartialFC.
    with pytest.raises(ValueError, match="PartialFC"):
        km.subcenter_cleaning(pfc.head, x, y)


def test_training_state_is_carried_over(random_case):
    centers, x, y = random_case
    head = head_with_centers(centers, cls=km.SphereFace)
    head.step.assign(17)
    new = km.subcenter_cleaning(head, x, y).to_head()
    assert type(new) is km.SphereFace and int(to_numpy(new.step)) == 17


def test_non_finite_embeddings_are_outliers_without_a_vote(random_case):
    centers, x, y = random_case
    x = x.copy()
    x[0] = np.nan
    x[1] = 0.0
    head = head_with_centers(centers)
    result = km.subcenter_cleaning(head, x, y)
    assert np.isnan(result.cosine[:2]).all() and result.outliers[:2].all()
    assert result.votes.sum() == len(y) - 2
    votes, _, cosine, _ = brute_force(centers, x[2:], y[2:], 75.0)
    np.testing.assert_array_equal(result.votes, votes)


def test_bad_arguments(random_case):
    centers, x, y = random_case
    head = head_with_centers(centers)
    one = km.ArcFace(C)
    one.build((None, D))
    with pytest.raises(ValueError, match="sub_centers=1.*nothing to clean"):
        km.subcenter_cleaning(one, x, y)
    for bad in (0.0, 180.0, -5.0, float("nan"), "75"):
        with pytest.raises(ValueError, match="`threshold`"):
            km.subcenter_cleaning(head, x, y, threshold=bad)
    for bad_label in (C, -1, 1.5):
        labels = y.astype("float64")
        labels[5] = bad_label
        with pytest.raises(ValueError, match=r"`labels`.*labels\[5\]"):
            km.subcenter_cleaning(head, x, labels)
    with pytest.raises(ValueError, match="`labels`"):
        km.subcenter_cleaning(head, x, y[:-1])
    with pytest.raises(ValueError, match="`embeddings`"):
        km.subcenter_cleaning(head, x[:, :-1], y)
    with pytest.raises(ValueError, match="`batch_size`"):
        km.subcenter_cleaning(head, x, y, batch_size=0)
    with pytest.raises(TypeError, match="`head`"):
        km.subcenter_cleaning(keras.layers.Dense(3), x, y)
    with pytest.raises(ValueError, match="`head` must be built"):
        km.subcenter_cleaning(km.ArcFace(C, sub_centers=K), x, y)
    with pytest.raises(ValueError, match="`drop_classes`"):
        km.subcenter_cleaning(head, x, y).to_head(drop_classes="yes")
