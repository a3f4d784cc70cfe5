"""The two-input training pattern: backbone + head -> (training model, embedding model)."""

import keras

from keras_margins.heads.base import MarginHead


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


def build_models(backbone, head, normalize_embeddings=True, label_dtype="int32"):
    """Build the training model and the embedding model of the two-input pattern.

    The training model takes ``[*backbone_inputs, labels]`` and returns the head's logits; train
    it with ``model.fit([x, y], y)`` and
    ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``. The embedding model maps
    the backbone's inputs to embeddings (L2-normalized and float32 by default) and is what you
    evaluate and export. Both share the backbone's weights: training one trains the other.

    Args:
        backbone: A Keras model from inputs to embeddings of shape ``(B, D)``.
        head: A margin head (``km.ArcFace(...)``, ``km.CosFace(...)``, ...).
        normalize_embeddings: L2-normalize the embedding model's output (in float32).
            Defaults to ``True``.
        label_dtype: dtype of the labels input. Defaults to ``"int32"``.

    Returns:
        ``(training_model, embedding_model)``.

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
    """
    if not isinstance(head, MarginHead) and not isinstance(head, keras.layers.Layer):
        raise ValueError(f"`head` must be a Keras layer (a margin head). Received: head={head!r}")
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"`backbone` must be a Keras model. Received: backbone={backbone!r}")
    inputs = _fresh_inputs(backbone)
    features = backbone(inputs[0] if len(inputs) == 1 else inputs)
    if len(features.shape) != 2:
        raise ValueError(
            "`backbone` must output embeddings of shape (batch_size, embedding_dim). "
            f"Received: output shape {tuple(features.shape)}"
        )
    labels = keras.Input(shape=(), dtype=label_dtype, name="labels")
    logits = head([features, labels])
    training_model = keras.Model([*inputs, labels], logits, name=f"{backbone.name}_training")
    embeddings = features
    if normalize_embeddings:
        embeddings = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(
            features
        )
    embedding_model = keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, embeddings, name=f"{backbone.name}_embedding"
    )
    return training_model, embedding_model
