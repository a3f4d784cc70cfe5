"""Real-data loaders that work on a machine with no download.

* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (always available).
* :func:`load_fashion_mnist` -- Keras's downloader when online, else the Debian package
  ``dataset-fashion-mnist``, else the digits; the result says which source was used.
* :func:`open_set_split` -- "train on some classes, verify on unseen ones".
* :func:`load_glyphs` -- an open-set benchmark with many identities: characters rendered from the
  fonts matplotlib ships plus those installed on the machine (each character an identity, each
  font a sample), cached.

Images come back as float32 in ``[0, 1]`` with shape ``(N, H, W, 1)`` (or ``(N, H * W)`` with
``flat=True``); labels as int32.

Modules: :mod:`.idx` (IDX reader), :mod:`.fashion_mnist` (Fashion-MNIST and the digits),
:mod:`.splits` (the :class:`Dataset` / :class:`OpenSetSplit` containers and
:func:`open_set_split`), :mod:`.glyphs` (fonts, rendering, cache).
"""

from keras_margins.datasets.fashion_mnist import (
    DATA_DIR_ENV,  # noqa: F401 (environment variables and paths users may set or read)
    DEBIAN_FASHION_MNIST_DIR,  # noqa: F401 (environment variables and paths users may set or read)
    FASHION_MNIST_CLASSES,
    load_digits,
    load_fashion_mnist,
)
from keras_margins.datasets.glyphs import (
    FONT_DIRS_ENV,  # noqa: F401 (environment variables and paths users may set or read)
    FONT_PACKAGES,  # noqa: F401 (environment variables and paths users may set or read)
    GLYPH_CHARACTERS,
    SYSTEM_FONT_DIRS,  # noqa: F401 (environment variables and paths users may set or read)
    bundled_font_dir,
    find_fonts,
    font_set,
    load_glyphs,
)
from keras_margins.datasets.idx import read_idx
from keras_margins.datasets.splits import Dataset, OpenSetSplit, open_set_split

__all__ = [
    "Dataset",
    "OpenSetSplit",
    "FASHION_MNIST_CLASSES",
    "GLYPH_CHARACTERS",
    "bundled_font_dir",
    "find_fonts",
    "font_set",
    "load_digits",
    "load_fashion_mnist",
    "load_glyphs",
    "open_set_split",
    "read_idx",
]
