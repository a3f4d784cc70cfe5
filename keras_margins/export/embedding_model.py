"""The embedding model ``images -> float32 (L2-normalized) embeddings`` cut out of a model."""

import keras

from keras_margins._validation import check_flag
from keras_margins.export.graph import locate
from keras_margins.ops import feature_norm


@keras.saving.register_keras_serializable(package="keras_margins")
class EmbeddingNorm(keras.layers.Layer):
    """The L2 norm ``||x||`` of each embedding, float32 ``(B, 1)``, at any magnitude.

    Computed in float32 on the row scaled to a largest entry of about 1, then scaled back
    (:func:`keras_margins.ops.feature_norm`), so the norm of features of magnitude 1e-30 or
    1e30 is exact where float32 represents it. A zero row gets 1e-6; NaN in gives NaN. This is
    the norm the heads see (MagFace's quality score, AdaFace's ``n``).

    Example:

        >>> import numpy as np
        >>> from keras_margins.export.embedding_model import EmbeddingNorm
        >>> norms = EmbeddingNorm()(np.array([[3e30, 4e30], [3.0, 4.0]], "float32")).numpy()
        >>> norms.shape, bool(np.allclose(norms[:, 0], [5e30, 5.0], rtol=1e-6))
        ((2, 1), True)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return feature_norm(keras.ops.cast(inputs, "float32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], 1)


def get_embedding_model(model, normalize=True, head=None, return_norm=False):
    """The Keras embedding model ``images -> float32 embeddings`` of a (training) model.

    If ``model`` contains a keras_margins head (or ``PartialFC`` layer) called as
    ``head([embeddings, labels])`` (the training model of :func:`keras_margins.build_models`, or
    any functional model built that way, also nested inside other functional models), the
    embedding output is the head's ``embeddings`` input, stepping over keras_margins layers that
    pass embeddings through (center loss). Otherwise ``model`` must be a backbone with a single
    output of shape ``(batch_size, embedding_dim)``.

    The output is cast to float32 (also for mixed-precision models) and, with
    ``normalize=True``, L2-normalized in float32: ``s = x / max|x|``, ``e = s / ||s||``, so
    any finite magnitude of the features works (no overflow of the squared norm above ~1e19,
    no norm floor below ~1e-6); a zero vector stays zero and NaN features give NaN.
    The returned model shares its weights with ``model``.

    Args:
        model: A functional or Sequential Keras model: a training model with a margin head, an
            embedding model, or a backbone.
        normalize: L2-normalize the embeddings. Defaults to ``True``.
        head: Optional margin head or ``PartialFC`` layer of ``model``; needed only when
            ``model`` has several heads fed by different embeddings. A head that is not in a
            training model (for example ``pfc.to_head()``, a copy) is a ``ValueError``.
            Defaults to ``None``.
        return_norm: Also return each embedding's norm ``||x||`` before normalization, as a
            second output: float32 ``(B, 1)`` (:class:`EmbeddingNorm`, exact at any magnitude).
            With MagFace it is the quality score of the sample. Defaults to ``False``.

    Returns:
        A ``keras.Model`` from the image input(s) to float32 embeddings ``(B, D)``; with
        ``return_norm=True`` to ``[embeddings, norms]`` with norms ``(B, 1)``.

    Raises:
        ValueError: if no embedding output can be identified.

    Examples:

        >>> import keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=10))
        >>> embed = km.get_embedding_model(train_model)
        >>> [tuple(t.shape) for t in embed.inputs], tuple(embed.output.shape), embed.output.dtype
        ([(None, 64)], (None, 8), 'float32')
    """
    check_flag("normalize", normalize)
    check_flag("return_norm", return_norm)
    inputs, features, _ = locate(model, head)
    return embedding_model(model, inputs, features, normalize, return_norm)


def embedding_model(model, inputs, features, normalize, return_norm=False):
    out = keras.layers.Activation("linear", dtype="float32")(features)  # cast to float32
    if normalize:
        # Divide by the max-abs first, so that no squared norm overflows (features above
        # ~1e19) or meets UnitNormalization's norm floor (features below ~1e-6); zero rows
        # stay zero, NaN stays NaN.
        peak = keras.ops.max(keras.ops.abs(out), axis=-1, keepdims=True)
        out = out / keras.ops.where(peak > 0, peak, keras.ops.ones_like(peak))
        out = keras.layers.UnitNormalization(axis=-1, dtype="float32")(out)
    if return_norm:
        out = [out, EmbeddingNorm(dtype="float32")(features)]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, out, name=f"{model.name}_embed")


def _is_mixed(layer):
    policy = getattr(layer, "dtype_policy", None)
    return str(getattr(policy, "name", "")).startswith("mixed_")


def float32_copy(model):
    """A copy of ``model`` computing in float32, sharing no state but holding the same weights.

    Returned unchanged when no layer uses a mixed precision policy. Layers with a mixed policy
    are rebuilt from their config with ``dtype="float32"`` (nested models recursively); the
    weights of a mixed-precision model are float32 variables already, so they copy exactly.
    """
    if not any(_is_mixed(layer) for layer in model._flatten_layers(include_self=True)):
        return model

    def clone(layer):
        config = layer.get_config()
        if _is_mixed(layer):
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    source, target = model.weights, copy.weights
    if [tuple(w.shape) for w in source] != [tuple(w.shape) for w in target]:
        raise ValueError(  # pragma: no cover - defensive: clone_model keeps the layer order
            f"Could not make a float32 copy of {model.name!r} for the export: its weights do not "
            "line up with the copy's. Rebuild the model under the float32 policy and load the "
            "weights into it before exporting."
        )
    for w_target, w_source in zip(target, source):
        w_target.assign(keras.ops.cast(w_source, w_target.dtype))
    return copy
