"""Checks, scores and the FAR-target loop shared by the evaluation modules.

Private module: the functions have public names because :mod:`.search`,
:mod:`.verification`, :mod:`.identification`, :mod:`.retrieval`, :mod:`.submission` and
:mod:`keras_margins.callbacks` import them; users import from ``keras_margins`` instead.
"""

import math

import numpy as np

from keras_margins._validation import check_float

METRICS = ("cosine", "euclidean")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_embeddings(name, x, dtype=None):
    """Return ``x`` as a finite 2-D floating array, raising ``ValueError`` otherwise."""
    x = np.asarray(x)
    if x.dtype == object or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        raise ValueError(f"`{name}` must be a numeric array. Received: {name} of dtype {x.dtype}")
    if x.ndim == 1 and x.size == 0:
        x = x.reshape(0, 0)
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array of shape (num_samples, embedding_dim). "
            f"Received: {name} with shape {x.shape}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name} with shape {x.shape}")
    if dtype is None:
        dtype = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
        raise ValueError(
            f"`{name}` must contain only finite values. Received: {name} with NaN or infinite "
            f"values in {bad} row(s)"
        )
    return x


def check_labels(name, labels, length=None, length_name=None):
    """Return ``labels`` as a non-empty 1-D array without NaN (one per row of ``length_name``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array. Received: {name} with shape {labels.shape}"
        )
    if labels.size == 0:
        raise ValueError(f"`{name}` must not be empty. Received: {name} with shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating) and np.any(np.isnan(labels)):
        raise ValueError(
            f"`{name}` must not contain NaN (a NaN label matches nothing, not even itself). "
            f"Received: {name} with {int(np.sum(np.isnan(labels)))} NaN values"
        )
    if length is not None and labels.shape[0] != length:
        raise ValueError(
            f"`{name}` must have one entry per row of `{length_name}` ({length}). "
            f"Received: {name} with length {labels.shape[0]}"
        )
    return labels


def check_same_dim(name_a, a, name_b, b):
    """Raise ``ValueError`` unless the 2-D arrays ``a`` and ``b`` have the same width."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same embedding dimension. "
            f"Received: {name_a}.shape={a.shape}, {name_b}.shape={b.shape}"
        )


def check_int_sequence(name, values, minimum=None):
    """A non-empty sequence of integers (never truncated: ``1.5`` is an error)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(
            f"`{name}` must be a sequence of integers, e.g. (1, 5). Received: {name}={values!r}"
        )
    items = (
        list(np.asarray(values, dtype=object).reshape(-1))
        if isinstance(values, np.ndarray)
        else list(values)
    )
    if not items:
        raise ValueError(f"`{name}` must not be empty. Received: {name}={values!r}")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(
                f"`{name}` must contain only integers. Received: {name}={values!r} (element {v!r})"
            )
        if minimum is not None and v < minimum:
            raise ValueError(
                f"`{name}` must contain only integers >= {minimum}. Received: {name}={values!r}"
            )
        out.append(int(v))
    return tuple(out)


def check_float_array(name, values, described, one_d):
    """``values`` as a flat float64 array: a 1-D list of numbers (never flattened from 2-D).

    Raises ``ValueError`` for non-numbers (``described``: what was expected, e.g. ``"a list of
    numbers"``) and for more than one dimension (``one_d``: e.g. ``"1-D array"``); the caller
    checks the size and range.
    """
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be {described}. Received: {name}={values!r}") from None
    if out.ndim > 1:
        raise ValueError(
            f"`{name}` must be a {one_d} (it is not flattened). "
            f"Received: {name} with shape {out.shape}"
        )
    return out.reshape(-1)


def check_fars(far_targets):
    """Target false accept (alarm) rates: a non-empty 1-D float64 array of values in (0, 1]."""
    fars = check_float_array(
        "far_targets", far_targets, "a list of numbers in (0, 1]", "1-D list of numbers"
    )
    if fars.size == 0 or not np.all((fars > 0) & (fars <= 1)):
        raise ValueError(
            f"`far_targets` must be a non-empty list of values in (0, 1]. "
            f"Received: far_targets={far_targets}"
        )
    return fars


def check_new_threshold(new_label, new_threshold):
    """``new_threshold`` as a float (or ``None``); it needs a ``new_label``."""
    if new_threshold is None:
        return None
    new_threshold = check_float("new_threshold", new_threshold)
    if new_label is None:
        raise ValueError("`new_label` is required with `new_threshold`. Received: None")
    return new_threshold


def python_value(value):
    """A NumPy scalar as the Python value it holds; anything else as it is."""
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def common_dtype(a, b):
    """float64 if either array is float64, else float32."""
    return np.float64 if (a.dtype == np.float64 or b.dtype == np.float64) else np.float32


def score_block(q, g, metric, g_sq=None):
    """``(rows, cols)`` float64 scores of every query row against every gallery row.

    Cosine: the dot product (rows already normalized). Euclidean: minus the distance
    ``-sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))``, with squared norms in float64 (``g_sq`` may be
    given precomputed). Higher is more similar in both cases.
    """
    prod = (q @ g.T).astype(np.float64, copy=False)
    if metric == "cosine":
        return prod
    q_sq = np.sum(q.astype(np.float64, copy=False) ** 2, axis=1)
    if g_sq is None:
        g_sq = np.sum(g.astype(np.float64, copy=False) ** 2, axis=1)
    return -np.sqrt(np.maximum(q_sq[:, None] + g_sq[None, :] - 2.0 * prod, 0.0))


def trapezoid_auc(x, y):
    """Area under the piecewise-linear curve through ``(x[i], y[i])`` (trapezoidal rule)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


# --------------------------------------------------------------------------------------------
# Operating points at target false accept rates
# --------------------------------------------------------------------------------------------


def far_operating_points(fars, num_negatives):
    """Split FAR targets by whether ``num_negatives`` negative trials resolve them.

    For a target ``f`` the allowed number of false accepts is ``floor(f * num_negatives)``
    (with a small tolerance for targets such as ``0.3 * 10``); a target allowing fewer than one
    cannot be told apart from ``FAR = 0``.

    Returns:
        ``(resolved, unresolved)``: a list of ``(f, allowed)`` pairs and a tuple of the
        unresolved targets, both in the order given, as Python floats.
    """
    resolved, unresolved = [], []
    for f in fars:
        f = float(f)
        allowed = math.floor(f * num_negatives + 1e-9)
        if allowed < 1:
            unresolved.append(f)
        else:
            resolved.append((f, allowed))
    return resolved, tuple(unresolved)
