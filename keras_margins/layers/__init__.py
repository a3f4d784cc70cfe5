"""Layers used around the heads in retrieval models (pooling necks)."""

from keras_margins.layers.gem import GeMPooling2D
from keras_margins.layers.normalization import L2Normalization

__all__ = ["GeMPooling2D", "L2Normalization"]
