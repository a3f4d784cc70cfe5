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
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(
        value, numbers.Number
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
            raise ValueError(
                f"`{name}` must be a scalar. Received: {name} with shape {shape}"
            )
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
