"""keras_margins: margin-based softmax heads and metric-learning losses for Keras 3.

The public API is flat: ``import keras_margins as km; km.ArcFace(...)``.
"""

__version__ = "0.1.0"

from keras_margins.heads import *  # noqa: F401,F403
from keras_margins.heads import __all__ as _heads_all
from keras_margins.models import build_models

__all__ = [*_heads_all, "build_models"]
