"""SphereFace (A-Softmax): a multiplicative angular margin, trained with lambda annealing."""

import math

import keras
from keras import ops

from keras_margins._validation import FLOAT32_MAX, check_float, check_float32_bound
from keras_margins.heads.base import MarginHead, layer_metrics_supported
from keras_margins.ops import safe_arccos

#: Up to this margin, the branch index is found by comparisons with cos(j*pi/m) (exact at the
#: boundaries) and an integer margin uses the Chebyshev recurrence; above it, both are computed
#: in closed form, so the graph does not grow with m.
_SMALL_MARGIN = 16

#: The largest margin: the branch index k = floor(m * theta / pi) <= m and its parity (the sign
#: (-1)^k) must be exact in float32, which holds for integers up to 2**24.
MAX_SPHEREFACE_MARGIN = 2.0**24


def sphereface_psi(cos_y, margin):
    """SphereFace's target function ``psi(theta)`` evaluated from ``cos(theta)`` (float32).

        psi(theta) = (-1)^k * cos(m * theta) - 2k,   theta in [k*pi/m, (k+1)*pi/m]

    ``psi`` is continuous and decreasing on ``[0, pi]`` for every real ``m >= 1``: at each
    boundary ``theta = k*pi/m`` both branches equal ``1 - 2k``. The interval index ``k`` is the
    number of boundaries ``j*pi/m`` (``j = 1 .. ceil(m) - 1``) the angle has passed, found by
    comparing ``cos(theta)`` with ``cos(j*pi/m)``. For an integer ``m``, ``cos(m*theta)`` is the
    Chebyshev polynomial ``T_m(cos(theta))`` (no ``arccos``: exact gradients up to cos = +-1);
    a non-integer ``m`` goes through a clipped ``arccos``. The margin is never rounded. For
    ``m > 16`` both are computed in closed form instead (``k = floor(m * theta / pi)``,
    ``cos(m * theta)``), so the cost does not grow with ``m``; ``psi`` is continuous at the
    boundaries, so a rounding-level difference in ``k`` there changes nothing.

    Args:
        cos_y: float32 tensor of target cosines, clipped to [-1, 1].
        margin: the real margin ``m >= 1`` (a Python number).

    Returns:
        float32 tensor of the same shape as ``cos_y``.
    """
    m = float(margin)
    if m > _SMALL_MARGIN:
        theta = safe_arccos(cos_y)
        k = ops.clip(ops.floor(theta * (m / math.pi)), 0.0, float(math.ceil(m) - 1))
        k = ops.stop_gradient(k)
        cos_mt = ops.cos(m * theta)
        sign = 1.0 - 2.0 * (k - 2.0 * ops.floor(k / 2.0))
        return sign * cos_mt - 2.0 * k
    k = ops.zeros_like(cos_y)
    for j in range(1, math.ceil(m)):
        k = k + ops.cast(cos_y < math.cos(j * math.pi / m), "float32")
    if m.is_integer():
        t_prev, t_cur = ops.ones_like(cos_y), cos_y
        for _ in range(int(m) - 1):
            t_prev, t_cur = t_cur, 2.0 * cos_y * t_cur - t_prev
        cos_mt = t_cur
    else:
        cos_mt = ops.cos(m * safe_arccos(cos_y))
    # (-1)^k for a float k holding a small non-negative integer.
    sign = 1.0 - 2.0 * (k - 2.0 * ops.floor(k / 2.0))
    return sign * cos_mt - 2.0 * k


def sphereface_lambda(step, lambda_base, lambda_gamma, lambda_power, lambda_min):
    """The annealed weight ``max(lambda_min, lambda_base * (1 + lambda_gamma * step)^-power)``.

    Works on Python numbers (returns a float) and on tensors (returns a float32 tensor).
    """
    if isinstance(step, (int, float)):
        return max(lambda_min, lambda_base * (1.0 + lambda_gamma * step) ** (-lambda_power))
    step = ops.cast(step, "float32")
    decayed = lambda_base * ops.power(1.0 + lambda_gamma * step, -lambda_power)
    return ops.maximum(ops.convert_to_tensor(lambda_min, "float32"), decayed)


@keras.saving.register_keras_serializable(package="keras_margins")
class SphereFace(MarginHead):
    """SphereFace (A-Softmax) head: a multiplicative angular margin with lambda annealing.

    Class centres are normalized, features are not: with ``scale=None`` every logit is scaled
    by the feature norm ``||x||``,

        non-target logit = ||x|| * cos(theta_j)
        target logit     = ||x|| * (lambda * cos(theta_y) + psi(theta_y)) / (1 + lambda)
        psi(theta)       = (-1)^k * cos(m * theta) - 2k,  theta in [k*pi/m, (k+1)*pi/m]
        lambda           = max(lambda_min, lambda_base * (1 + lambda_gamma * t)^(-lambda_power))

    where ``t`` is the number of training steps the layer has seen. A large ``lambda`` early in
    training makes the target almost the plain cosine, so the network first learns a normal
    softmax; the margin is then phased in as ``lambda`` decays to ``lambda_min``. Without
    annealing (``lambda_base=0, lambda_min=0``: plain A-Softmax) a margin of 4 often fails to
    converge. With ``scale`` given, features are normalized too and ``scale`` replaces ``||x||``.

    The step counter ``t`` is a non-trainable layer weight (``head.step``, int64). It advances
    by one in every call with ``training=True`` and labels (once per ``model.fit`` step), never
    in ``predict``/``evaluate`` or a call with ``training`` left unset, is saved in ``.keras``
    files and weights, so a resumed training continues the schedule. ``head.current_lambda()``
    returns the lambda the next training step will use; the layer also reports it as the metric
    ``"<layer name>_lambda"`` in ``model.fit`` logs.

    ``margin`` may be any real number >= 1 (the paper uses the integers 1 to 4; 4 is its
    default): it is never truncated to an integer.

    Args:
        num_classes: Number of classes. Must be >= 1.
        margin: The multiplicative angular margin ``m``, a real number >= 1. Defaults to 4.
        scale: ``None`` to scale by the feature norm ``||x||`` (the paper), or a fixed scale
            ``s > 0`` applied to normalized features. Defaults to ``None``.
        lambda_base: Initial lambda, >= 0. Defaults to 1000.0 (the released SphereFace setting).
        lambda_gamma: Decay rate ``gamma``, >= 0. Defaults to 0.12.
        lambda_power: Decay power, >= 0. Defaults to 1.0.
        lambda_min: Floor of lambda, >= 0. Defaults to 5.0.
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint`` and the
            base layer arguments.

    Call arguments:
        inputs: ``[embeddings, labels]`` in training (``embeddings`` ``(B, D)``; ``labels``
            integer ``(B,)`` / ``(B, 1)`` or one-hot ``(B, num_classes)``), or ``embeddings``
            alone for ``||x|| * cos`` (or ``s * cos``) at inference.
        training: Python bool; ``True`` advances the lambda schedule by one step.

    Returns:
        float32 logits of shape ``(B, num_classes)``, for
        ``SparseCategoricalCrossentropy(from_logits=True)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.SphereFace(num_classes=10, margin=4)
        >>> x = np.random.rand(4, 8).astype("float32")
        >>> tuple(head([x, np.array([0, 1, 2, 3])]).shape)
        (4, 10)
        >>> head.current_lambda()
        1000.0

    Reference:
        Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017
        (arXiv 1704.08063); lambda schedule from the authors' released training code.
    """

    def __init__(
        self,
        num_classes,
        margin=4,
        scale=None,
        lambda_base=1000.0,
        lambda_gamma=0.12,
        lambda_power=1.0,
        lambda_min=5.0,
        sub_centers=1,
        **kwargs,
    ):
        # The base checks a given scale; `None` (the feature norm, see `logit_scale`) is this
        # head's own choice, so the base checks a placeholder and the None is kept.
        super().__init__(
            num_classes, scale=1.0 if scale is None else scale, sub_centers=sub_centers, **kwargs
        )
        if scale is None:
            self.scale = None
        margin = check_float("margin", margin, low=1.0)
        check_float32_bound(
            "margin",
            margin,
            MAX_SPHEREFACE_MARGIN,
            "the branch index of psi, up to m, and its parity must be exact in float32 (the "
            "paper uses 1 to 4)",
        )
        # Keep an integer margin an int in the config (4, not 4.0); never round a real one.
        self.margin = int(margin) if margin.is_integer() else margin
        self.lambda_base = check_float("lambda_base", lambda_base, low=0.0)
        self.lambda_gamma = check_float("lambda_gamma", lambda_gamma, low=0.0)
        self.lambda_power = check_float("lambda_power", lambda_power, low=0.0)
        self.lambda_min = check_float("lambda_min", lambda_min, low=0.0)
        for name in ("lambda_base", "lambda_min"):
            check_float32_bound(
                name,
                getattr(self, name),
                FLOAT32_MAX / 4.0,
                "lambda * cos(theta) and 1 + lambda must stay finite in float32",
            )
        for name in ("lambda_gamma", "lambda_power"):
            check_float32_bound(
                name, getattr(self, name), FLOAT32_MAX, "it must be representable in float32"
            )
        # The mean lambda of the epoch's steps, in the fit logs (not on JAX: a Keras limitation,
        # see `layer_metrics_supported`; `current_lambda()` works on every backend).
        self.lambda_tracker = (
            keras.metrics.Mean(name=f"{self.name}_lambda") if layer_metrics_supported() else None
        )

    def build_state(self):
        self.step = self.add_training_state("step", dtype="int64")

    def logit_scale(self, norm):
        if self.scale is None:
            return norm  # ||x||, the paper's scale
        return super().logit_scale(norm)

    def lambda_value(self):
        """The current lambda as a float32 tensor (from the step counter)."""
        return sphereface_lambda(
            self.step, self.lambda_base, self.lambda_gamma, self.lambda_power, self.lambda_min
        )

    def current_lambda(self):
        """The lambda the next training step will use, as a Python float."""
        if not self.built:
            return float(
                sphereface_lambda(
                    0, self.lambda_base, self.lambda_gamma, self.lambda_power, self.lambda_min
                )
            )
        step = int(ops.convert_to_numpy(self.step))
        return float(
            sphereface_lambda(
                step, self.lambda_base, self.lambda_gamma, self.lambda_power, self.lambda_min
            )
        )

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        lam = self.lambda_value()
        self.update_training_state(self.step, self.step + 1, training)
        if layer_metrics_supported():  # not on JAX: see layer_metrics_supported
            self.lambda_tracker.update_state(lam)
        psi = sphereface_psi(cos_y, self.margin)
        return (lam * cos_y + psi) / (1.0 + lam)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "lambda_base": self.lambda_base,
                "lambda_gamma": self.lambda_gamma,
                "lambda_power": self.lambda_power,
                "lambda_min": self.lambda_min,
            }
        )
        return config
