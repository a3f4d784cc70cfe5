"""Export the embedding model of a margin-trained network: SavedModel, TFLite and ONNX.

Training uses a two-input model (``[images, labels] -> logits``); serving needs only
``images -> embeddings``. The functions here find the embedding output inside a training model
(the ``embeddings`` input of its margin head), cut the head and the labels input away, and write
an artifact that runs without keras_margins, and even without Keras:

- :func:`get_embedding_model`: the Keras model ``images -> float32 (L2-normalized) embeddings``.
- :func:`export_saved_model`: a TensorFlow SavedModel with a ``serving_default`` signature
  (``images -> {"embeddings"}``) and, optionally, a ``classify`` signature returning the top-k
  class ids and cosines against the head's class centres.
- :func:`export_tflite`: a TensorFlow Lite flat buffer of the embedding signature.
- :func:`export_onnx`: an ONNX model through ``tf2onnx`` (optional dependency).

Every writer refuses an existing non-empty output path unless ``overwrite=True`` and builds the
artifact in a temporary location next to it, moving it into place only once it is complete, so
a failed export leaves nothing behind. An export never removes anything but a previous output
at ``path``: the current directory (``""``, ``"."``), any of its parents, a special file, a
directory where a file is written (TFLite, ONNX) and a file where a directory is written
(SavedModel) are a ``ValueError``, whatever ``overwrite`` says. These exporters need the
TensorFlow backend.
"""

import contextlib
import os
import shutil
import tempfile

import keras

from keras_margins._validation import check_flag, check_int
from keras_margins.heads.base import MarginHead
from keras_margins.partial_fc import PartialFC

__all__ = ["get_embedding_model", "export_saved_model", "export_tflite", "export_onnx"]

_PACKAGE_PREFIX = "keras_margins>"


# ---------------------------------------------------------------------------- argument checks
def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow backend of Keras. Received backend: "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow (the export runs the "
            "model once to trace it, so weights trained on another backend can be loaded into "
            "a TensorFlow-backend copy of the model first)."
        )


# ---------------------------------------------------------------------------- graph inspection
def _producer(tensor):
    """The ``(operation, node)`` that produced a symbolic tensor, or ``(None, None)``."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    operation, node_index = history[0], history[1]
    nodes = getattr(operation, "_inbound_nodes", None) or []
    if node_index >= len(nodes):
        return operation, None
    return operation, nodes[node_index]


def _graph_nodes(model):
    """Every node of ``model``'s own graph (not inside nested models), outputs first."""
    seen, order = set(), []
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        _, node = _producer(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(node.input_tensors)
    return order


def _input_ancestors(tensor, candidates):
    """The tensors of ``candidates`` (model inputs) that ``tensor`` depends on, in order."""
    wanted = {id(t): i for i, t in enumerate(candidates)}
    found, seen = set(), set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if id(t) in wanted:
            found.add(wanted[id(t)])
        _, node = _producer(t)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.input_tensors)
    return [candidates[i] for i in sorted(found)]


def _is_package_layer(operation):
    if isinstance(operation, MarginHead):
        return True
    try:
        name = keras.saving.get_registered_name(type(operation))
    except Exception:  # pragma: no cover - defensive: any class has a registered name
        return False
    return isinstance(name, str) and name.startswith(_PACKAGE_PREFIX)


def _pair_arguments(node):
    """``(embeddings, labels)`` if the node was called as ``layer([embeddings, labels])``."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    first = args[0] if args else kwargs.get("inputs")
    if isinstance(first, (list, tuple)) and len(first) == 2:
        return first[0], first[1]
    return None


def _resolve_pass_through(tensor):
    """Step over keras_margins layers that take ``[embeddings, labels]`` and return embeddings.

    A center-loss layer sits between the backbone and the head and returns its embeddings
    unchanged; its output depends on the labels input, so the embedding model must start from
    its ``embeddings`` input instead.
    """
    for _ in range(100):
        operation, node = _producer(tensor)
        if node is None or isinstance(operation, MarginHead) or not _is_package_layer(operation):
            return tensor
        pair = _pair_arguments(node)
        if pair is None or tuple(pair[0].shape) != tuple(tensor.shape):
            return tensor
        tensor = pair[0]
    return tensor


def _head_calls(model, head=None):
    """``(layer, embeddings, labels)`` for each margin head call in ``model``'s graph."""
    calls = []
    for node in _graph_nodes(model):
        operation = node.operation
        if head is not None and operation is not head:
            continue
        if not _is_package_layer(operation):
            continue
        pair = _pair_arguments(node)
        if pair is None:
            continue
        calls.append((operation, pair[0], pair[1]))
    heads = [c for c in calls if isinstance(c[0], MarginHead)]
    return heads or calls


def _is_classifier(layer):
    """A layer holding class centres usable for the ``classify`` signature."""
    return isinstance(layer, (MarginHead, PartialFC))


def _functional_parts(model):
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return inputs, outputs


def _find_head(model, head=None, depth=0):
    """The head call of ``model``, looking inside nested functional models too.

    Returns ``None`` if there is none, else ``(features, label_tensors, layer)`` in the
    coordinates of ``model``'s own graph: the embeddings tensor, the tensors the head's labels
    come from, and the head (or other package layer) called on them.
    """
    calls = _head_calls(model, head)
    if calls:
        resolved = {}
        for _, e, _ in calls:
            t = _resolve_pass_through(e)
            resolved[id(t)] = t
        if len(resolved) > 1:
            names = [layer.name for layer, _, _ in calls]
            raise ValueError(
                f"`model` contains several margin heads ({names}) fed by different embeddings; "
                "pass the one to export from as `head=`."
            )
        layer, _, labels = calls[0]
        return next(iter(resolved.values())), [labels], layer
    if depth > 32:
        return None
    found = []
    for node in _graph_nodes(model):
        inner = node.operation
        if not isinstance(inner, keras.Model) or inner is model:
            continue
        parts = _functional_parts(inner)
        if parts is None:
            continue
        result = _find_head(inner, head, depth + 1)
        if result is None:
            continue
        inner_inputs = parts[0]
        outer_args = list(node.input_tensors)
        if len(outer_args) != len(inner_inputs):
            raise ValueError(
                f"`model` contains a nested model {inner.name!r} with a margin head, called "
                "in a way whose inputs cannot be matched to its own; cannot cut out the "
                "embedding model. Pass the inner model itself."
            )
        features, labels, layer = result
        position = {id(t): i for i, t in enumerate(inner_inputs)}
        used = _input_ancestors(features, inner_inputs)
        label_inputs = [t for lab in labels for t in _input_ancestors(lab, inner_inputs)]
        if not used or any(id(t) in {id(u) for u in label_inputs} for t in used):
            raise ValueError(
                f"The embeddings fed to head {layer.name!r} depend on the labels input, so no "
                "embedding model (images -> embeddings) can be cut out of `model`. Build the "
                "model as `km.build_models` does: backbone(images) -> head([embeddings, labels])."
            )
        # The part of the nested model from its image input(s) to the embeddings, called on
        # the outer model's tensors that feed those inputs.
        sub = keras.Model(used[0] if len(used) == 1 else used, features,
                          name=f"{inner.name}_embeddings")
        args = [outer_args[position[id(t)]] for t in used]
        outer_features = sub(args[0] if len(args) == 1 else args)
        outer_labels = [outer_args[position[id(t)]] for t in label_inputs]
        found.append((outer_features, outer_labels, layer))
    if len(found) > 1:
        names = [layer.name for _, _, layer in found]
        raise ValueError(
            f"`model` contains several nested models with margin heads ({names}); pass the "
            "one to export from as `head=`, or the nested model itself."
        )
    return found[0] if found else None


def _locate(model, head=None):
    """Find the embedding output: ``(inputs, embeddings, classifier_or_None)``."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
    if head is not None and not _is_classifier(head):
        raise ValueError(
            "`head` must be a keras_margins margin head (a `MarginHead` such as `km.ArcFace`) "
            f"or a `km.PartialFC` layer. Received: head={head!r}"
        )
    parts = _functional_parts(model)
    if parts is None:
        raise ValueError(
            "Cannot find the embedding output of a model without a functional graph: `model` "
            "must be a functional or Sequential Keras model with defined inputs (for example "
            "the training or embedding model of `km.build_models`). "
            f"Received: model={model.name!r} (no symbolic inputs/outputs)"
        )
    inputs, outputs = parts

    result = _find_head(model, head)
    if result is not None:
        features, labels, layer = result
        used = _input_ancestors(features, inputs)
        label_inputs = {id(t) for lab in labels for t in _input_ancestors(lab, inputs)}
        if not used or any(id(t) in label_inputs for t in used):
            raise ValueError(
                f"The embeddings fed to head {layer.name!r} depend on the labels input, so no "
                "embedding model (images -> embeddings) can be cut out of `model`. Build the "
                "model as `km.build_models` does: backbone(images) -> head([embeddings, labels])."
            )
        return used, features, (layer if _is_classifier(layer) else None)

    if head is not None:
        if any(node.operation is head for node in _graph_nodes(model)):
            raise ValueError(
                f"Head {head.name!r} is in `model` but is not called as "
                "`head([embeddings, labels])`; cannot tell which tensor holds the embeddings."
            )
        other = _find_head(model)
        if other is not None:
            hint = (
                " For a Partial FC model pass the PartialFC layer itself (`head=pfc`), not "
                "`pfc.to_head()`, which is a copy."
                if isinstance(other[2], PartialFC) else ""
            )
            raise ValueError(
                f"`head` {head.name!r} is not in `model`, which is a training model with its own "
                f"head {other[2].name!r}: pass that head, or no `head` at all.{hint} "
                f"Received: head={head!r}"
            )
    # No head in the graph: `model` itself must be a backbone / embedding model.
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        shapes = [tuple(t.shape) for t in outputs]
        raise ValueError(
            "`model` has no identifiable embedding output: it contains no keras_margins head "
            "called as `head([embeddings, labels])`, and it is not a backbone with a single "
            f"output of shape (batch_size, embedding_dim). Received output shapes: {shapes}"
        )
    dtype = keras.backend.standardize_dtype(outputs[0].dtype)
    if "float" not in dtype:
        raise ValueError(
            "`model` has no identifiable embedding output: its single output has dtype "
            f"{dtype!r}, embeddings must be floating point."
        )
    if head is not None:
        dim = getattr(head, "embedding_dim", None)
        if not head.built or dim != outputs[0].shape[-1]:
            raise ValueError(
                f"`head` {head.name!r} must be built for embeddings of size "
                f"{outputs[0].shape[-1]} (the model's output). Received a head with "
                f"embedding_dim={dim}"
            )
    return inputs, outputs[0], head


# ---------------------------------------------------------------------------- embedding model
def get_embedding_model(model, normalize=True, head=None):
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

    Returns:
        A ``keras.Model`` from the image input(s) to float32 embeddings ``(B, D)``.

    Raises:
        ValueError: if no embedding output can be identified.

    Examples:

        >>> import keras, keras_margins as km
        >>> from keras_margins.export import get_embedding_model
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=10))
        >>> embed = get_embedding_model(train_model)
        >>> [tuple(t.shape) for t in embed.inputs], tuple(embed.output.shape), embed.output.dtype
        ([(None, 64)], (None, 8), 'float32')
    """
    check_flag("normalize", normalize)
    inputs, features, _ = _locate(model, head)
    return _embedding_model(model, inputs, features, normalize)


def _embedding_model(model, inputs, features, normalize):
    out = keras.layers.Activation("linear", dtype="float32")(features)  # cast to float32
    if normalize:
        # Divide by the max-abs first, so that no squared norm overflows (features above
        # ~1e19) or meets UnitNormalization's norm floor (features below ~1e-6); zero rows
        # stay zero, NaN stays NaN.
        peak = keras.ops.max(keras.ops.abs(out), axis=-1, keepdims=True)
        out = out / keras.ops.where(peak > 0, peak, keras.ops.ones_like(peak))
        out = keras.layers.UnitNormalization(axis=-1, dtype="float32")(out)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, out, name=f"{model.name}_embed")


def _is_mixed(layer):
    policy = getattr(layer, "dtype_policy", None)
    return str(getattr(policy, "name", "")).startswith("mixed_")


def _float32_copy(model):
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


# ---------------------------------------------------------------------------- atomic writes
def _check_export_path(path, overwrite, kind):
    """Refuse every output path whose replacement could remove what the export did not create.

    ``kind`` is ``"directory"`` (SavedModel) or ``"file"`` (TFLite, ONNX). Returns the absolute
    path. Raises ``ValueError`` for the current directory (``""``, ``"."``), any parent of it,
    a filesystem root, an existing special file (socket, FIFO, device), an existing directory
    where a file is written, or an existing file where a directory is written.
    """
    check_flag("overwrite", overwrite)
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a string or path-like object. Received: path={path!r} of type "
            f"{type(path).__name__}"
        )
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"`path` must be a string path. Received: path={path!r}")
    absolute = os.path.abspath(raw)
    parent = os.path.realpath(os.path.dirname(absolute))
    name = os.path.basename(absolute)
    resolved = os.path.join(parent, name) if name else parent
    if not os.path.islink(absolute):
        resolved = os.path.realpath(absolute)
    cwd = os.path.realpath(os.getcwd())
    if not name or os.path.commonpath([cwd, resolved]) == resolved:
        raise ValueError(
            f"`path` must not be the current directory or one of its parents (the export would "
            f"replace it). Received: path={path!r}, which resolves to {resolved!r} (current "
            f"directory: {cwd!r})"
        )
    if os.path.lexists(absolute) and not os.path.islink(absolute):
        import stat

        mode = os.lstat(absolute).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise ValueError(
                f"`path` must be a new path, a regular file or a directory. Received: "
                f"path={path!r}, an existing special file"
            )
        if kind == "file" and stat.S_ISDIR(mode):
            raise ValueError(
                f"`path` is an existing directory, and this export writes a single file; it "
                f"never replaces a directory. Received: path={path!r}"
            )
        if kind == "directory" and stat.S_ISREG(mode):
            raise ValueError(
                f"`path` is an existing file, and this export writes a directory; it never "
                f"replaces a file. Received: path={path!r}"
            )
    return absolute


def _check_target(path, overwrite):
    check_flag("overwrite", overwrite)
    if os.path.isdir(path) and not os.path.islink(path):
        if os.listdir(path) and not overwrite:
            raise FileExistsError(
                f"The output path {path!r} exists and is not empty. Pass `overwrite=True` to "
                "replace it, or choose another path."
            )
    elif os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"The output path {path!r} exists. Pass `overwrite=True` to replace it, or choose "
            "another path."
        )


@contextlib.contextmanager
def _staged_output(path, overwrite, kind):
    """Yield a temporary path; on success move it to ``path``, on failure remove everything."""
    path = _check_export_path(path, overwrite, kind)
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    created = []
    probe = parent
    while not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    staged = os.path.join(staging, os.path.basename(path))
    try:
        yield staged
        if not os.path.lexists(staged):
            raise RuntimeError(f"The exporter wrote nothing to {staged!r}")
        if os.path.lexists(path):
            # An empty directory, or anything when overwrite=True: set it aside, then replace.
            _check_target(path, overwrite)
            old = os.path.join(staging, ".old")
            os.rename(path, old)
            try:
                os.rename(staged, path)
            except BaseException:
                os.rename(old, path)
                raise
        else:
            os.rename(staged, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # deepest first: only the folders this call created
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- serving functions
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


def _serving_functions(model, normalize, head, top_k, float32=False):
    """The embedding model, the input specs and the tf.functions of each signature.

    With ``float32=True`` a mixed-precision embedding model is replaced by a float32 copy
    (TFLite has no float16 kernels for most ops).
    """
    import tensorflow as tf

    _require_tensorflow("Export")
    check_flag("normalize", normalize)
    inputs, features, found_head = _locate(model, head)
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
    embed_model = _embedding_model(model, inputs, features, normalize)
    if float32:
        embed_model = _float32_copy(embed_model)
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
            # MarginHead.cosine: float32 cosines, max over each class's sub-centres; a
            # PartialFC layer holds the centres one per row for its wrapped head.
            if isinstance(head, PartialFC):
                cos = head.head.cosine(emb, kernel=head.kernel, kernel_transposed=True)
            else:
                cos = head.cosine(emb)
            cos = tf.cast(cos, tf.float32)
            values, ids = tf.math.top_k(cos, k=k, sorted=True)
            return {"class_ids": tf.cast(ids, tf.int32), "cosines": values}

        functions["classify"] = classify
    trackables = [embed_model] + ([head] if top_k is not None else [])
    return embed_model, specs, functions, trackables


def _write_saved_model(target, specs, functions, trackables):
    archive = keras.export.ExportArchive()
    for obj in trackables:
        archive.track(obj)
    # The first endpoint is also published as "serving_default".
    for name, fn in functions.items():
        archive.add_endpoint(name, fn, input_signature=specs)
    archive.write_out(target, verbose=False)


# ---------------------------------------------------------------------------- public exporters
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
        >>> from keras_margins.export import export_saved_model
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=10))
        >>> out = export_saved_model(train_model, os.path.join(tempfile.mkdtemp(), "m"), top_k=3)
        >>> served = tf.saved_model.load(out)
        >>> emb = served.signatures["serving_default"](images=tf.zeros((5, 64)))["embeddings"]
        >>> emb.shape, emb.dtype.name
        (TensorShape([5, 8]), 'float32')
        >>> served.signatures["classify"](images=tf.ones((2, 64)))["class_ids"].shape
        TensorShape([2, 3])
    """
    _check_export_path(path, overwrite, "directory")
    _, specs, functions, trackables = _serving_functions(model, normalize, head, top_k)
    with _staged_output(path, overwrite, "directory") as target:
        _write_saved_model(target, specs, functions, trackables)
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
        >>> from keras_margins.export import export_tflite
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> out = export_tflite(backbone, os.path.join(tempfile.mkdtemp(), "embed.tflite"))
        >>> os.path.getsize(out) > 0
        True
    """
    import tensorflow as tf

    check_flag("optimize", optimize)
    _check_export_path(path, overwrite, "file")
    _, specs, functions, trackables = _serving_functions(model, normalize, head, None,
                                                         float32=True)
    with _staged_output(path, overwrite, "file") as target:
        scratch = tempfile.mkdtemp(prefix=".keras_margins_tflite-", dir=os.path.dirname(target))
        try:
            saved = os.path.join(scratch, "saved_model")
            _write_saved_model(saved, specs, functions, trackables)
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
        >>> from keras_margins.export import export_onnx
        >>> backbone = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8)])
        >>> out = export_onnx(backbone, os.path.join(tempfile.mkdtemp(), "embed.onnx"))
        >>> os.path.getsize(out) > 0
        True
    """
    if opset is not None:
        opset = check_int("opset", opset, minimum=7)
    _check_export_path(path, overwrite, "file")
    _, specs, functions, _ = _serving_functions(model, normalize, head, None)
    try:
        import tf2onnx  # noqa: F401
        import tf2onnx.convert
    except Exception as error:  # tf2onnx raises various errors on unsupported TF versions
        raise ImportError(
            f"ONNX export needs tf2onnx, which could not be imported: {error!r}. "
            "Install it with `pip install tf2onnx onnxruntime`."
        ) from error
    with _staged_output(path, overwrite, "file") as target:
        tf2onnx.convert.from_function(
            functions["embed"], input_signature=specs, opset=opset, output_path=target
        )
    return os.path.abspath(os.fspath(path))
