"""Reader for MXNet's ``.params`` files (an NDArray list), written here so that MXNet is not a dependency.

Layout (little-endian), as MXNet 1.x writes it with ``mx.nd.save`` / ``Module.save_checkpoint``:
``<Q`` magic 0x112, ``<Q`` reserved, ``<Q`` array count, then per array ``<I`` 0xF993FAC9 (NDArray v2 magic),
``<i`` storage type (0 = dense), ``<I`` ndim, ``<q`` x ndim shape, ``<ii`` device type and id, ``<i`` dtype,
raw data; then ``<Q`` name count and per name ``<Q`` length + UTF-8 bytes (``arg:<name>`` or ``aux:<name>``).
Only dense arrays are supported (the only kind model checkpoints hold).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_LIST_MAGIC = 0x112
_NDARRAY_V2_MAGIC = 0xF993FAC9
_DENSE = 0
# MXNet dtype flags -> numpy dtypes (mshadow's type flags).
_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


class MXNetParamsError(ValueError):
    """The file is not a readable MXNet NDArray list; the message names the file and what is wrong."""


class _Cursor:
    """Bounds-checked sequential reads from a byte string."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.offset, self.path = data, 0, path

    def take(self, count: int) -> bytes:
        if count < 0 or self.offset + count > len(self.data):
            raise MXNetParamsError(f"{self.path}: truncated MXNet params file (wanted {count} bytes at "
                                   f"offset {self.offset}, file has {len(self.data)})")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def _read_array(cursor: _Cursor, index: int) -> np.ndarray:
    magic, storage, ndim = cursor.unpack("<IiI")
    if magic != _NDARRAY_V2_MAGIC:
        raise MXNetParamsError(f"{cursor.path}: array {index} has magic {magic:#x}, expected "
                               f"{_NDARRAY_V2_MAGIC:#x} (only NDArray v2 files are supported)")
    if storage != _DENSE:
        raise MXNetParamsError(f"{cursor.path}: array {index} has sparse storage type {storage}")
    if ndim > 8:
        raise MXNetParamsError(f"{cursor.path}: array {index} claims {ndim} dimensions")
    shape = cursor.unpack(f"<{ndim}q")
    cursor.unpack("<ii")  # device type and id: irrelevant on load
    (flag,) = cursor.unpack("<i")
    if flag not in _DTYPES or any(s < 0 for s in shape):
        raise MXNetParamsError(f"{cursor.path}: array {index} has dtype flag {flag} / shape {shape}")
    dtype = np.dtype(_DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(cursor.take(count * dtype.itemsize), dtype=dtype).reshape(shape).copy()


def read_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every named array of an MXNet ``.params`` file.

    Args:
        path: the file.

    Returns:
        Ordered ``{name: array}`` with the ``arg:`` / ``aux:`` prefixes kept (they tell learned weights from
        BatchNorm running statistics).

    Raises:
        MXNetParamsError: wrong magic, truncated data, unsupported storage or dtype, names that do not match
            the arrays, duplicate names, or bytes left over after the name table.
    """
    path = Path(path)
    cursor = _Cursor(path.read_bytes(), path)
    magic, _reserved, count = cursor.unpack("<QQQ")
    if magic != _LIST_MAGIC:
        raise MXNetParamsError(f"{path}: not an MXNet params file (magic {magic:#x}, expected "
                               f"{_LIST_MAGIC:#x})")
    arrays = [_read_array(cursor, i) for i in range(count)]
    (name_count,) = cursor.unpack("<Q")
    if name_count != count:
        raise MXNetParamsError(f"{path}: {count} arrays but {name_count} names")
    names = []
    for _ in range(name_count):
        (length,) = cursor.unpack("<Q")
        names.append(cursor.take(length).decode("utf-8"))
    if cursor.offset != len(cursor.data):
        raise MXNetParamsError(f"{path}: {len(cursor.data) - cursor.offset} unexpected bytes after the "
                               "name table")
    if len(set(names)) != len(names):
        raise MXNetParamsError(f"{path}: duplicate array names")
    return dict(zip(names, arrays, strict=True))
