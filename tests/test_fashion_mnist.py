"""keras_margins.datasets.fashion_mnist: the digits, Fashion-MNIST sources and fallback order."""

import gzip
import os

import numpy as np
import pytest

from keras_margins import datasets
from keras_margins.datasets import fashion_mnist
from tests.datasets_support import _fresh_machine, _idx_bytes

DEBIAN_DIR = datasets.DEBIAN_FASHION_MNIST_DIR


DEBIAN_FILES = [
    f"{part}-{kind}-idx{n}-ubyte.gz"
    for part in ("train", "t10k")
    for kind, n in (("images", 3), ("labels", 1))
]


HAS_DEBIAN = all(os.path.exists(os.path.join(DEBIAN_DIR, f)) for f in DEBIAN_FILES)


NEEDS_DEBIAN = pytest.mark.skipif(
    not HAS_DEBIAN,
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_DIR} missing); "
    "install it with `apt-get install -y dataset-fashion-mnist`",
)


def test_load_digits_matches_sklearn_and_is_stratified():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = datasets.load_digits(test_size=0.25, seed=3)
    assert data.source == "digits" and data.num_classes == 10
    assert data.x_train.shape[1:] == (8, 8, 1) and data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert len(data.x_train) + len(data.x_test) == len(bunch.images)
    # Every returned image is a sklearn image scaled by 1/16, with its own label.
    lookup = {
        img.tobytes(): t for img, t in zip((bunch.images / 16.0).astype(np.float32), bunch.target)
    }
    for x, y in zip(data.x_test[..., 0], data.y_test):
        assert lookup[x.tobytes()] == y
    # Stratified: each class's share of the test set matches its share overall.
    np.testing.assert_allclose(
        np.bincount(data.y_test) / len(data.y_test),
        np.bincount(bunch.target) / len(bunch.target),
        atol=0.01,
    )
    flat = datasets.load_digits(flat=True, test_size=0.25, seed=3)
    np.testing.assert_array_equal(flat.x_train, data.x_train.reshape(-1, 64))
    (x_train, _), (x_test, _) = data
    assert x_train is data.x_train and x_test is data.x_test


def _write_fake_fashion(directory, n_train=6, n_test=4, gz=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, ndim in (("images", x, 3), ("labels", y, 1)):
            raw = _idx_bytes(0x08, arr.shape, arr.tobytes())
            name = f"{part}-{kind}-idx{ndim}-ubyte" + (".gz" if gz else "")
            (directory / name).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[part] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_folder(tmp_path, gz):
    arrays = _write_fake_fashion(tmp_path, gz=gz)
    data = datasets.load_fashion_mnist(source="debian", data_dir=tmp_path)
    assert data.source == "debian"
    np.testing.assert_allclose(data.x_train[..., 0] * 255.0, arrays["train"][0], atol=1e-4)
    np.testing.assert_array_equal(data.y_test, arrays["t10k"][1])
    assert data.class_names == datasets.FASHION_MNIST_CLASSES


@NEEDS_DEBIAN
def test_fashion_mnist_debian_package():
    data = datasets.load_fashion_mnist(source="debian")
    assert data.source == "debian"
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() < data.x_train.max() <= 1
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data.y_test), np.full(10, 1000))
    # The published first training labels of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress.
    assert data.y_train[:4].tolist() == [9, 0, 0, 3]


def test_fallback_order(tmp_path, monkeypatch):
    calls = []

    def offline(timeout):
        calls.append(timeout)
        raise ConnectionError("no network")

    monkeypatch.setattr(fashion_mnist, "_load_fashion_mnist_keras", offline)
    _write_fake_fashion(tmp_path)
    # 1. Keras fails -> the IDX folder.
    data = datasets.load_fashion_mnist(data_dir=tmp_path, download_timeout=3)
    assert data.source == "debian" and calls == [3.0]
    assert "ConnectionError" in data.info["fallback_reasons"]["keras"]
    # 2. Keras and the folder fail -> digits, with both reasons.
    empty = tmp_path / "empty"
    empty.mkdir()
    data = datasets.load_fashion_mnist(data_dir=empty)
    assert data.source == "digits" and data.x_train.shape[1:] == (8, 8, 1)
    assert set(data.info["fallback_reasons"]) == {"keras", "debian"}
    # 3. allow_download=False never calls Keras.
    calls.clear()
    assert datasets.load_fashion_mnist(data_dir=tmp_path, allow_download=False).source == "debian"
    assert calls == []
    # 4. A named source that fails raises instead of falling back.
    with pytest.raises(ConnectionError):
        datasets.load_fashion_mnist(source="keras")
    with pytest.raises(FileNotFoundError):
        datasets.load_fashion_mnist(source="debian", data_dir=empty)
    # 5. A corrupt file in the folder is a fallback reason in "auto", an error when named.
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x99\x01")
    data = datasets.load_fashion_mnist(data_dir=tmp_path, allow_download=False)
    assert data.source == "digits" and "Corrupt IDX" in data.info["fallback_reasons"]["debian"]
    with pytest.raises(ValueError, match="Corrupt IDX"):
        datasets.load_fashion_mnist(source="debian", data_dir=tmp_path)


def test_keras_success_is_used_first(monkeypatch, tmp_path):
    x = np.zeros((3, 28, 28), np.uint8)
    y = np.array([1, 2, 3], np.uint8)
    monkeypatch.setattr(
        fashion_mnist, "_load_fashion_mnist_keras", lambda timeout: ((x, y), (x, y))
    )
    _write_fake_fashion(tmp_path)
    data = datasets.load_fashion_mnist(data_dir=tmp_path)
    assert data.source == "keras" and data.y_train.tolist() == [1, 2, 3]


def test_fashion_mnist_data_dir_follows_the_environment(monkeypatch, tmp_path):
    _fresh_machine(monkeypatch, tmp_path)
    data = datasets.load_fashion_mnist(allow_download=False)
    assert data.source == "digits"
    assert str(tmp_path / "empty" / "fashion-mnist") in data.info["fallback_reasons"]["debian"]
