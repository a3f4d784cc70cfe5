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


def ref_cosines(x, kernel, sub_centers=1):
    """float64 ``(B, C)`` cosines, brute force: column ``c * K + k`` of ``kernel`` is sub-centre
    ``k`` of class ``c``; a class's cosine is the max over its ``K`` sub-centres, clipped."""
    x = np.asarray(x, np.float64)
    w = np.asarray(kernel, np.float64)
    num_classes = w.shape[1] // sub_centers
    out = np.zeros((x.shape[0], num_classes))
    for i in range(x.shape[0]):
        for c in range(num_classes):
            best = -np.inf
            for k in range(sub_centers):
                col = w[:, c * sub_centers + k]
                best = max(best, x[i] @ col / (np.linalg.norm(x[i]) * np.linalg.norm(col)))
            out[i, c] = min(1.0, max(-1.0, best))
    return out


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
    return train_test_split(
        x, y.astype("int32"), test_size=test_size, random_state=seed, stratify=y
    )


# --- Backend-neutral helpers (the test modules run under KERAS_BACKEND=tensorflow and jax) ----


def backend():
    """The name of the active Keras backend."""
    return keras.backend.backend()


def to_numpy(x):
    """A backend tensor (or variable) as a NumPy array."""
    return keras.ops.convert_to_numpy(x)


def cast(x, dtype):
    """``x`` (array or tensor) as a backend tensor of ``dtype``."""
    return keras.ops.cast(keras.ops.convert_to_tensor(x), dtype)


def grad_fn(fn, variables=(), has_aux=False, state=()):
    """A tensor-level function ``g(*xs) -> (value, grads[, aux])`` (value and gradients of ``fn``).

    ``grads`` holds the gradient of the scalar ``fn(*xs)`` with respect to every argument, then
    to every Keras variable in ``variables``. With ``has_aux``, ``fn`` returns ``(value, aux)``.
    ``tf.GradientTape`` on TensorFlow, ``torch.autograd.grad`` on PyTorch. On JAX,
    ``jax.value_and_grad`` with the variables passed through a ``keras.StatelessScope``; the
    variables of the layers in ``state`` that ``fn`` updates (e.g. a step counter) are then
    assigned their new values (by :func:`compiled` when ``g`` runs under it). ``g`` may be
    wrapped in :func:`compiled`.
    """
    variables = list(variables)
    if backend() == "tensorflow":
        import tensorflow as tf

        def g(*xs):
            xs = list(xs)
            with tf.GradientTape() as tape:
                for x in xs:
                    tape.watch(x)
                out = fn(*xs)
            value, aux = out if has_aux else (out, None)
            grads = tape.gradient(value, xs + [v.value for v in variables])
            return (value, grads, aux) if has_aux else (value, grads)

        return g
    if backend() == "torch":
        import torch

        def g(*xs):
            xs = [
                x.detach().clone().requires_grad_(True) if torch.is_floating_point(x) else x
                for x in xs
            ]
            out = fn(*xs)
            value, aux = out if has_aux else (out, None)
            targets = xs + [v.value for v in variables]
            wanted = [i for i, t in enumerate(targets) if t.requires_grad]
            found = torch.autograd.grad(
                value, [targets[i] for i in wanted], allow_unused=True, materialize_grads=True
            )
            grads = [None] * len(targets)
            for i, grad in zip(wanted, found):
                grads[i] = grad
            value = value.detach()
            return (value, grads, aux) if has_aux else (value, grads)

        return g
    if backend() != "jax":
        raise NotImplementedError(f"no gradient helper for backend {backend()!r}")
    import jax

    state_vars = [v for layer in state for v in layer.variables]

    def pure(var_values, xs):
        with keras.StatelessScope(
            state_mapping=list(zip(variables, var_values)), collect_losses=True
        ) as scope:
            out = fn(*xs)
        value, aux = out if has_aux else (out, None)
        updates = []
        for v in state_vars:
            new = scope.get_current_value(v)
            if new is not None:
                updates.append((v, new))
        return value, (aux, updates)

    def g(*xs):
        xs = [keras.ops.convert_to_tensor(x) for x in xs]
        (value, (aux, updates)), (gv, gx) = jax.value_and_grad(pure, argnums=(0, 1), has_aux=True)(
            [v.value for v in variables], xs
        )
        for v, new in updates:
            if isinstance(new, jax.core.Tracer):
                _PENDING_UPDATES.append((v, new))  # applied by `compiled` after the call
            else:
                v.assign(new)
        grads = list(gx) + list(gv)
        return (value, grads, aux) if has_aux else (value, grads)

    return g


_PENDING_UPDATES = []


def value_and_grads(fn, *arrays, variables=(), has_aux=False, state=()):
    """NumPy value and gradients of the scalar ``fn(*arrays)`` (see :func:`grad_fn`).

    ``arrays`` are NumPy arrays or backend tensors (their dtype is kept); returns
    ``(value, [grad per array..., grad per variable...])`` and ``aux`` (as NumPy, a
    tuple/list of tensors kept a tuple) when ``has_aux``.
    """
    xs = [keras.ops.convert_to_tensor(a) for a in arrays]
    out = grad_fn(fn, variables, has_aux, state)(*xs)
    return (
        _numpy_tree(out[0]),
        [_numpy_tree(g) for g in out[1]],
        *([_numpy_tree(out[2])] if has_aux else []),
    )


def head_training_step(head):
    """One training step of ``head`` as ``step(x, y) -> (loss, d loss/dx, d loss/d kernel)``.

    Sparse cross-entropy of ``head([x, y], training=True)``; the head's training state is
    updated as in ``fit``. For comparing an eager step with a compiled one (:func:`compiled`).
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(xx, yy):
        loss, grads = grad_fn(
            lambda xv: loss_fn(yy, head([xv, yy], training=True)), [head.kernel], state=[head]
        )(xx)
        return (loss, *grads)

    return step


def assert_all_close(got, expected, rtol=1e-4, atol=1e-5):
    """Every tensor of ``got`` close to the same-position one of ``expected``."""
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=rtol, atol=atol)


def _numpy_tree(x):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return type(x)(_numpy_tree(t) for t in x)
    return to_numpy(x)


def compiled(fn):
    """``fn`` compiled with XLA: ``tf.function(jit_compile=True)`` or ``jax.jit``.

    On JAX, variable updates made inside a :func:`grad_fn` under the compiled function are
    returned from it and assigned after the call, as a Keras training step does.
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend() != "jax":
        import pytest

        pytest.skip(f"no XLA compilation on the {backend()} backend")
    import jax

    traced_vars = []

    def inner(*args):
        del _PENDING_UPDATES[:]
        out = fn(*args)
        traced_vars[:] = [v for v, _ in _PENDING_UPDATES]
        new_values = [new for _, new in _PENDING_UPDATES]
        del _PENDING_UPDATES[:]
        return out, new_values

    jitted = jax.jit(inner)

    def run(*args):
        out, new_values = jitted(*args)
        for v, new in zip(traced_vars, new_values):
            v.assign(new)
        return out

    return run


def xla_in_fit():
    """``jit_compile`` for ``Model.compile`` in training tests: XLA on TensorFlow and JAX.

    On PyTorch Keras would use ``torch.compile``, whose compile time dominates these small fits
    (30-40 s per model); the training tests run eagerly there.
    """
    return backend() != "torch"


def skip_compiled_fit_on_torch(jit_compile):
    """Skip the ``jit_compile=True`` variant of a fit test on PyTorch (see :func:`xla_in_fit`)."""
    if jit_compile and not xla_in_fit():
        import pytest

        pytest.skip("jit_compile=True means torch.compile on PyTorch (a minute of compile time)")


def skip_unless_tensorflow(reason):
    """A pytest mark skipping a test that is inherently TensorFlow-only."""
    import pytest

    return pytest.mark.skipif(backend() != "tensorflow", reason=f"TensorFlow-only: {reason}")
