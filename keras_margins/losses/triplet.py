"""Triplet losses with online mining: semi-hard (FaceNet), batch-hard and batch-all.

``TripletSemiHardLoss`` and ``TripletHardLoss`` reproduce tensorflow-addons 0.23 (same names,
arguments, defaults and values); ``TripletLoss`` is the general form. Every variant needs
``O(B^2)`` memory: where tensorflow-addons compares every anchor-positive distance with every
negative distance in ``B x B x B`` temporaries, the semi-hard and batch-all losses here sort each
anchor's negative distances once and binary-search them (``O(B^2 log B)`` time).
"""

import keras
from keras import ops

from keras_margins._validation import (
    check_choice,
    check_flag,
    check_float_or_tensor,
    float_config,
    margin_or_nan,
)
from keras_margins.distances import (
    check_distance_metric,
    check_labels_and_embeddings,
    label_masks,
    labels_not_class_ids,
    pairwise_distance,
)
from keras_margins.losses._batch import BatchLoss
from keras_margins.ops import relu

MINING_STRATEGIES = ("semi-hard", "hard", "all")

#: Largest accepted ``margin``: the hinge ``d_ap - d_an + margin`` is computed in float32
#: (largest value ~3.4e38), and must stay finite for distances of the margin's order.
MAX_MARGIN = 1e38
_MARGIN_REASON = (
    "the loss is computed in float32, whose largest value is ~3.4e38; the hinge "
    "d_ap - d_an + margin must stay finite"
)


# ---------------------------------------------------------------------------------- helpers
def _masked_maximum(d, mask):
    """Row-wise max of ``d`` over ``mask``; the row minimum where the mask row is empty.

    The same formula as tensorflow-addons (``max((d - rowmin) * mask) + rowmin``), so the
    fallback of a row without any masked entry is identical.
    """
    row_min = ops.min(d, axis=1, keepdims=True)
    return ops.max(ops.where(mask, d - row_min, 0.0), axis=1) + row_min[:, 0]


def _masked_minimum(d, mask):
    """Row-wise min of ``d`` over ``mask``; the row maximum where the mask row is empty."""
    row_max = ops.max(d, axis=1, keepdims=True)
    return ops.min(ops.where(mask, d - row_max, 0.0), axis=1) + row_max[:, 0]


def _searchsorted_rows(sorted_rows, queries, side):
    """Batched ``searchsorted``: positions of ``queries[i]`` in ``sorted_rows[i]`` for every row.

    ``side="right"`` counts the entries ``<= q``, ``side="left"`` those ``< q``. A vectorized
    binary search (``ceil(log2(N + 1))`` steps of ``take_along_axis``) so that it runs under
    XLA on every backend and keeps ``O(B^2)`` memory. Returns int32 counts.
    """
    sorted_rows = ops.stop_gradient(sorted_rows)
    queries = ops.stop_gradient(queries)
    n_static = sorted_rows.shape[1]
    steps = int(n_static).bit_length() if n_static is not None else 32
    n = ops.shape(sorted_rows)[1]
    lo = ops.zeros(ops.shape(queries), dtype="int32")
    hi = ops.zeros(ops.shape(queries), dtype="int32") + ops.cast(n, "int32")
    for _ in range(steps):
        mid = (lo + hi) // 2
        value = ops.take_along_axis(sorted_rows, ops.minimum(mid, n - 1), axis=1)
        go_right = value <= queries if side == "right" else value < queries
        go_right = ops.logical_and(go_right, lo < hi)
        lo = ops.where(go_right, mid + 1, lo)
        hi = ops.where(go_right, hi, ops.minimum(hi, mid))
    return lo


def _sorted_negatives(d, negative):
    """Each anchor's negative distances in ascending order.

    Returns ``(values, keys, count)``: ``values`` ``(B, B)`` gathered from ``d`` (so gradients
    flow), ``keys`` the same with ``+inf`` past the last negative (for searching), ``count``
    ``(B,)`` int32, the number of negatives of each anchor.
    """
    keys = ops.where(negative, d, float("inf"))
    order = ops.argsort(keys, axis=1)
    values = ops.take_along_axis(d, order, axis=1)
    keys = ops.take_along_axis(keys, order, axis=1)
    count = ops.sum(ops.cast(negative, "int32"), axis=1)
    return values, keys, count


def _safe_divide(num, den):
    return num / ops.maximum(den, 1.0)


def _semi_hard(d, positive, negative, margin, soft):
    values, keys, num_neg = _sorted_negatives(d, negative)
    # Number of negatives n with d(a, n) <= d(a, p): the semi-hard negative, the smallest with
    # d(a, n) > d(a, p), is the next one in ascending order.
    count = _searchsorted_rows(keys, d, side="right")
    has_semi_hard = count < num_neg[:, None]
    index = ops.where(has_semi_hard, count, num_neg[:, None] - 1)
    chosen = ops.take_along_axis(values, ops.maximum(index, 0), axis=1)
    # No semi-hard negative: the farthest negative (tensorflow-addons' masked maximum, which is
    # the row minimum when the anchor has no negative at all).
    farthest = _masked_maximum(d, negative)[:, None]
    negative_d = ops.where(has_semi_hard, chosen, farthest)
    diff = d - negative_d
    if soft:
        per_pair = ops.softplus(diff)
        active = diff > 0.0
    else:
        per_pair = relu(diff + margin)
        active = diff + margin > 0.0
    num_pairs = ops.sum(ops.cast(positive, "float32"))
    loss = _safe_divide(ops.sum(ops.where(positive, per_pair, 0.0)), num_pairs)
    fraction = _safe_divide(
        ops.sum(ops.cast(ops.logical_and(positive, active), "float32")), num_pairs
    )
    return loss, fraction


def _hard(d, positive, negative, margin, soft):
    hardest_positive = _masked_maximum(d, positive)
    hardest_negative = _masked_minimum(d, negative)
    diff = hardest_positive - hardest_negative
    if soft:
        per_anchor = ops.softplus(diff)
        active = diff > 0.0
    else:
        per_anchor = relu(diff + margin)
        active = diff + margin > 0.0
    return ops.mean(per_anchor), ops.mean(ops.cast(active, "float32"))


def _batch_all(d, positive, negative, margin):
    values, keys, num_neg = _sorted_negatives(d, negative)
    # For each (a, p): the negatives with d(a, n) < d(a, p) + margin give a positive loss
    # d(a, p) + margin - d(a, n); their count and sum come from prefix sums over the sorted row.
    threshold = d + margin
    count = _searchsorted_rows(keys, threshold, side="left")
    column = ops.arange(ops.shape(d)[1], dtype="int32")[None, :]
    prefix = ops.cumsum(ops.where(column < num_neg[:, None], values, 0.0), axis=1)
    taken = ops.take_along_axis(prefix, ops.maximum(count - 1, 0), axis=1)
    count_f = ops.cast(count, "float32")
    neg_sum = ops.where(count > 0, taken, 0.0)
    per_pair = count_f * threshold - neg_sum
    num_active = ops.sum(ops.where(positive, count_f, 0.0))
    loss = _safe_divide(ops.sum(ops.where(positive, per_pair, 0.0)), num_active)
    num_pos = ops.sum(ops.cast(positive, "float32"), axis=1)
    num_triplets = ops.sum(num_pos * ops.cast(num_neg, "float32"))
    return loss, _safe_divide(num_active, num_triplets)


def _check_arguments(margin, mining, distance_metric, soft):
    margin = check_float_or_tensor("margin", margin, 0.0, MAX_MARGIN, _MARGIN_REASON)
    check_choice("mining", mining, MINING_STRATEGIES)
    check_distance_metric(distance_metric)
    check_flag("soft", soft)
    if soft and mining == "all":
        raise ValueError(
            "`soft=True` is supported with mining='semi-hard' or 'hard' only (the batch-all "
            "loss averages the triplets with a positive hinge, which a soft margin does not "
            f"have). Received: soft={soft}, mining={mining!r}"
        )
    return margin


# ---------------------------------------------------------------------------------- functions
@keras.saving.register_keras_serializable(package="keras_margins")
def triplet_loss(
    y_true,
    y_pred,
    margin=1.0,
    mining="semi-hard",
    distance_metric="L2",
    soft=False,
    return_active_fraction=False,
):
    """Triplet loss with online mining of the batch: semi-hard, batch-hard or batch-all.

    With ``d`` the pairwise distance matrix, positives ``p != a`` sharing ``a``'s label and
    negatives ``n`` with another label:

    - ``"semi-hard"`` (FaceNet, as tensorflow-addons): for every anchor-positive pair, the
      negative with the smallest ``d(a, n) > d(a, p)``, or the largest ``d(a, n)`` if there is
      none; the mean over all anchor-positive pairs of ``max(d(a, p) - d(a, n) + margin, 0)``.
    - ``"hard"`` (Hermans et al.): per anchor the largest ``d(a, p)`` and smallest ``d(a, n)``;
      the mean over anchors of ``max(d_ap - d_an + margin, 0)``.
    - ``"all"``: every valid triplet; the mean of ``max(d_ap - d_an + margin, 0)`` over the
      triplets where it is positive.

    ``soft=True`` replaces the hinge with ``log(1 + exp(d_ap - d_an))`` (``"semi-hard"`` and
    ``"hard"`` only). An anchor without positives or negatives follows tensorflow-addons'
    fallbacks (hardest positive = the row minimum, hardest negative = the row maximum); a batch
    without any positive pair (all labels distinct) gives 0 for ``"semi-hard"`` and ``"all"``
    where tensorflow-addons returned NaN. An empty batch gives 0. A NaN embedding or a NaN label
    gives a NaN loss (never a plausible number). Shapes are checked when traced: a ``ValueError``
    names the argument for embeddings that are not ``(B, D)``, labels that are not ``(B,)`` or
    ``(B, 1)``, or different batch sizes.

    Args:
        y_true: Integer labels ``(B,)`` or ``(B, 1)``.
        y_pred: Embeddings ``(B, D)``; float16/bfloat16 are computed in float32.
        margin: The margin, in ``[0, 1e38]``: a Python number (checked now) or a scalar tensor
            or ``keras.Variable`` (for a margin schedule; a value outside the range gives a NaN
            loss, as it cannot be checked under tracing). Defaults to 1.0.
        mining: ``"semi-hard"``, ``"hard"`` or ``"all"``. Defaults to ``"semi-hard"``.
        distance_metric: ``"L2"``, ``"squared-L2"``, ``"angular"`` or a callable returning a
            ``(B, B)`` distance matrix. Defaults to ``"L2"``.
        soft: Soft-margin variant. Defaults to ``False``.
        return_active_fraction: Also return the fraction of active triplets: anchor-positive
            pairs (``"semi-hard"``), anchors (``"hard"``) or valid triplets (``"all"``) whose
            hinge ``d_ap - d_an + margin`` (``d_ap - d_an`` when ``soft``) is positive.
            Defaults to ``False``.

    Returns:
        A float32 scalar, or ``(loss, fraction)`` with ``return_active_fraction=True``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        >>> y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
        >>> float(km.triplet_loss(y, x, mining="hard")) >= 0.0
        True

    Reference:
        Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015 (arXiv 1503.03832); Hermans,
        Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 1703.07737.
    """
    margin = _check_arguments(margin, mining, distance_metric, soft)
    y_true, y_pred = check_labels_and_embeddings(y_true, y_pred)
    if y_pred.shape[0] == 0:
        # An empty batch (a replica without samples) adds nothing.
        zero = ops.zeros((), "float32")
        return (zero, zero) if return_active_fraction else zero
    margin = margin_or_nan(margin, 0.0, MAX_MARGIN)
    d = pairwise_distance(y_pred, distance_metric)
    positive, negative = label_masks(y_true)
    if mining == "semi-hard":
        loss, fraction = _semi_hard(d, positive, negative, margin, soft)
    elif mining == "hard":
        loss, fraction = _hard(d, positive, negative, margin, soft)
    else:
        loss, fraction = _batch_all(d, positive, negative, margin)
    # NaN in, NaN out: the mining (sorts, masked max/min) could select around a NaN distance
    # and report a finite loss.
    bad = ops.logical_or(ops.any(ops.isnan(d)), labels_not_class_ids(y_true))
    if not isinstance(margin, float):
        bad = ops.logical_or(bad, ops.isnan(margin))
    loss = ops.where(bad, float("nan"), loss)
    fraction = ops.where(bad, float("nan"), fraction)
    if return_active_fraction:
        return loss, fraction
    return loss


@keras.saving.register_keras_serializable(package="keras_margins")
def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """Semi-hard triplet loss, as ``tfa.losses.triplet_semihard_loss`` (see :func:`triplet_loss`).

    For every anchor-positive pair ``(a, p)``: the negative with the smallest ``d(a, n)`` above
    ``d(a, p)`` (or the largest ``d(a, n)`` if none is farther);
    ``L = mean_(a, p) max(d(a, p) - d(a, n) + margin, 0)``.

    The arguments (``margin`` defaults to 1.0, ``distance_metric`` to ``"L2"``) and the
    float32 scalar returned are those of :func:`triplet_loss` with ``mining="semi-hard"``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.eye(4, dtype="float32")
        >>> round(float(km.triplet_semihard_loss(np.array([0, 0, 1, 1]), x)), 4)
        1.0

    Reference:
        Schroff et al., "FaceNet", CVPR 2015 (arXiv 1503.03832).
    """
    return triplet_loss(y_true, y_pred, margin, "semi-hard", distance_metric)


@keras.saving.register_keras_serializable(package="keras_margins")
def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """Batch-hard triplet loss, as ``tfa.losses.triplet_hard_loss`` (see :func:`triplet_loss`).

    ``L = mean_a max(max_p d(a, p) - min_n d(a, n) + margin, 0)``; with ``soft=True``
    ``mean_a log(1 + exp(max_p d(a, p) - min_n d(a, n)))``.

    The arguments (``margin`` defaults to 1.0 and is unused when ``soft``, ``soft`` to
    ``False``, ``distance_metric`` to ``"L2"``) and the float32 scalar returned are those of
    :func:`triplet_loss` with ``mining="hard"``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> x = np.eye(4, dtype="float32")
        >>> round(float(km.triplet_hard_loss(np.array([0, 0, 1, 1]), x)), 4)
        1.0

    Reference:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 1703.07737.
    """
    return triplet_loss(y_true, y_pred, margin, "hard", distance_metric, soft)


# ---------------------------------------------------------------------------------- classes
def _serialize_metric(distance_metric):
    if callable(distance_metric):
        return keras.saving.serialize_keras_object(distance_metric)
    return distance_metric


def _deserialize_metric(distance_metric):
    if isinstance(distance_metric, dict):
        return keras.saving.deserialize_keras_object(distance_metric)
    return distance_metric


def _mining_config(obj):
    """The mining settings of a triplet loss or metric, as they go in its config."""
    return {
        "margin": float_config(obj.margin),
        "mining": obj.mining,
        "distance_metric": _serialize_metric(obj.distance_metric),
        "soft": obj.soft,
    }


@keras.saving.register_keras_serializable(package="keras_margins")
class TripletLoss(BatchLoss):
    """Triplet loss with online mining: semi-hard, batch-hard or batch-all.

    See :func:`triplet_loss` for the formulas. The loss of a batch is a scalar computed from all
    its pairs: the object returns it **whatever the reduction** (as tensorflow-addons, see
    ``keras_margins.losses._batch``), and ``sample_weight`` only rescales it by the mean weight.
    Monitor the fraction of active triplets with :class:`ActiveTripletFraction`
    (``loss.active_fraction_metric()`` builds one with the same settings).

    Args:
        margin: The margin in ``[0, 1e38]``: a number, or a scalar tensor or ``keras.Variable``
            (see :func:`triplet_loss`). Defaults to 1.0.
        mining: ``"semi-hard"``, ``"hard"`` or ``"all"``. Defaults to ``"semi-hard"``.
        distance_metric: ``"L2"``, ``"squared-L2"``, ``"angular"`` or a callable (a registered
            Keras serializable function, to be saved with a model). Defaults to ``"L2"``.
        soft: Soft-margin ``log(1 + exp(d_ap - d_an))`` (``"semi-hard"`` and ``"hard"``).
            Defaults to ``False``.
        name: Name of the loss. Defaults to ``"triplet_loss"``.
        **kwargs: ``reduction`` (the value is the batch loss whatever the reduction; the
            default ``"sum_over_batch_size"`` lets Keras scale it under ``tf.distribute``) and
            ``dtype`` of ``keras.losses.Loss``.

    Call arguments:
        y_true: Integer labels ``(B,)`` or ``(B, 1)``.
        y_pred: Embeddings ``(B, D)``.

    Returns:
        A float32 scalar.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.TripletLoss(margin=0.5, mining="all")
        >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        >>> float(loss(np.array([0, 0, 1, 1, 2, 2, 3, 3]), x)) > 0.0
        True

    Reference:
        Schroff et al., "FaceNet", CVPR 2015 (arXiv 1503.03832); Hermans et al., "In Defense
        of the Triplet Loss for Person Re-Identification", arXiv 1703.07737.
    """

    def __init__(
        self,
        margin=1.0,
        mining="semi-hard",
        distance_metric="L2",
        soft=False,
        name="triplet_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        distance_metric = _deserialize_metric(distance_metric)
        self.margin = _check_arguments(margin, mining, distance_metric, soft)
        self.mining = mining
        self.distance_metric = distance_metric
        self.soft = soft

    def batch_loss(self, y_true, y_pred):
        return triplet_loss(
            y_true, y_pred, self.margin, self.mining, self.distance_metric, self.soft
        )

    def active_fraction_metric(self, name="active_triplet_fraction"):
        """A :class:`ActiveTripletFraction` metric with this loss's settings."""
        return ActiveTripletFraction(
            margin=self.margin,
            mining=self.mining,
            distance_metric=self.distance_metric,
            soft=self.soft,
            name=name,
        )

    def get_config(self):
        return {**super().get_config(), **_mining_config(self)}


@keras.saving.register_keras_serializable(package="keras_margins")
class TripletSemiHardLoss(TripletLoss):
    """Semi-hard triplet loss, a drop-in replacement of ``tfa.losses.TripletSemiHardLoss``.

    ``L = mean_(a, p) max(d(a, p) - d(a, n*) + margin, 0)`` over all anchor-positive pairs,
    ``n*`` the closest negative farther than ``d(a, p)`` (else the farthest negative). Same
    arguments, defaults and values as tensorflow-addons 0.23 (non-squared L2, margin 1.0, where
    FaceNet used squared distances and a margin of 0.2); only the import changes.

    :class:`TripletLoss` with ``mining="semi-hard"``: the arguments ``margin`` (defaults to
    1.0), ``distance_metric`` (defaults to ``"L2"``) and ``**kwargs``, the call (labels,
    usually L2-normalized embeddings) and the float32 scalar it returns are those of
    :class:`TripletLoss`; ``name`` defaults to ``"triplet_semihard_loss"``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.TripletSemiHardLoss()
        >>> round(float(loss(np.array([0, 0, 1, 1]), np.eye(4, dtype="float32"))), 4)
        1.0

    Reference:
        Schroff et al., "FaceNet", CVPR 2015 (arXiv 1503.03832).
    """

    def __init__(self, margin=1.0, distance_metric="L2", name="triplet_semihard_loss", **kwargs):
        super().__init__(
            margin=margin, mining="semi-hard", distance_metric=distance_metric, name=name, **kwargs
        )

    def get_config(self):
        config = super().get_config()
        del config["mining"], config["soft"]
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class TripletHardLoss(TripletLoss):
    """Batch-hard triplet loss, a drop-in replacement of ``tfa.losses.TripletHardLoss``.

    ``L = mean_a max(max_p d(a, p) - min_n d(a, n) + margin, 0)``, or with ``soft=True``
    ``mean_a log(1 + exp(max_p d(a, p) - min_n d(a, n)))``.

    :class:`TripletLoss` with ``mining="hard"``: the arguments ``margin`` (defaults to 1.0),
    ``soft`` (defaults to ``False``), ``distance_metric`` (defaults to ``"L2"``) and
    ``**kwargs``, the call and the float32 scalar it returns are those of :class:`TripletLoss`;
    ``name`` defaults to ``"triplet_hard_loss"``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> loss = km.TripletHardLoss(soft=True)
        >>> round(float(loss(np.array([0, 0, 1, 1]), np.eye(4, dtype="float32"))), 4)
        0.6931

    Reference:
        Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
        arXiv 1703.07737.
    """

    def __init__(
        self, margin=1.0, soft=False, distance_metric="L2", name="triplet_hard_loss", **kwargs
    ):
        super().__init__(
            margin=margin,
            mining="hard",
            distance_metric=distance_metric,
            soft=soft,
            name=name,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        del config["mining"]
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class ActiveTripletFraction(keras.metrics.Mean):
    """Fraction of active triplets under a triplet loss's mining, averaged over batches.

    "Active" means the hinge ``d_ap - d_an + margin`` (``d_ap - d_an`` when ``soft``) is
    positive, counted over anchor-positive pairs (``"semi-hard"``), anchors (``"hard"``) or all
    valid triplets (``"all"``). A fraction falling towards 0 means the mining has run out of
    informative triplets.

    Args:
        margin: The margin in ``[0, 1e38]``: a number, or a scalar tensor or ``keras.Variable``
            (see :func:`triplet_loss`). Defaults to 1.0.
        mining: ``"semi-hard"``, ``"hard"`` or ``"all"``. Defaults to ``"semi-hard"``.
        distance_metric: ``"L2"``, ``"squared-L2"``, ``"angular"`` or a callable. Defaults to
            ``"L2"``.
        soft: Soft-margin variant. Defaults to ``False``.
        name: Metric name. Defaults to ``"active_triplet_fraction"``.
        dtype: Metric dtype. Defaults to ``None``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> m = km.ActiveTripletFraction(mining="hard")
        >>> m.update_state(np.array([0, 0, 1, 1]), np.eye(4, dtype="float32"))
        >>> float(m.result())
        1.0
    """

    def __init__(
        self,
        margin=1.0,
        mining="semi-hard",
        distance_metric="L2",
        soft=False,
        name="active_triplet_fraction",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        distance_metric = _deserialize_metric(distance_metric)
        self.margin = _check_arguments(margin, mining, distance_metric, soft)
        self.mining = mining
        self.distance_metric = distance_metric
        self.soft = soft

    def update_state(self, y_true, y_pred, sample_weight=None):
        _, fraction = triplet_loss(
            y_true,
            y_pred,
            self.margin,
            self.mining,
            self.distance_metric,
            self.soft,
            return_active_fraction=True,
        )
        return super().update_state(fraction)

    def get_config(self):
        return {**super().get_config(), **_mining_config(self)}
