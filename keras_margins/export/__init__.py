"""Export the embedding model of a margin-trained network: SavedModel, TFLite and ONNX.

Training uses a two-input model (``[images, labels] -> logits``); serving needs only
``images -> embeddings``. The functions here find the embedding output inside a training model
(the ``embeddings`` input of its margin head), cut the head and the labels input away, and write
an artifact that runs without keras_margins, and even without Keras:

- :func:`get_embedding_model`: the Keras model ``images -> float32 (L2-normalized) embeddings``.
- :func:`export_saved_model`: a TensorFlow SavedModel with a ``serving_default`` signature
  (``images -> {"embeddings"}``) and, optionally, a ``classify`` signature returning the top-k
  class ids and cosines against the head's class centres.
- :func:`export_tflite`: a TensorFlow Lite flat buffer of the embedding signature.
- :func:`export_onnx`: an ONNX model through ``tf2onnx`` (optional dependency).

Every writer refuses an existing non-empty output path unless ``overwrite=True`` and builds the
artifact in a temporary location next to it, moving it into place only once it is complete, so
a failed export leaves nothing behind. An export never removes anything but a previous output
at ``path``: the current directory (``""``, ``"."``), any of its parents, a special file, a
directory where a file is written (TFLite, ONNX) and a file where a directory is written
(SavedModel) are a ``ValueError``, whatever ``overwrite`` says. These exporters need the
TensorFlow backend.

Modules: :mod:`.graph` finds the embedding tensor, :mod:`.embedding_model` cuts the embedding
model out, :mod:`.atomic` stages the writes, :mod:`.serving` builds the signatures and
:mod:`.exporters` holds the three writers.
"""

from keras_margins.export.embedding_model import get_embedding_model
from keras_margins.export.exporters import export_onnx, export_saved_model, export_tflite

__all__ = ["get_embedding_model", "export_saved_model", "export_tflite", "export_onnx"]
