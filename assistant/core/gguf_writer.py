"""GGUF writer: metadata of every value type, the tensor table, aligned tensor data.

Used by ``assistant quantize`` and by the tests to make small model files. Output follows
llama.cpp's rules: GGUF v3, little-endian, ``general.alignment`` honoured (default 32)
for the data section and every tensor offset, tensors in the order given.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import BinaryIO, Callable

import numpy as np
import numpy.typing as npt

from .gguf import (DEFAULT_ALIGNMENT, GGML_TYPES, T_ARRAY, T_BOOL, T_FLOAT32, T_FLOAT64, T_INT8, T_INT16,
                   T_INT32, T_INT64, T_STRING, T_UINT8, T_UINT16, T_UINT32, T_UINT64, GGUFError)

_DTYPE_TO_T: dict[str, int] = {
    "uint8": T_UINT8, "int8": T_INT8, "uint16": T_UINT16, "int16": T_INT16, "uint32": T_UINT32,
    "int32": T_INT32, "float32": T_FLOAT32, "bool": T_BOOL, "uint64": T_UINT64, "int64": T_INT64,
    "float64": T_FLOAT64,
}
_FMT: dict[int, str] = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I", T_INT32: "<i",
    T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def value_type_of(value: object) -> int:
    """The GGUF type a Python value is written as when no type is given."""
    if isinstance(value, bool):
        return T_BOOL
    if isinstance(value, int):
        return T_INT32 if -(1 << 31) <= value < (1 << 31) else T_INT64
    if isinstance(value, float):
        return T_FLOAT32
    if isinstance(value, str):
        return T_STRING
    if isinstance(value, (list, np.ndarray)):
        return T_ARRAY
    raise GGUFError(f"cannot write a {type(value).__name__} as a GGUF value")


def encode_value(value: object, vtype: int) -> bytes:
    """Bytes of ``value`` as GGUF type ``vtype`` (without the type tag)."""
    if vtype in _FMT:
        return struct.pack(_FMT[vtype], value)
    if vtype == T_STRING:
        if not isinstance(value, str):
            raise GGUFError(f"expected a string, got {value!r}")
        return _string(value)
    if vtype == T_ARRAY:
        if isinstance(value, np.ndarray):
            et = _DTYPE_TO_T.get(str(value.dtype))
            if et is None:
                raise GGUFError(f"cannot write an array of {value.dtype}")
            data = value.astype(value.dtype.newbyteorder("<")).tobytes() if et != T_BOOL else value.astype(np.uint8).tobytes()
            return struct.pack("<IQ", et, value.shape[0]) + data
        if isinstance(value, list):
            if not value:
                return struct.pack("<IQ", T_INT32, 0)
            et = value_type_of(value[0])
            parts = [struct.pack("<IQ", et, len(value))]
            for v in value:
                parts.append(encode_value(v, et))
            return b"".join(parts)
    raise GGUFError(f"cannot write value type {vtype}")


class TensorToWrite:
    def __init__(self, name: str, shape: tuple[int, ...], type_id: int, data: npt.NDArray[np.uint8]) -> None:
        self.name = name
        self.shape = shape  # numpy order
        self.type_id = type_id
        self.data = data


def write_gguf(path: str, metadata: list[tuple[str, int, object]], tensors: list[TensorToWrite],
               progress: Callable[[int, int], None] | None = None) -> None:
    """Write a GGUF v3 file atomically (temporary file in the same directory, then rename)."""
    alignment = DEFAULT_ALIGNMENT
    for key, vtype, value in metadata:
        if key == "general.alignment":
            if not isinstance(value, int):
                raise GGUFError("general.alignment must be an integer")
            alignment = value
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gguf-", suffix=".partial", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, metadata, tensors, alignment, progress)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write(f: BinaryIO, metadata: list[tuple[str, int, object]], tensors: list[TensorToWrite], alignment: int,
           progress: Callable[[int, int], None] | None) -> None:
    f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, vtype, value in metadata:
        f.write(_string(key) + struct.pack("<I", vtype) + encode_value(value, vtype))
    offset = 0
    offsets: list[int] = []
    for t in tensors:
        block, bsize = GGML_TYPES[t.type_id][1], GGML_TYPES[t.type_id][2]
        n_el = 1
        for s in t.shape:
            n_el *= s
        want = n_el // block * bsize
        if t.data.size != want:
            raise GGUFError(f"tensor {t.name!r}: {t.data.size} bytes given, {want} expected")
        dims = list(reversed(t.shape))
        f.write(_string(t.name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", x) for x in dims)
                + struct.pack("<IQ", t.type_id, offset))
        offsets.append(offset)
        offset += want + (-want) % alignment
    pos = f.tell()
    f.write(b"\0" * ((-pos) % alignment))
    total = len(tensors)
    for i, t in enumerate(tensors):
        f.write(t.data.tobytes())
        pad = (-t.data.size) % alignment
        if pad:
            f.write(b"\0" * pad)
        if progress is not None:
            progress(i + 1, total)
