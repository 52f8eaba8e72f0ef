"""GGUF reader: one read-only memory map, a validated header, zero-copy tensor views.

The file is mapped once with :mod:`mmap`; tensor data is exposed as ``numpy`` views into
the map, so opening a model reads only the header (metadata, vocabulary, tensor table),
never the weights. Every count and length read from the header is checked against the
bytes that remain before anything is allocated, so a hostile or truncated file raises
:class:`GGUFError` naming the problem and the byte offset instead of crashing, hanging or
allocating gigabytes.

Metadata values are Python ``int``/``float``/``bool``/``str``; arrays of numbers become
``numpy`` arrays (one bulk copy each: see docs/performance.md, "Opening a model") and arrays
of strings become ``list[str]``.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final

import numpy as np
import numpy.typing as npt

GGUF_MAGIC: Final = b"GGUF"
SUPPORTED_VERSIONS: Final = (2, 3)
DEFAULT_ALIGNMENT: Final = 32
MAX_DIMS: Final = 4
MAX_NESTING: Final = 8
# A key or tensor name longer than this is certainly hostile (llama.cpp caps names at 64).
MAX_NAME_BYTES: Final = 65536

# Metadata value types (gguf_type).
T_UINT8: Final = 0
T_INT8: Final = 1
T_UINT16: Final = 2
T_INT16: Final = 3
T_UINT32: Final = 4
T_INT32: Final = 5
T_FLOAT32: Final = 6
T_BOOL: Final = 7
T_STRING: Final = 8
T_ARRAY: Final = 9
T_UINT64: Final = 10
T_INT64: Final = 11
T_FLOAT64: Final = 12

# struct format and numpy dtype of each fixed-size value type.
_SCALAR_FORMATS: Final[dict[int, str]] = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
    T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q",
    T_FLOAT64: "<d",
}
_SCALAR_DTYPES: Final[dict[int, str]] = {
    T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2", T_UINT32: "<u4",
    T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1", T_UINT64: "<u8", T_INT64: "<i8",
    T_FLOAT64: "<f8",
}
_SCALAR_SIZES: Final[dict[int, int]] = {
    T_UINT8: 1, T_INT8: 1, T_UINT16: 2, T_INT16: 2, T_UINT32: 4, T_INT32: 4,
    T_FLOAT32: 4, T_BOOL: 1, T_UINT64: 8, T_INT64: 8, T_FLOAT64: 8,
}
VALUE_TYPE_NAMES: Final[dict[int, str]] = {
    T_UINT8: "uint8", T_INT8: "int8", T_UINT16: "uint16", T_INT16: "int16",
    T_UINT32: "uint32", T_INT32: "int32", T_FLOAT32: "float32", T_BOOL: "bool",
    T_STRING: "string", T_ARRAY: "array", T_UINT64: "uint64", T_INT64: "int64",
    T_FLOAT64: "float64",
}


class GGMLType:
    """ggml tensor type ids, as stored in the tensor table."""

    F32: Final = 0
    F16: Final = 1
    Q4_0: Final = 2
    Q4_1: Final = 3
    Q5_0: Final = 6
    Q5_1: Final = 7
    Q8_0: Final = 8
    Q8_1: Final = 9
    Q2_K: Final = 10
    Q3_K: Final = 11
    Q4_K: Final = 12
    Q5_K: Final = 13
    Q6_K: Final = 14
    Q8_K: Final = 15
    IQ4_NL: Final = 20
    IQ4_XS: Final = 23
    I8: Final = 24
    I16: Final = 25
    I32: Final = 26
    I64: Final = 27
    F64: Final = 28
    BF16: Final = 30


# type id -> (name, elements per block, bytes per block). One table, used everywhere.
GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    GGMLType.F32: ("F32", 1, 4),
    GGMLType.F16: ("F16", 1, 2),
    GGMLType.Q4_0: ("Q4_0", 32, 18),
    GGMLType.Q4_1: ("Q4_1", 32, 20),
    GGMLType.Q5_0: ("Q5_0", 32, 22),
    GGMLType.Q5_1: ("Q5_1", 32, 24),
    GGMLType.Q8_0: ("Q8_0", 32, 34),
    GGMLType.Q8_1: ("Q8_1", 32, 36),
    GGMLType.Q2_K: ("Q2_K", 256, 84),
    GGMLType.Q3_K: ("Q3_K", 256, 110),
    GGMLType.Q4_K: ("Q4_K", 256, 144),
    GGMLType.Q5_K: ("Q5_K", 256, 176),
    GGMLType.Q6_K: ("Q6_K", 256, 210),
    GGMLType.Q8_K: ("Q8_K", 256, 292),
    GGMLType.IQ4_NL: ("IQ4_NL", 32, 18),
    GGMLType.IQ4_XS: ("IQ4_XS", 256, 136),
    GGMLType.I8: ("I8", 1, 1),
    GGMLType.I16: ("I16", 1, 2),
    GGMLType.I32: ("I32", 1, 4),
    GGMLType.I64: ("I64", 1, 8),
    GGMLType.F64: ("F64", 1, 8),
    GGMLType.BF16: ("BF16", 1, 2),
}


def type_name(type_id: int) -> str:
    """Name of a ggml type id (``'Q4_K'``), or ``'type<N>'`` when unknown."""
    info = GGML_TYPES.get(type_id)
    return info[0] if info is not None else f"type{type_id}"


class GGUFError(ValueError):
    """A GGUF file is malformed, truncated, hostile or uses something we do not support."""


class TensorInfo:
    """One entry of the tensor table. ``shape`` is numpy order (outermost first)."""

    __slots__ = ("name", "dims", "type_id", "offset", "n_elements", "n_bytes")

    def __init__(self, name: str, dims: tuple[int, ...], type_id: int, offset: int,
                 n_elements: int, n_bytes: int) -> None:
        self.name = name
        self.dims = dims  # ggml order: dims[0] is the row length (innermost)
        self.type_id = type_id
        self.offset = offset  # absolute offset of the data in the file
        self.n_elements = n_elements
        self.n_bytes = n_bytes

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order: ``(rows, row_length)`` for a matrix."""
        return tuple(reversed(self.dims))

    @property
    def type_name(self) -> str:
        return type_name(self.type_id)

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, shape={self.shape}, type={self.type_name})"


class _Parser:
    """Bounds-checked little-endian reads from the mapped header."""

    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"truncated file: {what} needs {n} bytes at offset {self.pos}, "
                f"but only {self.size - self.pos} remain"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        v: int = struct.unpack_from("<I", self.buf, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v: int = struct.unpack_from("<Q", self.buf, self.pos)[0]
        self.pos += 8
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(what + " length")
        if n > self.size - self.pos:
            raise GGUFError(
                f"{what} at offset {start} claims {n} bytes, more than the "
                f"{self.size - self.pos} left in the file"
            )
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} at offset {start} is not valid UTF-8 ({e.reason})") from None

    def scalar(self, vtype: int, what: str) -> object:
        fmt = _SCALAR_FORMATS[vtype]
        n = _SCALAR_SIZES[vtype]
        self.need(n, what)
        v: object = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        if vtype == T_BOOL:
            return bool(v)
        return v

    def value(self, vtype: int, what: str, depth: int) -> object:
        if vtype in _SCALAR_FORMATS:
            return self.scalar(vtype, what)
        if vtype == T_STRING:
            return self.string(what)
        if vtype == T_ARRAY:
            return self.array(what, depth + 1)
        raise GGUFError(f"{what} at offset {self.pos - 4} has unknown value type {vtype}")

    def array(self, what: str, depth: int) -> object:
        if depth > MAX_NESTING:
            raise GGUFError(f"{what} at offset {self.pos}: arrays nested deeper than {MAX_NESTING}")
        start = self.pos
        etype = self.u32(what + " element type")
        count = self.u64(what + " element count")
        remaining = self.size - self.pos
        if etype in _SCALAR_SIZES:
            esize = _SCALAR_SIZES[etype]
            if count > remaining // esize:
                raise GGUFError(
                    f"{what} at offset {start} claims {count} elements of "
                    f"{VALUE_TYPE_NAMES[etype]}, more than the {remaining} bytes left"
                )
            arr = np.frombuffer(self.buf, dtype=_SCALAR_DTYPES[etype], count=count,
                                offset=self.pos).copy()
            self.pos += count * esize
            if etype == T_BOOL:
                return arr.astype(np.bool_)
            return arr
        if etype == T_STRING:
            # Each string needs at least its 8-byte length.
            if count > remaining // 8:
                raise GGUFError(
                    f"{what} at offset {start} claims {count} strings, more than the "
                    f"{remaining} bytes left could hold"
                )
            return self.string_array(count, what)
        if etype == T_ARRAY:
            if count > remaining // 12:
                raise GGUFError(
                    f"{what} at offset {start} claims {count} nested arrays, more than the "
                    f"{remaining} bytes left could hold"
                )
            out: list[object] = []
            for i in range(count):
                out.append(self.array(f"{what}[{i}]", depth + 1))
            return out
        raise GGUFError(f"{what} at offset {start} has unknown element type {etype}")

    def string_array(self, count: int, what: str) -> list[str]:
        # The hot loop of opening a model: 150k-262k vocabulary entries.
        buf = self.buf
        size = self.size
        pos = self.pos
        out: list[str] = []
        unpack = struct.unpack_from
        for i in range(count):
            if pos + 8 > size:
                raise GGUFError(f"truncated file: {what}[{i}] length at offset {pos}")
            n: int = unpack("<Q", buf, pos)[0]
            pos += 8
            if n > size - pos:
                raise GGUFError(
                    f"{what}[{i}] at offset {pos - 8} claims {n} bytes, more than the "
                    f"{size - pos} left in the file"
                )
            try:
                out.append(buf[pos:pos + n].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise GGUFError(f"{what}[{i}] at offset {pos} is not valid UTF-8 ({e.reason})") from None
            pos += n
        self.pos = pos
        return out


# A tensor as the header lists it: name, dims, ggml type, offset in the data, element count.
_TensorEntry = tuple[str, tuple[int, ...], int, int, int]


class GGUFFile:
    """An open GGUF file: ``metadata``, ``tensors`` (name -> :class:`TensorInfo`) and views.

    Opening parses and validates the header only; :meth:`tensor_data` returns zero-copy
    ``uint8`` views of the mapped file.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise GGUFError(f"cannot open {self.path!r}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < 24:
                raise GGUFError(f"{self.path!r} is {size} bytes, too small to be a GGUF file")
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.file_size = size
        self.metadata: dict[str, object] = {}
        self.value_types: dict[str, int] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.version = 0
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset = 0
        self._parse()
        # One uint8 view over the whole map; tensor views slice it (no copies).
        self._bytes: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8)

    def _parse(self) -> None:
        p = _Parser(self._map, self.file_size)
        n_tensors, n_kv = self._read_header(p)
        self._read_metadata(p, n_kv)
        self._read_alignment()
        infos = self._read_tensor_infos(p, n_tensors)
        data_start = p.pos + (-p.pos) % self.alignment
        if data_start > self.file_size:
            raise GGUFError(f"tensor data would start at {data_start}, past the end of the file")
        self.data_offset = data_start
        self._place_tensors(infos)

    def _read_header(self, p: _Parser) -> tuple[int, int]:
        """Magic and version; the tensor and metadata counts, checked against the file size."""
        magic = self._map[0:4]
        if magic != GGUF_MAGIC:
            raise GGUFError(f"bad magic {magic!r} at offset 0: not a GGUF file (expected b'GGUF')")
        p.pos = 4
        version = p.u32("version")
        if version not in SUPPORTED_VERSIONS:
            if version in (0x02000000, 0x03000000):
                raise GGUFError(f"big-endian GGUF (version field {version:#x}) is not supported")
            raise GGUFError(
                f"unknown GGUF version {version} at offset 4; supported: {SUPPORTED_VERSIONS}"
            )
        self.version = version
        n_tensors = p.u64("tensor count")
        n_kv = p.u64("metadata count")
        # Each key/value needs >= 8 (key length) + 4 (type) + 1 bytes; each tensor >= 8+4+8+4+8.
        if n_kv > (self.file_size - p.pos) // 13:
            raise GGUFError(f"metadata count {n_kv} at offset 16 exceeds what the file can hold")
        if n_tensors > (self.file_size - p.pos) // 32:
            raise GGUFError(f"tensor count {n_tensors} at offset 8 exceeds what the file can hold")
        return n_tensors, n_kv

    def _read_metadata(self, p: _Parser, n_kv: int) -> None:
        for _ in range(n_kv):
            key_off = p.pos
            key = p.string("metadata key")
            if len(key) > MAX_NAME_BYTES:
                raise GGUFError(f"metadata key at offset {key_off} is {len(key)} bytes long")
            if key in self.metadata:
                raise GGUFError(f"duplicate metadata key {key!r} at offset {key_off}")
            vtype = p.u32(f"type of {key!r}")
            if vtype not in VALUE_TYPE_NAMES:
                raise GGUFError(f"metadata {key!r} at offset {p.pos - 4} has unknown value type {vtype}")
            self.metadata[key] = p.value(vtype, f"metadata {key!r}", 0)
            self.value_types[key] = vtype

    def _read_alignment(self) -> None:
        align_obj = self.metadata.get("general.alignment")
        if align_obj is not None:
            if self.value_types["general.alignment"] != T_UINT32:
                raise GGUFError("general.alignment must be a uint32")
            align = int(str(align_obj))
            if align <= 0 or align & (align - 1) != 0 or align > 1 << 20:
                raise GGUFError(f"general.alignment {align} is not a power of two in 1..2^20")
            self.alignment = align

    def _read_tensor_infos(self, p: _Parser, n_tensors: int) -> list[_TensorEntry]:
        """``(name, dims, type, offset in the data, elements)`` of each tensor, in file order."""
        infos: list[_TensorEntry] = []
        names: set[str] = set()
        for i in range(n_tensors):
            t_off = p.pos
            name = p.string(f"tensor {i} name")
            if len(name) > MAX_NAME_BYTES:
                raise GGUFError(f"tensor name at offset {t_off} is {len(name)} bytes long")
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r} at offset {t_off}")
            names.add(name)
            dims, n_el = self._read_dims(p, name, t_off)
            type_id = p.u32(f"tensor {name!r} type")
            if type_id not in GGML_TYPES:
                raise GGUFError(
                    f"tensor {name!r} at offset {t_off} has unknown ggml type {type_id}"
                )
            rel = p.u64(f"tensor {name!r} offset")
            infos.append((name, dims, type_id, rel, n_el))
        return infos

    def _read_dims(self, p: _Parser, name: str, t_off: int) -> tuple[tuple[int, ...], int]:
        """A tensor's dimensions and element count."""
        n_dims = p.u32(f"tensor {name!r} dimension count")
        if n_dims == 0 or n_dims > MAX_DIMS:
            raise GGUFError(
                f"tensor {name!r} at offset {t_off} has {n_dims} dimensions; 1..{MAX_DIMS} allowed"
            )
        dims_list: list[int] = []
        n_el = 1
        for _d in range(n_dims):
            d = p.u64(f"tensor {name!r} dimension")
            if d == 0:
                raise GGUFError(f"tensor {name!r} at offset {t_off} has a zero dimension")
            n_el *= d
            if n_el >= 1 << 62:
                raise GGUFError(f"tensor {name!r} at offset {t_off}: dimensions overflow")
            dims_list.append(d)
        return tuple(dims_list), n_el

    def _place_tensors(self, infos: list[_TensorEntry]) -> None:
        """Check that each tensor's data is aligned and inside the file; fill ``tensors``."""
        data_start = self.data_offset
        data_size = self.file_size - data_start
        for name, dims, type_id, rel, n_el in infos:
            tname, block, bsize = GGML_TYPES[type_id]
            if dims[0] % block != 0:
                raise GGUFError(
                    f"tensor {name!r}: row length {dims[0]} is not a multiple of the "
                    f"{tname} block size {block}"
                )
            n_bytes = n_el // block * bsize
            if rel % self.alignment != 0:
                raise GGUFError(
                    f"tensor {name!r}: data offset {rel} is not aligned to {self.alignment}"
                )
            if rel + n_bytes > data_size:
                raise GGUFError(
                    f"tensor {name!r}: data [{data_start + rel}, {data_start + rel + n_bytes}) "
                    f"lies outside the file ({self.file_size} bytes)"
                )
            self.tensors[name] = TensorInfo(name, dims, type_id, data_start + rel, n_el, n_bytes)

    # ----------------------------------------------------------------- metadata access
    def get(self, key: str, default: object = None) -> object:
        """The raw metadata value of ``key`` or ``default``."""
        return self.metadata.get(key, default)

    def get_str(self, key: str, default: str = "") -> str:
        v = self.metadata.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise GGUFError(f"metadata {key!r} should be a string, got {type(v).__name__}")
        return v

    def get_int(self, key: str, default: int = 0) -> int:
        v = self.metadata.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise GGUFError(f"metadata {key!r} should be an integer, got {v!r}")
        return v

    def get_float(self, key: str, default: float = 0.0) -> float:
        v = self.metadata.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GGUFError(f"metadata {key!r} should be a number, got {v!r}")
        return float(v)

    def get_bool(self, key: str, default: bool = False) -> bool:
        v = self.metadata.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise GGUFError(f"metadata {key!r} should be a bool, got {v!r}")
        return v

    def get_strings(self, key: str) -> list[str]:
        v = self.metadata.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v[:1]):
            raise GGUFError(f"metadata {key!r} should be an array of strings")
        out: list[str] = v
        return out

    def get_numbers(self, key: str) -> npt.NDArray[np.generic] | None:
        v = self.metadata.get(key)
        if v is None:
            return None
        if not isinstance(v, np.ndarray):
            raise GGUFError(f"metadata {key!r} should be an array of numbers")
        return v

    @property
    def architecture(self) -> str:
        return self.get_str("general.architecture", "")

    def _page_span(self, name: str) -> tuple[int, int] | None:
        """The page-aligned byte range of the mapping holding tensor ``name``."""
        info = self.tensors.get(name)
        if info is None:
            return None
        page = mmap.PAGESIZE
        start = info.offset // page * page
        end = min(len(self._map), -(-(info.offset + info.n_bytes) // page) * page)
        return start, end

    def _drop(self, start: int, end: int) -> None:
        if end <= start:
            return
        try:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (AttributeError, OSError, ValueError):
            pass

    def release_pages(self, keep: str = "") -> None:
        """Tell the kernel we are done with the mapped pages read so far (they are clean
        file pages: dropping them frees memory, and touching them again re-reads the file),
        except those of tensor ``keep``."""
        span = self._page_span(keep) if keep else None
        if span is None:
            self._drop(0, len(self._map))
        else:
            self._drop(0, span[0])
            self._drop(span[1], len(self._map))

    def release_tensor(self, name: str, start: int = 0, stop: int = -1) -> None:
        """:meth:`release_pages` for one tensor's bytes (or bytes ``start .. stop`` of it), once
        they have been prepared: preparing a model then never holds the whole file and all
        prepared weights at once."""
        span = self._page_span(name)
        if span is None:
            return
        if start == 0 and stop < 0:
            self._drop(*span)
            return
        base = self.tensors[name].offset
        page = mmap.PAGESIZE
        self._drop(max(span[0], (base + start) // page * page), min(span[1], -(-(base + stop) // page) * page))

    def touch_tensor(self, name: str) -> None:
        """Fault in every page of one tensor's bytes now (one read per page).

        For a tensor read row by row for the life of the model (the token embedding): with
        its pages resident from the start, resident memory does not creep upward as each new
        token id's row is first looked up.
        """
        span = self._page_span(name)
        if span is not None:
            np.bitwise_or.reduce(self._bytes[span[0]:span[1]:mmap.PAGESIZE])

    # ----------------------------------------------------------------- tensor access
    def tensor_info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise GGUFError(f"tensor {name!r} is missing from {self.path!r}")
        return info

    def tensor_data(self, name: str) -> npt.NDArray[np.uint8]:
        """Zero-copy ``uint8`` view of a tensor's raw bytes."""
        info = self.tensor_info(name)
        return self._bytes[info.offset:info.offset + info.n_bytes]


def open_gguf(path: str) -> GGUFFile:
    """Open and validate a GGUF file (header only; weights stay on disk until touched)."""
    return GGUFFile(path)
