"""Per-class margins: the margin vectors of ArcFace, CosFace and CombinedMargin, and
:func:`class_size_margins`, the Kaggle landmark recipe that derives them from class sizes."""

import math
import numbers

import numpy as np
from keras import ops

from keras_margins._validation import check_float
from keras_margins.ops import safe_arccos


def is_margin_vector(value):
    """Whether a margin argument is a per-class vector (list, tuple or NumPy array)."""
    return isinstance(value, (list, tuple, np.ndarray))


def check_margin(name, value, num_classes, **bounds):
    """A margin argument as a ``float`` (scalar) or a read-only float64 vector of length C.

    A scalar is checked with :func:`keras_margins._validation.check_float` and ``bounds``
    (``low``, ``high``, ``high_open``, ``range_text``), exactly as before per-class margins.
    A list, tuple or NumPy array must be one-dimensional of length ``num_classes``, and each
    entry passes the same scalar rule (NaN and inf are rejected); the error names the argument,
    the index and the value.
    """
    if not is_margin_vector(value):
        return check_float(name, value, **bounds)
    array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be a number or a one-dimensional per-class vector of length "
            f"num_classes={num_classes}. Received: {name} of shape {tuple(array.shape)}"
        )
    if len(array) != num_classes:
        raise ValueError(
            f"`{name}` as a per-class vector must have one entry per class (num_classes="
            f"{num_classes}). Received: {len(array)} entries"
        )
    out = np.empty(num_classes, dtype=np.float64)
    for i, entry in enumerate(array.tolist()):
        # The scalar rule, the message naming the entry: "`margin[3]` must be in [0, pi). ..."
        out[i] = check_float(f"{name}[{i}]", entry, **bounds)
    out.setflags(write=False)
    return out


def margin_config(value):
    """A margin for ``get_config``: the float itself, or a per-class vector as a list of floats."""
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    return value


def per_sample_margin(value, labels):
    """``value[labels]`` as float32 for a per-class vector; a scalar stays a Python float."""
    if isinstance(value, np.ndarray):
        return ops.take(ops.convert_to_tensor(value.astype(np.float32)), labels)
    return value


def class_angular_margin_target(cos_y, labels, m1=1.0, m2=0.0, m3=0.0):
    """:func:`~keras_margins.heads.arcface.angular_margin_target` with per-class ``m2``/``m3``.

    ``m2`` and ``m3`` are floats or float64 vectors of length C (``labels`` are the class ids of
    the samples); ``m1`` is a float. The fallback past ``m1 * theta + m2 = pi`` is the scalar
    rule applied per class: threshold ``cos(theta_t)`` with ``theta_t = (pi - m2_c) / m1`` and
    offset ``max(m2_c sin m2_c, 1 + cos(theta_t))``, computed in float64 and rounded to float32
    once, exactly as the scalar rule, so a constant vector gives the scalar head's values.
    """
    m2_vector = isinstance(m2, np.ndarray)
    if m1 == 1.0 and not m2_vector and m2 == 0.0:
        return cos_y - per_sample_margin(m3, labels)
    if m1 == 1.0 and m2_vector and not np.any(m2):
        return cos_y - per_sample_margin(m3, labels)
    theta = safe_arccos(cos_y)
    m3_i = per_sample_margin(m3, labels)
    target = ops.cos(m1 * theta + per_sample_margin(m2, labels)) - m3_i
    m2_all = np.broadcast_to(np.asarray(m2, np.float64), (1,) if not m2_vector else m2.shape)
    theta_t = (math.pi - m2_all) / m1
    has_fallback = theta_t < math.pi
    if not np.any(has_fallback):
        return target
    cos_t = np.where(has_fallback, np.cos(theta_t), -2.0)  # -2: never below it
    offset = np.where(has_fallback, np.maximum(m2_all * np.sin(m2_all), 1.0 + cos_t), 0.0)
    if m2_vector:
        cos_t = ops.take(ops.convert_to_tensor(cos_t.astype(np.float32)), labels)
        offset = ops.take(ops.convert_to_tensor(offset.astype(np.float32)), labels)
    else:
        cos_t, offset = float(cos_t[0]), float(offset[0])
    return ops.where(cos_y > cos_t, target, cos_y - m3_i - offset)


def class_size_margins(class_counts, low=0.05, high=0.5, power=0.25):
    """Per-class margins from class sizes: the rarest class gets ``high``, the largest ``low``.

        t_c = n_c ** (-power)
        m_c = low + (high - low) * (t_c - min t) / (max t - min t)

    The recipe of the Google Landmark Recognition 2020 3rd-place solution (haqishen, Kaggle):
    ``power = 1/4``, margins in ``[0.05, 0.5]``, used with sub-center ArcFace (``K = 3``) and
    ``scale = 80``. A rare class gets a larger margin, so its few samples are pulled tighter
    around its centre. pytorch-metric-learning's ``DynamicArcFaceLoss`` documents the same
    margins (``margin_bounds=(0.05, 0.5)``, ``power=0.25``). Pass the result as the ``margin``
    of :class:`~keras_margins.ArcFace` or :class:`~keras_margins.CosFace`, or as ``m2``/``m3``
    of :class:`~keras_margins.CombinedMargin`.

    When every class has the same count (including a single class), every class is both the
    rarest and the largest and the formula is 0/0: every class then gets ``high`` (a balanced
    data set gets the plain head with the recipe's margin, 0.5 = ArcFace's default).

    Args:
        class_counts: Number of training samples of each class, a one-dimensional sequence or
            NumPy array of positive integers (integer-valued floats are accepted), indexed by
            class id. Count them on the whole training set (the recipe counts before the fold
            split).
        low: The margin of the largest class, >= 0. Defaults to 0.05.
        high: The margin of the rarest class, >= ``low``. Defaults to 0.5.
        power: The exponent ``p`` of ``n ** (-p)``, > 0. Defaults to 0.25.

    Returns:
        float64 NumPy array of shape ``(num_classes,)``.

    Example:

        >>> import numpy as np, keras_margins as km
        >>> margins = km.class_size_margins([1, 16, 256])
        >>> np.round(margins, 4).tolist()
        [0.5, 0.2, 0.05]
        >>> head = km.ArcFace(num_classes=3, scale=80.0, margin=margins, sub_centers=3)

    Reference:
        The 3rd-place solution of Kaggle's Google Landmark Recognition 2020 (Qishen Ha et al.),
        code: github.com/haqishen/Google-Landmark-Recognition-2020-3rd-Place-Solution
        (``train.py`` and ``models.py``, ``ArcFaceLossAdaptiveMargin``).
    """
    low = check_float("low", low, low=0.0)
    high = check_float("high", high, low=0.0)
    if low > high:
        raise ValueError(
            f"`low` must be <= `high` (the rarest class gets `high`). Received: low={low}, "
            f"high={high}"
        )
    power = check_float("power", power, low=0.0, low_open=True)
    if isinstance(class_counts, (str, bytes)) or not hasattr(class_counts, "__len__"):
        raise TypeError(
            "`class_counts` must be a sequence or NumPy array of the class sizes. "
            f"Received: class_counts={class_counts!r}"
        )
    array = np.asarray(class_counts, dtype=object)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(
            "`class_counts` must be one-dimensional with one count per class (at least one). "
            f"Received: class_counts of shape {tuple(array.shape)}"
        )
    counts = np.empty(len(array), dtype=np.float64)
    for i, n in enumerate(array.tolist()):
        if isinstance(n, bool) or not isinstance(n, numbers.Real):
            raise ValueError(
                f"`class_counts[{i}]` must be a positive integer count. "
                f"Received: class_counts[{i}]={n!r}"
            )
        if not math.isfinite(n) or n < 0 or n != int(n):
            raise ValueError(
                f"`class_counts[{i}]` must be a positive integer count. "
                f"Received: class_counts[{i}]={n!r}"
            )
        if n == 0:
            raise ValueError(
                f"`class_counts[{i}]` is 0: class {i} has no samples, so it has no size-based "
                "margin (drop it from the label space, or give it a count of at least 1). "
                f"Received: class_counts[{i}]={n!r}"
            )
        counts[i] = float(n)
    t = counts ** (-power)
    spread = t.max() - t.min()
    if spread == 0.0:
        return np.full(len(counts), high)
    return low + (high - low) * (t - t.min()) / spread
