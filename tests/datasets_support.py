"""Helpers shared by the dataset test modules (not a test module)."""

import os
import struct

import pytest

from keras_margins import datasets


def _idx_bytes(code, shape, payload):
    """An IDX file from the format's definition: 0, 0, type code, ndim, big-endian sizes, data."""
    header = bytes([0, 0, code, len(shape)])
    for size in shape:
        header += struct.pack(">I", size)
    return header + payload


ALL_FONTS = datasets.find_fonts()


def _font(name):
    for path in ALL_FONTS:
        if os.path.basename(path) == name:
            return path
    pytest.skip(f"font {name} not installed (apt-get install -y {datasets.FONT_PACKAGES})")


def _fresh_machine(monkeypatch, tmp_path):
    """No system fonts and no Debian datasets: only what the pip dependencies bring."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv(datasets.FONT_DIRS_ENV, str(empty))
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(empty))
    monkeypatch.setenv("KERAS_HOME", str(empty / "keras"))
    return empty
