"""The head base's extension points (keras_margins/heads/base.py), each against a reference.

A head written in the test from the hooks only: what ``target_logit`` receives (the target
cosine, the feature norm, the labels, the training flag), ``logit_scale``, the declared
non-target rewrite, training-time state, and a wrapper owning the class centres.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests.helpers import to_numpy


class Recorder(km.MarginHead):
    """A head that records what the base hands its hooks, with a step counter as state."""

    def build_state(self):
        self.count = self.add_training_state("count", dtype="int64")

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        self.seen = (cos_y, norm, labels, training)
        self.update_training_state(self.count, self.count + 1, training)
        return cos_y - 0.25


def reference_cos(x, w):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))


def test_target_logit_receives_target_cosine_norm_labels_and_training(rng):
    x = (rng.normal(size=(5, 4)) * [[1.0], [3.0], [0.5], [10.0], [2.0]]).astype("float32")
    w = rng.normal(size=(4, 3)).astype("float32")
    y = np.array([0, 2, 1, 1, 0])
    head = Recorder(num_classes=3, scale=2.0)
    head.build((None, 4))
    head.kernel.assign(w)
    logits = to_numpy(head([x, y], training=True))
    cos_y, norm, labels, training = head.seen
    ref = reference_cos(x, w)
    np.testing.assert_allclose(to_numpy(cos_y), ref[np.arange(5), y], atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(norm), np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(labels), y)
    assert training is True
    expected = 2.0 * ref
    expected[np.arange(5), y] -= 2.0 * 0.25
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_training_state_advances_in_training_calls_only(rng):
    x = rng.normal(size=(4, 3)).astype("float32")
    y = np.array([0, 1, 0, 1])
    head = Recorder(num_classes=2, scale=1.0)
    head([x, y])  # training unset
    head([x, y], training=False)
    assert int(to_numpy(head.count)) == 0
    head([x, y], training=True)
    head([x, y], training=True)
    assert int(to_numpy(head.count)) == 2
    assert head.count in head.non_trainable_weights  # saved with the model's weights


def test_logit_scale_hook_scales_every_logit_by_the_feature_norm(rng):
    class NormScaled(km.MarginHead):
        def logit_scale(self, norm):
            return norm

    x = (rng.normal(size=(3, 4)) * 5.0).astype("float32")
    w = rng.normal(size=(4, 2)).astype("float32")
    head = NormScaled(num_classes=2)
    head.build((None, 4))
    head.kernel.assign(w)
    expected = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True) * reference_cos(x, w)
    np.testing.assert_allclose(to_numpy(head(x)), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(head([x, np.array([0, 1, 0])])), expected, rtol=1e-5)


def test_declared_non_target_rewrite_sees_cosines_and_is_scaled_after(rng):
    class Doubler(km.MarginHead):
        rewrites_non_targets = True

        def combine(self, cos, target, is_target, scale, cos_y=None, training=None):
            return keras.ops.where(is_target, target[:, None], 2.0 * cos) * scale

    x = rng.normal(size=(4, 3)).astype("float32")
    w = rng.normal(size=(3, 5)).astype("float32")
    y = np.array([4, 0, 2, 2])
    head = Doubler(num_classes=5, scale=3.0)
    head.build((None, 3))
    head.kernel.assign(w)
    ref = reference_cos(x, w)
    expected = 3.0 * 2.0 * ref
    expected[np.arange(4), y] = 3.0 * ref[np.arange(4), y]
    np.testing.assert_allclose(to_numpy(head([x, y])), expected, atol=1e-5)
    # The declaration is a class attribute: CosFace has none, SV-Softmax declares it.
    assert not km.CosFace.rewrites_non_targets and km.SVSoftmax.rewrites_non_targets


def test_wrapper_owns_centres_through_public_methods(rng):
    head = Recorder(num_classes=6, scale=1.0)
    pfc = km.PartialFC(head, sample_rate=0.5, seed=0)
    x = rng.normal(size=(4, 3)).astype("float32")
    pfc([x, np.array([0, 1, 2, 3])], training=True)
    assert head.kernel is None  # no second copy of the centres
    assert int(to_numpy(head.count)) == 1  # the head's own state lives on
    centres = to_numpy(pfc.kernel)  # (C, D), one centre per row
    np.testing.assert_allclose(to_numpy(pfc.cosine(x)), reference_cos(x, centres.T), atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(head.cosine(x, kernel=pfc.kernel, kernel_transposed=True)),
        to_numpy(pfc.cosine(x)),
        rtol=0,
        atol=0,
    )


def test_build_without_kernel_rejects_a_bad_dimension():
    with pytest.raises(ValueError, match="embedding_dim"):
        km.CosFace(num_classes=3).build_without_kernel(0)
