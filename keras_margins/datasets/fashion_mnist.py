"""Fashion-MNIST from wherever it can be found, and scikit-learn's digits as the last resort.

:func:`load_fashion_mnist` tries Keras's downloader, then the Debian package
``dataset-fashion-mnist`` (or ``$KERAS_MARGINS_DATA_DIR/fashion-mnist``), then the digits
(:func:`load_digits`); the result says which source was used and why the others failed.
"""

import os
import socket

import numpy as np

from keras_margins._validation import check_choice, check_float, check_int
from keras_margins.datasets.idx import read_idx
from keras_margins.datasets.splits import Dataset, as_images

__all__ = ["FASHION_MNIST_CLASSES", "load_digits", "load_fashion_mnist"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "KERAS_MARGINS_DATA_DIR"


def load_digits(flat=False, test_size=0.3, seed=0):
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes), split.

    No download. Pixels are scaled from ``0..16`` to ``[0, 1]``; the split is stratified.

    Args:
        flat: Return ``(N, 64)`` vectors instead of ``(N, 8, 8, 1)`` images.
            Defaults to ``False``.
        test_size: Fraction of the samples in the test set, in ``(0, 1)``. Defaults to ``0.3``.
        seed: Seed of the split. Defaults to ``0``.

    Returns:
        A `Dataset` with ``source="digits"``.

    Examples:

        >>> data = load_digits()
        >>> data.x_train.shape[1:], data.source, data.num_classes
        ((8, 8, 1), 'digits', 10)
    """
    flat = bool(flat)
    test_size = check_float("test_size", test_size, 0.0, 1.0, low_open=True, high_open=True)
    seed = check_int("seed", seed, minimum=0)
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = bunch.images / 16.0
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return Dataset(
        as_images(x_train, flat),
        y_train,
        as_images(x_test, flat),
        y_test,
        source="digits",
        class_names=tuple(str(i) for i in range(10)),
    )


def _load_fashion_mnist_keras(timeout):
    """Keras's downloader (or its local copy under ``~/.keras/datasets``)."""
    import keras

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return keras.datasets.fashion_mnist.load_data()
    finally:
        socket.setdefaulttimeout(old)


def _idx_path(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{stem}[.gz] not found in {directory!r}")


def _load_fashion_mnist_debian(directory):
    """The IDX files of the Debian package ``dataset-fashion-mnist``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory!r} does not exist (install it with "
            "`sudo apt-get install -y dataset-fashion-mnist`)"
        )
    arrays = []
    for part in ("train", "t10k"):
        x = read_idx(_idx_path(directory, f"{part}-images-idx3-ubyte"))
        y = read_idx(_idx_path(directory, f"{part}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {part} files in {directory!r} do not match: images {x.shape}, "
                f"labels {y.shape}"
            )
        arrays.append((x, y))
    return tuple(arrays)


def load_fashion_mnist(
    source="auto", flat=False, data_dir=None, allow_download=True, download_timeout=20.0
):
    """Fashion-MNIST (70000 28x28 grayscale images of 10 clothing classes), from where it can.

    With ``source="auto"`` the sources are tried in this order, and the first that works is
    used: Keras's downloader (``keras.datasets.fashion_mnist.load_data()``, which also reads
    its copy under ``~/.keras/datasets``); the IDX files of the Debian package
    ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); scikit-learn's bundled
    digits (8x8 images, 10 classes, so the script still runs -- check ``source`` or the image
    shape). ``info["fallback_reasons"]`` says why each skipped source failed.

    Args:
        source: ``"auto"``, ``"keras"``, ``"debian"`` or ``"digits"``; a named source that
            fails raises its error. Defaults to ``"auto"``.
        flat: Return ``(N, H * W)`` vectors instead of ``(N, H, W, 1)`` images.
            Defaults to ``False``.
        data_dir: Folder of the IDX files. Defaults to ``None``:
            ``/usr/share/datasets/fashion-mnist``, or ``$KERAS_MARGINS_DATA_DIR/fashion-mnist``
            when that environment variable is set.
        allow_download: Try Keras's downloader in ``"auto"`` mode. Defaults to ``True``.
        download_timeout: Socket timeout of the download, in seconds. Defaults to ``20.0``.

    Returns:
        A `Dataset` (60000 training and 10000 test images for Fashion-MNIST), with ``source``
        set to the source used.

    Examples:

        >>> data = load_fashion_mnist(allow_download=False)
        >>> data.source in ("debian", "digits")
        True
    """
    check_choice("source", source, ("auto", "keras", "debian", "digits"))
    download_timeout = check_float("download_timeout", download_timeout, 0.0, low_open=True)
    flat = bool(flat)
    if data_dir is None:
        root = os.environ.get(DATA_DIR_ENV)
        directory = DEBIAN_FASHION_MNIST_DIR if not root else os.path.join(root, "fashion-mnist")
    else:
        directory = os.fspath(data_dir)
    if source == "digits":
        return load_digits(flat=flat)
    order = [source] if source != "auto" else (["keras"] if allow_download else []) + ["debian"]
    reasons = {}
    for name in order:
        try:
            if name == "keras":
                (x_train, y_train), (x_test, y_test) = _load_fashion_mnist_keras(download_timeout)
            else:
                (x_train, y_train), (x_test, y_test) = _load_fashion_mnist_debian(directory)
        except Exception as err:  # noqa: BLE001 -- any failure means "try the next source"
            if source != "auto":
                raise
            reasons[name] = f"{type(err).__name__}: {err}"
            continue
        return Dataset(
            as_images(x_train / 255.0, flat),
            np.asarray(y_train, dtype=np.int32),
            as_images(x_test / 255.0, flat),
            np.asarray(y_test, dtype=np.int32),
            source=name,
            class_names=FASHION_MNIST_CLASSES,
            info={"fallback_reasons": reasons, "data_dir": directory if name == "debian" else None},
        )
    data = load_digits(flat=flat)
    data.info["fallback_reasons"] = reasons
    return data
