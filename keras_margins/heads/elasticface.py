"""ElasticFace: a margin drawn from a normal distribution for every sample of every step."""

import math
import numbers

import keras
from keras import ops

from keras_margins._validation import check_choice, check_flag, check_float
from keras_margins.heads.base import MarginHead
from keras_margins.ops import safe_arccos


class _Untracked:
    """A plain holder: Keras does not look inside it when it is set on a layer."""

    generator = None


@keras.saving.register_keras_serializable(package="keras_margins")
class ElasticFace(MarginHead):
    """ElasticFace head: ArcFace or CosFace with a random margin per sample in training.

        m_i ~ N(margin, sigma)                 one draw per sample and training call
        base="arc": target logit = s * cos(theta_y + m_i)
        base="cos": target logit = s * (cos(theta_y) - m_i)
        non-target logit         = s * cos(theta_j)

    The margins are drawn in training calls only (``training=True``, as in ``fit``) from a
    ``keras.random.SeedGenerator(seed)``: a head built with a ``seed`` draws the same margins
    in the same order (the generator's state, the weight ``seed_state``, is saved with the
    model). They carry no gradient.
    At inference (``training`` False or unset: ``predict``, ``evaluate``) the margin is the
    fixed ``margin``, with no randomness.

    This follows the authors' code (fdbtrs/ElasticFace, ``utils/losses.py``):

    - the draws are not clamped (with ``sigma = 0.05`` a negative margin is a 10-sigma event);
    - ``base="arc"`` has no fallback past ``theta_y + m_i = pi`` and no easy margin, unlike
      :class:`~keras_margins.ArcFace`: for a sample with ``cos(theta_y) < cos(pi - m_i)``
      (about -0.88 for m = 0.5) the target ``cos(theta_y + m_i)`` rises again as the sample moves
      away from its class, so the gradient pushes such a sample further away. Such samples are
      rare once training has started, but an embedding pointing opposite its class centre at
      initialisation can be driven there. :class:`~keras_margins.ArcFace` (a fixed margin)
      continues the target as ``cos(theta_y) - m sin(m)`` there.

    ``plus=True`` is ElasticFace+: the batch's margins are sorted and given out by the target
    cosine, so that a sample closer to its class centre (higher ``cos(theta_y)``) gets a
    smaller margin: the sample with the r-th largest ``cos(theta_y)`` gets the r-th smallest
    margin (the paper's intent). The official code computes ``p = argsort(cos_y, descending)``
    and gives sample ``i`` the margin ``sorted(m)[p[i]]``: it indexes with the permutation
    itself rather than its inverse (the rank of sample ``i``), so its assignment is rank-ordered
    only when ``p`` is its own inverse. We implement the rank order, ``sorted(m)[rank(i)]``.

    The authors' configurations (``config/config.py``; all use ``s = 64``):

    | variant       | ``base`` | ``margin`` | ``sigma`` | ``plus`` |
    |---------------|----------|------------|-----------|----------|
    | ElasticArc    | "arc"    | 0.5        | 0.05      | False    |
    | ElasticArc+   | "arc"    | 0.5        | 0.0175    | True     |
    | ElasticCos    | "cos"    | 0.35       | 0.05      | False    |
    | ElasticCos+   | "cos"    | 0.35       | 0.02      | True     |

    The class defaults are ElasticArc's (``margin=0.5, sigma=0.05``); for ``base="cos"`` pass
    ``margin=0.35``.

    Args:
        num_classes: Number of classes. Must be >= 1.
        scale: The scale ``s``, > 0. Defaults to 64.0.
        margin: The mean margin ``m``: radians in ``[0, pi)`` for ``base="arc"``, a cosine
            margin in ``[0, 2)`` for ``base="cos"``; the margin used at inference. Defaults to
            0.5.
        sigma: The standard deviation of the margins, >= 0 (0: the plain ArcFace/CosFace
            target, without ArcFace's fallback). Defaults to 0.05.
        base: ``"arc"`` (ElasticArcFace, an angular margin) or ``"cos"`` (ElasticCosFace, a
            cosine margin). Defaults to ``"arc"``.
        plus: ElasticFace+: margins given out in the rank order of the target cosines.
            Defaults to ``False``.
        seed: Optional integer seed of the margins' random generator (reproducible draws).
            ``None`` draws a random seed. Defaults to ``None``.
        sub_centers: Sub-centres per class (class cosine = max over them). Defaults to 1.
        **kwargs: ``kernel_initializer``, ``kernel_regularizer``, ``kernel_constraint``,
            ``interclass_filtering_threshold`` and the base layer arguments.

    Returns:
        float32 logits ``(B, num_classes)`` for
        ``SparseCategoricalCrossentropy(from_logits=True)``.

    Examples:

        >>> import numpy as np, keras_margins as km
        >>> head = km.ElasticFace(num_classes=2, scale=10.0, margin=0.5, sigma=0.05, seed=0,
        ...                       kernel_initializer="identity")
        >>> x = np.array([[np.cos(np.pi / 3), np.sin(np.pi / 3)]], "float32")  # 60 degrees
        >>> y = np.array([0])
        >>> inference = np.asarray(head([x, y]))  # the fixed margin
        >>> bool(np.isclose(inference[0, 0], 10.0 * np.cos(np.pi / 3 + 0.5), atol=1e-4))
        True
        >>> drawn = np.asarray(head([x, y], training=True))  # a random margin near 0.5
        >>> m = np.arccos(drawn[0, 0] / 10.0) - np.pi / 3
        >>> bool(0.2 < m < 0.8)
        True

    Reference:
        Boutros et al., "ElasticFace: Elastic Margin Loss for Deep Face Recognition", CVPR
        Workshops 2022 (arXiv 2109.09416); code: github.com/fdbtrs/ElasticFace.
    """

    def __init__(
        self,
        num_classes,
        scale=64.0,
        margin=0.5,
        sigma=0.05,
        base="arc",
        plus=False,
        seed=None,
        sub_centers=1,
        **kwargs,
    ):
        super().__init__(num_classes, scale=scale, sub_centers=sub_centers, **kwargs)
        self.base = check_choice("base", base, ("arc", "cos"))
        if self.base == "arc":
            self.margin = check_float(
                "margin", margin, low=0.0, high=math.pi, high_open=True, range_text="[0, pi)"
            )
        else:
            self.margin = check_float("margin", margin, low=0.0, high=2.0, high_open=True)
        self.sigma = check_float("sigma", sigma, low=0.0)
        self.plus = check_flag("plus", plus)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self._margin_rng = _Untracked()  # its generator is created in build_state

    def build_state(self):
        # A keras SeedGenerator whose state is the head's own training state: a generator's
        # state is not a layer weight (Keras does not save it, as for Dropout), so the
        # generator draws from a saved non-trainable variable instead, and a reloaded head
        # continues the sequence where the saved one stopped. The generator is kept out of the
        # layer's tracking (which would list the state variable a second time).
        generator = keras.random.SeedGenerator(self.seed)
        initial = generator.state.value
        generator.state = self.add_training_state(
            "seed_state",
            dtype=generator.state.dtype,
            shape=(2,),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(initial),
        )
        self._margin_rng.generator = generator

    @property
    def seed_generator(self):
        """The ``keras.random.SeedGenerator`` of the margins (``None`` before the head is built);
        its ``state`` is the saved non-trainable weight ``seed_state``."""
        return self._margin_rng.generator

    def sample_margins(self, cos_y):
        """float32 ``(B,)`` margins for a training call: ``N(margin, sigma)``, rank-ordered with
        ``plus``, without gradient."""
        m = keras.random.normal(
            ops.shape(cos_y),
            mean=self.margin,
            stddev=self.sigma,
            dtype="float32",
            seed=self.seed_generator,
        )
        if self.plus:
            # Sample p[r] (the r-th largest target cosine) gets the r-th smallest margin.
            order = ops.argsort(-ops.stop_gradient(cos_y))
            m = ops.scatter_update(ops.zeros_like(m), order[:, None], ops.sort(m))
        return ops.stop_gradient(m)

    def target_logit(self, cos_y, norm=None, labels=None, training=None):
        m = self.sample_margins(cos_y) if training is True else self.margin
        if self.base == "cos":
            return cos_y - m
        return ops.cos(safe_arccos(cos_y) + m)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "sigma": self.sigma,
                "base": self.base,
                "plus": self.plus,
                "seed": self.seed,
            }
        )
        return config
