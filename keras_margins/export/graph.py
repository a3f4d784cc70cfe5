"""Finding the embedding tensor of a Keras training model: its margin head's ``embeddings`` input.

The search walks the functional graph from the outputs, steps over keras_margins layers that
pass embeddings through (center loss) and looks inside nested functional models; see
:func:`locate`.
"""

import keras

from keras_margins.heads.base import MarginHead
from keras_margins.partial_fc import PartialFC

_PACKAGE_PREFIX = "keras_margins>"


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
        sub = keras.Model(
            used[0] if len(used) == 1 else used, features, name=f"{inner.name}_embeddings"
        )
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


def locate(model, head=None):
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
                if isinstance(other[2], PartialFC)
                else ""
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
