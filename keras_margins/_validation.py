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
