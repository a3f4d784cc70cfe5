"""Metric-learning losses: triplet (semi-hard, batch-hard, batch-all), contrastive, center."""

from keras_margins.losses.center import CenterLoss
from keras_margins.losses.contrastive import ContrastiveLoss, contrastive_loss
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
    "TripletHardLoss",
    "TripletLoss",
    "TripletSemiHardLoss",
    "contrastive_loss",
    "triplet_hard_loss",
    "triplet_loss",
    "triplet_semihard_loss",
]
