"""Argument checks shared by every public class.

Each check raises ``ValueError`` naming the argument and the value received, in the form Keras
uses: ``"`margin` must be in [0, pi). Received: margin=4.0"``.
"""

import math
import numbers


def check_int(name, value, minimum=None, maximum=None):
    """Return ``value`` as an ``int`` after checking it is an integer in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer. Received: {name}={value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}. Received: {name}={value}")
    return value


def check_float(name, value, low=None, high=None, low_open=False, high_open=False, range_text=None):
    """Return ``value`` as a finite ``float`` after checking it lies in ``[low, high]``.

    ``low_open`` / ``high_open`` exclude the bound. ``range_text`` overrides the description of
    the interval in the message (for example ``"[0, pi)"``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a real number. Received: {name}={value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
    if range_text is None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        range_text = (
            f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        )
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"`{name}` must be in {range_text}. Received: {name}={value}")
    return value


#: The largest finite float32 value.
FLOAT32_MAX = 3.4028234663852886e38

#: The largest logit scale (``scale``, ``alpha``) the heads accept. The logits reach about
#: ``8 * scale`` in magnitude (a target logit with a margin can fall to about ``-5.3 * scale``),
#: the softmax takes their differences, and the product with the raw class centres is scaled by
#: their norms: a factor 64 below float32's maximum keeps all of these finite.
MAX_LOGIT_SCALE = FLOAT32_MAX / 64.0


def check_float32_bound(name, value, limit, reason):
    """Check that ``value`` (already a finite float) is at most ``limit``, explaining why.

    For arguments that the computation multiplies into float32 values: beyond ``limit`` the
    result would overflow to ``inf`` (then ``NaN``) instead of failing clearly.
    """
    if value > limit:
        raise ValueError(f"`{name}` must be <= {limit:.4g}: {reason}. Received: {name}={value}")
    return value


def check_choice(name, value, choices):
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")
    return value


def check_flag(name, value):
    """Return ``value`` as a ``bool``; only ``True``/``False`` (or NumPy booleans) are accepted.

    Strings such as ``"no"`` are truthy in Python, so they are rejected rather than read.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def _is_tensor_like(value):
    """A backend tensor, a Keras variable or a NumPy array (not a Python or NumPy scalar)."""
    return (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, numbers.Number)
    )


def check_float_or_tensor(name, value, low, high, reason):
    """A real number checked to lie in ``[low, high]``, or a scalar tensor / variable as is.

    Python and NumPy numbers (and 0-d NumPy arrays) are checked now: ``ValueError`` naming the
    argument for a non-number, a non-finite value or a value outside ``[low, high]``; ``reason``
    says why ``high`` is the bound. A backend tensor or a ``keras.Variable`` (a schedule may
    change it) must have a static scalar shape and a numeric dtype; its value cannot be checked
    under tracing, so the loss using it maps an out-of-range value to NaN
    (:func:`margin_or_nan`).
    """
    if _is_tensor_like(value):
        shape = tuple(value.shape)
        dtype = str(value.dtype)
        if "float" not in dtype and "int" not in dtype:
            raise ValueError(
                f"`{name}` must be a real number or a float scalar tensor. "
                f"Received: {name}={value!r} with dtype {dtype}"
            )
        if len(shape) != 0:
            raise ValueError(f"`{name}` must be a scalar. Received: {name} with shape {shape}")
        if type(value).__module__.startswith("numpy"):
            value = value.item()
        else:
            return value
    value = check_float(name, value, low=low)
    if value > high:
        raise ValueError(f"`{name}` must be <= {high:g} ({reason}). Received: {name}={value:g}")
    return value


def margin_or_nan(value, low, high):
    """``value`` as a float32 tensor: a checked Python float as is, a tensor mapped to NaN where
    it is not in ``[low, high]`` (NaN included), so that a bad scheduled value gives NaN."""
    from keras import ops

    if isinstance(value, float):
        return value
    v = ops.cast(value, "float32")
    return ops.where(ops.logical_and(v >= low, v <= high), v, float("nan"))


def float_config(value):
    """A margin for ``get_config``: a Python float (a variable or tensor: its current value)."""
    if isinstance(value, float):
        return value
    from keras import ops

    return float(ops.convert_to_numpy(value))


# ----------------------------------------------------------------------------- class labels

#: Notebook argument names (Kaggle ``ArcMarginProduct(n_classes, s, m, easy_margin, ls_eps)``)
#: that are not keras_margins arguments, with what to use instead. ``{cls}`` is the class name.
_NOTEBOOK_ARGUMENTS = {
    "n_classes": "the number of classes is `num_classes`: {cls}(num_classes=...)",
    "s": "the logit scale is `scale`: {cls}(num_classes, scale=...)",
    "m": "the margin is `margin`: {cls}(num_classes, margin=...)",
    "easy_margin": (
        "`easy_margin` is an option of ArcFace only (km.ArcFace(num_classes, easy_margin=True)); "
        "{cls} has none"
    ),
    "ls_eps": (
        "the notebook's ls_eps is not label smoothing: it mixes q = (1 - ls_eps) * one_hot + "
        "ls_eps / num_classes into the margin inside the logits (the target gets a "
        "1 - ls_eps * (num_classes - 1) / num_classes share of its margin, every other class "
        "an ls_eps / num_classes share of its own) and the loss keeps hard labels; keras_margins "
        "has no such option. For real label smoothing of integer labels use "
        "km.SparseCategoricalCrossentropy(from_logits=True, label_smoothing=...) "
        "(see docs/losses/sparse_crossentropy.md)"
    ),
}


def check_notebook_arguments(cls, kwargs, accepted):
    """Raise a ``TypeError`` pointing to the keras_margins name for a Kaggle-notebook argument.

    ``ArcMarginProduct(n_classes, s, m, easy_margin, ls_eps)`` is how most notebooks spell a
    head; without this check the call fails with ``missing 'num_classes'`` or ``Unrecognized
    keyword arguments``. No alias is added: the message says which argument to use.

    Args:
        cls: The class being constructed.
        kwargs: The keyword arguments of the call.
        accepted: Names the class does accept (an accepted name is never reported).
    """
    for name, hint in _NOTEBOOK_ARGUMENTS.items():
        if name in kwargs and name not in accepted:
            text = hint.format(cls=cls.__name__)
            if name == "s" and "scale" not in accepted and "alpha" in accepted:
                text = f"the feature scale is `alpha`: {cls.__name__}(num_classes, alpha=...)"
            if name == "m" and "margin" not in accepted:
                if {"m1", "m2", "m3"} <= set(accepted):
                    text = (
                        f"{cls.__name__} takes `m1` (multiplicative angular), `m2` (additive "
                        "angular, ArcFace's m) and `m3` (additive cosine, CosFace's m)"
                    )
                else:
                    text = f"{cls.__name__} has no margin (use km.ArcFace or km.CosFace)"
            raise TypeError(
                f"`{name}` is not an argument of {cls.__name__} (a Kaggle-notebook name?): "
                f"{text}. Received: {name}={kwargs[name]!r}"
            )


def check_label_dtype(labels, name):
    """``TypeError`` for string / bool / complex labels, before any cast can fail obscurely.

    Returns the labels (a NumPy array when they came as a list).
    """
    import keras
    import numpy as np

    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = np.asarray(labels)
        dtype = labels.dtype
    try:
        np_kind = np.dtype(dtype).kind
    except TypeError:
        np_kind = None
    if np_kind in ("U", "S", "O", "b", "c"):
        bad = str(dtype)
    else:
        try:
            std = keras.backend.standardize_dtype(dtype)
        except (ValueError, TypeError):
            std = str(dtype)
        bad = std if ("int" not in std and "float" not in std) else None
    if bad is not None:
        raise TypeError(
            f"`{name}` must be integer class ids (or floats holding integers, or one-hot "
            f"floats). Received: {name} of dtype {bad}"
        )
    return labels


def normalize_class_labels(labels, num_classes, name="labels"):
    """The one label rule of keras_margins: class ids -> int32 ids, ``-1`` for a bad label.

    A label is valid when it is an integer in ``[0, num_classes)``: any integer dtype (compared
    in its own width, so an int64 ``2**32 + 3`` is not taken as 3) or a float holding an
    integer value exactly (``3.0``; ``1.6``, ``NaN`` and ``inf`` are not labels). Every other
    value becomes ``-1``, which each entry point turns into a NaN result for that sample (the
    loss is then NaN). This is computed with tensor ops only, so it behaves the same eagerly,
    in a graph and under XLA, on every backend. Non-numeric labels (strings, bools) are a
    ``TypeError``.

    Args:
        labels: ``(B,)`` tensor or array of class ids (any rank is kept as is).
        num_classes: The number of classes ``C`` (a Python int).
        name: The argument name used in error messages. Defaults to ``"labels"``.

    Returns:
        int32 tensor of the same shape: the label where valid, ``-1`` elsewhere.
    """
    import keras
    import numpy as np
    from keras import ops

    labels = check_label_dtype(labels, name)
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.itemsize == 8:
        # Checked before the conversion: JAX (without x64) wraps int64 into int32 on the way.
        labels = np.where((labels >= 0) & (labels < num_classes), labels, -1).astype("int32")
    labels = ops.convert_to_tensor(labels)
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if "float" in dtype:
        labels = ops.cast(labels, "float32") if dtype in ("float16", "bfloat16") else labels
        valid = ops.logical_and(
            ops.logical_and(labels >= 0.0, labels < float(num_classes)),
            ops.floor(labels) == labels,
        )
        safe = ops.where(valid, labels, ops.zeros_like(labels))
    else:
        # Compare in a width that holds both the labels and num_classes exactly (a Python int
        # next to an int8 tensor would be cast to int8 first).
        if dtype in ("int8", "int16", "uint8", "uint16"):
            labels = ops.cast(labels, "int32")
        elif dtype == "uint32":
            labels = ops.cast(labels, "int64")
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        safe = ops.where(valid, labels, ops.zeros_like(labels))
    return ops.where(valid, ops.cast(safe, "int32"), -1)


def class_ids(labels, num_classes, name="labels", batch_size=None, one_hot=False):
    """Any accepted form of class labels -> int32 ids ``(B,)``, ``-1`` for a bad label.

    The one entry point for class labels: the dtype check (:func:`check_label_dtype`), the
    shapes ``(B,)`` and ``(B, 1)`` (and, with ``one_hot``, ``(B, num_classes)`` one-hot or soft
    labels, whose arg-max is taken; a row holding NaN or inf is a bad label), one label per
    embedding when ``batch_size`` is known, then :func:`normalize_class_labels`.

    Args:
        labels: The labels, a tensor, array or list.
        num_classes: The number of classes ``C`` (a Python int).
        name: The argument name used in error messages. Defaults to ``"labels"``.
        batch_size: The expected batch size, or ``None`` to skip the check. Defaults to ``None``.
        one_hot: Accept ``(B, num_classes)`` one-hot labels (for ``num_classes > 1``). Defaults
            to ``False``.

    Returns:
        int32 tensor ``(B,)``.
    """
    from keras import ops

    labels = ops.convert_to_tensor(check_label_dtype(labels, name))
    shape = tuple(labels.shape)
    rank = len(shape)
    is_one_hot = one_hot and rank == 2 and shape[-1] == num_classes and num_classes > 1
    if is_one_hot:
        finite = ops.isfinite(ops.sum(ops.cast(labels, "float32"), axis=-1))
        labels = ops.where(finite, ops.cast(ops.argmax(labels, axis=-1), "int32"), -1)
    elif rank == 2 and shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
    elif rank != 1:
        forms = f", or one-hot of shape (batch_size, {num_classes})" if one_hot else ""
        raise ValueError(
            f"`{name}` must be integer class ids of shape (batch_size,) or (batch_size, 1)"
            f"{forms}. Received: {name}.shape={shape}"
        )
    if batch_size is not None and shape[0] is not None and shape[0] != batch_size:
        raise ValueError(
            f"`{name}` must have one entry per embedding. Received: "
            f"{name}.shape={shape} for embeddings with batch size {batch_size}"
        )
    if is_one_hot:
        return labels
    return normalize_class_labels(labels, num_classes, name)
