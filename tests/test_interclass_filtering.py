"""insightface's inter-class filtering (`interclass_filtering_threshold`, PAPERS.md section 7)
against a float64 reference: non-target cosines above t become 0 with no gradient, before the
margin; the target is never filtered."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import (
    assert_keras_round_trip,
    compiled,
    head_model,
    numerical_gradient,
    to_numpy,
    value_and_grads,
)

B, D, C = 8, 6, 5
T = 0.2
SCALE = 10.0


def reference(x, kernel, y, kind, margin, threshold, sub_centers=1, scale=SCALE):
    """float64 logits: cosines (max over sub-centres), non-targets above ``threshold`` set to
    0, the target's margin (ArcFace: cos(θ + m), or cos θ - m sin m past cos(π - m);
    CosFace: cos θ - m), times the scale."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = (xn @ wn).reshape(len(x), -1, sub_centers).max(axis=2)
    out = cos.copy()
    for i, label in enumerate(y):
        for j in range(cos.shape[1]):
            if j != label and threshold is not None and cos[i, j] > threshold:
                out[i, j] = 0.0
        c = min(max(cos[i, label], -1.0), 1.0)
        if kind == "arc":
            if c > math.cos(math.pi - margin):
                out[i, label] = math.cos(math.acos(c) + margin)
            else:
                out[i, label] = c - margin * math.sin(margin)
        else:
            out[i, label] = c - margin
    return scale * out, cos


def make_head(kind, threshold=T, sub_centers=1, **kwargs):
    cls, margin = (km.ArcFace, 0.3) if kind == "arc" else (km.CosFace, 0.35)
    return cls(
        C,
        scale=SCALE,
        margin=margin,
        sub_centers=sub_centers,
        interclass_filtering_threshold=threshold,
        **kwargs,
    )


def case(seed, sub_centers=1):
    """Embeddings, a kernel and labels where every cosine is at least 0.01 from T, some
    non-targets are above T (filtered) and some targets are above T too."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)).astype("float32")
    kernel = rng.normal(size=(D, C * sub_centers)).astype("float32")
    y = rng.integers(0, C, size=B).astype("int32")
    _, cos = reference(x, kernel, y, "cos", 0.0, None, sub_centers)
    assert np.min(np.abs(cos - T)) > 0.01
    target = cos[np.arange(B), y]
    others = np.where(np.eye(C, dtype=bool)[y], -np.inf, cos)
    assert np.any(target > T) and np.any(others > T) and np.any((others < T) & (others > -1))
    return x, kernel, y


def built(head, kernel):
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


@pytest.mark.parametrize("kind", ["arc", "cos"])
@pytest.mark.parametrize("sub_centers", [1, 2])
def test_logits_match_float64_reference(kind, sub_centers):
    x, kernel, y = case(0 if sub_centers == 1 else 3, sub_centers)
    head = built(make_head(kind, sub_centers=sub_centers), kernel)
    margin = head.margin
    expected, cos = reference(x, kernel, y, kind, margin, T, sub_centers)
    got = to_numpy(head([x, y], training=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Filtered entries are exactly s * 0; targets above T keep their margin logit.
    dirty = (cos > T) & ~np.eye(C, dtype=bool)[y]
    assert dirty.any() and np.all(got[dirty] == 0.0)
    high = cos[np.arange(B), y] > T
    assert high.any() and np.all(got[np.arange(B), y][high] != 0.0)
    # Without labels (inference) nothing is filtered: s * cos.
    np.testing.assert_allclose(to_numpy(head(x)), SCALE * cos, rtol=1e-5, atol=1e-5)
    # Nor with labels outside training (evaluate, predict, training unset): the plain head.
    unfiltered, _ = reference(x, kernel, y, kind, margin, None, sub_centers)
    for training in (False, None):
        got = to_numpy(head([x, y], training=training))
        np.testing.assert_allclose(got, unfiltered, rtol=1e-5, atol=1e-5)


def test_the_target_is_never_filtered_even_at_the_lowest_threshold():
    x, kernel, y = case(0)
    head = built(make_head("arc", threshold=-1.0), kernel)
    expected, _ = reference(x, kernel, y, "arc", head.margin, -1.0)
    got = to_numpy(head([x, y], training=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    off_target = ~np.eye(C, dtype=bool)[y]
    assert np.all(got[off_target] == 0.0)  # every non-target cosine is above -1 here
    assert np.all(got[~off_target] != 0.0)


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_filtered_entries_get_no_gradient(kind):
    x, kernel, y = case(0)
    head = built(make_head(kind), kernel)
    _, cos = reference(x, kernel, y, kind, head.margin, T)
    dirty = keras.ops.convert_to_tensor(((cos > T) & ~np.eye(C, dtype=bool)[y]).astype("float32"))

    def filtered_sum(e):
        return keras.ops.sum(keras.ops.multiply(head([e, y], training=True), dirty))

    value, (gx, gw) = value_and_grads(filtered_sum, x, variables=[head.kernel])
    assert float(value) == 0.0
    assert np.all(gx == 0.0) and np.all(gw == 0.0)
    # The same entries do carry a gradient without the filtering.
    plain = built(make_head(kind, threshold=None), kernel)
    _, (gx_plain,) = value_and_grads(
        lambda e: keras.ops.sum(keras.ops.multiply(plain([e, y]), dirty)), x
    )
    assert np.max(np.abs(gx_plain)) > 1e-3


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_loss_gradient_matches_finite_differences(kind):
    x, kernel, y = case(0)
    head = built(make_head(kind), kernel)
    margin = head.margin

    def ce(logits):
        top = logits.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        return float(np.mean(lse - logits[np.arange(B), y]))

    def loss(e):
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                y, head([e, y], training=True), from_logits=True
            )
        )

    value, (grad,) = value_and_grads(loss, x)
    expected = numerical_gradient(lambda e: ce(reference(e, kernel, y, kind, margin, T)[0]), x)
    assert float(value) == pytest.approx(ce(reference(x, kernel, y, kind, margin, T)[0]), 1e-5)
    np.testing.assert_allclose(grad, expected, atol=2e-4)


def test_nan_rows_stay_nan():
    x, kernel, y = case(0)
    head = built(make_head("arc"), kernel)
    x = x.copy()
    x[2] = np.nan
    labels = y.copy()
    labels[5] = C  # not a class id
    got = to_numpy(head([x, labels], training=True))
    assert np.all(np.isnan(got[[2, 5]]))
    rest = [i for i in range(B) if i not in (2, 5)]
    assert np.all(np.isfinite(got[rest]))


def test_partial_fc_filters_the_sampled_classes():
    # 10 classes, sample_rate 0.5: k = 5, and a batch with 5 distinct labels samples exactly
    # those (the positives fill the sample), so the sampled columns are known.
    rng = np.random.default_rng(1)
    num_classes = 10
    x = rng.normal(size=(B, D)).astype("float32")
    rows = rng.normal(size=(num_classes, D)).astype("float32")
    y = np.array([1, 4, 6, 8, 9, 4, 1, 6], "int32")
    head = km.CosFace(num_classes, scale=SCALE, margin=0.35, interclass_filtering_threshold=T)
    pfc = km.PartialFC(head, sample_rate=0.5, seed=0)
    pfc.build((None, D))
    pfc.kernel.assign(rows)
    got = to_numpy(pfc([x, y], training=True))
    classes = np.unique(y)
    remapped = np.searchsorted(classes, y)
    expected, cos = reference(x, rows[classes].T, remapped, "cos", 0.35, T)
    assert got.shape == (B, 5)
    assert np.min(np.abs(cos - T)) > 0.01  # no cosine at the threshold's rounding edge
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.any((cos > T) & ~np.eye(5, dtype=bool)[remapped])
    # Evaluation (training=False) covers all classes and is not filtered (insightface filters
    # in its training loss only).
    full, _ = reference(x, rows.T, y, "cos", 0.35, None)
    np.testing.assert_allclose(to_numpy(pfc([x, y])), full, rtol=1e-5, atol=1e-5)


def test_xla_equals_eager():
    x, kernel, y = case(3, 2)
    head = built(make_head("arc", sub_centers=2), kernel)
    eager = to_numpy(head([x, y], training=True))
    got = to_numpy(compiled(lambda e, t: head([e, t], training=True))(x, y))
    np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-5)


def test_keras_file_round_trip(tmp_path):
    x, kernel, y = case(0)
    head = built(make_head("cos"), kernel)
    model = head_model(head, D)
    loaded = assert_keras_round_trip(model, [x, y], tmp_path)
    restored = [layer for layer in loaded.layers if isinstance(layer, km.CosFace)][0]
    assert restored.interclass_filtering_threshold == T
    pfc = km.PartialFC(make_head("arc"), sample_rate=0.6)
    config = keras.saving.serialize_keras_object(pfc)
    again = keras.saving.deserialize_keras_object(config)
    assert again.head.interclass_filtering_threshold == T


@pytest.mark.parametrize("bad", [-1.5, 1.0, 2.0, float("nan"), float("inf"), "0.4", True])
def test_bad_values_name_the_argument(bad):
    with pytest.raises(ValueError, match="`interclass_filtering_threshold`"):
        km.CosFace(C, interclass_filtering_threshold=bad)
