"""One harness every public head, layer and loss of keras_margins goes through.

In the spirit of ``keras/src/testing/test_case.py``'s ``run_layer_test``: the objects come from
``km.heads.__all__``, ``km.layers.__all__`` and ``km.losses.__all__`` (a new export is covered
by being exported), built with their defaults (and ``num_classes`` where they take one), and
each check below is one test of ``tests/test_layer_harness.py``:

- ``get_config`` holds every ``__init__`` argument and ``from_config`` rebuilds the same config;
- a ``.keras`` file round trip gives identical outputs (a model holding the layer, or a model
  compiled with the loss);
- under XLA the outputs equal the eager ones;
- under the ``mixed_float16`` policy the outputs are float32 and match float32 inputs;
- every argument given a value of the wrong kind is a ``ValueError``/``TypeError`` naming it;
- a short ``fit`` gives a finite loss.

The only thing kept by hand is what a loss is called on (:data:`LOSS_INPUTS`); a loss exported
without an entry there fails the coverage test.
"""

import inspect
import os

import keras
import numpy as np

import keras_margins as km
from tests.helpers import assert_config_round_trip

NUM_CLASSES = 5
EMBEDDING_DIM = 8
BATCH = 8

#: Base-class arguments that are not the object's own (checked by Keras itself).
BASE_ARGUMENTS = ("self", "name", "dtype", "reduction", "trainable")

#: What each loss class is called on, by the kind of its ``y_true`` / ``y_pred``.
LOSS_INPUTS = {
    "TripletLoss": "embeddings",
    "TripletSemiHardLoss": "embeddings",
    "TripletHardLoss": "embeddings",
    "LiftedStructLoss": "embeddings",
    "ContrastiveLoss": "pair_distances",
    "NpairsLoss": "similarity",
    "NpairsMultilabelLoss": "multilabel_similarity",
    "HardMiningSoftmaxLoss": "logits",
    "FocalSoftmaxLoss": "logits",
    "SparseCategoricalCrossentropy": "logits",
}


def _exported_classes(module, base):
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, type) and issubclass(obj, base) and obj not in [c for _, c in out]:
            out.append((name, obj))
    return out


def public_layers():
    """``(name, class)`` of every exported layer: heads, layers and the layer-form losses."""
    found = []
    for module in (km.heads, km.layers, km.losses, km):
        for name, cls in _exported_classes(module, keras.layers.Layer):
            if cls not in [c for _, c in found]:
                found.append((name, cls))
    return found


def public_losses():
    """``(name, class)`` of every exported ``keras.losses.Loss``."""
    return _exported_classes(km.losses, keras.losses.Loss)


def public_metrics():
    """``(name, class)`` of every exported ``keras.metrics.Metric`` (config checks only)."""
    return _exported_classes(km.losses, keras.metrics.Metric)


def _required_arguments(cls):
    """``num_classes=NUM_CLASSES`` where ``cls`` takes one; a wrapped ArcFace for a wrapper."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "num_classes" in params:
        kwargs["num_classes"] = NUM_CLASSES
    if "head" in params:  # PartialFC: a wrapper around any head
        kwargs["head"] = km.ArcFace(num_classes=NUM_CLASSES)
        # k = 4 of the 5 classes sampled per step: a fit batch of 4 has at most 4 distinct
        # classes, and PartialFC needs k >= that (its documented rule; fewer give NaN).
        kwargs["sample_rate"] = 0.8
    return kwargs


def make(cls):
    """An instance with default arguments and the required ones (:func:`_required_arguments`)."""
    return cls(**_required_arguments(cls))


# ---------------------------------------------------------------------------- inputs
def is_head_like(layer):
    """Called on ``[embeddings, labels]`` (heads, CenterLoss), not on embeddings alone."""
    return isinstance(layer, (km.MarginHead, km.L2Softmax, km.CenterLoss, km.PartialFC))


def is_pair_layer(layer):
    """Called on a pair of embedding batches ``[a, b]`` (Siamese distances)."""
    return isinstance(layer, km.PairDistance)


def layer_inputs(layer, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(BATCH, EMBEDDING_DIM)).astype(dtype)
    if is_head_like(layer):
        return [emb, (np.arange(BATCH) % NUM_CLASSES).astype("int32")]
    if is_pair_layer(layer):
        return [emb, rng.normal(size=(BATCH, EMBEDDING_DIM)).astype(dtype)]
    if isinstance(layer, km.GeMPooling2D):
        return np.abs(rng.normal(size=(2, 4, 4, 3))).astype(dtype)
    return emb


def symbolic_inputs(layer):
    if is_head_like(layer):
        return [keras.Input((EMBEDDING_DIM,)), keras.Input((), dtype="int32")]
    if is_pair_layer(layer):
        return [keras.Input((EMBEDDING_DIM,)), keras.Input((EMBEDDING_DIM,))]
    if isinstance(layer, km.GeMPooling2D):
        return keras.Input((4, 4, 3))
    return keras.Input((EMBEDDING_DIM,))


def loss_inputs(loss, seed=0, dtype="float32"):
    """``(y_true, y_pred)`` for ``loss`` (see :data:`LOSS_INPUTS`)."""
    kind = LOSS_INPUTS[type(loss).__name__]
    rng = np.random.default_rng(seed)
    labels = (np.arange(BATCH) // 2).astype("int32")  # pairs of each class
    if kind == "embeddings":
        return labels, rng.normal(size=(BATCH, EMBEDDING_DIM)).astype(dtype)
    if kind == "pair_distances":
        return (np.arange(BATCH) % 2).astype("float32"), rng.uniform(0, 2, BATCH).astype(dtype)
    if kind == "logits":
        return labels % NUM_CLASSES, (4 * rng.normal(size=(BATCH, NUM_CLASSES))).astype(dtype)
    f = rng.normal(size=(BATCH, EMBEDDING_DIM))
    sim = (f @ f.T / EMBEDDING_DIM).astype(dtype)
    if kind == "similarity":
        return labels, sim
    return np.eye(BATCH // 2, dtype="float32")[labels], sim  # multilabel_similarity


def loss_model_input_shape(loss):
    """The per-sample shape of ``y_pred`` (a model trained on it outputs this shape)."""
    _, y_pred = loss_inputs(loss)
    return y_pred.shape[1:]


# ---------------------------------------------------------------------------- checks
def run(layer, inputs, training=False):
    out = layer(inputs, training=training) if is_head_like(layer) else layer(inputs)
    return keras.ops.convert_to_numpy(out)


def check_config(obj):
    assert_config_round_trip(obj)


def check_layer_keras_round_trip(layer, tmp_path):
    inputs = symbolic_inputs(layer)
    model = keras.Model(inputs, layer(inputs))
    data = layer_inputs(layer)
    expected = keras.ops.convert_to_numpy(model(data))
    path = os.path.join(str(tmp_path), "layer.keras")
    model.save(path)
    got = keras.ops.convert_to_numpy(keras.saving.load_model(path)(data))
    np.testing.assert_array_equal(got, expected)


def check_loss_keras_round_trip(loss, tmp_path):
    shape = loss_model_input_shape(loss)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(optimizer="sgd", loss=loss)
    path = os.path.join(str(tmp_path), "loss.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    y_true, y_pred = loss_inputs(loss)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.loss(y_true, y_pred)),
        keras.ops.convert_to_numpy(loss(y_true, y_pred)),
    )


def bad_argument_cases(cls):
    """``(argument, bad value)`` for every own ``__init__`` argument of ``cls``.

    A value of the wrong kind: ``0`` for the required ``num_classes``, ``"bogus"`` for a string
    choice, ``"bad"`` for a number or flag. Arguments defaulting to ``None`` and Keras objects
    (initializers, regularizers, constraints, resolved by Keras) are skipped.
    """
    cases = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in BASE_ARGUMENTS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name.endswith(("initializer", "regularizer", "constraint")):
            continue
        default = param.default
        if default is param.empty:
            cases.append((name, 0))
        elif default is not None:
            cases.append((name, "bogus" if isinstance(default, str) else "bad"))
    return cases


def construct_with(cls, name, value):
    kwargs = _required_arguments(cls)
    kwargs[name] = value
    return cls(**kwargs)
