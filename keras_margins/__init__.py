"""keras_margins: margin-based softmax heads and metric-learning losses for Keras 3.

The public API is flat: ``import keras_margins as km; km.ArcFace(...)``. Data loaders, export
and plots stay in their modules: ``km.datasets``, ``km.export``, ``km.plots``.
"""

__version__ = "0.1.0"

from keras_margins import datasets, evaluation, export, heads, layers, losses, plots  # noqa: F401
from keras_margins.callbacks import EmbeddingEvaluation
from keras_margins.cleaning import SubCenterCleaning, subcenter_cleaning
from keras_margins.evaluation import *  # noqa: F401,F403
from keras_margins.export import (
    export_onnx,
    export_saved_model,
    export_tflite,
    get_embedding_model,
)
from keras_margins.heads import *  # noqa: F401,F403
from keras_margins.layers import GeMPooling2D, L2Normalization
from keras_margins.losses import *  # noqa: F401,F403
from keras_margins.models import build_models
from keras_margins.partial_fc import PartialFC
from keras_margins.sampler import PKSampler
from keras_margins.saving import load_model, saved_dtype_policy
from keras_margins.siamese import PairDistance, build_siamese_model

__all__ = [
    *heads.__all__,
    *losses.__all__,
    *evaluation.__all__,
    "build_models",
    "GeMPooling2D",
    "L2Normalization",
    "load_model",
    "saved_dtype_policy",
    "PartialFC",
    "build_siamese_model",
    "EmbeddingEvaluation",
    "PairDistance",
    "PKSampler",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "get_embedding_model",
    "subcenter_cleaning",
    "SubCenterCleaning",
]
