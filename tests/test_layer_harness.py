"""Every public head, layer and loss through the shared harness (see ``tests/harness.py``)."""

import keras
import numpy as np
import pytest

import keras_margins as km
from tests import harness
from tests.helpers import compiled, skip_compiled_fit_on_torch, xla_in_fit

LAYERS = harness.public_layers()
LOSSES = harness.public_losses()
METRICS = harness.public_metrics()
ALL = LAYERS + LOSSES + METRICS
TRAINABLE_HEADS = [(n, c) for n, c in LAYERS if issubclass(c, (km.MarginHead, km.L2Softmax))]


def ids(pairs):
    return [name for name, _ in pairs]


def _exported_layers(module):
    objects = [getattr(module, name) for name in module.__all__]
    return {o for o in objects if isinstance(o, type) and issubclass(o, keras.layers.Layer)}


def test_the_harness_covers_every_export():
    heads = {c for _, c in TRAINABLE_HEADS}
    for name in km.heads.__all__:
        obj = getattr(km.heads, name)
        if isinstance(obj, type) and issubclass(obj, km.MarginHead) and obj is not km.MarginHead:
            assert obj in heads, name
    assert {n for n, _ in LOSSES} == set(harness.LOSS_INPUTS), "list the new loss's inputs"
    assert {"ArcFace", "SphereFace", "SVSoftmax", "CenterLoss", "GeMPooling2D"} <= set(ids(LAYERS))
    # The layers exported at the top level only (km.PartialFC, km.PairDistance) too.
    top_level = _exported_layers(km)
    covered = {cls for _, cls in LAYERS}
    assert {km.PartialFC, km.PairDistance} <= top_level <= covered, top_level - covered


@pytest.mark.parametrize("name,cls", ALL, ids=ids(ALL))
def test_config_round_trip(name, cls):
    harness.check_config(harness.make(cls))


@pytest.mark.parametrize("name,cls", ALL, ids=ids(ALL))
def test_bad_arguments_name_the_argument(name, cls):
    cases = harness.bad_argument_cases(cls)
    for argument, value in cases:
        with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
            harness.construct_with(cls, argument, value)


@pytest.mark.parametrize("name,cls", LAYERS, ids=ids(LAYERS))
def test_layer_keras_file_round_trip(name, cls, tmp_path):
    harness.check_layer_keras_round_trip(harness.make(cls), tmp_path)


@pytest.mark.parametrize("name,cls", LOSSES, ids=ids(LOSSES))
def test_loss_keras_file_round_trip(name, cls, tmp_path):
    harness.check_loss_keras_round_trip(harness.make(cls), tmp_path)


@pytest.mark.parametrize("name,cls", LAYERS, ids=ids(LAYERS))
def test_layer_xla_equals_eager(name, cls):
    layer = harness.make(cls)
    data = harness.layer_inputs(layer)
    eager = harness.run(layer, data)
    if harness.is_head_like(layer):
        fn = compiled(lambda e, y: layer([e, y], training=False))
        got = fn(*data)
    elif harness.is_pair_layer(layer):
        got = compiled(lambda a, b: layer([a, b]))(*data)
    else:
        got = compiled(lambda e: layer(e))(data)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,cls", LOSSES, ids=ids(LOSSES))
def test_loss_xla_equals_eager(name, cls):
    loss = harness.make(cls)
    y_true, y_pred = harness.loss_inputs(loss)
    eager = keras.ops.convert_to_numpy(loss(y_true, y_pred))
    got = compiled(lambda y, p: loss(y, p))(y_true, y_pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,cls", LAYERS, ids=ids(LAYERS))
def test_layer_mixed_precision_gives_float32(name, cls):
    reference = harness.make(cls)
    data = harness.layer_inputs(reference)
    expected = harness.run(reference, data)
    keras.config.set_dtype_policy("mixed_float16")
    layer = harness.make(cls)
    layer.build(_shapes(data))
    layer.set_weights(reference.get_weights())
    half = harness.layer_inputs(reference, dtype="float16")
    out = layer(half, training=False) if harness.is_head_like(layer) else layer(half)
    keras.config.set_dtype_policy("float32")
    if isinstance(
        layer,
        (km.MarginHead, km.L2Softmax, km.ScaledL2Normalization, km.L2Normalization, km.PartialFC),
    ):
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    # float16 inputs: the values agree to float16's precision of the inputs.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), expected, rtol=2e-2, atol=5e-2
    )


def _shapes(data):
    if isinstance(data, list):
        return [tuple(d.shape) for d in data]
    return tuple(data.shape)


@pytest.mark.parametrize("name,cls", LOSSES, ids=ids(LOSSES))
def test_loss_of_float16_inputs_is_float32(name, cls):
    loss = harness.make(cls)
    y_true, y_pred = harness.loss_inputs(loss)
    expected = keras.ops.convert_to_numpy(loss(y_true, y_pred))
    out = loss(y_true, y_pred.astype("float16"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name,cls", TRAINABLE_HEADS, ids=ids(TRAINABLE_HEADS))
def test_head_short_fit(name, cls):
    skip_compiled_fit_on_torch(True)
    head = harness.make(cls)
    emb = keras.Input((harness.EMBEDDING_DIM,))
    labels = keras.Input((), dtype="int32")
    model = keras.Model([emb, labels], head([keras.layers.Dense(8)(emb), labels]))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla_in_fit(),
    )
    x, y = harness.layer_inputs(head)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit([x, y], y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("name,cls", LOSSES, ids=ids(LOSSES))
def test_loss_short_fit(name, cls):
    skip_compiled_fit_on_torch(True)
    loss = harness.make(cls)
    y_true, y_pred = harness.loss_inputs(loss)
    if y_pred.ndim == 1:  # pair distances: one per sample, fit as (B, 1)
        y_pred = y_pred[:, None]
    inputs = keras.Input(y_pred.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(y_pred.shape[-1])(inputs))
    model.compile(optimizer="sgd", loss=loss, jit_compile=xla_in_fit())
    history = model.fit(y_pred, y_true, batch_size=harness.BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_partial_fc_short_fit():
    # PartialFC adds its own loss (its training logits index the sampled classes): loss=None.
    skip_compiled_fit_on_torch(True)
    pfc = harness.make(km.PartialFC)
    emb = keras.Input((harness.EMBEDDING_DIM,))
    labels = keras.Input((), dtype="int32")
    model = keras.Model([emb, labels], pfc([keras.layers.Dense(8)(emb), labels]))
    model.compile(optimizer="sgd", loss=None, jit_compile=xla_in_fit())
    x, y = harness.layer_inputs(pfc)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit([x, y], batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


CLASS_LABEL_LOSSES = [
    (n, c) for n, c in LOSSES if harness.LOSS_INPUTS[n] in ("embeddings", "similarity", "logits")
]


@pytest.mark.parametrize("name,cls", CLASS_LABEL_LOSSES, ids=ids(CLASS_LABEL_LOSSES))
def test_float_labels_that_are_not_class_ids_give_nan(name, cls):
    # Issue 12, one label rule everywhere: a float label must hold an integer (3.0 is a label;
    # 1.6, 2.5 and inf are not) and a bad label gives a NaN loss, never a plausible number.
    loss = harness.make(cls)
    y_true, y_pred = harness.loss_inputs(loss)
    reference = float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))
    assert np.isfinite(reference)
    same = float(keras.ops.convert_to_numpy(loss(y_true.astype("float32"), y_pred)))
    assert same == pytest.approx(reference, rel=1e-6)
    for bad in (1.6, 2.5, np.inf):
        y = y_true.astype("float32")
        y[3] = bad
        assert np.isnan(float(keras.ops.convert_to_numpy(loss(y, y_pred)))), bad
