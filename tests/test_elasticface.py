"""ElasticFace (keras_margins/heads/elasticface.py) against float64 references from the formula.

The formula sheet (shared/PAPERS.md, section 4, from fdbtrs/ElasticFace utils/losses.py):
m_i ~ N(m, sigma) per sample in training; arc: cos(acos c_y + m_i), no fallback; cos:
c_y - m_i; "+" gives the r-th smallest margin to the sample with the r-th largest c_y.
The drawn margins are recovered from the target logits of samples whose target cosine is known
(D = 2, class centres on the axes), so every check is against the formula, not the code.
"""

import math
import os

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    compiled,
    head_model,
    numerical_gradient,
    ref_cross_entropy,
    to_numpy,
    value_and_grads,
    with_kernel,
)

IDENTITY = np.eye(2, dtype="float32")


def on_circle(angles):
    """Embeddings at ``angles`` from class 0's centre (the x axis), labels all 0."""
    angles = np.asarray(angles, np.float64)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype("float32")
    return x, np.zeros(len(angles), "int32")


def recovered_margins(logits, angles, base, scale):
    """The margin of each sample from its target logit (class 0), float64."""
    target = to_numpy(logits).astype(np.float64)[:, 0] / scale
    cos_y = np.cos(np.asarray(angles, np.float64))
    if base == "cos":
        return cos_y - target
    return np.arccos(np.clip(target, -1.0, 1.0)) - np.asarray(angles, np.float64)


def elastic(base="arc", **kwargs):
    kwargs.setdefault("scale", 1.0)
    head = km.ElasticFace(2, base=base, **kwargs)
    return with_kernel(head, IDENTITY)


def test_a_seeded_head_draws_reproducibly_and_each_call_draws_anew():
    angles = np.linspace(0.3, 1.5, 16)
    x, y = on_circle(angles)
    first = [to_numpy(elastic(seed=7)([x, y], training=True)) for _ in range(2)]
    np.testing.assert_allclose(first[0], first[1], rtol=0, atol=1e-6)
    head = elastic(seed=7)
    calls = [recovered_margins(head([x, y], training=True), angles, "arc", 1.0) for _ in range(2)]
    np.testing.assert_allclose(calls[0], recovered_margins(first[0], angles, "arc", 1.0), atol=1e-5)
    assert np.abs(calls[0] - calls[1]).max() > 1e-3, "the second call must draw new margins"
    other = recovered_margins(elastic(seed=8)([x, y], training=True), angles, "arc", 1.0)
    assert np.abs(other - calls[0]).max() > 1e-3
    # The non-target logits are the plain cosines (class 1's centre is the y axis).
    np.testing.assert_allclose(first[0][:, 1], np.sin(angles), atol=1e-6)


@pytest.mark.parametrize("base,margin,sigma", [("arc", 0.5, 0.05), ("cos", 0.35, 0.02)])
def test_margins_follow_the_normal_distribution(base, margin, sigma):
    batch = 4096
    angles = np.random.default_rng(0).uniform(0.3, 1.5, batch)
    x, y = on_circle(angles)
    head = elastic(base, margin=margin, sigma=sigma, seed=1)
    m = recovered_margins(head([x, y], training=True), angles, base, 1.0)
    # Tolerances: 4 standard errors of the sample mean and standard deviation.
    assert abs(m.mean() - margin) < 4 * sigma / math.sqrt(batch)
    assert abs(m.std(ddof=1) - sigma) < 4 * sigma / math.sqrt(2 * batch)


def rank_ordered(raw, cos_y):
    """Intended ElasticFace+: the r-th largest c_y gets the r-th smallest margin."""
    out = np.empty_like(raw)
    out[np.argsort(-cos_y, kind="stable")] = np.sort(raw)
    return out


def official_order(raw, cos_y):
    """The official code: sample i gets sort(m)[p[i]], p = argsort(c_y, descending)."""
    return np.sort(raw)[np.argsort(-cos_y, kind="stable")]


@pytest.mark.parametrize("base", ["arc", "cos"])
def test_plus_gives_smaller_margins_to_samples_nearer_their_centre(base):
    angles = np.random.default_rng(1).permutation(np.linspace(0.2, 1.4, 32))
    x, y = on_circle(angles)
    # The same seed draws the same margins; plus=True only hands them out differently.
    raw = recovered_margins(elastic(base, seed=3)([x, y], training=True), angles, base, 1.0)
    plus = recovered_margins(
        elastic(base, seed=3, plus=True)([x, y], training=True), angles, base, 1.0
    )
    np.testing.assert_allclose(plus, rank_ordered(raw, np.cos(angles)), atol=2e-5)
    by_cosine = plus[np.argsort(-np.cos(angles))]
    assert np.all(np.diff(by_cosine) > -2e-5), "margins must rise as c_y falls"


def test_plus_differs_from_the_official_codes_permutation():
    # c_y = cos(angles) ranks the samples (1, 2, 0): p = [1, 2, 0] is a 3-cycle, not its own
    # inverse, so the official code's m_sorted[p[i]] is not the rank order.
    angles = np.array([1.4, 0.2, 0.8])
    x, y = on_circle(angles)
    cos_y = np.cos(angles)
    raw = recovered_margins(elastic(sigma=0.2, seed=4)([x, y], training=True), angles, "arc", 1.0)
    plus = recovered_margins(
        elastic(sigma=0.2, seed=4, plus=True)([x, y], training=True), angles, "arc", 1.0
    )
    np.testing.assert_allclose(plus, rank_ordered(raw, cos_y), atol=2e-5)
    assert plus[0] == plus.max() and plus[1] == plus.min()  # farthest: largest margin
    official = official_order(raw, cos_y)
    assert np.abs(official - plus).max() > 1e-3
    assert official[0] != official.max()  # the official assignment is not rank-ordered


@pytest.mark.parametrize("training", [False, None])
@pytest.mark.parametrize("base,margin", [("arc", 0.5), ("cos", 0.35)])
def test_inference_uses_the_fixed_margin_without_randomness(training, base, margin):
    angles = np.linspace(0.1, 2.5, 8)  # arc: up to theta + m = 3.0 < pi
    x, y = on_circle(angles)
    head = elastic(base, margin=margin, sigma=0.3, seed=0)
    state = to_numpy(head.seed_generator.state).copy()
    outs = [to_numpy(head([x, y], training=training)) for _ in range(2)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(to_numpy(head.seed_generator.state), state)
    want = np.cos(angles) - margin if base == "cos" else np.cos(angles + margin)
    np.testing.assert_allclose(outs[0][:, 0], want, atol=2e-6)


def test_arc_has_no_fallback_past_pi():
    # The authors' code: cos(theta + m) also where theta + m > pi (ArcFace would switch rule).
    angles = np.array([2.8, 3.0, 3.1])
    x, y = on_circle(angles)
    got = to_numpy(elastic(margin=0.5, sigma=0.0)([x, y], training=True))[:, 0]
    np.testing.assert_allclose(got, np.cos(angles + 0.5), atol=2e-6)


@pytest.mark.parametrize("base,reference", [("arc", km.ArcFace), ("cos", km.CosFace)])
def test_sigma_zero_equals_arcface_and_cosface(base, reference):
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(4, 6)).astype("float32")  # 3 classes x 2 sub-centres
    x = rng.normal(size=(8, 4)).astype("float32")
    y = np.arange(8, dtype="int32") % 3
    margin = 0.5 if base == "arc" else 0.35
    heads = [
        with_kernel(
            km.ElasticFace(3, scale=8.0, margin=margin, sigma=0.0, base=base, sub_centers=2),
            kernel,
        ),
        with_kernel(reference(3, scale=8.0, margin=margin, sub_centers=2), kernel),
    ]
    results = []
    for head in heads:

        def loss(e, head=head):
            logits = head([e, y], training=True)
            return keras.ops.mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )

        results.append(value_and_grads(loss, x, variables=[head.kernel]))
    # No sample lies past theta + m = pi here (ArcFace's fallback would differ there).
    (v1, g1), (v2, g2) = results
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def reference_loss(x, kernel, y, margins, scale, base):
    """float64 ElasticFace cross-entropy with the per-sample margins fixed."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    logits = cos.copy()
    for i, c in enumerate(y):
        t = cos[i, c]
        logits[i, c] = t - margins[i] if base == "cos" else math.cos(math.acos(t) + margins[i])
    return ref_cross_entropy(scale * logits, y)


@pytest.mark.parametrize("base", ["arc", "cos"])
def test_gradients_match_finite_differences_with_the_drawn_margins_fixed(base):
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 4)).astype("float32")
    x = rng.normal(size=(5, 3)).astype("float32")
    y = np.array([0, 1, 2, 3, 1], "int32")
    w = np.asarray(kernel, np.float64)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    cos_y = cos[np.arange(5), y]

    def head():
        return with_kernel(km.ElasticFace(4, scale=4.0, sigma=0.1, base=base, seed=9), kernel)

    logits = np.asarray(to_numpy(head()([x, y], training=True)), np.float64)[np.arange(5), y] / 4.0
    margins = cos_y - logits if base == "cos" else np.arccos(logits) - np.arccos(cos_y)
    assert margins.std() > 0.02  # really drawn
    fresh = head()  # the same seed: the same margins in its first call

    def loss(e):
        out = fresh([e, y], training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
        )

    value, (gx, gw) = value_and_grads(loss, x, variables=[fresh.kernel])
    np.testing.assert_allclose(value, reference_loss(x, kernel, y, margins, 4.0, base), rtol=1e-4)
    want_x = numerical_gradient(lambda v: reference_loss(v, kernel, y, margins, 4.0, base), x)
    want_w = numerical_gradient(lambda v: reference_loss(x, v, y, margins, 4.0, base), kernel)
    np.testing.assert_allclose(gx, want_x, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gw, want_w, rtol=1e-3, atol=1e-5)


def test_mixed_precision_training_call_is_float32_with_float32_margins():
    angles = np.linspace(0.3, 1.5, 16)
    x, y = on_circle(angles)
    expected = recovered_margins(
        elastic(seed=5, plus=True)([x, y], training=True), angles, "arc", 1.0
    )
    keras.config.set_dtype_policy("mixed_float16")
    try:
        head = elastic(seed=5, plus=True)
        out = head([x.astype("float16"), y], training=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    half_angles = np.arctan2(x[:, 1].astype("float16"), x[:, 0].astype("float16"))
    got = recovered_margins(to_numpy(out), half_angles, "arc", 1.0)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_training_under_xla():
    batch = 1024
    angles = np.random.default_rng(4).uniform(0.3, 1.5, batch)
    x, y = on_circle(angles)
    head = elastic(seed=2, plus=True, sigma=0.05)
    out = compiled(lambda e, lab: head([e, lab], training=True))(x, y)
    m = recovered_margins(to_numpy(out), angles, "arc", 1.0)
    assert abs(m.mean() - 0.5) < 4 * 0.05 / math.sqrt(batch)
    assert abs(m.std(ddof=1) - 0.05) < 4 * 0.05 / math.sqrt(2 * batch)
    assert np.all(np.diff(m[np.argsort(-np.cos(angles))]) > -2e-5)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"base": "sin"}, "base"),
        ({"sigma": -0.01}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"margin": 3.5}, "margin"),
        ({"margin": 2.5, "base": "cos"}, "margin"),
        ({"plus": "yes"}, "plus"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        km.ElasticFace(3, **kwargs)


def test_config_holds_the_authors_variant():
    head = km.ElasticFace(3, margin=0.35, sigma=0.02, base="cos", plus=True, seed=11)
    config = head.get_config()
    assert {k: config[k] for k in ("margin", "sigma", "base", "plus", "seed")} == {
        "margin": 0.35,
        "sigma": 0.02,
        "base": "cos",
        "plus": True,
        "seed": 11,
    }
    assert km.ElasticFace.from_config(config).get_config() == config


def test_the_generator_state_is_saved_with_the_model(tmp_path):
    angles = np.linspace(0.3, 1.5, 8)
    x, y = on_circle(angles)
    model = head_model(elastic(seed=6), 2)  # class centres on the axes
    first = recovered_margins(model([x, y], training=True), angles, "arc", 1.0)
    path = os.path.join(str(tmp_path), "elastic.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = recovered_margins(model([x, y], training=True), angles, "arc", 1.0)
    got = recovered_margins(loaded([x, y], training=True), angles, "arc", 1.0)
    # The loaded head continues the sequence where the saved one was: its next draw is the
    # saved head's next draw, not its first.
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - first).max() > 1e-3


def test_under_partial_fc_with_sampled_classes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = np.array([7, 2, 9, 4, 5, 7, 2, 9], "int32")  # 5 distinct labels = k: all sampled
    pfc = km.PartialFC(
        km.ElasticFace(10, scale=1.0, margin=0.35, sigma=0.0, base="cos"), sample_rate=0.5
    )
    pfc.build([(None, 4), (None,)])
    got = to_numpy(pfc([x, y], training=True))
    sampled = [2, 4, 5, 7, 9]
    w = to_numpy(pfc.kernel).astype(np.float64)[sampled]
    xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    want = xn @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    want[np.arange(8), [sampled.index(c) for c in y]] -= 0.35
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
