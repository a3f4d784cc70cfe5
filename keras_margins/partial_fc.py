"""Partial FC: train any margin head on a sampled subset of its class centres."""

import math

import keras
from keras import ops

from keras_margins._validation import check_float, check_int
from keras_margins.heads.base import MarginHead, embedding_dim_of, logits_shape, split_inputs


@keras.saving.register_keras_serializable(package="keras_margins")
class PartialFC(keras.layers.Layer):
    """Wrap a margin head so that each training step uses a sample of the class centres.

    With ``C`` classes and ``k = ceil(sample_rate * C)``, every training step

    1. keeps the classes of all labels in the batch (the positives), fills the set up to ``k``
       classes with a uniform random sample of the other classes, and sorts it:
       ``S = sort(P ∪ random(C \\ P, k - |P|))``;
    2. remaps each label ``y`` to its position in ``S``;
    3. gathers the ``k`` sampled centres (``k * sub_centers`` rows) and runs the wrapped head on
       them: ``logits = head(x, remap(y); W[S])``, shape ``(B, k)``;
    4. adds the cross-entropy of those logits (mean over the batch) with ``add_loss``.

    Only the gathered rows take part in the step, so only they receive a gradient. On the
    TensorFlow backend that gradient is an ``IndexedSlices`` of ``k * sub_centers`` rows, never
    a dense ``(C, D)`` tensor; how much of the update stays sparse depends on the optimizer (plain
    ``SGD`` without momentum updates only the sampled rows; ``SGD`` with momentum, ``Adam`` and
    weight decay touch every row — see the scale guide). All shapes are static, so the step runs
    under ``jit_compile=True`` and in ``model.fit``.

    Without labels, or with ``training=False`` (evaluation, prediction) all ``C`` centres are
    used and the output is ``(B, C)``; with labels the full cross-entropy is added as the loss,
    so ``model.evaluate`` reports the loss over every class.

    The layer owns the class centres, stored one row per centre as a ``(C * sub_centers, D)``
    matrix (so a sampled centre is a contiguous row); the wrapped head provides the margin, the
    scale and the sub-centre rule, and holds no kernel of its own. :meth:`to_head`
    returns a copy of the head holding these centres, for use without Partial FC. The head's
    ``kernel_initializer``, ``kernel_regularizer`` and ``kernel_constraint`` are applied to this
    ``(C * sub_centers, D)`` matrix: an axis-dependent constraint such as ``UnitNorm`` needs
    ``axis=1`` here (``axis=0`` on the head's own kernel).

    Compile the training model with ``loss=None``: the loss comes from the layer (a loss on the
    model output would see ``(B, k)`` logits indexed by sampled positions, not by class ids).
    Accuracy metrics are meaningful in ``evaluate`` (full logits), not on training batches.

    Each sample's label must be among the ``k`` sampled classes, so the number of distinct labels
    in a batch must not exceed ``k`` (choose ``sample_rate * C >= batch_size`` to be safe). A
    label that does not fit, or is not a class id in ``[0, C)`` (the heads' label rule), turns
    its logit row into NaN, as in the heads: the loss becomes NaN rather than a plausible number.
    An empty batch (a replica that gets no samples) adds a loss of 0.

    Args:
        head: The margin head to wrap (any :class:`keras_margins.heads.MarginHead`, unbuilt).
        sample_rate: Fraction of the classes used per training step, in ``(0, 1]``. ``1.0`` uses
            every class (the wrapped head's result exactly). Defaults to 0.1.
        seed: Integer seed of the sampling, or ``None``. Defaults to ``None``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``).

    Call arguments:
        inputs: ``[embeddings, labels]`` (``embeddings`` ``(B, D)``; labels as the wrapped head
            accepts them), or ``embeddings`` alone.
        training: Keras training flag; the sampling happens only when it is true and labels are
            given.

    Returns:
        float32 logits: ``(B, k)`` over the sampled classes in a training step, ``(B, C)``
        otherwise.

    Examples:

        >>> import numpy as np, keras, keras_margins as km
        >>> pfc = km.PartialFC(km.ArcFace(num_classes=1000, scale=30.0), sample_rate=0.1, seed=0)
        >>> x = np.random.rand(8, 16).astype("float32")
        >>> y = np.arange(8)
        >>> tuple(pfc([x, y], training=True).shape)
        (8, 100)
        >>> tuple(pfc([x, y]).shape)
        (8, 1000)

    Reference:
        An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
        ICCV Workshops 2021 (arXiv 2010.05222).
    """

    def __init__(self, head, sample_rate=0.1, seed=None, **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        if not isinstance(head, MarginHead):
            raise ValueError(
                "`head` must be a keras_margins margin head (a MarginHead subclass). "
                f"Received: head={head!r}"
            )
        if head.built:
            raise ValueError(
                "`head` must not be built yet: PartialFC owns the class centres and builds the "
                f"head without a kernel of its own. Received: head={head!r} (built)"
            )
        self.head = head
        self.sample_rate = check_float(
            "sample_rate", sample_rate, low=0.0, high=1.0, low_open=True, range_text="(0, 1]"
        )
        self.seed = None if seed is None else check_int("seed", seed)
        self.num_classes = head.num_classes
        self.num_sample = min(
            self.num_classes, max(1, math.ceil(self.sample_rate * self.num_classes - 1e-9))
        )
        self.seed_generator = keras.random.SeedGenerator(seed)

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        self.embedding_dim = embedding_dim_of(input_shape, "PartialFC")
        head = self.head
        # One row per centre: row c * K + k is sub-centre k of class c (the head's column order).
        # glorot_uniform's limit depends on fan_in + fan_out only, so the transposed shape draws
        # from the same distribution as the head's own (D, C * K) kernel.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_classes * head.sub_centers, self.embedding_dim),
            initializer=head.kernel_initializer,
            regularizer=head.kernel_regularizer,
            constraint=head.kernel_constraint,
            autocast=False,
        )
        # The head keeps only its own state (e.g. SphereFace's step): it always computes on the
        # centres this layer passes it, so it holds no second (D, C * K) copy of them.
        head.build_without_kernel(self.embedding_dim)
        self.built = True

    def compute_output_shape(self, input_shape):
        return logits_shape(input_shape, self.num_classes, "PartialFC")

    def cosine(self, embeddings):
        """Float32 cosines between ``embeddings`` and every class, ``(B, num_classes)``.

        The wrapped head's :meth:`~keras_margins.heads.MarginHead.cosine` on all of this
        layer's class centres (sub-centres reduced by their maximum).
        """
        return self.head.cosine(embeddings, kernel=self.kernel, kernel_transposed=True)

    # ------------------------------------------------------------------ sampling
    def sample(self, labels):
        """Sample this step's classes and remap ``labels`` into them.

        Args:
            labels: integer class ids ``(B,)`` (use the head's ``prepare_labels`` for other
                forms).

        Returns:
            ``(classes, remapped)``: the sorted int32 ids of the ``k`` sampled classes, and each
            label's position in ``classes`` (``-1`` for a label outside ``[0, C)`` or not
            sampled).
        """
        labels = ops.cast(labels, "int32")
        num_classes, k = self.num_classes, self.num_sample
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        safe = ops.clip(labels, 0, num_classes - 1)
        hits = ops.scatter(
            safe[:, None], ops.cast(valid, "float32"), (num_classes,)
        )  # > 0 for every class present in the batch
        score = keras.random.uniform((num_classes,), seed=self.seed_generator)
        score = ops.where(hits > 0, ops.full_like(score, 2.0), score)
        _, classes = ops.top_k(score, k, sorted=False)
        classes = ops.sort(ops.cast(classes, "int32"))
        # position + 1 of every sampled class, 0 elsewhere; minus one gives -1 for "absent".
        position = ops.scatter(
            classes[:, None], ops.arange(1, k + 1, dtype="int32"), (num_classes,)
        )
        remapped = ops.take(position, safe, axis=0) - 1
        remapped = ops.where(valid, remapped, -1)
        return classes, remapped

    def sampled_kernel(self, classes):
        """The ``(k * sub_centers, D)`` class centres of the sampled classes, one per row."""
        sub = self.head.sub_centers
        rows = classes
        if sub > 1:
            rows = ops.reshape(
                classes[:, None] * sub + ops.arange(sub, dtype="int32")[None, :], (-1,)
            )
        return ops.take(self.kernel, rows, axis=0)

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        embeddings, labels = split_inputs(inputs, "PartialFC")
        head = self.head
        if labels is None:
            return head.compute_logits(
                embeddings, None, kernel=self.kernel, training=training, kernel_transposed=True
            )
        labels = head.prepare_labels(labels, batch_size=embeddings.shape[0])
        if training and self.num_sample < self.num_classes:
            classes, remapped = self.sample(labels)
            logits = head.compute_logits(
                embeddings,
                remapped,
                kernel=self.sampled_kernel(classes),
                training=training,
                kernel_transposed=True,
                classes=classes,
            )
            width = self.num_sample
        else:
            remapped = labels
            logits = head.compute_logits(
                embeddings, labels, kernel=self.kernel, training=training, kernel_transposed=True
            )
            width = self.num_classes
        # A bad label already made its row NaN; clip only so the loss op accepts the index.
        target = ops.clip(remapped, 0, width - 1)
        loss = keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
        # The batch mean; an empty batch (a replica with no samples under a distribution
        # strategy) adds 0, not 0 / 0 = NaN.
        batch = ops.cast(ops.shape(loss)[0], "float32")
        self.add_loss(ops.sum(loss) / ops.maximum(batch, 1.0))
        return logits

    # ------------------------------------------------------------------ export
    def to_head(self):
        """A copy of the wrapped head holding these class centres, to use without Partial FC.

        The copy has its own ``(D, C * sub_centers)`` kernel (the transposed centres) and the
        wrapped head's non-kernel state.
        """
        head = type(self.head).from_config(self.head.get_config())
        head.build((None, self.embedding_dim))
        head.kernel.assign(ops.transpose(self.kernel))
        # Any other state the head keeps (a step counter), in the same order.
        others = [w for w in head.weights if w is not head.kernel]
        for source, target in zip(self.head.weights, others):
            target.assign(source)
        return head

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head": self._head_config(),
                "sample_rate": self.sample_rate,
                "seed": self.seed,
            }
        )
        return config

    def _head_config(self):
        # Without its build config, so that loading gives an unbuilt head (built here, kernel-less).
        config = keras.saving.serialize_keras_object(self.head)
        config.pop("build_config", None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)
