"""The serving signatures of an export: input specs and the ``embed`` / ``classify`` functions."""

import keras

from keras_margins._validation import check_flag, check_int
from keras_margins.export.embedding_model import embedding_model, float32_copy
from keras_margins.export.graph import locate


def require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow backend of Keras. Received backend: "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow (the export runs the "
            "model once to trace it, so weights trained on another backend can be loaded into "
            "a TensorFlow-backend copy of the model first)."
        )


def _input_specs(inputs):
    import tensorflow as tf

    specs = []
    for i, t in enumerate(inputs):
        if len(inputs) == 1:
            name = "images"
        else:
            raw = getattr(t, "name", None) or f"input_{i}"
            name = "".join(c if c.isalnum() or c == "_" else "_" for c in raw) or f"input_{i}"
        specs.append(tf.TensorSpec((None, *tuple(t.shape)[1:]), dtype=t.dtype, name=name))
    return specs


def serving_functions(model, normalize, head, top_k, float32=False):
    """The embedding model, the input specs and the tf.functions of each signature.

    With ``float32=True`` a mixed-precision embedding model is replaced by a float32 copy
    (TFLite has no float16 kernels for most ops).
    """
    import tensorflow as tf

    require_tensorflow("Export")
    check_flag("normalize", normalize)
    inputs, features, found_head = locate(model, head)
    head = head if head is not None else found_head
    if top_k is not None:
        top_k = check_int("top_k", top_k, minimum=1)
        if head is None:
            raise ValueError(
                "`top_k` asks for a classification signature, which needs the class centres of "
                "a margin head: `model` contains none; pass `head=` (a built margin head). "
                f"Received: top_k={top_k}"
            )
        if top_k > head.num_classes:
            raise ValueError(
                f"`top_k` must be <= the head's number of classes ({head.num_classes}). "
                f"Received: top_k={top_k}"
            )
    embed_model = embedding_model(model, inputs, features, normalize)
    if float32:
        embed_model = float32_copy(embed_model)
    specs = _input_specs(inputs)

    def _run(images):
        x = images[0] if len(images) == 1 else list(images)
        return tf.cast(embed_model(x, training=False), tf.float32)

    @tf.function(input_signature=specs)
    def embed(*images):
        return {"embeddings": _run(images)}

    functions = {"embed": embed}
    if top_k is not None:
        k = top_k

        @tf.function(input_signature=specs)
        def classify(*images):
            emb = _run(images)
            # MarginHead.cosine and PartialFC.cosine: float32 cosines against every class,
            # max over each class's sub-centres.
            cos = head.cosine(emb)
            cos = tf.cast(cos, tf.float32)
            values, ids = tf.math.top_k(cos, k=k, sorted=True)
            return {"class_ids": tf.cast(ids, tf.int32), "cosines": values}

        functions["classify"] = classify
    trackables = [embed_model] + ([head] if top_k is not None else [])
    return embed_model, specs, functions, trackables


def write_saved_model(target, specs, functions, trackables):
    archive = keras.export.ExportArchive()
    for obj in trackables:
        archive.track(obj)
    # The first endpoint is also published as "serving_default".
    for name, fn in functions.items():
        archive.add_endpoint(name, fn, input_signature=specs)
    archive.write_out(target, verbose=False)
