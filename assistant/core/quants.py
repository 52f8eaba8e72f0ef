"""ggml block quantization: vectorized dequantizers for every common type, and quantizers.

Every dequantizer works on a ``(n_blocks, bytes_per_block)`` ``uint8`` view of the raw
tensor bytes (zero-copy out of the memory map) with whole-array numpy operations, and
performs the same float32 operations in the same order as ggml's reference code, so the
result is bit-for-bit what llama.cpp (and ``gguf.quants``) produce.

How the engine keeps weights (see :mod:`assistant.core.weights`):

* ``speed`` memory mode: each matrix is dequantized once, lazily on first use, to float32
  stored transposed ``(in, out)``: 4 bytes per weight resident, the layout numpy's BLAS
  streams fastest for one-row products.
* ``lean`` memory mode: each matrix is kept as int8 codes ``(in, out)`` plus float32
  per-block scales and minimums (1 byte + 8/32 bytes per weight, ~1.3 bytes/weight for
  32-element groups, 1.25-1.5 bytes for the K-quants' 16-element groups) and expanded tile
  by tile into a cache-resident float32 buffer for each product. The per-element value is
  ``code * scale + min``, which reproduces the dequantized weight exactly for every type
  whose decode is of that form: all but IQ4_NL's lookup table (see :func:`split_codes`).

Quantizers (:func:`quantize`) follow ggml's reference rounding for Q8_0, Q4_0, Q4_1, Q5_0
and Q5_1, matching ``gguf.quants.quantize`` byte for byte.
"""

from __future__ import annotations

from typing import Final, cast

import numpy as np
import numpy.typing as npt

from .gguf import GGML_TYPES, GGMLType, GGUFError, type_name

QK_K: Final = 256
F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]

_IQ4NL_VALUES: Final = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


class QuantError(GGUFError):
    """A tensor uses a quantization type we cannot (de)quantize."""


def _nibbles(qs: U8Array, n_blocks: int, half: int) -> U8Array:
    """Unpack ``(n_blocks, half)`` bytes into ``(n_blocks, 2*half)`` 4-bit values.

    ggml's layout puts the low nibbles of a block first, then the high nibbles.
    """
    out = np.empty((n_blocks, 2, half), dtype=np.uint8)
    np.bitwise_and(qs, np.uint8(0x0F), out=out[:, 0, :])
    np.right_shift(qs, np.uint8(4), out=out[:, 1, :])
    return out.reshape(n_blocks, 2 * half)


def _f16(col: U8Array) -> F32Array:
    """``(n_blocks, 2)`` bytes -> ``(n_blocks, 1)`` float32 from little-endian float16."""
    return np.ascontiguousarray(col).view(np.float16).astype(np.float32)


def _bits(qh: U8Array, n_blocks: int, n_bits: int) -> U8Array:
    """Little-endian bit unpacking: ``(n_blocks, n_bits//8)`` bytes -> ``(n_blocks, n_bits)``."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")[:, :n_bits]


def _lo_hi_into(qs: U8Array, codes: U8Array) -> None:
    """Unpack ``(n, 16)`` bytes into ``codes`` ``(n, 32)``: low nibbles, then high nibbles."""
    np.bitwise_and(qs, np.uint8(0x0F), out=codes[:, :16])
    np.right_shift(qs, np.uint8(4), out=codes[:, 16:])


def _high_bits_into(qh: U8Array, n: int, codes: U8Array) -> None:
    """OR the 5th bit of each of the 32 values (little-endian bit field ``qh``) into ``codes``."""
    bits = np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")  # (n, 32)
    np.left_shift(bits, np.uint8(4), out=bits)
    np.bitwise_or(codes, bits, out=codes)


def _scale_into(codes: npt.NDArray[np.generic], d: F32Array, m: F32Array | None, out: F32Array) -> F32Array:
    """``out = d * codes (+ m)`` in float32, the operation order of ggml's reference."""
    np.copyto(out, codes, casting="unsafe")  # exact integer -> float32
    np.multiply(out, d, out=out)
    if m is not None:
        np.add(out, m, out=out)
    return out


def _deq_iq4_nl(b: U8Array, n: int) -> F32Array:
    d = _f16(b[:, 0:2])
    table = np.array(_IQ4NL_VALUES, dtype=np.float32)
    q = table[_nibbles(b[:, 2:18], n, 16)]
    return d * q


def _scale_min_k4(sc: U8Array, n: int) -> tuple[U8Array, U8Array]:
    """Unpack the 12-byte, 8 x (6-bit scale, 6-bit min) field of Q4_K and Q5_K."""
    s = sc.reshape(n, 3, 4)
    a = s[:, 0, :]
    m = s[:, 1, :]
    md = s[:, 2, :]
    scales = np.concatenate([a & np.uint8(0x3F), (md & np.uint8(0x0F)) | ((a >> np.uint8(2)) & np.uint8(0x30))], axis=1)
    mins = np.concatenate([m & np.uint8(0x3F), (md >> np.uint8(4)) | ((m >> np.uint8(2)) & np.uint8(0x30))], axis=1)
    return scales, mins


def _deq_blocks(type_id: int, blocks: U8Array, n: int, out: F32Array) -> None:
    """Dequantize ``n`` blocks into ``out`` ``(n, block_size)``."""
    # Every linear block type shares one unpacking (split_codes), then d * code (+ m) per group.
    block = out.shape[1]
    split = split_codes(type_id, blocks.reshape(-1), n, block)
    if split is not None:
        codes, d, m = split  # (n, block), (n, block // g), same or None
        g = block // d.shape[1]
        ng = n * (block // g)
        _scale_into(codes.reshape(ng, g), d.reshape(ng, 1), m.reshape(ng, 1) if m is not None else None,
                    out.reshape(ng, g))
    elif type_id == GGMLType.IQ4_NL:
        out[...] = _deq_iq4_nl(blocks, n)
    else:
        raise QuantError(f"dequantizing {type_name(type_id)} is not supported")


SUPPORTED_TYPES: Final = (
    GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1,
    GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
    GGMLType.Q6_K, GGMLType.IQ4_NL,
)

# Rows per chunk when dequantizing big tensors: bounds the temporaries to a few MB.
_CHUNK_BLOCKS: Final = 1 << 13


def dequantize(type_id: int, raw: U8Array, shape: tuple[int, ...], name: str = "tensor") -> F32Array:
    """Dequantize raw ggml bytes to a float32 array of ``shape`` (numpy order).

    ``raw`` is the tensor's bytes (a zero-copy view is fine). Raises :class:`QuantError`
    naming the type and the tensor when the type is not supported.
    """
    info = GGML_TYPES.get(type_id)
    if info is None or type_id not in SUPPORTED_TYPES:
        raise QuantError(
            f"tensor {name!r} uses {type_name(type_id)}, which this engine cannot dequantize; "
            f"supported: {', '.join(type_name(t) for t in SUPPORTED_TYPES)}"
        )
    _tname, block, bsize = info
    n_el = 1
    for s in shape:
        n_el *= s
    if raw.size * block != n_el * bsize:
        raise QuantError(
            f"tensor {name!r}: {raw.size} bytes do not hold {n_el} {type_name(type_id)} values"
        )
    if type_id == GGMLType.F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if type_id == GGMLType.F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
    if type_id == GGMLType.BF16:
        wide = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
        return wide.view(np.float32).reshape(shape)
    n_blocks = n_el // block
    blocks = raw.reshape(n_blocks, bsize)
    out = np.empty((n_blocks, block), dtype=np.float32)
    for start in range(0, n_blocks, _CHUNK_BLOCKS):
        stop = min(n_blocks, start + _CHUNK_BLOCKS)
        _deq_blocks(type_id, blocks[start:stop], stop - start, out[start:stop])
    return out.reshape(shape)


def dequantize_transposed(type_id: int, raw: U8Array, rows: int, cols: int, name: str = "tensor") -> F32Array:
    """Dequantize a ``(rows, cols)`` matrix straight into its transpose ``(cols, rows)``.

    This is the layout the engine multiplies with (``x @ W_t``). For the 32-element block
    types the scale and minimum are applied with ``(n_blocks, 32, rows)`` broadcasting, so
    numpy's inner loops run along the long ``rows`` axis instead of 32 elements at a time,
    and no float32 transpose is needed. Values are bit-identical to :func:`dequantize`.
    """
    split = split_codes(type_id, raw, rows, cols, transposed=True)
    if split is None:
        return np.ascontiguousarray(dequantize(type_id, raw, (rows, cols), name).T)
    codes_t, d_t, m_t = split  # (cols, rows), (cols // g, rows), (cols // g, rows) or None
    g = cols // d_t.shape[0]
    out = np.empty((cols, rows), dtype=np.float32)
    np.copyto(out, codes_t, casting="unsafe")
    blocks = out.reshape(cols // g, g, rows)
    np.multiply(blocks, d_t[:, None, :], out=blocks)
    if m_t is not None:
        np.add(blocks, m_t[:, None, :], out=blocks)
    return out


# ---------------------------------------------------------------------- lean layout

def code_group(type_id: int) -> int:
    """Weights sharing one scale (and minimum) in :func:`split_codes`' form, 0 if none."""
    if type_id in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0,
                   GGMLType.Q4_K, GGMLType.Q5_K):
        return 32
    if type_id in (GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q6_K):
        return 16
    return 0


def _k_codes(type_id: int, b: U8Array, n: int) -> tuple[U8Array | npt.NDArray[np.int8], F32Array, F32Array | None]:
    """Codes ``(n, 256)`` and per-group scales/minimums ``(n, 256 // g)`` of ``n`` K-quant
    super-blocks, ggml's ``d * sc`` and ``-(dmin * m)`` products in float32."""
    if type_id in (GGMLType.Q4_K, GGMLType.Q5_K):
        d = _f16(b[:, 0:2])
        dmin = _f16(b[:, 2:4])
        sc, mn = _scale_min_k4(b[:, 4:16], n)
        scales = d * sc.astype(np.float32)  # (n, 8)
        mins = np.negative(dmin * mn.astype(np.float32))
        qs = b[:, 16:144] if type_id == GGMLType.Q4_K else b[:, 48:176]
        # 4 chunks of 32 bytes; each gives 32 low-nibble then 32 high-nibble values.
        q = _nibbles(qs.reshape(n * 4, 32), n * 4, 32).reshape(n, 8, 32)
        if type_id == GGMLType.Q5_K:
            hb = (b[:, 16:48].reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & np.uint8(1)
            np.bitwise_or(q, hb << np.uint8(4), out=q)
        return q.reshape(n, QK_K), scales, mins
    if type_id == GGMLType.Q6_K:
        d = _f16(b[:, 208:210])
        scales = d * np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)  # (n, 16)
        lo = _nibbles(b[:, 0:128].reshape(n * 2, 64), n * 2, 64).reshape(n, 2, 4, 32)
        hi = (b[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & np.uint8(3)
        q6 = (lo | (hi << np.uint8(4))).view(np.int8) - np.int8(32)
        return q6.reshape(n, QK_K), scales, None
    if type_id == GGMLType.Q3_K:
        sc = b[:, 96:108]
        d = _f16(b[:, 108:110])
        # 16 six-bit scales: low 4 bits from bytes 0..7 (low then high nibble), high 2 bits
        # from bytes 8..11 (four 2-bit fields each).
        low = np.concatenate([sc[:, 0:8] & np.uint8(0x0F), sc[:, 0:8] >> np.uint8(4)], axis=1)
        hs = sc[:, 8:12].reshape(n, 1, 4) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)
        high = (hs.reshape(n, 16) & np.uint8(3)) << np.uint8(4)
        scales = d * ((low | high).astype(np.int8) - np.int8(32)).astype(np.float32)
        ql = (b[:, 32:96].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & np.uint8(3)
        hb = (b[:, 0:32].reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & np.uint8(1)
        # ggml subtracts 4 where the high-mask bit is *clear*.
        q3 = ql.reshape(n, 16, 16).astype(np.int8) - ((hb ^ np.uint8(1)) << np.uint8(2)).reshape(n, 16, 16).astype(np.int8)
        return q3.reshape(n, QK_K), scales, None
    # Q2_K
    sc2 = b[:, 0:16]
    d = _f16(b[:, 80:82])
    dmin = _f16(b[:, 82:84])
    scales = d * (sc2 & np.uint8(0xF)).astype(np.float32)
    mins = np.negative(dmin * (sc2 >> np.uint8(4)).astype(np.float32))
    # Each 32-byte half holds four 2-bit planes: element order is (half, plane, byte).
    q2 = (b[:, 16:80].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & np.uint8(3)
    return q2.reshape(n, QK_K), scales, mins


def split_codes(type_id: int, raw: U8Array, rows: int, cols: int, transposed: bool = False
                ) -> tuple[npt.NDArray[np.int8], F32Array, F32Array | None] | None:
    """Split a matrix of a linear block type into integer codes and per-group scales/minimums.

    Returns ``(codes, scales, mins)`` with codes ``(rows, cols)`` int8 and scales/mins
    ``(rows, cols // g)`` float32, ``g`` = :func:`code_group` (32, or 16 for Q2_K, Q3_K and
    Q6_K; ``mins`` is None for the symmetric types), such that ``code * scale (+ min)`` is
    exactly :func:`dequantize`'s value. With ``transposed`` the arrays are ``(cols, rows)``
    and ``(cols // g, rows)``: the lean layout, filled a band of rows at a time so the
    unpacking temporaries stay small even for a 262k-row vocabulary. Returns ``None`` for
    other types.
    """
    g = code_group(type_id)
    if g == 0:
        return None
    if not transposed:
        return _split_rows(type_id, raw, rows, cols)
    _tname, block, bsize = GGML_TYPES[type_id]
    row_bytes = cols // block * bsize
    by_row = raw.reshape(rows, row_bytes)
    codes_t = np.empty((cols, rows), dtype=np.int8)
    d_t = np.empty((cols // g, rows), dtype=np.float32)
    m_t: F32Array | None = None
    band = max(1, _SPLIT_BAND_BYTES // max(1, row_bytes))
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        codes, d, m = _split_rows(type_id, by_row[r0:r1].reshape(-1), r1 - r0, cols)
        codes_t[:, r0:r1] = codes.T
        d_t[:, r0:r1] = d.T
        if m is not None:
            if m_t is None:
                m_t = np.empty((cols // g, rows), dtype=np.float32)
            m_t[:, r0:r1] = m.T
    return codes_t, d_t, m_t


# Raw bytes unpacked per band by split_codes(transposed=True): bounds its temporaries.
_SPLIT_BAND_BYTES: Final = 1 << 22


def _split_rows(type_id: int, raw: U8Array, rows: int, cols: int
                ) -> tuple[npt.NDArray[np.int8], F32Array, F32Array | None]:
    """:func:`split_codes` in row-major layout, for a type with a code group."""
    g = code_group(type_id)
    _tname, block, bsize = GGML_TYPES[type_id]
    nb = cols // g
    n_blocks = rows * cols // block
    b = raw.reshape(n_blocks, bsize)
    m: F32Array | None = None
    codes: npt.NDArray[np.int8]
    if block == QK_K:
        kc, d, m = _k_codes(type_id, b, n_blocks)
        codes = kc.view(np.int8) if kc.dtype == np.uint8 else cast(npt.NDArray[np.int8], kc)
        d = d.reshape(rows, nb)
        if m is not None:
            m = m.reshape(rows, nb)
    else:
        d = _f16(b[:, 0:2]).reshape(rows, nb)
        codes_u8: U8Array
        if type_id == GGMLType.Q8_0:
            codes_u8 = np.ascontiguousarray(b[:, 2:34])
        else:
            qs_start = {GGMLType.Q4_0: 2, GGMLType.Q4_1: 4, GGMLType.Q5_0: 6, GGMLType.Q5_1: 8}[type_id]
            qs = np.ascontiguousarray(b[:, qs_start:qs_start + 16])
            codes_u8 = np.empty((n_blocks, 32), dtype=np.uint8)
            _lo_hi_into(qs, codes_u8)
            if type_id in (GGMLType.Q5_0, GGMLType.Q5_1):
                _high_bits_into(b[:, qs_start - 4:qs_start], n_blocks, codes_u8)
            if type_id in (GGMLType.Q4_1, GGMLType.Q5_1):
                m = _f16(b[:, 2:4]).reshape(rows, nb)
        codes = codes_u8.view(np.int8)
        offset = {GGMLType.Q4_0: 8, GGMLType.Q5_0: 16}.get(type_id, 0)
        if offset:
            np.subtract(codes, np.int8(offset), out=codes)
    return codes.reshape(rows, cols), d, m


# ---------------------------------------------------------------------- quantizers

QUANTIZE_TYPES: Final[dict[str, int]] = {
    "q8_0": GGMLType.Q8_0, "q4_0": GGMLType.Q4_0, "q4_1": GGMLType.Q4_1,
    "q5_0": GGMLType.Q5_0, "q5_1": GGMLType.Q5_1, "f16": GGMLType.F16, "f32": GGMLType.F32,
}


def _round_away(x: F32Array) -> F32Array:
    """C's ``roundf``: halves away from zero (numpy rounds halves to even)."""
    a = np.floor(np.abs(x) + np.float32(0.5)).astype(np.float32)
    out: F32Array = np.copysign(a, x).astype(np.float32)
    return out


def _inverse(d: F32Array) -> F32Array:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _pack_nibbles(q: U8Array) -> U8Array:
    half = q.shape[1] // 2
    lo: U8Array = q[:, :half] & np.uint8(0x0F)
    hi: U8Array = (q[:, half:] & np.uint8(0x0F)) << np.uint8(4)
    return lo | hi


def _f16_bytes(x: F32Array) -> U8Array:
    return x.astype(np.float16).view(np.uint8).reshape(x.shape[0], 2)


def _signed_max(x: F32Array) -> F32Array:
    """The element of largest magnitude in each row, with its sign (first one on ties)."""
    idx = np.abs(x).argmax(axis=1).reshape(-1, 1)
    return np.take_along_axis(x, idx, axis=1)


def quantize_blocks(type_id: int, x: F32Array) -> U8Array:
    """Quantize float32 blocks ``(n_blocks, 32)`` into ``(n_blocks, bytes_per_block)``."""
    n = x.shape[0]
    if type_id == GGMLType.Q8_0:
        d = (np.abs(x).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
        q = _round_away(x * _inverse(d)).astype(np.int8).view(np.uint8)
        return np.concatenate([_f16_bytes(d), q], axis=1)
    if type_id in (GGMLType.Q4_0, GGMLType.Q5_0):
        levels = 8 if type_id == GGMLType.Q4_0 else 16
        d = (_signed_max(x) / np.float32(-levels)).astype(np.float32)
        top = 15 if type_id == GGMLType.Q4_0 else 31
        q = np.trunc(x * _inverse(d) + np.float32(levels + 0.5)).astype(np.float32)
        qi = np.clip(q, 0, top).astype(np.uint8)
        if type_id == GGMLType.Q4_0:
            return np.concatenate([_f16_bytes(d), _pack_nibbles(qi)], axis=1)
        qh = np.packbits(qi >> np.uint8(4), axis=1, bitorder="little")
        return np.concatenate([_f16_bytes(d), qh, _pack_nibbles(qi)], axis=1)
    if type_id in (GGMLType.Q4_1, GGMLType.Q5_1):
        top = 15 if type_id == GGMLType.Q4_1 else 31
        mx = x.max(axis=1, keepdims=True)
        mn = x.min(axis=1, keepdims=True)
        d = ((mx - mn) / np.float32(top)).astype(np.float32)
        q = np.trunc((x - mn) * _inverse(d) + np.float32(0.5)).astype(np.float32)
        qi = np.clip(q, 0, top).astype(np.uint8)
        if type_id == GGMLType.Q4_1:
            return np.concatenate([_f16_bytes(d), _f16_bytes(mn), _pack_nibbles(qi)], axis=1)
        qh = np.packbits(qi >> np.uint8(4), axis=1, bitorder="little")
        return np.concatenate([_f16_bytes(d), _f16_bytes(mn), qh, _pack_nibbles(qi)], axis=1)
    raise QuantError(f"quantizing to {type_name(type_id)} is not supported")


def quantize(type_id: int, x: F32Array) -> U8Array:
    """Quantize a float32 array (last axis a multiple of the block size) to raw bytes."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if type_id == GGMLType.F32:
        return x.reshape(-1).view(np.uint8)
    if type_id == GGMLType.F16:
        return x.astype(np.float16).reshape(-1).view(np.uint8)
    block = GGML_TYPES[type_id][1]
    if x.shape[-1] % block != 0:
        raise QuantError(f"row length {x.shape[-1]} is not a multiple of {block}")
    blocks = x.reshape(-1, block)
    out = np.empty((blocks.shape[0], GGML_TYPES[type_id][2]), dtype=np.uint8)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        stop = min(blocks.shape[0], start + _CHUNK_BLOCKS)
        out[start:stop] = quantize_blocks(type_id, blocks[start:stop])
    return out.reshape(-1)
