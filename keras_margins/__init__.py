"""keras_margins: margin-based softmax heads and metric-learning losses for Keras 3.

The public API is flat: ``import keras_margins as km; km.ArcFace(...)``.
"""

__version__ = "0.1.0"

from keras_margins import datasets, evaluation, export, heads, losses  # noqa: F401
from keras_margins.evaluation import *  # noqa: F401,F403
from keras_margins.heads import *  # noqa: F401,F403
from keras_margins.losses import *  # noqa: F401,F403
from keras_margins.models import build_models

__all__ = [*heads.__all__, *losses.__all__, *evaluation.__all__, "build_models"]
