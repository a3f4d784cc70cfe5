"""The IDX file format of MNIST and Fashion-MNIST: :func:`read_idx`."""

import gzip
import os

import numpy as np

__all__ = ["read_idx"]

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Read an IDX file (plain or gzip-compressed) into a NumPy array.

    The format: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions ``d``, then
    ``d`` big-endian uint32 sizes and the values, big-endian, in C order.

    Args:
        path: Path of the file; gzip compression is detected from its first bytes.

    Returns:
        The array, in native byte order.

    Raises:
        ValueError: If the file is not a valid IDX file (bad magic number, unknown type, size
            that does not match the header, truncated gzip stream).

    Examples:

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "labels.idx1-ubyte")
        >>> with open(path, "wb") as f:
        ...     _ = f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 9]))
        >>> read_idx(path).tolist()
        [7, 2, 9]
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise ValueError(
                f"Corrupt IDX file {path!r}: cannot decompress gzip data ({err})"
            ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"Corrupt IDX file {path!r}: the magic number must start with two zero bytes. "
            f"Received: {raw[:4].hex() or 'an empty file'}"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"Corrupt IDX file {path!r}: unknown data type code 0x{code:02x} in the magic number"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"Corrupt IDX file {path!r}: truncated header ({ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"Corrupt IDX file {path!r}: the header announces shape {shape} "
            f"({expected} bytes of data) but the file holds {len(raw) - header} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
