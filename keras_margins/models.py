"""The two-input training pattern: backbone + head -> (training model, embedding model)."""

import keras

from keras_margins._validation import check_choice, check_flag
from keras_margins.export.embedding_model import EmbeddingNorm
from keras_margins.layers.normalization import L2Normalization

_LABEL_INPUTS = ("sparse", "one_hot")


@keras.saving.register_keras_serializable(package="keras_margins")
class OneHotToIndex(keras.layers.Layer):
    """Turn one-hot (or multi-hot/soft) label rows ``(B, C)`` into class indices ``(B,)``.

    ``index = argmax_j y_j`` (the first maximum on ties), as int32. Used by
    :func:`build_models` with ``label_input="one_hot"`` so the margin head, which needs the
    index of the target class, can be fed the one-hot labels of an existing data pipeline.

    Example:

        >>> import numpy as np, keras_margins as km
        >>> km.models.OneHotToIndex()(np.eye(3, dtype="float32")[[2, 0]]).numpy().tolist()
        [2, 0]
    """

    def call(self, inputs):
        return keras.ops.cast(keras.ops.argmax(inputs, axis=-1), "int32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


def _fresh_inputs(backbone):
    inputs = getattr(backbone, "inputs", None)
    if not inputs:
        raise ValueError(
            "`backbone` must be a built Keras model with defined inputs (a functional model, "
            "or a Sequential model that starts with `keras.Input`). "
            f"Received: backbone={backbone!r} with no inputs"
        )
    return [
        keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=getattr(t, "name", None))
        for t in inputs
    ]


def _check_label_dtype(label_dtype, label_input):
    try:
        dtype = keras.backend.standardize_dtype(label_dtype)
    except (ValueError, TypeError, AttributeError):
        dtype = None
    allowed = ("int", "uint") if label_input == "sparse" else ("int", "uint", "float", "bfloat")
    if dtype is None or not dtype.startswith(allowed) or dtype == "bool":
        kind = "an integer dtype" if label_input == "sparse" else "a numeric dtype"
        raise ValueError(
            f"`label_dtype` must be {kind} with label_input={label_input!r}. "
            f"Received: label_dtype={label_dtype!r}"
        )
    return dtype


def build_models(
    backbone,
    head,
    normalize_embeddings=True,
    label_dtype=None,
    label_input="sparse",
    return_norm=False,
):
    """Build the training model and the embedding model of the two-input pattern.

    The training model takes ``[*backbone_inputs, labels]`` and returns the head's logits; train
    it with ``model.fit([x, y], y)`` and
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``. The embedding model maps
    the backbone's inputs to embeddings (L2-normalized and float32 by default) and is what you
    evaluate and export. Both share the backbone's weights: training one trains the other.

    With ``label_input="one_hot"`` the labels input is a ``(B, num_classes)`` one-hot matrix,
    converted inside the model to the class index ``argmax_j y_j`` the head needs (an
    :class:`OneHotToIndex` layer), so a notebook's one-hot pipeline is kept as is: train with
    ``model.fit([x, y_onehot], y_onehot)`` and ``keras.losses.CategoricalCrossentropy(
    from_logits=True)`` (its ``label_smoothing`` is real label smoothing; the margin goes to
    the argmax class).

    Args:
        backbone: A Keras model from inputs to embeddings of shape ``(B, D)``.
        head: A margin head (``km.ArcFace(...)``, ``km.CosFace(...)``, ``km.PartialFC(...)``,
            ...): a Keras layer with a ``num_classes`` attribute, called as
            ``head([embeddings, labels])``.
        normalize_embeddings: L2-normalize the embedding model's output (in float32); ``True``
            or ``False``. Defaults to ``True``.
        label_dtype: dtype of the labels input: an integer dtype for sparse labels, a numeric
            one for one-hot labels. Defaults to ``None``: ``"int32"`` (sparse) or
            ``"float32"`` (one-hot).
        label_input: ``"sparse"`` (class indices, shape ``(B,)``) or ``"one_hot"`` (shape
            ``(B, num_classes)``). Defaults to ``"sparse"``.
        return_norm: The embedding model also returns each embedding's norm ``||x||`` before
            normalization, float32 ``(B, 1)``, as a second output (``[embeddings, norms]``;
            see :class:`keras_margins.export.embedding_model.EmbeddingNorm`): MagFace's quality
            score. Defaults to ``False``.

    Returns:
        ``(training_model, embedding_model)``.

    Raises:
        ValueError: ``backbone`` is not a Keras model with inputs and ``(B, D)`` outputs,
            ``head`` is not a margin head, or another argument is invalid.

    Examples:

        >>> import keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
        >>> train_model, embed_model = km.build_models(backbone, km.ArcFace(num_classes=10))
        >>> train_model.compile(
        ...     optimizer="adam",
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ... )
        >>> [tuple(t.shape) for t in train_model.inputs]
        [(None, 64), (None,)]
        >>> one_hot_model, _ = km.build_models(backbone, km.ArcFace(num_classes=10),
        ...                                    label_input="one_hot")
        >>> tuple(one_hot_model.inputs[-1].shape)
        (None, 10)
    """
    if not isinstance(head, keras.layers.Layer) or not hasattr(head, "num_classes"):
        raise ValueError(
            "`head` must be a margin head: a Keras layer with a `num_classes` attribute called "
            "as head([embeddings, labels]), e.g. km.ArcFace(num_classes=...). "
            f"Received: head={head!r}"
        )
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"`backbone` must be a Keras model. Received: backbone={backbone!r}")
    normalize_embeddings = check_flag("normalize_embeddings", normalize_embeddings)
    label_input = check_choice("label_input", label_input, _LABEL_INPUTS)
    return_norm = check_flag("return_norm", return_norm)
    if label_dtype is None:
        label_dtype = "int32" if label_input == "sparse" else "float32"
    label_dtype = _check_label_dtype(label_dtype, label_input)
    inputs = _fresh_inputs(backbone)
    features = backbone(inputs[0] if len(inputs) == 1 else inputs)
    if len(features.shape) != 2:
        raise ValueError(
            "`backbone` must output embeddings of shape (batch_size, embedding_dim). "
            f"Received: output shape {tuple(features.shape)}"
        )
    if label_input == "sparse":
        labels = keras.Input(shape=(), dtype=label_dtype, name="labels")
        label_indices = labels
    else:
        labels = keras.Input(shape=(int(head.num_classes),), dtype=label_dtype, name="labels")
        label_indices = OneHotToIndex(name="one_hot_to_index")(labels)
    logits = head([features, label_indices])
    training_model = keras.Model([*inputs, labels], logits, name=f"{backbone.name}_training")
    embeddings = features
    if normalize_embeddings:
        embeddings = L2Normalization(name="l2_normalize")(features)
    if return_norm:
        embeddings = [embeddings, EmbeddingNorm(name="embedding_norm")(features)]
    embedding_model = keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, embeddings, name=f"{backbone.name}_embedding"
    )
    return training_model, embedding_model


__all__ = ["build_models", "OneHotToIndex"]
