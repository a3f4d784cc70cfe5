"""HM-Softmax (hard-sample mining) and F-Softmax (focal) losses against float64 references."""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.losses.softmax_mining import (
    FocalSoftmaxLoss,
    HardMiningSoftmaxLoss,
    focal_softmax_loss,
    hard_mining_softmax_loss,
)
from tests.helpers import (
    assert_config_round_trip,
    compiled,
    load_digits_split,
    numerical_gradient,
    to_numpy,
    value_and_grads,
    xla_in_fit,
)


def ref_ce(logits, labels):
    out = []
    for row, y in zip(np.asarray(logits, np.float64), labels):
        mx = row.max()
        out.append(-(row[y] - mx - math.log(sum(math.exp(v - mx) for v in row))))
    return np.array(out)


def ref_hm(logits, labels, keep_ratio):
    ce = ref_ce(logits, labels)
    b = len(ce)
    k = max(1, math.ceil(Fraction(str(keep_ratio)) * b))
    hardest = sorted(range(b), key=lambda i: -ce[i])[:k]
    return sum(ce[i] for i in hardest) / k, set(hardest)


def ref_focal(logits, labels, gamma):
    ce = ref_ce(logits, labels)
    p = np.exp(-ce)
    return np.mean((1 - p) ** gamma * ce)


@pytest.mark.parametrize("keep_ratio", [0.1, 0.25, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("batch", [1, 7, 10, 20, 64])
def test_hm_softmax_keeps_exactly_the_hardest_samples(keep_ratio, batch, rng):
    logits = (rng.normal(size=(batch, 6)) * 4).astype("float32")
    labels = rng.integers(0, 6, size=batch).astype("int32")
    expected, hardest = ref_hm(logits, labels, keep_ratio)
    per_sample = keras.ops.convert_to_numpy(hard_mining_softmax_loss(labels, logits, keep_ratio))
    kept = set(np.flatnonzero(per_sample).tolist())
    assert kept == hardest
    loss = float(HardMiningSoftmaxLoss(keep_ratio=keep_ratio)(labels, logits))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_hm_softmax_with_ties_keeps_exactly_k():
    logits = np.zeros((8, 3), "float32")  # every sample has the same cross-entropy log 3
    labels = np.zeros(8, "int32")
    per_sample = keras.ops.convert_to_numpy(hard_mining_softmax_loss(labels, logits, 0.5))
    assert np.count_nonzero(per_sample) == 4
    assert float(HardMiningSoftmaxLoss(0.5)(labels, logits)) == pytest.approx(math.log(3), rel=1e-6)


def test_hm_softmax_keep_ratio_one_is_cross_entropy(rng):
    logits = rng.normal(size=(16, 5)).astype("float32")
    labels = rng.integers(0, 5, size=16)
    got = float(HardMiningSoftmaxLoss(1.0)(labels, logits))
    assert got == pytest.approx(ref_ce(logits, labels).mean(), rel=1e-6)


def test_hm_softmax_gradient_flows_only_through_the_hard_samples(rng):
    logits = rng.normal(size=(6, 4)) * 3
    labels = rng.integers(0, 4, size=6)
    _, hardest = ref_hm(logits, labels, 0.5)
    _, (g,) = value_and_grads(
        lambda lt: HardMiningSoftmaxLoss(0.5)(labels, lt), logits.astype("float32")
    )
    # Finite differences of the reference with the selection held fixed.
    idx = sorted(hardest)
    ref = numerical_gradient(lambda z: ref_ce(z, labels[idx]).mean(), logits[idx])
    np.testing.assert_allclose(g[idx], ref, rtol=1e-3, atol=1e-5)
    assert np.all(g[[i for i in range(6) if i not in hardest]] == 0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_focal_softmax_matches_reference_and_keras(gamma, rng):
    logits = (rng.normal(size=(32, 7)) * 3).astype("float32")
    labels = rng.integers(0, 7, size=32).astype("int32")
    got = float(FocalSoftmaxLoss(gamma=gamma)(labels, logits))
    assert got == pytest.approx(ref_focal(logits, labels, gamma), rel=1e-5)
    # On moderate logits it is Keras's categorical focal loss with alpha = 1.
    keras_loss = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=gamma, from_logits=True)
    assert got == pytest.approx(float(keras_loss(np.eye(7)[labels], logits)), rel=1e-4)
    if gamma == 0.0:
        assert got == pytest.approx(ref_ce(logits, labels).mean(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_softmax_gradient_and_extreme_logits(gamma, rng):
    logits = rng.normal(size=(5, 4)) * 2
    labels = rng.integers(0, 4, size=5)
    _, (g,) = value_and_grads(
        lambda lt: FocalSoftmaxLoss(gamma)(labels, lt), logits.astype("float32")
    )
    np.testing.assert_allclose(
        g,
        numerical_gradient(lambda z: ref_focal(z, labels, gamma), logits),
        rtol=1e-3,
        atol=1e-5,
    )
    # Scaled margin logits: one sample hopelessly wrong (p_y ~ e^-100), one perfectly right
    # (p_y = 1 in float32). Values exact, gradients finite and the wrong one still pushed.
    extreme = np.array([[-50.0, 50.0, 0.0], [64.0, -64.0, -64.0]], "float32")
    y = np.array([0, 0])

    def loss_fn(et):
        per_sample = focal_softmax_loss(y, et, gamma)
        return keras.ops.mean(per_sample), per_sample

    _, (g,), per_sample = value_and_grads(loss_fn, extreme, has_aux=True)
    np.testing.assert_allclose(
        per_sample,
        [ref_focal(extreme[:1], y[:1], gamma), ref_focal(extreme[1:], y[1:], gamma)],
        rtol=1e-5,
    )
    assert per_sample[0] > 99.0  # Keras's clipped focal loss would stop at ~16.1
    assert np.all(np.isfinite(g)) and g[0, 0] < -0.4


def test_losses_accept_label_forms_and_xla(rng):
    logits = rng.normal(size=(12, 5)).astype("float32")
    labels = rng.integers(0, 5, size=12)
    for loss in (HardMiningSoftmaxLoss(0.5), FocalSoftmaxLoss(2.0)):
        a = float(loss(labels, logits))
        assert float(loss(labels[:, None], logits)) == pytest.approx(a)
        assert float(loss(labels.astype("float32"), logits)) == pytest.approx(a)
        xla = compiled(lambda y, z, loss=loss: loss(y, z))
        yt, zt = keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(logits)
        got = float(to_numpy(xla(yt, zt)))
        assert got == pytest.approx(a, rel=1e-5)
        with pytest.raises(ValueError, match="y_true"):
            loss(np.zeros((12, 5)), logits)


@pytest.mark.parametrize(
    "cls,kwargs,argname",
    [
        (HardMiningSoftmaxLoss, {"keep_ratio": 0.0}, "keep_ratio"),
        (HardMiningSoftmaxLoss, {"keep_ratio": 1.5}, "keep_ratio"),
        (HardMiningSoftmaxLoss, {"keep_ratio": "half"}, "keep_ratio"),
        (FocalSoftmaxLoss, {"gamma": -1.0}, "gamma"),
        (FocalSoftmaxLoss, {"gamma": float("inf")}, "gamma"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(cls, kwargs, argname):
    with pytest.raises(ValueError, match=f"`{argname}`"):
        cls(**kwargs)


def test_config_round_trip_and_saved_model(tmp_path):
    for loss in (HardMiningSoftmaxLoss(keep_ratio=0.3), FocalSoftmaxLoss(gamma=1.5)):
        clone = assert_config_round_trip(loss)
        assert clone.get_config() == loss.get_config()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=HardMiningSoftmaxLoss(keep_ratio=0.3))
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.saving.load_model(path).loss.keep_ratio == 0.3


@pytest.mark.parametrize("name", ["hm", "focal"])
def test_training_on_digits_with_a_margin_head(name):
    x_train, x_test, y_train, y_test = load_digits_split()
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    head = km.CosFace(10, scale=16.0, margin=0.2)
    train_model, embed_model = km.build_models(backbone, head)
    loss = HardMiningSoftmaxLoss(keep_ratio=0.5) if name == "hm" else FocalSoftmaxLoss(gamma=2.0)
    train_model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, jit_compile=xla_in_fit())
    hist = train_model.fit([x_train, y_train], y_train, epochs=8, batch_size=64, verbose=0)
    losses = hist.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    emb = embed_model.predict(x_test, verbose=0)
    accuracy = np.mean(np.argmax(keras.ops.convert_to_numpy(head(emb)), axis=1) == y_test)
    assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} (chance is 0.1)"
