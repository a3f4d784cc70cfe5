"""Metric-learning losses (triplet, contrastive, N-pair, lifted structured, center) and the
mining-based softmax losses."""

from keras_margins.losses.center import CenterLoss
from keras_margins.losses.contrastive import ContrastiveLoss, contrastive_loss
from keras_margins.losses.lifted import LiftedStructLoss, lifted_struct_loss
from keras_margins.losses.npairs import (
    NpairsLoss,
    NpairsMultilabelLoss,
    npairs_loss,
    npairs_multilabel_loss,
)
from keras_margins.losses.softmax_mining import (
    FocalSoftmaxLoss,
    HardMiningSoftmaxLoss,
    focal_softmax_loss,
    hard_mining_softmax_loss,
)
from keras_margins.losses.sparse_crossentropy import (
    SparseCategoricalCrossentropy,
    sparse_categorical_crossentropy,
)
from keras_margins.losses.triplet import (
    ActiveTripletFraction,
    TripletHardLoss,
    TripletLoss,
    TripletSemiHardLoss,
    triplet_hard_loss,
    triplet_loss,
    triplet_semihard_loss,
)

__all__ = [
    "ActiveTripletFraction",
    "CenterLoss",
    "ContrastiveLoss",
    "FocalSoftmaxLoss",
    "HardMiningSoftmaxLoss",
    "LiftedStructLoss",
    "NpairsLoss",
    "NpairsMultilabelLoss",
    "TripletHardLoss",
    "TripletLoss",
    "TripletSemiHardLoss",
    "contrastive_loss",
    "focal_softmax_loss",
    "hard_mining_softmax_loss",
    "lifted_struct_loss",
    "npairs_loss",
    "npairs_multilabel_loss",
    "triplet_hard_loss",
    "triplet_loss",
    "triplet_semihard_loss",
    "SparseCategoricalCrossentropy",
    "sparse_categorical_crossentropy",
]
