"""Margin-based softmax heads."""

from keras_margins.heads.arcface import ArcFace, ArcMarginLayer, CombinedMargin
from keras_margins.heads.base import MarginHead
from keras_margins.heads.cosface import CosFace
from keras_margins.heads.normalized import NormSoftmax

__all__ = ["MarginHead", "NormSoftmax", "CosFace", "ArcFace", "ArcMarginLayer", "CombinedMargin"]
