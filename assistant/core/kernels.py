"""Compute kernels on quantized weights, compiled by numba for the CPU they run on.

Left out of the mypyc build (numba compiles plain Python functions, not mypyc's), still
type-checked. Each kernel has a plain numpy twin with the same signature that runs where
numba cannot be imported (or ``ASSISTANT_NO_NUMBA=1``); tests check both against a float64
reference (tests/test_kernels.py).

Weight layout ("tiles"), built once at load by :mod:`assistant.core.weights`:

* ``codes``  ``(C, nb, g, W)`` int8: output rows in chunks of ``W`` = 64, input in ``nb``
  groups of ``g`` (32, or 16 for Q2_K/Q3_K/Q6_K). One chunk's codes are contiguous, so a
  thread streams them front to back and the inner loop runs across 64 outputs.
* ``scales`` ``(C, nb, W)`` float32 and ``mins`` ``(C, nb, W)`` (or ``(0, 0, 0)``): the weight is
  exactly ``code * scale + min``, ggml's dequantized value.
* F16 matrices: ``half`` ``(C, n_in, W)`` uint16, converted in the kernel.

See docs/performance.md for the measurements behind the layout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, Callable, Final, Iterator, TypeVar

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
SC = npt.NDArray[Any]  # block scales: float32, or float16 bits as uint16

W: Final = 64  # output rows per tile chunk
_FT = TypeVar("_FT", bound=Callable[..., Any])


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "assistant", "numba")


def _load_numba() -> Any:
    if os.environ.get("ASSISTANT_NO_NUMBA", "") in ("1", "true", "yes"):
        return None
    # Compiled kernels are cached on disk, once per CPU; set before numba reads its config.
    os.environ.setdefault("NUMBA_CACHE_DIR", _cache_dir())
    # OpenMP workers spin about 0.2 ms (not GNU's default of several) before sleeping: the
    # Python threads of prompt attention run between kernels (docs/performance.md, Threads).
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")
    try:
        import numba
    except Exception as err:  # noqa: BLE001 - any import failure means the numpy path
        logging.getLogger("assistant").warning(
            "numba cannot be imported (%s): the slower numpy kernels run instead", err)
        return None
    return numba


_numba: Any = _load_numba()
HAVE_NUMBA: Final = _numba is not None


def _scale_f32(v: Any) -> np.float32:
    """A block scale as float32: scales are float32, or float16 bits (uint16) where every
    scale of a matrix is exactly a float16 (half the bytes to stream)."""
    if isinstance(v, np.uint16):
        return np.float32(np.array(v, dtype=np.uint16).view(np.float16))
    return np.float32(v)


def _scale_intrinsic() -> Any:
    # numba has no float16 type; LLVM's half converts in one instruction (vcvtph2ps with F16C).
    from llvmlite import ir  # type: ignore[import-untyped]
    from numba.core import types
    from numba.core.extending import intrinsic

    @intrinsic
    def as_f32(typingctx: Any, v: Any) -> Any:
        if v == types.uint16:
            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        elif v == types.float32:
            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                return args[0]
        else:
            return None
        return types.float32(v), codegen
    return as_f32


if _numba is not None:
    _scale_f32 = _scale_intrinsic()  # noqa: F811


def _jit(parallel: bool) -> Callable[[_FT], _FT]:
    """numba's njit when available, else the function unchanged (the numpy twins are used)."""
    def wrap(fn: _FT) -> _FT:
        if _numba is None:
            return fn
        try:
            out: _FT = _numba.njit(parallel=parallel, fastmath=True, cache=True, nogil=True)(fn)
        except RuntimeError:  # no writable cache directory: compile in every process instead
            out = _numba.njit(parallel=parallel, fastmath=True, cache=False, nogil=True)(fn)
        return out
    return wrap


# Parallel kernels are entered by one thread at a time: numba's workqueue layer (where no
# OpenMP or TBB is installed) aborts the process on concurrent entry, and two models'
# products would compete for the same cores anyway.
_parallel = threading.Lock()


def _prange(n: int) -> range:
    return range(n)


prange: Callable[[int], range] = _numba.prange if _numba is not None else _prange


# ----------------------------------------------------------------------------- products

def _group_sum(x3: F32, codes: Any, t: int, b: int, c: int, acc: F32) -> None:
    """acc[o] = sum_j x3[t, b, j] * code(c, b, j, o): chosen by the codes' type when compiled."""
    raise NotImplementedError  # only the compiled overloads below run


def _group_sum_overload() -> None:
    from numba.core import types
    from numba.extending import overload

    @overload(_group_sum, inline="always")
    def impl(x3: Any, codes: Any, t: Any, b: Any, c: Any, acc: Any) -> Any:
        if codes.dtype == types.uint8:  # 4-bit: input j in the low nibble, j + g/2 in the high
            def nibbles(x3: Any, codes: Any, t: Any, b: Any, c: Any, acc: Any) -> Any:
                hg = codes.shape[2]
                for j in range(hg):
                    # byte = lo + 16 hi, so x_lo*lo + x_hi*hi = x_lo*byte + (x_hi - 16 x_lo)*hi:
                    # one vector op fewer per 32 weights than splitting out lo
                    x_lo = x3[t, b, j]
                    x_hi = x3[t, b, j + hg] - np.float32(16.0) * x_lo
                    for o in range(W):
                        # Float math splits the byte: numba widens integer ops to int64,
                        # which would halve the SIMD lanes.
                        qf = np.float32(codes[c, b, j, o])
                        acc[o] += x_lo * qf + x_hi * np.floor(qf * np.float32(0.0625))
            return nibbles

        def int8(x3: Any, codes: Any, t: Any, b: Any, c: Any, acc: Any) -> Any:
            for j in range(codes.shape[2]):
                xi = x3[t, b, j]
                for o in range(W):
                    acc[o] += xi * codes[c, b, j, o]
        return int8


if _numba is not None:
    _group_sum_overload()


@_jit(parallel=True)
def _matmul_nb(x3: F32, codes: Any, offset: np.float32, scales: SC, mins: SC, y: F32) -> None:
    # x3 (T, nb, g); codes (C, nb, g, W) int8, or 4-bit (C, nb, g/2, W) uint8 (see
    # _group_sum: one kernel per type, chosen when compiled); scales/mins (C, nb, W); y (T, C*W).
    # weight = (code - offset) * scale + min, the offset folded in per group via sum(x).
    # Codes are converted on the fly with the accumulators in registers, row after row over a
    # chunk still in cache (a kernel that expanded each group once for all rows measured no
    # faster: docs/performance.md).
    t_rows = x3.shape[0]
    n_chunks = codes.shape[0]
    nb = x3.shape[1]
    g = x3.shape[2]
    has_mins = mins.shape[0] > 0
    for c in prange(n_chunks):
        acc = np.empty(W, np.float32)
        out = np.empty(W, np.float32)
        for t in range(t_rows):
            out[:] = 0.0
            for b in range(nb):
                acc[:] = 0.0
                _group_sum(x3, codes, t, b, c, acc)
                xs = np.float32(0.0)
                for j in range(g):
                    xs += x3[t, b, j]
                shift = offset * xs
                if has_mins:
                    for o in range(W):
                        out[o] += (acc[o] - shift) * _scale_f32(scales[c, b, o]) + xs * _scale_f32(mins[c, b, o])
                else:
                    for o in range(W):
                        out[o] += (acc[o] - shift) * _scale_f32(scales[c, b, o])
            for o in range(W):
                y[t, c * W + o] = out[o]


def banded(x: F32, n_chunks: int, expand: Callable[[int, F32], None], y: F32) -> None:
    """``y = x @ W`` for many rows: ``expand(c0, part)`` writes chunks ``c0 ..`` as float32
    ``(n_in, n * W)`` into a cache-sized band, which BLAS multiplies into y's columns."""
    n_in = x.shape[1]
    band = max(1, min(n_chunks, BAND_ELEMS // (n_in * W)))
    buf = np.empty((n_in, band * W), dtype=np.float32)
    for c0 in range(0, n_chunks, band):
        n = min(band, n_chunks - c0)
        part = buf[:, :n * W]
        expand(c0, part)
        np.matmul(x, part, out=y[:, c0 * W:(c0 + n) * W])


# float32 weights expanded per band (4 MiB: stays in the CPU's caches).
BAND_ELEMS: Final = 1 << 20


def qmatmul(x: F32, codes: Any, offset: float, scales: SC, mins: SC, y: F32) -> None:
    """``y = x @ W`` for tile-layout weights: int8 codes ``(C, nb, g, W)`` (offset 0) or 4-bit
    ones ``(C, nb, g/2, W)`` with their offset (see :func:`pack_nibbles`). x ``(T, n_in)``
    float32 C-contiguous, y ``(T, C * W)`` float32, written in full."""
    if HAVE_NUMBA:
        _apply_threads()
        with _parallel:
            _matmul_nb(x.reshape(x.shape[0], codes.shape[1], -1), codes, np.float32(offset), scales, mins, y)
        return
    banded(x, codes.shape[0], expand_tiles(codes, offset, scales, mins), y)


def expand_tiles(codes: Any, offset: float, scales: SC, mins: SC) -> Callable[[int, F32], None]:
    """The band writer :func:`banded` takes, for int8 codes or 4-bit ones with their offset."""
    if codes.dtype == np.uint8:
        return lambda c0, part: q4dequant(codes, offset, scales, mins, c0, part)
    return lambda c0, part: qdequant(codes, scales, mins, c0, part)


def pack_nibbles(codes: I8, offset: int) -> U8:
    """``(C, nb, g, W)`` codes in ``-offset .. 15 - offset`` -> ``(C, nb, g/2, W)`` bytes: input
    ``j`` in the low nibble, ``j + g/2`` in the high one."""
    hg = codes.shape[2] // 2
    u = (codes.astype(np.int16) + offset).astype(np.uint8)
    return np.ascontiguousarray(u[:, :, :hg] | (u[:, :, hg:] << np.uint8(4)))


def unpack_nibbles(nibs: U8, offset: float) -> I8:
    """The inverse of :func:`pack_nibbles`."""
    lo = (nibs & np.uint8(15)).astype(np.int8) - np.int8(offset)
    hi = (nibs >> np.uint8(4)).astype(np.int8) - np.int8(offset)
    return np.ascontiguousarray(np.concatenate([lo, hi], axis=2))


# One thread: BLAS's threads multiply each band right after, and two pools must not fight.
@_jit(parallel=False)
def _qdequant_nb(codes: I8, scales: SC, mins: SC, c0: int, out4: F32) -> None:
    # out4 (nb, g, n, W): a view of the (nb*g, n*W) float32 output
    n = out4.shape[2]
    nb = codes.shape[1]
    g = codes.shape[2]
    has_mins = mins.shape[0] > 0
    for k in range(n):
        c = c0 + k
        for b in range(nb):
            for j in range(g):
                if has_mins:
                    for o in range(W):
                        out4[b, j, k, o] = codes[c, b, j, o] * _scale_f32(scales[c, b, o]) + _scale_f32(mins[c, b, o])
                else:
                    for o in range(W):
                        out4[b, j, k, o] = codes[c, b, j, o] * _scale_f32(scales[c, b, o])


@_jit(parallel=False)
def _q4dequant_nb(nibs: U8, offset: np.float32, scales: SC, mins: SC, c0: int, out4: F32) -> None:
    # out4 (nb, g, n, W): a view of the (nb*g, n*W) float32 output
    n = out4.shape[2]
    nb = nibs.shape[1]
    hg = nibs.shape[2]
    has_mins = mins.shape[0] > 0
    for k in range(n):
        c = c0 + k
        for b in range(nb):
            for j in range(hg):
                for o in range(W):
                    qf = np.float32(nibs[c, b, j, o])
                    hi = np.floor(qf * np.float32(0.0625))
                    m = _scale_f32(mins[c, b, o]) if has_mins else np.float32(0.0)
                    out4[b, j, k, o] = (qf - np.float32(16.0) * hi - offset) * _scale_f32(scales[c, b, o]) + m
                    out4[b, j + hg, k, o] = (hi - offset) * _scale_f32(scales[c, b, o]) + m


def q4dequant(nibs: U8, offset: float, scales: SC, mins: SC, c0: int, out: F32) -> None:
    """:func:`qdequant` for 4-bit codes packed two per byte."""
    nb, hg = nibs.shape[1], nibs.shape[2]
    n = out.shape[1] // W
    if HAVE_NUMBA:
        _q4dequant_nb(nibs, np.float32(offset), scales, mins, c0, out.reshape(nb, 2 * hg, n, W))
        return
    qdequant(unpack_nibbles(nibs[c0:c0 + n], offset), scales[c0:c0 + n],
             mins[c0:c0 + n] if mins.shape[0] > 0 else mins, 0, out)


def qdequant(codes: I8, scales: SC, mins: SC, c0: int, out: F32) -> None:
    """Chunks ``c0 .. c0 + out.shape[1] // W`` as float32 ``(n_in, n * W)`` into ``out``
    (prompt chunks multiply it with BLAS)."""
    nb, g = codes.shape[1], codes.shape[2]
    n = out.shape[1] // W
    out4 = out.reshape(nb, g, n, W)
    if HAVE_NUMBA:
        _qdequant_nb(codes, scales, mins, c0, out4)
        return
    np.copyto(out4, codes[c0:c0 + n].transpose(1, 2, 0, 3), casting="unsafe")
    out4 *= scales_f32(scales[c0:c0 + n]).transpose(1, 0, 2)[:, None, :, :]
    if mins.shape[0] > 0:
        out4 += scales_f32(mins[c0:c0 + n]).transpose(1, 0, 2)[:, None, :, :]


def scales_f32(a: SC) -> F32:
    """Block scales (float32, or float16 bits as uint16) as float32."""
    if a.dtype == np.uint16:
        return a.view(np.float16).astype(np.float32)
    return np.asarray(a, dtype=np.float32)


# F16 weights: numba has no float16 type, so the kernel rebuilds float32 bits from the
# uint16 pattern; the 2**112 factor rescales the exponent and handles subnormals exactly.
_F16_SCALE: Final = np.float32(2.0 ** 112)


@_jit(parallel=True)
def _hmatmul_nb(x: F32, half: U16, y: F32) -> None:
    # x (T, n_in); half (C, n_in, W) uint16; y (T, C*W)
    t_rows = x.shape[0]
    n_chunks = half.shape[0]
    n_in = half.shape[1]
    for c in prange(n_chunks):
        bits = np.empty(W, np.uint32)
        wf = bits.view(np.float32)
        w = np.empty(W, np.float32)
        acc = np.empty((t_rows, W), np.float32)
        acc[:] = 0.0
        for i in range(n_in):
            for o in range(W):
                h = np.uint32(half[c, i, o])
                bits[o] = ((h & np.uint32(0x7FFF)) << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
            for o in range(W):
                w[o] = wf[o] * _F16_SCALE  # on the weight: an input times 2**112 would overflow
            for t in range(t_rows):
                xi = x[t, i]
                for o in range(W):
                    acc[t, o] += xi * w[o]
        for t in range(t_rows):
            for o in range(W):
                y[t, c * W + o] = acc[t, o]


def hmatmul(x: F32, half: U16, y: F32) -> None:
    """``y = x @ W`` for float16 weights in tiles ``(C, n_in, W)`` (stored as uint16)."""
    if HAVE_NUMBA:
        _apply_threads()
        with _parallel:
            _hmatmul_nb(x, half, y)
        return
    for c in range(half.shape[0]):
        y[:, c * W:(c + 1) * W] = x @ half[c].view(np.float16).astype(np.float32)


def hdequant(half: U16, c0: int, out: F32) -> None:
    """:func:`qdequant` for float16 tiles."""
    n = out.shape[1] // W
    tiles = half[c0:c0 + n].view(np.float16)  # (n, n_in, W)
    out.reshape(out.shape[0], n, W)[...] = tiles.transpose(1, 0, 2)


# ----------------------------------------------------------------------------- integer products

# Prompt rows multiply 8-bit activations with the weights' codes in integer arithmetic, as
# llama.cpp does: VNNI's vpdpbusd does 64 multiply-adds per instruction where a float FMA does
# 16 (docs/performance.md, "Integer prompt products"). Tiles of QT rows x 16*QV outputs.
QT: Final = 4
QV: Final = 2


def _host_features() -> str:
    try:
        import llvmlite.binding as llvm  # type: ignore[import-untyped]

        return str(llvm.get_host_cpu_features().flatten())
    except Exception:  # noqa: BLE001
        return ""


def _compiles_vnni() -> bool:
    """Whether numba compiles for a CPU with AVX-512 VNNI: the host's, unless NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES name another target. ASSISTANT_NO_VNNI=1 says no (tests run the
    portable form that way)."""
    if _numba is None or os.environ.get("ASSISTANT_NO_VNNI", "") in ("1", "true", "yes"):
        return False
    features = getattr(_numba.config, "CPU_FEATURES", None)
    if getattr(_numba.config, "CPU_NAME", None) not in (None, "", "host") and not features:
        return False
    return "+avx512vnni" in (features or _host_features())


HAVE_VNNI: Final = _compiles_vnni()
# Every product rounds its activations to int8 and runs the integer kernels where the CPU
# multiplies bytes natively; elsewhere the float32 kernels (few rows) and float32 bands with
# BLAS (prompt rows) are faster. ASSISTANT_INT8=1/0 forces it on or off.
INT8_ACTIVATIONS = os.environ.get("ASSISTANT_INT8", "1" if HAVE_VNNI else "0") in ("1", "true", "yes")


def _qtile(wq: Any, xq: Any, dx: Any, xs: Any, sc: Any, mn: Any, y: Any, t0: int, c: int, col: int, nb: int,
           ldx: int, ldy: int, mflag: int, offset: np.float32, native: Any) -> None:
    """One tile: y[t0 .. t0+QT, c*W+col .. +16*QV] from a chunk's repacked codes (see _qtile_ir)."""
    raise NotImplementedError  # only the compiled intrinsic runs


class _IR:
    """What the integer kernels' IR emitters share: the arguments (both intrinsics take the
    same ones: codes, activations (T, ldx) words of 4 int8, row scales and scale x code sums
    (T, nb), weight scales and minimums (C, nb, 64) as stored, y (T, ldy), first row, chunk,
    first output in the chunk, nb, ldx, ldy, mflag (0: mins is one row of zeros), offset, the
    form's marker), ``rt`` rows x ``16 * qv`` outputs of accumulators, the 4-byte dot, a group's
    scaling and the store. Subclasses read the codes."""

    def __init__(self, ir: Any, cgutils: Any, context: Any, b: Any, signature: Any, args: Any,
                 rt: int, qv: int) -> None:
        from numba.core import types

        self.ir, self.cg, self.b = ir, cgutils, b
        self.context, self.signature, self.args = context, signature, args
        self.i8, self.i32, self.i64, self.f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
        self.vi, self.vf = ir.VectorType(self.i32, 16), ir.VectorType(self.f32, 16)
        self.native = signature.args[-1].signed is False  # uint8 marker: vpdpbusd, int8: portable IR
        self.rt, self.qv = rt, qv
        self.half = signature.args[4].dtype == types.uint16  # float16 scale bits, else float32
        self.xp = self.ptr(1, self.i32)
        self.dxp, self.xsp = self.ptr(2, self.f32), self.ptr(3, self.f32)
        sty = ir.IntType(16) if self.half else self.f32
        self.scp, self.mnp, self.yp = self.ptr(4, sty), self.ptr(5, sty), self.ptr(6, self.f32)
        t0, self.c, self.col, self.nb, self.ldx, self.ldy, self.mflag = self.i64s(7, 14)
        self.offset = args[14]
        self.rows = [b.add(t0, self.c64(t)) for t in range(rt)]
        zero_f = ir.Constant(self.vf, [0.0] * 16)
        self.facc = [[cgutils.alloca_once_value(b, zero_f) for _ in range(qv)] for _ in range(rt)]
        self.iacc = [[cgutils.alloca_once(b, self.vi) for _ in range(qv)] for _ in range(rt)]

    def ptr(self, i: int, ty: Any) -> Any:
        """Argument ``i``'s (an array's) data as a pointer to ``ty``."""
        arr = self.context.make_array(self.signature.args[i])(self.context, self.b, self.args[i])
        return self.b.bitcast(arr.data, ty.as_pointer())

    def i64s(self, lo: int, hi: int) -> list[Any]:
        """Integer arguments ``lo .. hi-1`` as i64."""
        return [self.b.sext(a, self.i64) if a.type.width < 64 else a for a in self.args[lo:hi]]

    def c64(self, v: int) -> Any:
        return self.ir.Constant(self.i64, v)

    def at(self, p: Any, off: Any, vty: Any) -> Any:
        return self.b.bitcast(self.b.gep(p, [off]), vty.as_pointer())

    def splat(self, value: Any, vty: Any) -> Any:
        one = self.b.insert_element(self.ir.Constant(vty, None), value, self.ir.Constant(self.i32, 0))
        return self.b.shuffle_vector(one, self.ir.Constant(vty, None), self.ir.Constant(self.vi, [0] * 16))

    def dp4(self, acc: Any, w: Any, x: Any) -> Any:
        """acc[i] += sum_k u8(w byte 4i+k) * s8(x byte 4i+k)."""
        ir, b, vi = self.ir, self.b, self.vi
        if self.native:
            fn = self.cg.get_or_insert_function(b.module, ir.FunctionType(vi, [vi, vi, vi]),
                                                "llvm.x86.avx512.vpdpbusd.512")
            return b.call(fn, [acc, w, x])
        v64b, v64i = ir.VectorType(ir.IntType(8), 64), ir.VectorType(self.i32, 64)
        p = b.mul(b.zext(b.bitcast(w, v64b), v64i), b.sext(b.bitcast(x, v64b), v64i))
        for k in range(4):
            acc = b.add(acc, b.shuffle_vector(p, p, ir.Constant(vi, [4 * i + k for i in range(16)])))
        return acc

    def fma(self, a: Any, b: Any, c: Any) -> Any:
        fn = self.cg.get_or_insert_function(self.b.module, self.ir.FunctionType(self.vf, [self.vf] * 3),
                                            "llvm.fma.v16f32")
        return self.b.call(fn, [a, b, c])

    def clear(self) -> None:
        """Zero the int32 sums (before each group)."""
        for row in self.iacc:
            for acc in row:
                self.b.store(self.ir.Constant(self.vi, [0] * 16), acc)

    def dots(self, ws: list[Any], xword: Any) -> None:
        """Code words ``ws`` (four inputs of each output) times every row's activation word
        ``xword`` (the same four inputs), into the int32 sums."""
        b = self.b
        for t in range(self.rt):
            xw = self.splat(b.load(b.gep(self.xp, [b.add(b.mul(self.rows[t], self.ldx), xword)])), self.vi)
            for v in range(self.qv):
                b.store(self.dp4(b.load(self.iacc[t][v]), ws[v], xw), self.iacc[t][v])

    def scales(self, p: Any, off: Any) -> Any:
        if self.half:
            h = self.b.load(self.at(p, off, self.ir.VectorType(self.ir.IntType(16), 16)), align=2)
            return self.b.fpext(self.b.bitcast(h, self.ir.VectorType(self.ir.HalfType(), 16)), self.vf)
        return self.b.load(self.at(p, off, self.vf), align=4)

    def scale(self, g: Any) -> None:
        """Group ``g``'s int32 sums into the float sums: dot x weight scale x row scale, plus
        (minimum - offset x weight scale) x row scale x code sum, scales as stored. Fused steps
        written out, so every emitter rounds alike whatever LLVM would contract (a row's result
        may not depend on which kernel computed it)."""
        b = self.b
        cb = b.add(b.mul(self.c, self.nb), g)
        s0 = b.add(b.mul(cb, self.c64(W)), self.col)
        m0 = b.add(b.mul(b.mul(cb, self.mflag), self.c64(W)), self.col)  # mflag 0: one row of zeros
        neg = self.splat(b.fneg(self.offset), self.vf)
        scs = [self.scales(self.scp, b.add(s0, self.c64(16 * v))) for v in range(self.qv)]
        mls = [self.fma(neg, sc, self.scales(self.mnp, b.add(m0, self.c64(16 * v)))) for v, sc in enumerate(scs)]
        for t, row in enumerate(self.rows):
            k = b.add(b.mul(row, self.nb), g)
            d = self.splat(b.load(b.gep(self.dxp, [k])), self.vf)
            s = self.splat(b.load(b.gep(self.xsp, [k])), self.vf)
            for v in range(self.qv):
                dot = b.sitofp(b.load(self.iacc[t][v]), self.vf)
                acc = self.fma(dot, b.fmul(scs[v], d, flags=("nsz",)), b.load(self.facc[t][v]))
                b.store(self.fma(mls[v], s, acc), self.facc[t][v])

    def store(self) -> None:
        """The float sums into y."""
        b = self.b
        for t in range(self.rt):
            base = b.add(b.add(b.mul(self.rows[t], self.ldy), b.mul(self.c, self.c64(W))), self.col)
            for v in range(self.qv):
                b.store(b.load(self.facc[t][v]), self.at(self.yp, b.add(base, self.c64(16 * v)), self.vf), align=4)


class _TileIR(_IR):
    """Emits one prompt tile's LLVM IR (see :func:`_qtile_ir`): a loop over the chunk's groups,
    each a loop over its quads of inputs, the codes already repacked into words."""

    def __init__(self, ir: Any, cgutils: Any, context: Any, b: Any, signature: Any, args: Any) -> None:
        super().__init__(ir, cgutils, context, b, signature, args, QT, QV)
        self.wp = self.ptr(0, self.i32)  # wq (nb*qpg, 64) words of 4 codes, from output col
        self.qpg = b.udiv(self.ldx, self.nb)  # quads per group

    def emit(self) -> None:
        b = self.b
        with self.cg.for_range(b, self.nb) as group:
            g = group.index
            self.clear()
            with self.cg.for_range(b, self.qpg) as quad:
                q = b.add(b.mul(g, self.qpg), quad.index)
                w0 = b.mul(q, self.c64(64))
                self.dots([b.load(self.at(self.wp, b.add(w0, self.c64(16 * v)), self.vi), align=4)
                           for v in range(QV)], q)
            self.scale(g)
        self.store()


class _RowsIR(_IR):
    """Emits the IR of ``rt`` decoding rows x ``16 * qv`` outputs of one chunk straight from the
    stored tiles (see :func:`_qrows_ir`): each group's codes four inputs at a time, turned into
    vpdpbusd's layout (four inputs of one output per word) in registers. Per group the same
    float steps as a prompt tile, so a row's result does not depend on how rows are batched."""

    def __init__(self, ir: Any, cgutils: Any, context: Any, b: Any, signature: Any, args: Any,
                 rt: int, qv: int) -> None:
        from numba.core import types

        super().__init__(ir, cgutils, context, b, signature, args, rt, qv)
        self.four = signature.args[0].dtype == types.uint8  # 4-bit codes, else int8
        self.cp = self.ptr(0, self.i8)  # codes (C, nb, R, 64): R = g/2 bytes of two codes, or g codes
        codes = context.make_array(signature.args[0])(context, b, args[0])
        self.r = cgutils.unpack_tuple(b, codes.shape, 4)[2]

    def emit(self) -> None:
        b, ir = self.b, self.ir
        cb0 = b.mul(self.c, self.nb)
        with self.cg.for_range(b, self.nb) as group:
            g = group.index
            cb = b.add(cb0, g)
            self.clear()
            with self.cg.for_range(b, b.udiv(self.r, self.c64(4))) as quad:
                q = quad.index
                ws = self.words(b.add(b.mul(b.add(b.mul(cb, self.r), b.mul(q, self.c64(4))), self.c64(W)), self.col))
                if self.four:  # low nibbles: inputs 4q.., high: g/2 + 4q..; x has g/4 words per group
                    m = ir.Constant(self.vi, [0x0F0F0F0F] * 16)
                    x_lo = b.add(b.mul(g, b.udiv(self.r, self.c64(2))), q)
                    self.dots([b.and_(w, m) for w in ws], x_lo)
                    four = ir.Constant(self.vi, [4] * 16)
                    self.dots([b.and_(b.lshr(w, four), m) for w in ws], b.add(x_lo, b.udiv(self.r, self.c64(4))))
                else:  # int8 codes + 128 as unsigned bytes (the offset 128 is folded in the scaling)
                    flip = ir.Constant(self.vi, [-0x7F7F7F80] * 16)
                    self.dots([b.xor(w, flip) for w in ws], b.add(b.mul(g, b.udiv(self.r, self.c64(4))), q))
            self.scale(g)
        self.store()

    def words(self, base: Any) -> list[Any]:
        """Four rows of ``16 * qv`` code bytes at ``base`` (one input each) as ``qv`` vectors of
        words holding the four inputs of one output."""
        ir, b, n = self.ir, self.b, 16 * self.qv
        rows = [b.load(self.at(self.cp, b.add(base, self.c64(W * k)), ir.VectorType(self.i8, n)), align=1)
                for k in range(4)]
        pairs = ir.Constant(ir.VectorType(self.i32, 2 * n), [v for o in range(n) for v in (o, n + o)])
        lo, hi = b.shuffle_vector(rows[0], rows[1], pairs), b.shuffle_vector(rows[2], rows[3], pairs)
        quads = ir.Constant(ir.VectorType(self.i32, 4 * n),
                            [v for o in range(n) for v in (2 * o, 2 * o + 1, 2 * n + 2 * o, 2 * n + 2 * o + 1)])
        words = b.bitcast(b.shuffle_vector(lo, hi, quads), ir.VectorType(self.i32, n))
        return [b.shuffle_vector(words, ir.Constant(words.type, None), ir.Constant(self.vi, list(range(16 * v, 16 * v + 16))))
                for v in range(self.qv)]


def _qtile_ir() -> Any:
    # numba has no vector types, so the tile is written as LLVM IR: integer accumulators per
    # group, scaled into float accumulators; LLVM keeps all of them in registers. The last
    # argument's type (uint8: vpdpbusd, int8: portable) picks the form, so numba's disk
    # cache keys on it.
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.core.extending import intrinsic

    @intrinsic
    def qtile(typingctx: Any, wq: Any, xq: Any, dx: Any, xs: Any, sc: Any, mn: Any, y: Any, t0: Any, c: Any,
              col: Any, nb: Any, ldx: Any, ldy: Any, mflag: Any, offset: Any, native: Any) -> Any:
        sig = types.void(wq, xq, dx, xs, sc, mn, y, t0, c, col, nb, ldx, ldy, mflag, offset, native)

        def codegen(context: Any, b: Any, signature: Any, args: Any) -> Any:
            _TileIR(ir, cgutils, context, b, signature, args).emit()
            return context.get_dummy_value()
        return sig, codegen
    return qtile


def _qrows1(codes: Any, xw: Any, dx: Any, xs: Any, sc: Any, mn: Any, y: Any, t0: int, c: int, col: int,
            nb: int, ldx: int, ldy: int, mflag: int, offset: np.float32, native: Any) -> None:
    """One decoding row x a chunk's 64 outputs (see _RowsIR)."""
    raise NotImplementedError  # only the compiled intrinsic runs


_qrows4 = _qrows1  # four rows x 32 outputs; compiled below


def _qrows_ir(rt: int, qv: int) -> Any:
    # Rows kept in registers per call: 1 x 64 outputs, or 4 x 32 (8 integer and 8 float
    # accumulators, as a prompt tile).
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.core.extending import intrinsic

    @intrinsic
    def qrows(typingctx: Any, codes: Any, xw: Any, dx: Any, xs: Any, sc: Any, mn: Any, y: Any, t0: Any, c: Any,
              col: Any, nb: Any, ldx: Any, ldy: Any, mflag: Any, offset: Any, native: Any) -> Any:
        sig = types.void(codes, xw, dx, xs, sc, mn, y, t0, c, col, nb, ldx, ldy, mflag, offset, native)

        def codegen(context: Any, b: Any, signature: Any, args: Any) -> Any:
            _RowsIR(ir, cgutils, context, b, signature, args, rt, qv).emit()
            return context.get_dummy_value()
        return sig, codegen
    return qrows


def _repack_chunk(codes: Any, offset: np.float32, c: int, wq: U8) -> None:
    """Chunk ``c``'s codes as unsigned bytes ``wq`` ``(nb, g/4, W, 4)``: four inputs of one
    output adjacent, as vpdpbusd reads them; the weight is ``(wq - offset) * scale + min``."""
    raise NotImplementedError  # only the compiled overloads below run


def _qtile_overloads() -> None:
    from numba.core import types
    from numba.extending import overload

    @overload(_repack_chunk, inline="always")
    def impl(codes: Any, offset: Any, c: Any, wq: Any) -> Any:
        if codes.dtype == types.uint8:  # 4-bit: input j in the low nibble, j + g/2 in the high
            def nibbles(codes: Any, offset: Any, c: Any, wq: Any) -> Any:
                hg = codes.shape[2]
                for b in range(codes.shape[1]):
                    for q in range(hg // 4):
                        for o in range(W):
                            for k in range(4):
                                byte = codes[c, b, 4 * q + k, o]
                                wq[b, q, o, k] = byte & np.uint8(15)
                                wq[b, q + hg // 4, o, k] = byte >> np.uint8(4)
            return nibbles

        def int8(codes: Any, offset: Any, c: Any, wq: Any) -> Any:  # offset is 128
            for b in range(codes.shape[1]):
                for q in range(codes.shape[2] // 4):
                    for o in range(W):
                        for k in range(4):
                            wq[b, q, o, k] = np.uint8(np.int32(codes[c, b, 4 * q + k, o]) + 128)
        return int8


if _numba is not None:
    _qtile = _qtile_ir()  # noqa: F811
    _qrows1 = _qrows_ir(1, W // 16)  # noqa: F811
    _qrows4 = _qrows_ir(QT, QV)
    _qtile_overloads()


@_jit(parallel=False)
def _quantize_row(x: F32, t: int, g: int, xq: I8, dx: F32, xs: F32) -> None:
    # row t of x (T, n_in) -> xq (T, n_in) int8, one scale per g inputs dx (T, nb), xs = dx * sum(xq)
    for b in range(x.shape[1] // g):
        amax = np.float32(0.0)
        for j in range(g):
            amax = max(amax, abs(x[t, b * g + j]))
        inv = np.float32(127.0) / amax if amax > 0.0 else np.float32(0.0)
        total = np.int32(0)
        for j in range(g):
            qv = np.int32(np.rint(x[t, b * g + j] * inv))
            xq[t, b * g + j] = qv
            total += qv
        dx[t, b] = amax / np.float32(127.0)
        xs[t, b] = dx[t, b] * np.float32(total)


@_jit(parallel=True)
def _quantize_rows_nb(x: F32, g: int, xq: I8, dx: F32, xs: F32) -> None:
    for t in prange(x.shape[0]):
        _quantize_row(x, t, g, xq, dx, xs)


@_jit(parallel=True)
def _qrows_nb(x: F32, g: int, xq: I8, dx: F32, xs: F32, codes: Any, offset: np.float32, scales: SC, mins: SC,
              mflag: int, y: F32, native: Any) -> None:
    # Decoding rows: x (T, n_in) float32 rounded to xq/dx/xs here (one call, no second thread
    # start), then every chunk's 64 outputs straight from the codes (C, nb, R, W); mins
    # (C, nb, W), or (1, 1, W) zeros with mflag 0; y (T, C*W).
    t_rows = x.shape[0]
    for t in range(t_rows):
        _quantize_row(x, t, g, xq, dx, xs)
    nb = codes.shape[1]
    ldx, ldy = xq.shape[1] // 4, y.shape[1]
    xw = xq.view(np.int32).ravel()
    dxf, xsf, yf = dx.ravel(), xs.ravel(), y.ravel()
    t4 = t_rows - t_rows % QT
    for c in prange(codes.shape[0]):
        for t0 in range(0, t4, QT):
            for h in range(0, W, 16 * QV):
                _qrows4(codes, xw, dxf, xsf, scales, mins, yf, t0, c, h, nb, ldx, ldy, mflag, offset, native)
        for t in range(t4, t_rows):
            _qrows1(codes, xw, dxf, xsf, scales, mins, yf, t, c, 0, nb, ldx, ldy, mflag, offset, native)


@_jit(parallel=True)
def _qgemm_nb(xq: I8, dx: F32, xs: F32, codes: Any, offset: np.float32, scales: SC, mins: SC, mflag: int,
              y: F32, native: Any) -> None:
    # xq (T, n_in) int8 with T a multiple of QT; codes (C, nb, g, W) int8 or (C, nb, g/2, W) 4-bit;
    # scales/mins as stored (C, nb, W), mins (1, 1, W) zeros with mflag 0; y (T, C*W)
    n_chunks, nb = codes.shape[0], codes.shape[1]
    g = xq.shape[1] // nb
    xw = xq.view(np.int32).ravel()
    dxf, xsf, yf = dx.ravel(), xs.ravel(), y.ravel()
    for c in prange(n_chunks):
        wq = np.empty((nb, g // 4, W, 4), np.uint8)
        _repack_chunk(codes, offset, c, wq)
        for h in range(0, W, 16 * QV):  # one half of the chunk's outputs for every tile of rows
            wf = wq.view(np.int32).ravel()[h:]
            for t0 in range(0, xq.shape[0], QT):
                _qtile(wf, xw, dxf, xsf, scales, mins, yf, t0, c, h, nb, xq.shape[1] // 4, y.shape[1], mflag,
                       offset, native)


def quantize_rows(x: F32, g: int) -> tuple[I8, F32, F32]:
    """Activations as int8 per ``g`` inputs (llama.cpp's Q8_0): codes ``(Tp, n_in)`` with ``Tp``
    rounded up to a multiple of QT (zero rows), scales and scale * code sums ``(Tp, n_in / g)``."""
    t, n_in = x.shape
    tp = -(-t // QT) * QT
    xq = np.zeros((tp, n_in), np.int8)
    dx = np.zeros((tp, n_in // g), np.float32)
    xs = np.zeros((tp, n_in // g), np.float32)
    if HAVE_NUMBA:
        _apply_threads()
        with _parallel:
            _quantize_rows_nb(np.ascontiguousarray(x, dtype=np.float32), g, xq, dx, xs)
        return xq, dx, xs
    xg = x.reshape(t, n_in // g, g)
    amax = np.abs(xg).max(axis=2)
    inv = np.divide(np.float32(127.0), amax, out=np.zeros_like(amax), where=amax > 0)
    q = np.rint(xg * inv[:, :, None]).astype(np.int8)
    xq[:t] = q.reshape(t, n_in)
    dx[:t] = amax / np.float32(127.0)
    xs[:t] = dx[:t] * q.sum(axis=2, dtype=np.int32).astype(np.float32)
    return xq, dx, xs


# The marker argument that picks the tile's form (see _qtile_ir).
_NATIVE: Final = np.uint8(1) if HAVE_VNNI else np.int8(0)
# Up to this many rows (decoding, drafts being verified) run straight from the stored codes;
# more are repacked per chunk for prompt tiles.
FEW_ROWS: Final = 16
_ZERO_MINS: dict[str, SC] = {}


def _zero_mins(dtype: Any) -> SC:
    """One group of zero minimums in the scales' type: what a product without minimums reads."""
    key = np.dtype(dtype).str
    if key not in _ZERO_MINS:
        _ZERO_MINS[key] = np.zeros((1, 1, W), dtype=dtype)
    return _ZERO_MINS[key]


def qgemm_int8(x: F32, codes: Any, offset: float, scales: SC, mins: SC, y: F32) -> None:
    """``y = x @ W`` with x rounded to int8 per group (:func:`quantize_rows`): int8 codes
    ``(C, nb, g, W)`` (offset ignored) or 4-bit ``(C, nb, g/2, W)`` with their offset. y
    ``(T, C * W)`` float32, written in full. Up to FEW_ROWS rows run straight from the codes,
    more in repacked tiles; a row's result is the same either way and whatever rows come with it."""
    t = x.shape[0]
    c, nb = codes.shape[0], codes.shape[1]
    g = codes.shape[2] * (2 if codes.dtype == np.uint8 else 1)
    if x.shape[1] != nb * g or codes.shape[2] % 4 or y.shape != (t, c * W):
        raise ValueError(f"shapes do not fit: x {x.shape}, codes {codes.shape}, y {y.shape}")
    off = np.float32(offset if codes.dtype == np.uint8 else 128.0)
    if HAVE_NUMBA:
        # The kernels address the tiles' memory themselves: C order (the stored tiles are, so
        # these are no copies), and one row of zero minimums where there are none.
        codes, scales = np.ascontiguousarray(codes), np.ascontiguousarray(scales)
        has_mins = mins.shape[0] > 0
        mz = np.ascontiguousarray(mins) if has_mins else _zero_mins(scales.dtype)
        _apply_threads()
        if t <= FEW_ROWS and y.flags.c_contiguous:
            xq = np.empty((t, x.shape[1]), np.int8)
            dx = np.empty((t, nb), np.float32)
            xs = np.empty((t, nb), np.float32)
            with _parallel:
                _qrows_nb(np.ascontiguousarray(x, dtype=np.float32), g, xq, dx, xs, codes, off, scales, mz,
                          int(has_mins), y, _NATIVE)
            return
        xq, dx, xs = quantize_rows(x, g)
        whole = t == xq.shape[0] and y.flags.c_contiguous
        yp = y if whole else np.empty((xq.shape[0], y.shape[1]), np.float32)
        with _parallel:
            _qgemm_nb(xq, dx, xs, codes, off, scales, mz, int(has_mins), yp, _NATIVE)
        if not whole:
            y[...] = yp[:t]
        return
    xq, dx, xs = quantize_rows(x, g)
    xr = (xq[:t].reshape(t, -1, g).astype(np.float32) * dx[:t, :, None]).reshape(t, -1)
    banded(xr, c, expand_tiles(codes, offset, scales, mins), y)


# ----------------------------------------------------------------------------- attention

# exp(x) = 2**n * 2**f with n = floor(x log2 e): 2**f by a degree-5 polynomial fitted on
# [0, 1) (relative error under 2e-7 in float32), 2**n from the float's exponent bits. numba
# calls libm's expf one lane at a time; this form vectorizes (docs/performance.md).
_EXP_C: Final = (np.float32(0.99999994), np.float32(0.69315296), np.float32(0.24015455), np.float32(0.055823583),
                 np.float32(0.0089925947), np.float32(0.0018762343))


def _exp_shifted(row: F32, n: int, m: np.float32, bits: Any) -> np.float32:
    """row[:n] = exp(row[:n] - m) (every value <= m), in place; returns their sum. ``bits``:
    int32 scratch of at least n (the caller's, allocated once)."""
    raise NotImplementedError  # only the compiled overload below runs


def _exp_overload() -> None:
    from numba.extending import overload

    @overload(_exp_shifted, inline="always")
    def impl(row: Any, n: Any, m: Any, bits: Any) -> Any:
        def exp_shifted(row: Any, n: Any, m: Any, bits: Any) -> Any:
            scale = bits.view(np.float32)
            for i in range(n):
                t = max((row[i] - m) * np.float32(1.4426950408889634), np.float32(-126.0))
                e = np.floor(t)
                f = t - e
                c = _EXP_C
                row[i] = c[0] + f * (c[1] + f * (c[2] + f * (c[3] + f * (c[4] + f * c[5]))))
                bits[i] = (np.int32(e) + np.int32(127)) << np.int32(23)
            total = np.float32(0.0)
            for i in range(n):
                row[i] *= scale[i]
                total += row[i]
            return total
        return exp_shifted


if _numba is not None:
    _exp_overload()


@_jit(parallel=True)
def _attend_blocks_nb(q: F32, k: F32, v: F32, pos: int, window: int, scale: np.float32, softcap: np.float32,
                      s: F32, part_m: F32, part_s: F32, part_acc: F32) -> None:
    # q (H, T, hd): rows at positions pos .. pos+T-1; k/v (n_kv, n_ctx, hd) filled through
    # pos+T-1. Row r sees keys lo_r .. pos+r (lo_r = pos+r+1-window with a window, else 0).
    # The positions lo_0 .. pos+T-1 are cut into blocks; each (KV head, block) item reads its
    # keys and values once for every row and query head of the group (they stay in cache
    # from row to row), keeping per row and head the max and sum of exps and the unnormalized
    # output: s (n_kv*nb, T, group, bs), part_m/part_s (T, n_kv, nb, group), part_acc
    # (T, n_kv, nb, group, hd); _merge_blocks_nb combines the blocks.
    t_rows, n_kv, nb, group, hd = part_acc.shape
    bs = s.shape[3]
    lo0 = max(0, pos + 1 - window) if window > 0 else 0
    for item in prange(n_kv * nb):
        kv = item // nb
        blk = item % nb
        p0 = lo0 + blk * bs
        bits = np.empty(bs, np.int32)
        for r in range(t_rows):
            lo = max(p0, pos + r + 1 - window) if window > 0 else p0
            hi = min(p0 + bs, pos + r + 1)
            for g in range(group):
                part_m[r, kv, blk, g] = np.float32(-3.0e38)  # finite: fastmath assumes no infinities
                part_s[r, kv, blk, g] = np.float32(0.0)
                for e in range(hd):
                    part_acc[r, kv, blk, g, e] = np.float32(0.0)
            for p in range(lo, hi):
                for g in range(group):
                    d = np.float32(0.0)
                    for e in range(hd):
                        d += q[kv * group + g, r, e] * k[kv, p, e]
                    d *= scale
                    if softcap > 0.0:
                        d = softcap * np.tanh(d / softcap)
                    s[item, r, g, p - p0] = d
                    if d > part_m[r, kv, blk, g]:
                        part_m[r, kv, blk, g] = d
            if hi > lo:
                for g in range(group):
                    part_s[r, kv, blk, g] = _exp_shifted(s[item, r, g, lo - p0:], hi - lo, part_m[r, kv, blk, g], bits)
            for p in range(lo, hi):
                for g in range(group):
                    w = s[item, r, g, p - p0]
                    for e in range(hd):
                        part_acc[r, kv, blk, g, e] += w * v[kv, p, e]


@_jit(parallel=False)
def _merge_blocks_nb(part_m: F32, part_s: F32, part_acc: F32, out: F32) -> None:
    # out (T, H*hd): each row and head's blocks rescaled to one max (empty blocks weigh 0)
    t_rows, n_kv, nb, group, hd = part_acc.shape
    for r in range(t_rows):
        for kv in range(n_kv):
            for g in range(group):
                h0 = (kv * group + g) * hd
                m = part_m[r, kv, 0, g]
                for blk in range(1, nb):
                    m = max(m, part_m[r, kv, blk, g])
                total = np.float32(0.0)
                for e in range(hd):
                    out[r, h0 + e] = np.float32(0.0)
                for blk in range(nb):
                    if part_s[r, kv, blk, g] == 0.0:  # no position of this block for this row
                        continue
                    f = np.exp(part_m[r, kv, blk, g] - m)
                    total += f * part_s[r, kv, blk, g]
                    for e in range(hd):
                        out[r, h0 + e] += f * part_acc[r, kv, blk, g, e]
                inv = np.float32(1.0) / total
                for e in range(hd):
                    out[r, h0 + e] *= inv


# Positions per block of decoding attention at the least; blocks per KV head at the most
# enough to give every thread a few (KV head, block) items. (Not Final: tests shrink it.)
ATTENTION_BLOCK = 64


def attend_rows(q: F32, k: F32, v: F32, pos: int, window: int, scale: float, softcap: float = 0.0) -> F32:
    """Grouped-query attention of a few rows (decoding, drafts being verified) over the cache.

    q ``(n_heads, T, head_dim)`` at positions ``pos .. pos+T-1``; k, v ``(n_kv_heads, n_ctx,
    head_dim)`` (the whole cache, filled through ``pos+T-1``). Row ``r`` sees keys up to
    ``pos+r``, the last ``window`` of them when ``window`` > 0; ``softcap`` > 0 applies
    ``softcap * tanh(score / softcap)`` (Gemma 2). Returns ``(T, n_heads * head_dim)``.
    """
    n_heads, t, hd = q.shape
    n_kv = k.shape[0]
    out = np.empty((t, n_heads * hd), dtype=np.float32)
    if t == 0:
        return out
    if not HAVE_NUMBA:
        for r in range(t):
            k0 = max(0, pos + r + 1 - window) if window > 0 else 0
            out[r] = _attend_one_np(q[:, r], k, v, pos + r + 1, k0, scale, softcap).reshape(-1)
        return out
    if t > 1:  # one row at a time: each row's blocks, so its numbers, are those of decoding it alone
        for r in range(t):
            out[r:r + 1] = attend_rows(q[:, r:r + 1], k, v, pos + r, window, scale, softcap)
        return out
    lo0 = max(0, pos + 1 - window) if window > 0 else 0
    span = pos + t - lo0
    bs = -(-span // max(1, min(span // ATTENTION_BLOCK, -(-4 * thread_count() // n_kv))))
    nb = -(-span // bs)
    group = n_heads // n_kv
    s = np.empty((n_kv * nb, t, group, bs), np.float32)
    part_m = np.empty((t, n_kv, nb, group), np.float32)
    part_s = np.empty((t, n_kv, nb, group), np.float32)
    part_acc = np.empty((t, n_kv, nb, group, hd), np.float32)
    _apply_threads()
    with _parallel:
        _attend_blocks_nb(np.ascontiguousarray(q), k, v, pos, window, np.float32(scale), np.float32(softcap), s,
                          part_m, part_s, part_acc)
    _merge_blocks_nb(part_m, part_s, part_acc, out)
    return out


def attend_one(q: F32, k: F32, v: F32, n: int, k0: int, scale: float, softcap: float = 0.0) -> F32:
    """One query token's grouped-query attention over cached positions ``k0 .. n-1``.

    q ``(n_heads, head_dim)``; k, v ``(n_kv_heads, n_ctx, head_dim)`` (the whole cache).
    ``softcap`` > 0 applies ``softcap * tanh(score / softcap)`` (Gemma 2). Returns
    ``(n_heads, head_dim)``.
    """
    if not HAVE_NUMBA:
        return _attend_one_np(q, k, v, n, k0, scale, softcap)
    return attend_rows(q[:, None, :], k, v, n - 1, n - k0 if k0 > 0 else 0, scale, softcap).reshape(q.shape)


def _attend_one_np(q: F32, k: F32, v: F32, n: int, k0: int, scale: float, softcap: float) -> F32:
    group = q.shape[0] // k.shape[0]
    keys = np.repeat(k[:, k0:n], group, axis=0)  # (H, S, hd)
    vals = np.repeat(v[:, k0:n], group, axis=0)
    s = np.einsum("hd,hsd->hs", q, keys) * np.float32(scale)
    if softcap > 0.0:
        s = np.float32(softcap) * np.tanh(s / np.float32(softcap))
    s = np.exp(s - s.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    out: F32 = np.einsum("hs,hsd->hd", s, vals).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- bandwidth

@_jit(parallel=True)
def _stream_sum_nb(a2: npt.NDArray[np.int64]) -> int:
    # a2 (parts, words): wide adds keep the cores ahead of memory
    n_parts = a2.shape[0]
    partial = np.zeros(n_parts, np.int64)
    for p in prange(n_parts):
        s = np.int64(0)
        for i in range(a2.shape[1]):
            s += a2[p, i]
        partial[p] = s
    return int(partial.sum())


def stream_sum(a: I8) -> int:
    """Read a byte array (length a multiple of 512) once with every kernel thread and return
    a checksum (benchmarks time it as memory bandwidth)."""
    words = a.view(np.int64)
    if HAVE_NUMBA:
        _apply_threads()
        with _parallel:
            return int(_stream_sum_nb(words.reshape(64, -1)))
    return int(words.sum())


# ----------------------------------------------------------------------------- threads

_threads = 0  # 0: numba's default (every core)
_threads_chosen = False  # set by --threads or ASSISTANT_THREADS: models.toml cannot override it
_local = threading.local()


def set_threads(n: int, default: bool = False) -> None:
    """Use ``n`` threads in the kernels and in BLAS. numba's setting is per calling thread,
    so each kernel call applies it in the thread it runs on (request threads included).
    ``default`` (a model's own setting) gives way to a count the user chose for the process
    (``--threads``, ``ASSISTANT_THREADS``)."""
    global _threads, _threads_chosen
    if n <= 0 or (default and _threads_chosen):
        return
    _threads_chosen = _threads_chosen or not default
    if _numba is not None:
        _threads = max(1, min(n, int(_numba.config.NUMBA_NUM_THREADS)))
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(n, user_api="blas")
    except Exception:  # noqa: BLE001 - BLAS thread control is best effort
        pass


def thread_count() -> int:
    """Threads the kernels run on."""
    if _numba is None:
        return max(1, os.cpu_count() or 1)
    return _threads or int(_numba.config.NUMBA_NUM_THREADS)


def _apply_threads() -> None:
    if _threads and getattr(_local, "threads", 0) != _threads:
        _numba.set_num_threads(_threads)
        _local.threads = _threads


_blas_lock = threading.Lock()
_blas_state: dict[str, Any] = {"libs": None, "depth": 0, "saved": []}


@contextlib.contextmanager
def blas_on_caller() -> Iterator[None]:
    """BLAS runs on the calling thread only, for calls between numba's parallel kernels: the
    two pools' idle workers spin and starve each other (docs/performance.md). Nested and
    concurrent uses share one setting, restored when the last one leaves."""
    with _blas_lock:
        if _blas_state["libs"] is None:
            try:
                from threadpoolctl import ThreadpoolController

                _blas_state["libs"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
            except Exception:  # noqa: BLE001 - BLAS thread control is best effort
                _blas_state["libs"] = []
        if _blas_state["depth"] == 0:
            _blas_state["saved"] = [int(lib.get_num_threads()) for lib in _blas_state["libs"]]
            for lib in _blas_state["libs"]:
                lib.set_num_threads(1)
        _blas_state["depth"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_state["depth"] -= 1
            if _blas_state["depth"] == 0:
                for lib, n in zip(_blas_state["libs"], _blas_state["saved"]):
                    lib.set_num_threads(n)


def status() -> dict[str, object]:
    """What runs the kernels: numba's version, threading layer, SIMD and thread count."""
    if _numba is None:
        why = "ASSISTANT_NO_NUMBA=1" if os.environ.get("ASSISTANT_NO_NUMBA") else "numba not importable"
        return {"kernels": "numpy", "reason": why}
    try:
        layer = str(_numba.threading_layer())
    except ValueError:  # chosen at the first parallel region: run a tiny one
        q = np.ones((1, 8), dtype=np.float32)
        attend_one(q, q.reshape(1, 1, 8), q.reshape(1, 1, 8), 1, 0, 1.0)
        layer = str(_numba.threading_layer())
    try:
        import llvmlite.binding as llvm

        cpu = str(llvm.get_host_cpu_name())
    except Exception:  # noqa: BLE001
        cpu = "unknown"
    feats = _host_features()
    simd = [f for f in ("avx512f", "avx512vnni", "avx2", "fma", "neon", "sve") if "+" + f in feats]
    products = ("int8, vpdpbusd" if HAVE_VNNI else "int8, portable") if INT8_ACTIVATIONS \
        else "float32 (decoding), float32 bands and BLAS (prompt)"
    return {"kernels": "numba", "numba": str(_numba.__version__), "threading_layer": layer,
            "threads": _threads or int(_numba.get_num_threads()), "cpu": cpu, "simd": simd,
            "products": products, "cache_dir": os.environ.get("NUMBA_CACHE_DIR", "")}


# madvise(2) advice: reclaim these pages now (Linux 5.4+); contents are kept (reread or swapped in).
_MADV_PAGEOUT: Final = 21


def release_compiler_pages() -> int:
    """Ask the OS to reclaim the pages of numba's compiler (LLVM, tens of MB) now that the
    kernels are loaded: running them does not need it, and a later compile faults the pages
    back in from disk. Returns the bytes advised (0 where unsupported)."""
    if _numba is None or not os.path.exists("/proc/self/maps"):
        return 0
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        with open("/proc/self/maps") as f:
            spans = [line.split()[0] for line in f if line.rstrip().endswith("libllvmlite.so")]
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    total = 0
    for span in spans:
        lo, hi = (int(v, 16) for v in span.split("-"))
        if madvise(lo, hi - lo, _MADV_PAGEOUT) == 0:
            total += hi - lo
    return total


def warm(half_scales: bool = True, float_scales: bool = True) -> None:
    """Compile (or load from the disk cache) every kernel for the types the engine uses: for
    matrices with float16 scales (the legacy formats) and/or float32 ones (K-quants)."""
    x = np.ones((1, 32), dtype=np.float32)
    codes = np.ones((1, 1, 32, W), dtype=np.int8)
    nibs = np.zeros((1, 1, 16, W), dtype=np.uint8)
    y = np.empty((1, W), dtype=np.float32)
    xs = np.ones((FEW_ROWS + 1, 32), dtype=np.float32)
    ys = np.empty((FEW_ROWS + 1, W), dtype=np.float32)
    out = np.empty((32, W), dtype=np.float32)
    ones = np.ones((1, 1, W), dtype=np.float32)
    kinds = ([ones.astype(np.float16).view(np.uint16)] if half_scales else []) + ([ones] if float_scales else [])
    for sc in kinds:
        no_mins = np.zeros((0, 0, 0), dtype=sc.dtype)
        for mn in (no_mins, sc):
            if INT8_ACTIVATIONS:  # decoding rows, then prompt rows
                for rows, out_rows in ((x, y), (xs, ys)):
                    qgemm_int8(rows, codes, 0.0, sc, mn, out_rows)
                    qgemm_int8(rows, nibs, 8.0, sc, mn, out_rows)
            else:
                qmatmul(x, codes, 0.0, sc, mn, y)
                qmatmul(x, nibs, 8.0, sc, mn, y)
                q4dequant(nibs, 8.0, sc, mn, 0, out)
                qdequant(codes, sc, mn, 0, out)
    if float_scales and not INT8_ACTIVATIONS:  # 16-input groups: Q2_K, Q3_K, Q6_K
        qmatmul(np.ones((1, 16), np.float32), np.ones((1, 1, 16, W), np.int8), 0.0, ones, ones, y)
    hmatmul(x, np.zeros((1, 32, W), dtype=np.uint16), y)
    q = np.ones((2, 8), dtype=np.float32)
    kv = np.ones((1, 4, 8), dtype=np.float32)
    attend_one(q, kv, kv, 3, 0, 0.5)

if os.environ.get("ASSISTANT_THREADS", "").isdigit():
    set_threads(int(os.environ["ASSISTANT_THREADS"]))
