"""Base class of the losses whose value is computed from the whole batch (triplet, lifted, npairs).

Such a loss has no per-sample values: every pair of the batch contributes. As in
tensorflow-addons (which forced ``Reduction.NONE`` on a scalar), the value of the loss object is
the batch loss of the functional form **whatever the reduction**:

- ``"sum_over_batch_size"`` (the default), ``"mean"`` and ``"mean_with_sample_weight"``: the
  batch loss is handed to Keras as ``B`` equal per-sample values, whose mean is the batch loss
  (and which Keras scales by ``1 / replicas`` under ``tf.distribute`` like any per-sample loss);
- ``"sum"``: ``B`` values equal to the batch loss divided by ``B``, whose sum is the batch loss;
- ``"none"`` / ``None``: the scalar batch loss.

A ``sample_weight`` therefore multiplies the batch loss by the mean weight (by 1 with
``"mean_with_sample_weight"``); it does not re-weight pairs.
"""

import keras
from keras import ops


class BatchLoss(keras.losses.Loss):
    """A ``keras.losses.Loss`` whose ``batch_loss(y_true, y_pred)`` is a scalar for the batch."""

    def batch_loss(self, y_true, y_pred):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        loss = self.batch_loss(y_true, y_pred)
        if self.reduction in (None, "none"):
            return loss
        batch = y_pred.shape[0]
        if batch == 0:
            return loss  # a scalar 0: Keras would return an empty tensor for (0,) values
        if batch is None:
            batch = ops.shape(y_pred)[0]
        if self.reduction == "sum":
            loss = loss / ops.cast(ops.maximum(batch, 1), loss.dtype)
        return ops.broadcast_to(loss, (batch,))
