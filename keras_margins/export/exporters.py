"""The three exporters of the embedding model: SavedModel, TensorFlow Lite and ONNX."""

import os
import shutil
import tempfile

from keras_margins._validation import check_flag, check_int
from keras_margins.export.atomic import check_export_path, staged_output
from keras_margins.export.serving import serving_functions, write_saved_model

__all__ = ["export_saved_model", "export_tflite", "export_onnx"]


def export_saved_model(model, path, normalize=True, top_k=None, head=None, overwrite=False):
    """Export the embedding model of ``model`` as a TensorFlow SavedModel.

    The SavedModel needs neither keras_margins nor Keras to run: load it with
    ``tf.saved_model.load(path)``. Its signatures (input ``images``: the backbone's input, any
    batch size; several inputs keep their own names):

    - ``serving_default`` (also the ``embed`` function):
      ``images -> {"embeddings": float32 (B, D)}``, L2-normalized when ``normalize=True``.
    - ``classify`` (only with ``top_k``): ``images -> {"class_ids": int32 (B, k),
      "cosines": float32 (B, k)}``, the ``k`` classes whose centres are closest in cosine,
      best first. With sub-centres a class's cosine is the maximum over its ``K`` centres
      (as in :meth:`MarginHead.cosine`); the head's scale and margin play no part.

    Args:
        model: A training model containing a margin head called as
            ``head([embeddings, labels])`` (e.g. from :func:`keras_margins.build_models`), or an
            embedding model / backbone. Mixed-precision models export float32 embeddings.
        path: Output directory. If it exists and is not empty, ``overwrite=True`` is needed.
        normalize: L2-normalize the embeddings (in float32). Defaults to ``True``.
        top_k: If set, add the ``classify`` signature returning the top ``top_k`` classes;
            must be in ``[1, num_classes]``. Defaults to ``None`` (no classification).
        head: Optional margin head or ``PartialFC`` layer: selects the head when ``model``
            has several, and gives the class centres when ``model`` is a backbone. For a
            training model it must be one of its own heads (``ValueError`` otherwise); a
            Partial FC model classifies with the PartialFC layer's centres (found
            automatically, or ``head=pfc``). Defaults to ``None``.
        overwrite: Replace an existing non-empty ``path``. Defaults to ``False``.

    Returns:
        The absolute output path (``str``).

    Raises:
        ValueError: no identifiable embedding output, a bad argument, or a ``path`` that is
            the current directory, one of its parents, or an existing file or special file.
        FileExistsError: ``path`` exists, is not empty and ``overwrite=False``.

    Examples:

        >>> import tempfile, os, numpy as np, tensorflow as tf, keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=10))
        >>> out = km.export_saved_model(train_model, os.path.join(tempfile.mkdtemp(), "m"), top_k=3)
        >>> served = tf.saved_model.load(out)
        >>> emb = served.signatures["serving_default"](images=tf.zeros((5, 64)))["embeddings"]
        >>> emb.shape, emb.dtype.name
        (TensorShape([5, 8]), 'float32')
        >>> served.signatures["classify"](images=tf.ones((2, 64)))["class_ids"].shape
        TensorShape([2, 3])
    """
    check_export_path(path, overwrite, "directory")
    _, specs, functions, trackables = serving_functions(model, normalize, head, top_k)
    with staged_output(path, overwrite, "directory") as target:
        write_saved_model(target, specs, functions, trackables)
    return os.path.abspath(os.fspath(path))


def export_tflite(model, path, normalize=True, head=None, overwrite=False, optimize=False):
    """Convert the embedding model of ``model`` to a TensorFlow Lite flat buffer.

    The ``.tflite`` file has one signature, ``serving_default``:
    ``images -> {"embeddings": float32 (B, D)}`` with a dynamic batch size (resize the input
    tensor, or use ``interpreter.get_signature_runner()``, which does it for you). A
    mixed-precision model (``mixed_float16``, ``mixed_bfloat16``) is converted from a float32
    copy of its embedding model with the same weights, so the flat buffer computes in float32
    (TFLite has no float16 kernels for most ops); ``model`` itself is left unchanged.

    Args:
        model: As for :func:`export_saved_model`.
        path: Output file (``.tflite``). An existing file needs ``overwrite=True``.
        normalize: L2-normalize the embeddings (in float32). Defaults to ``True``.
        head: As for :func:`export_saved_model`. Defaults to ``None``.
        overwrite: Replace an existing file. Defaults to ``False``.
        optimize: Apply TFLite's default optimizations (dynamic-range weight quantization:
            a smaller file, embeddings no longer within 1e-5 of Keras). Defaults to ``False``.

    Returns:
        The absolute output path (``str``).

    Examples:

        >>> import tempfile, os, keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> out = km.export_tflite(backbone, os.path.join(tempfile.mkdtemp(), "embed.tflite"))
        >>> os.path.getsize(out) > 0
        True
    """
    import tensorflow as tf

    check_flag("optimize", optimize)
    check_export_path(path, overwrite, "file")
    _, specs, functions, trackables = serving_functions(model, normalize, head, None, float32=True)
    with staged_output(path, overwrite, "file") as target:
        scratch = tempfile.mkdtemp(prefix=".keras_margins_tflite-", dir=os.path.dirname(target))
        try:
            saved = os.path.join(scratch, "saved_model")
            write_saved_model(saved, specs, functions, trackables)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                saved, signature_keys=["serving_default"]
            )
            if optimize:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        with open(target, "wb") as f:
            f.write(flatbuffer)
    return os.path.abspath(os.fspath(path))


def export_onnx(model, path, normalize=True, head=None, overwrite=False, opset=None):
    """Convert the embedding model of ``model`` to ONNX with ``tf2onnx``.

    Needs the optional packages ``tf2onnx`` and ``onnx`` (``pip install tf2onnx onnxruntime``;
    onnxruntime to run the result). The ONNX graph has one input (``images``, dynamic batch)
    and one output ``embeddings`` (float32). tf2onnx follows TensorFlow releases with a delay:
    if it cannot import or convert with the installed TensorFlow, its own error is raised.

    Args:
        model: As for :func:`export_saved_model`.
        path: Output file (``.onnx``). An existing file needs ``overwrite=True``.
        normalize: L2-normalize the embeddings (in float32). Defaults to ``True``.
        head: As for :func:`export_saved_model`. Defaults to ``None``.
        overwrite: Replace an existing file. Defaults to ``False``.
        opset: ONNX opset version; ``None`` uses tf2onnx's default. Defaults to ``None``.

    Returns:
        The absolute output path (``str``).

    Raises:
        ImportError: tf2onnx is not installed or cannot be imported with this TensorFlow.

    Examples:

        >>> import tempfile, os, keras, keras_margins as km
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> out = km.export_onnx(backbone, os.path.join(tempfile.mkdtemp(), "embed.onnx"))
        >>> os.path.getsize(out) > 0
        True
    """
    if opset is not None:
        opset = check_int("opset", opset, minimum=7)
    check_export_path(path, overwrite, "file")
    _, specs, functions, _ = serving_functions(model, normalize, head, None)
    try:
        import tf2onnx  # noqa: F401
        import tf2onnx.convert
    except Exception as error:  # tf2onnx raises various errors on unsupported TF versions
        raise ImportError(
            f"ONNX export needs tf2onnx, which could not be imported: {error!r}. "
            "Install it with `pip install tf2onnx onnxruntime`."
        ) from error
    with staged_output(path, overwrite, "file") as target:
        tf2onnx.convert.from_function(
            functions["embed"], input_signature=specs, opset=opset, output_path=target
        )
    return os.path.abspath(os.fspath(path))
