"""CombinedMargin (keras_margins/heads/combined_margin.py) against the float64 reference."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.test_heads import built_head, make_inputs, ref_target_combined


@pytest.mark.parametrize(
    "m1,m2,m3", [(1.0, 0.5, 0.0), (2.0, 0.0, 0.0), (1.5, 0.4, 0.1), (3.0, 1.0, 0.3)]
)
def test_combined_margin_target_decreases(m1, m2, m3):
    head = km.CombinedMargin(1, scale=1.0, m1=m1, m2=m2, m3=m3)
    theta = np.linspace(0.0, math.pi, 20001)
    cos32 = np.cos(theta).astype("float32")  # the reference sees the same rounded cosines
    target = keras.ops.convert_to_numpy(head.target_logit(keras.ops.convert_to_tensor(cos32)))
    assert np.all(np.diff(target) <= 1e-6)
    expected = [ref_target_combined(float(c), m1, m2, m3) for c in cos32]
    np.testing.assert_allclose(target, expected, atol=2e-4)


def test_combined_margin_specializes_to_arcface_and_cosface(rng):
    x, kernel, labels = make_inputs(rng, batch=16)

    def logits(head):
        head = built_head(lambda c: head, kernel, 7)
        return keras.ops.convert_to_numpy(head([x, labels]))

    np.testing.assert_allclose(
        logits(km.CombinedMargin(7, scale=64.0, m1=1.0, m2=0.5, m3=0.0)),
        logits(km.ArcFace(7, scale=64.0, margin=0.5)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        logits(km.CombinedMargin(7, scale=64.0, m1=1.0, m2=0.0, m3=0.35)),
        logits(km.CosFace(7, scale=64.0, margin=0.35)),
        atol=1e-5,
    )
