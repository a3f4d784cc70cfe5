"""Import TensorFlow without its start-up noise on a CPU machine: ``import quiet`` comes first.

TensorFlow's native libraries print banners before its own log level can apply ("All log
messages before absl::InitializeLog() ...", "oneDNN custom operations are on", "Could not find
cuda drivers", "failed call to cuInit", "This TensorFlow binary is optimized ..."), once per
library. This module sets the usual environment variables, then imports TensorFlow and lists
its devices with the process's stderr sent to a temporary file, and writes back every line that
is not one of those known banners: real errors and warnings still show.
"""

import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

_BANNERS = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|cpu_feature_guard|This TensorFlow binary is optimized|To enable the following instructions"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning"
)


def _import_tensorflow_quietly():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit attempt happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            kept = [
                line
                for line in log.read().decode("utf-8", "replace").splitlines()
                if not _BANNERS.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


try:
    _import_tensorflow_quietly()
except ImportError:  # TensorFlow missing: the package's own import says so later
    pass
