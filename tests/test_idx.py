"""keras_margins.datasets.idx: IDX files written byte by byte from the format's definition."""

import gzip
import struct

import numpy as np
import pytest

from keras_margins import datasets
from tests.datasets_support import _idx_bytes


def test_read_idx_uint8_images_and_gzip(tmp_path):
    values = [[[0, 1, 2], [3, 4, 255]], [[9, 8, 7], [6, 5, 4]]]
    raw = _idx_bytes(0x08, (2, 2, 3), bytes(v for img in values for row in img for v in row))
    plain = tmp_path / "x-idx3-ubyte"
    plain.write_bytes(raw)
    packed = tmp_path / "x-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(raw))
    for path in (plain, packed):
        got = datasets.read_idx(path)
        assert got.dtype == np.uint8 and got.shape == (2, 2, 3)
        np.testing.assert_array_equal(got, np.array(values))


def test_read_idx_big_endian_int32_and_float64(tmp_path):
    ints = [1, -2, 70000]
    path = tmp_path / "ints.idx"
    path.write_bytes(_idx_bytes(0x0C, (3,), b"".join(struct.pack(">i", v) for v in ints)))
    got = datasets.read_idx(path)
    assert got.dtype == np.int32 and got.dtype.isnative
    assert got.tolist() == ints
    floats = [[0.5, -1.25], [3e10, 0.0]]
    path = tmp_path / "floats.idx"
    path.write_bytes(
        _idx_bytes(0x0E, (2, 2), b"".join(struct.pack(">d", v) for r in floats for v in r))
    )
    np.testing.assert_array_equal(datasets.read_idx(path), np.array(floats))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "two zero bytes"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "two zero bytes"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "unknown data type code 0x42"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 2]), "truncated header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3]), "4 bytes of data"),  # one byte short
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "holds 2 bytes"),  # one byte too many
        (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6], "gzip"),  # truncated
    ],
)
def test_read_idx_corrupt_file_raises_clear_error(tmp_path, raw, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="Corrupt IDX file") as info:
        datasets.read_idx(path)
    assert message in str(info.value) and "bad.idx" in str(info.value)
