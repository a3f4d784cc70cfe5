"""Offline evaluation of embeddings: verification, identification and retrieval (NumPy)."""

from keras_margins.evaluation.identification import *  # noqa: F401,F403
from keras_margins.evaluation.identification import __all__ as _identification_all
from keras_margins.evaluation.retrieval import *  # noqa: F401,F403
from keras_margins.evaluation.retrieval import __all__ as _retrieval_all
from keras_margins.evaluation.search import nearest_neighbors
from keras_margins.evaluation.submission import (
    identity_predictions,
    match_predictions,
    write_identity_submission,
    write_match_submission,
    write_submission,
)
from keras_margins.evaluation.verification import *  # noqa: F401,F403
from keras_margins.evaluation.verification import __all__ as _verification_all

__all__ = [
    *_verification_all,
    *_identification_all,
    "nearest_neighbors",
    *_retrieval_all,
    "match_predictions",
    "identity_predictions",
    "write_submission",
    "write_match_submission",
    "write_identity_submission",
]
