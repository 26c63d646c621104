"""Arrow <-> numpy for the integrity hot paths, without pyarrow's pandas import.

pyarrow checks for pandas the first time a process calls ``pa.array``,
``Array.to_numpy``, ``pa.scalar`` or imports ``pyarrow.dataset`` (so also
``pq.read_table``): with pandas installed that import costs 0.3-0.4 s per
fresh process (pyarrow 26).  A seal or verify pays it once locally, but every
Ray worker pays it again before its first partition, which is most of a fresh
worker's fixed start (docs/performance.md, "Seal/verify on Ray").

These helpers view and build the buffers of fixed-width primitive arrays
directly (the Arrow columnar format: a validity bitmap and one little-endian
value buffer; booleans bit-packed, least significant bit first), and fall
back to pyarrow's own conversion for anything else (nulls, text, decimals),
which then pays the import as before.  Views are read-only, as
``to_numpy(zero_copy_only=True)`` gives.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

__all__ = ["from_numpy", "string_array", "to_numpy", "type_family"]

_LITTLE = sys.byteorder == "little"


def _numpy_dtype(t: pa.DataType) -> np.dtype | None:
    if pa.types.is_integer(t):
        return np.dtype(f"<{'i' if pa.types.is_signed_integer(t) else 'u'}{t.bit_width // 8}")
    if pa.types.is_floating(t) and t.bit_width in (32, 64):
        return np.dtype(f"<f{t.bit_width // 8}")
    return None


def to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``arr.to_numpy(zero_copy_only=False)``; a buffer view for integers, floats and booleans without nulls.

    A chunked array of several chunks is concatenated (one copy, as pyarrow does).
    """
    if isinstance(arr, pa.ChunkedArray):
        chunks = arr.chunks
        if len(chunks) <= 1:
            return to_numpy(chunks[0] if chunks else pa.nulls(0, arr.type))
        return np.concatenate([to_numpy(ch) for ch in chunks])
    n, off = len(arr), arr.offset
    if arr.null_count == 0 and _LITTLE:
        dtype = _numpy_dtype(arr.type)
        if dtype is not None:
            buf = arr.buffers()[1]
            return np.frombuffer(buf, dtype=dtype, count=n, offset=off * dtype.itemsize) if n else \
                np.empty(0, dtype=dtype)
        if pa.types.is_boolean(arr.type):
            if n == 0:
                return np.empty(0, dtype=bool)
            bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
            return np.unpackbits(bits, count=off + n, bitorder="little")[off:].view(bool)
    return arr.to_numpy(zero_copy_only=False)


def from_numpy(values: np.ndarray) -> pa.Array:
    """``pa.array(values)`` for a 1-D numeric or boolean numpy array, built on its buffer (no copy when contiguous)."""
    values = np.asarray(values)
    if values.ndim == 1 and _LITTLE and values.dtype.byteorder in "=<|":
        if values.dtype == bool:
            bits = np.packbits(values, bitorder="little")
            return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
        if values.dtype.kind in "iuf" and values.dtype.itemsize in (1, 2, 4, 8) and values.dtype != np.float16:
            values = np.ascontiguousarray(values)
            return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                         [None, pa.py_buffer(values)])
    return pa.array(values)


def string_array(values: list[str]) -> pa.Array:
    """A string array of a few Python strings (no nulls), built from its offsets and UTF-8 data."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def type_family(t: pa.DataType) -> str:
    """The label type a seal records: what a reader of the column would see, not its storage width.

    All integer widths (signed or not) are ``"integer"`` -- narrowing int64 to
    int32 changes no value.  Text is ``"string"`` (also dictionary-encoded
    text and every CSV column, which flipguard reads as text).  Floats keep
    their width (``"float64"`` -> ``"float32"`` rounds values), decimals their
    scale, booleans are ``"boolean"``; anything else is Arrow's type name.
    """
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view":
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_floating(t):
        return {16: "float16", 32: "float32", 64: "float64"}[t.bit_width]
    if pa.types.is_decimal(t):
        return f"decimal(scale={t.scale})"
    return str(t)
