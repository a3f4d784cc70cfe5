"""Margin-based softmax heads."""

from keras_margins.heads.adacos import AdaCos
from keras_margins.heads.adaface import AdaFace
from keras_margins.heads.arcface import ArcFace, ArcMarginLayer
from keras_margins.heads.base import MarginHead
from keras_margins.heads.class_margins import class_size_margins
from keras_margins.heads.combined_margin import CombinedMargin
from keras_margins.heads.cosface import CosFace
from keras_margins.heads.curricularface import CurricularFace
from keras_margins.heads.elasticface import ElasticFace
from keras_margins.heads.l2_softmax import (
    L2Softmax,
    ScaledL2Normalization,
    l2_softmax_alpha_lower_bound,
)
from keras_margins.heads.magface import MagFace, magface_lambda_g_lower_bound
from keras_margins.heads.norm_softmax import NormSoftmax
from keras_margins.heads.sphereface import SphereFace
from keras_margins.heads.sv_softmax import SVSoftmax

__all__ = [
    "MarginHead",
    "NormSoftmax",
    "CosFace",
    "ArcFace",
    "ArcMarginLayer",
    "CombinedMargin",
    "SphereFace",
    "L2Softmax",
    "ScaledL2Normalization",
    "l2_softmax_alpha_lower_bound",
    "SVSoftmax",
    "AdaFace",
    "MagFace",
    "magface_lambda_g_lower_bound",
    "CurricularFace",
    "AdaCos",
    "ElasticFace",
    "class_size_margins",
]
