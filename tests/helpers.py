"""Checks that every public layer and loss of keras_margins must pass."""

import inspect
import math
import os

import keras
import numpy as np


def assert_config_has_all_init_args(obj):
    """Every ``__init__`` argument (but ``**kwargs``) appears in ``get_config()``."""
    config = obj.get_config()
    params = inspect.signature(type(obj).__init__).parameters
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        assert name in config, f"{type(obj).__name__}.get_config() lacks `{name}`"


def assert_config_round_trip(obj):
    """``from_config(get_config())`` rebuilds an object with the same config."""
    assert_config_has_all_init_args(obj)
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(obj)
    return clone


def assert_keras_round_trip(model, inputs, tmp_path, atol=0.0):
    """A model saves to ``.keras``, loads back (no custom_objects) and gives the same outputs."""
    path = os.path.join(str(tmp_path), "model.keras")
    expected = keras.ops.convert_to_numpy(model(inputs))
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = keras.ops.convert_to_numpy(loaded(inputs))
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    return loaded


def head_model(head, embedding_dim):
    """A functional ``[embeddings, labels] -> logits`` model around ``head``."""
    emb = keras.Input((embedding_dim,), name="embeddings")
    labels = keras.Input((), dtype="int32", name="labels")
    return keras.Model([emb, labels], head([emb, labels]))


def ref_cross_entropy(logits, labels):
    """Mean softmax cross-entropy of float64 ``logits`` (B, C) for integer ``labels``, by loops."""
    total = 0.0
    for row, y in zip(np.asarray(logits, np.float64), labels):
        top = max(row)
        total += top + math.log(sum(math.exp(v - top) for v in row)) - row[y]
    return total / len(labels)


def with_kernel(head, kernel):
    """Build ``head`` for embeddings of size ``kernel.shape[0]`` and set its class centres."""
    head.build((None, kernel.shape[0]))
    head.kernel.assign(kernel)
    return head


def numerical_gradient(f, x, eps=1e-6):
    """Central finite differences of the scalar function ``f`` at float64 array ``x``."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f(x)
        x[i] = old - eps
        lo = f(x)
        x[i] = old
        grad[i] = (hi - lo) / (2 * eps)
    return grad


def load_digits_split(test_size=0.3, seed=0):
    """scikit-learn's bundled digits (no download), scaled to [0, 1], stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), test_size=test_size, random_state=seed, stratify=y)
