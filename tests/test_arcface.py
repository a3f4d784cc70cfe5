"""ArcFace (keras_margins/heads/arcface.py): its target past theta + m = pi, and its Kaggle name."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import cast


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0, 2.0, 2.5, 3.0])
def test_arcface_target_decreases_on_the_whole_half_circle(margin):
    head = km.ArcFace(1, scale=1.0, margin=margin)
    theta = np.linspace(0.0, math.pi, 20001)
    target = keras.ops.convert_to_numpy(head.target_logit(cast(np.cos(theta), "float32")))
    assert np.all(np.diff(target) <= 1e-6), "target logit must not rise as theta grows"
    assert np.all(np.isfinite(target))


def test_arc_margin_layer_is_arcface():
    assert km.ArcMarginLayer is km.ArcFace
    layer = km.ArcMarginLayer(num_classes=5)
    assert isinstance(layer, km.ArcFace)
    assert layer.margin == 0.5 and layer.scale == 64.0
