"""Reload ``.keras`` archives of mixed-precision models with their optimizer state."""

import collections
import json
import os
import zipfile

import keras


def _policy_names(node, out):
    """Collect the names of every serialized ``DTypePolicy`` in a config tree."""
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
            node.get("config"), dict
        ):
            name = node["config"].get("name")
            if isinstance(name, str):
                out.append(name)
        for value in node.values():
            _policy_names(value, out)
    elif isinstance(node, list):
        for value in node:
            _policy_names(value, out)
    return out


def saved_dtype_policy(path):
    """The mixed-precision policy a ``.keras`` archive was saved under, or ``None``.

    Reads ``config.json`` inside the archive (nothing is deserialized) and returns the most
    frequent ``mixed_*`` policy name among its layers, e.g. ``"mixed_float16"``; ``None`` if
    no layer uses a mixed policy.

    Args:
        path: A ``.keras`` file.

    Returns:
        A policy name (``str``) or ``None``.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"`path` must be a .keras archive (a zip file). Received: path={path!r}")
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    names = [n for n in _policy_names(config, []) if n.startswith("mixed_")]
    if not names:
        return None
    return collections.Counter(names).most_common(1)[0][0]


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """``keras.saving.load_model`` that keeps the optimizer state of mixed-precision models.

    A model trained under ``keras.config.set_dtype_policy("mixed_float16")`` is compiled with a
    ``LossScaleOptimizer``, whose saved state has more variables than a plain optimizer.
    Loading the ``.keras`` file in a fresh process (where the global policy is ``float32``)
    rebuilds the model with a float32 top-level policy, hence a plain optimizer, and Keras
    only warns "Skipping variable loading for optimizer ...": the step count and the moments
    restart from zero, so a learning-rate schedule replays its warm-up and the loss jumps.

    This function reads the policy the archive was saved under (:func:`saved_dtype_policy`),
    sets it as the global policy while loading, and restores the previous global policy
    afterwards. The model's layers keep the policies they were saved with, and training
    continues where it stopped. For other files (or float32 models) it is exactly
    ``keras.saving.load_model``.

    The recipe without this helper: call
    ``keras.config.set_dtype_policy("mixed_float16")`` before ``keras.saving.load_model``.

    Args:
        path: The ``.keras`` file (or anything ``keras.saving.load_model`` accepts).
        custom_objects: Passed to ``keras.saving.load_model``. Defaults to ``None``.
        compile: Passed to ``keras.saving.load_model``. Defaults to ``True``.
        safe_mode: Passed to ``keras.saving.load_model``. Defaults to ``True``.

    Returns:
        The loaded model.

    Example:

        >>> import os, tempfile, numpy as np, keras, keras_margins as km
        >>> keras.config.set_dtype_policy("mixed_float16")
        >>> backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        >>> model, _ = km.build_models(backbone, km.ArcFace(num_classes=3))
        >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> x, y = np.ones((6, 8), "float32"), np.arange(6) % 3
        >>> _ = model.fit([x, y], y, epochs=3, verbose=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> keras.config.set_dtype_policy("float32")  # as in a fresh process
        >>> loaded = km.load_model(path)
        >>> type(loaded.optimizer).__name__
        'LossScaleOptimizer'
        >>> int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
        True
        >>> keras.config.dtype_policy().name  # the global policy is left as it was
        'float32'
    """
    kwargs = {"custom_objects": custom_objects, "compile": compile, "safe_mode": safe_mode}
    is_archive = str(os.fspath(path)).endswith(".keras") and zipfile.is_zipfile(path)
    policy = saved_dtype_policy(path) if is_archive else None
    if policy is None:
        return keras.saving.load_model(path, **kwargs)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return keras.saving.load_model(path, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)


__all__ = ["load_model", "saved_dtype_policy"]
