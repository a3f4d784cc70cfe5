"""Layers used around the heads in retrieval models (pooling necks)."""

from keras_margins.layers.gem import GeMPooling2D

__all__ = ["GeMPooling2D"]
