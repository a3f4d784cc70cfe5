"""Per-class margins (ArcFace, CosFace, CombinedMargin) and km.class_size_margins.

References are float64 NumPy from the formula sheet (shared/PAPERS.md sections 6 and the
ArcFace fallback rule): per sample, the margin of its class, ``cos(m1 theta + m2) - m3`` with
the continuation ``cos theta - m3 - max(m2 sin m2, 1 + cos theta_t)`` past
``theta_t = (pi - m2) / m1``.
"""

import math
import os

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    head_model,
    numerical_gradient,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
    with_kernel,
)

# --------------------------------------------------------------------------- class_size_margins


def brute_force_class_size_margins(counts, low, high, power):
    t = [n ** (-power) for n in counts]
    lo, hi = min(t), max(t)
    return [low + (high - low) * (v - lo) / (hi - lo) for v in t]


def test_class_size_margins_match_the_formula():
    counts = np.random.default_rng(0).integers(1, 5000, size=50)
    for low, high, power in [(0.05, 0.5, 0.25), (0.1, 0.3, 0.5), (0.0, 1.0, 1.0)]:
        got = km.class_size_margins(counts, low=low, high=high, power=power)
        assert got.dtype == np.float64 and got.shape == (50,)
        want = brute_force_class_size_margins(counts.tolist(), low, high, power)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert got[np.argmin(counts)] == pytest.approx(high)
        assert got[np.argmax(counts)] == pytest.approx(low)


def test_class_size_margins_of_equal_counts_are_all_high():
    np.testing.assert_array_equal(km.class_size_margins([7, 7, 7]), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(km.class_size_margins([3], low=0.1, high=0.2), [0.2])
    # Integer-valued floats and lists are counts too.
    np.testing.assert_allclose(km.class_size_margins([1.0, 16.0]), [0.5, 0.05])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"class_counts": [3, 0, 2]}, r"`class_counts\[1\]` is 0: class 1 has no samples"),
        ({"class_counts": [3, -2, 2]}, r"`class_counts\[1\]`.*-2"),
        ({"class_counts": [3, 2, 2.5]}, r"`class_counts\[2\]`.*2.5"),
        ({"class_counts": [3, float("nan")]}, r"`class_counts\[1\]`.*nan"),
        ({"class_counts": [3, float("inf")]}, r"`class_counts\[1\]`.*inf"),
        ({"class_counts": [3, True]}, r"`class_counts\[1\]`.*True"),
        ({"class_counts": []}, "`class_counts`"),
        ({"class_counts": [[1, 2]]}, "`class_counts`"),
        ({"class_counts": [1, 2], "low": 0.6}, "`low` must be <= `high`"),
        ({"class_counts": [1, 2], "power": 0.0}, "`power`"),
        ({"class_counts": [1, 2], "low": -0.1}, "`low`"),
    ],
)
def test_class_size_margins_reject_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        km.class_size_margins(**kwargs)


def test_class_size_margins_reject_a_string():
    with pytest.raises(TypeError, match="`class_counts`"):
        km.class_size_margins("123")


# --------------------------------------------------------------------------- the heads


def ref_target(cos_y, m1, m2, m3, easy_margin=False):
    """float64 target value of one sample (ArcFace / CombinedMargin rule)."""
    theta = math.acos(cos_y)
    if easy_margin:
        return math.cos(theta + m2) if cos_y > 0 else cos_y
    theta_t = (math.pi - m2) / m1
    if theta_t < math.pi and cos_y <= math.cos(theta_t):
        return cos_y - m3 - max(m2 * math.sin(m2), 1.0 + math.cos(theta_t))
    return math.cos(m1 * theta + m2) - m3


def ref_logits(x, kernel, labels, scale, m1, m2, m3, sub_centers=1, easy_margin=False):
    """float64 logits by loops: max over sub-centres, the per-class target rule."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    num_classes = w.shape[1] // sub_centers
    out = np.zeros((len(x), num_classes))
    for i, y in enumerate(labels):
        xi = x[i] / np.linalg.norm(x[i])
        for c in range(num_classes):
            cos = max(
                float(xi @ w[:, c * sub_centers + k]) / np.linalg.norm(w[:, c * sub_centers + k])
                for k in range(sub_centers)
            )
            if c == y:
                m2c = m2[c] if np.ndim(m2) else m2
                m3c = m3[c] if np.ndim(m3) else m3
                cos = ref_target(min(1.0, max(-1.0, cos)), m1, m2c, m3c, easy_margin)
            out[i, c] = scale * cos
    return out


# Class margins across the range, including ones past 2.33 rad (continuous continuation).
ARC_MARGINS = np.array([0.1, 0.5, 1.0, 2.5])


def circle_data(margins, sub_centers=1):
    """Class centres on the unit circle; per class, samples on both sides of theta = pi - m."""
    num_classes = len(margins)
    phis = np.arange(num_classes) * 0.7
    kernel = np.zeros((2, num_classes * sub_centers), "float32")
    for c, phi in enumerate(phis):
        for k in range(sub_centers):  # the other sub-centres far off (-0.6 rad.. away)
            a = phi - 0.6 * k
            kernel[:, c * sub_centers + k] = [math.cos(a), math.sin(a)]
    xs, ys = [], []
    for c, m in enumerate(margins):
        for theta in (0.3, 1.2, math.pi - m - 0.15, min(math.pi - m + 0.15, 3.1), 3.05):
            xs.append([math.cos(phis[c] + theta), math.sin(phis[c] + theta)])
            ys.append(c)
    return kernel, np.array(xs, "float32"), np.array(ys, "int32")


@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize("sub_centers", [1, 3])
def test_arcface_with_a_margin_vector_matches_the_reference(easy_margin, sub_centers):
    kernel, x, y = circle_data(ARC_MARGINS, sub_centers)
    head = km.ArcFace(
        4, scale=2.0, margin=ARC_MARGINS, easy_margin=easy_margin, sub_centers=sub_centers
    )
    got = to_numpy(with_kernel(head, kernel)([x, y], training=True))
    want = ref_logits(x, kernel, y, 2.0, 1.0, ARC_MARGINS, 0.0, sub_centers, easy_margin)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_cosface_and_combined_margin_with_vectors_match_the_reference():
    m3 = np.array([0.0, 0.2, 0.35, 1.5])
    kernel, x, y = circle_data(ARC_MARGINS)
    cosface = with_kernel(km.CosFace(4, scale=2.0, margin=m3), kernel)
    want = ref_logits(x, kernel, y, 2.0, 1.0, 0.0, m3)
    np.testing.assert_allclose(to_numpy(cosface([x, y])), want, rtol=1e-5, atol=2e-5)
    for m1, m2, third in [(1.0, ARC_MARGINS, m3), (1.5, ARC_MARGINS, 0.1), (2.0, 0.3, m3)]:
        head = with_kernel(km.CombinedMargin(4, scale=2.0, m1=m1, m2=m2, m3=third), kernel)
        want = ref_logits(x, kernel, y, 2.0, m1, m2, third)
        np.testing.assert_allclose(to_numpy(head([x, y])), want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: km.ArcFace(4, margin=m),
        lambda m: km.ArcFace(4, margin=m, easy_margin=True),
        lambda m: km.ArcFace(4, margin=m, sub_centers=3),
        lambda m: km.CosFace(4, margin=m),
        lambda m: km.CombinedMargin(4, m1=1.0, m2=m, m3=0.1),
        lambda m: km.CombinedMargin(4, m1=1.4, m2=0.2, m3=m),
        lambda m: km.ArcFace(4, margin=0.0 * m),
    ],
)
def test_a_constant_vector_equals_the_scalar_head_exactly(make):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype("float32")
    x[:4] = -x[:4]  # some samples far from their class: the fallback region
    y = np.arange(16, dtype="int32") % 4
    scalar = make(0.45)
    vector = make(np.full(4, 0.45))
    scalar.build((None, 3))
    vector.build((None, 3))
    vector.set_weights(scalar.get_weights())
    np.testing.assert_array_equal(to_numpy(vector([x, y])), to_numpy(scalar([x, y])))
    config = scalar.get_config()
    assert not any(isinstance(v, list) for v in config.values())  # the scalar stays a scalar


def test_partial_fc_gives_each_sample_its_own_class_margin():
    margins = 0.03 * (np.arange(10) + 1)
    pfc = km.PartialFC(km.CosFace(10, scale=1.0, margin=margins), sample_rate=0.5, seed=0)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4)).astype("float32")
    # 5 distinct labels = k: the sampled classes are exactly these, sorted.
    y = np.array([7, 2, 9, 4, 5, 7, 2, 9], "int32")
    pfc.build([(None, 4), (None,)])
    got = to_numpy(pfc([x, y], training=True))
    assert got.shape == (8, 5)
    sampled = [2, 4, 5, 7, 9]
    w = to_numpy(pfc.kernel).astype(np.float64)[sampled].T  # (D, k)
    want = ref_logits(x, w, [sampled.index(c) for c in y], 1.0, 1.0, 0.0, margins[sampled])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


def test_margin_vectors_survive_a_keras_file_exactly(tmp_path):
    margins = km.class_size_margins([1, 3, 10, 100, 1000])
    head = km.ArcFace(5, scale=30.0, margin=margins, sub_centers=3)
    model = head_model(head, 6)
    rng = np.random.default_rng(3)
    data = [rng.normal(size=(8, 6)).astype("float32"), np.arange(8, dtype="int32") % 5]
    expected = to_numpy(model(data))
    path = os.path.join(str(tmp_path), "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(data)), expected)
    loaded_head = [layer for layer in loaded.layers if isinstance(layer, km.ArcFace)][0]
    config = loaded_head.get_config()
    assert config["margin"] == margins.tolist() and isinstance(config["margin"], list)
    np.testing.assert_array_equal(loaded_head.margin, margins)
    combined = km.CombinedMargin(5, m2=margins, m3=[0.0, 0.1, 0.2, 0.3, 0.4])
    assert km.CombinedMargin.from_config(combined.get_config()).get_config() == (
        combined.get_config()
    )


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: km.ArcFace(3, margin=[0.1, 0.2]), "`margin`.*3"),
        (lambda: km.ArcFace(3, margin=[0.1, 0.2, 3.5]), r"`margin\[2\]` must be in \[0, pi\).*3.5"),
        (lambda: km.ArcFace(3, margin=[0.1, float("nan"), 0.2]), r"`margin\[1\]`.*nan"),
        (lambda: km.ArcFace(3, margin=np.array([0.1, np.inf, 0.2])), r"`margin\[1\]`.*inf"),
        (lambda: km.ArcFace(3, margin=[0.1, -0.2, 0.2]), r"`margin\[1\]`.*-0.2"),
        (lambda: km.ArcFace(3, margin=[0.1, "x", 0.2]), r"`margin\[1\]`.*'x'"),
        (lambda: km.ArcFace(2, margin=[[0.1, 0.2]]), "`margin`.*shape"),
        (lambda: km.CosFace(3, margin=[0.1, 2.0, 0.2]), r"`margin\[1\]`.*2.0"),
        (lambda: km.CombinedMargin(3, m2=[0.1, 0.2, 4.0]), r"`m2\[2\]`"),
        (lambda: km.CombinedMargin(3, m3=[0.1, 0.2]), "`m3`"),
    ],
)
def test_bad_margin_vectors_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_gradients_with_a_margin_vector_match_finite_differences():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(3, 3)).astype("float32")
    x = rng.normal(size=(6, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2], "int32")
    m2, m3 = np.array([0.1, 0.4, 0.7]), np.array([0.2, 0.0, 0.1])
    head = with_kernel(km.CombinedMargin(3, scale=4.0, m1=1.0, m2=m2, m3=m3), kernel)

    def loss(e):
        out = head([e, y], training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
        )

    def reference(e, w):
        return ref_cross_entropy(ref_logits(e, w, y, 4.0, 1.0, m2, m3), y)

    value, (gx, gw) = value_and_grads(loss, x, variables=[head.kernel])
    np.testing.assert_allclose(value, reference(x, kernel), rtol=1e-5)
    np.testing.assert_allclose(gx, numerical_gradient(lambda v: reference(v, kernel), x), atol=1e-5)
    np.testing.assert_allclose(gw, numerical_gradient(lambda v: reference(x, v), kernel), atol=1e-5)
