"""Weights as the engine computes with them, prepared lazily from the mapped GGUF file.

Two memory modes (models.toml ``memory``):

* ``speed``: each matrix becomes float32 stored transposed ``(in, out)``, 4 bytes per
  weight, the layout numpy's BLAS streams fastest for one-row products; q/k/v and
  gate/up are fused into one matrix each so one product reads them all.
* ``lean`` (the default): every linear block type (Q4_0 .. Q8_0, the K-quants) stays
  quantized as int8 codes with per-group float32 scales and minimums, about 1.1-1.5 bytes
  per weight in the tile layout of :mod:`assistant.core.kernels`; F16 stays float16.
  ``code * scale + min`` is exactly the dequantized weight, so both modes compute the same
  numbers up to float32 summation order. F32 and IQ4_NL matrices stay float32.

Nothing is dequantized when the model is opened: each layer's weights are prepared the
first time the layer runs.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from . import kernels
from .gguf import GGMLType, GGUFFile, TensorInfo
from .quants import code_group, dequantize, dequantize_transposed, split_codes

F32 = npt.NDArray[np.float32]

MEMORY_MODES: Final = ("speed", "lean")
# Where the integer kernels are off (kernels.INT8_ACTIVATIONS), up to this many rows a product
# runs the quantized kernel on float32 activations; more rows (prompt chunks) expand bands of
# the weights to float32 for BLAS.
QUANT_KERNEL_ROWS: Final = 16
# Raw bytes split into codes at a time while repacking (bounds the temporaries).
_REPACK_BAND_BYTES: Final = 1 << 22
_TYPES_WITH_MINS: Final = (GGMLType.Q4_1, GGMLType.Q5_1, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q2_K)
# Types whose codes fit in 4 bits, and what lifts them to 0..15 (Q4_0 is -8..7, Q3_K -4..3).
_NIBBLE_OFFSET: Final = {GGMLType.Q4_0: 8, GGMLType.Q4_1: 0, GGMLType.Q4_K: 0, GGMLType.Q2_K: 0, GGMLType.Q3_K: 4}
# Block types whose scales (and mins) are float16 in the file: kept as float16 bits.
_HALF_SCALE_TYPES: Final = frozenset({GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0})
_NO_SCALES: Final = np.zeros((0, 0, 0), dtype=np.float32)
class Linear:
    """``y = x @ W + b`` with ``W`` kept as float32 ``(in, out)``.

    ``w`` may also be given as the ``.T`` view of an ``(out, in)`` array (used for the big
    vocabulary projection, whose transposed copy would cost more at load time than the
    product loses); numpy passes either layout to BLAS without copying.
    """

    def __init__(self, w: F32, bias: F32 | None) -> None:
        self.w = w  # (in, out), C- or F-contiguous
        self.bias = bias  # (out,) or None
        self.n_in = int(w.shape[0])
        self.n_out = int(w.shape[1])

    def __call__(self, x: F32) -> F32:
        """x ``(T, in)`` -> ``(T, out)``."""
        y = x @ self.w
        if self.bias is not None:
            y += self.bias
        return y

    @property
    def nbytes(self) -> int:
        return int(self.w.nbytes) + (int(self.bias.nbytes) if self.bias is not None else 0)


class QuantLinear(Linear):
    """``y = x @ W + b`` with ``W`` kept quantized in :mod:`~assistant.core.kernels`' tiles.

    Either int8 ``codes`` ``(C, nb, g, 64)`` with per-group ``scales``/``mins`` ``(C, nb, 64)``
    (every linear block type: ``code * scale + min`` is exactly the dequantized weight), or
    float16 ``half`` ``(C, n_in, 64)``. Output rows are padded to a multiple of 64 with zeros.
    Every product runs the integer kernels on int8 activations where they are on
    (:data:`kernels.INT8_ACTIVATIONS`); else few rows (decoding) run the quantized kernel on
    float32 ones, and many rows (prompt chunks; float16 always) expand bands of chunks to
    float32 and multiply with BLAS.
    """

    def __init__(self, codes: npt.NDArray[np.int8] | None, scales: kernels.SC, mins: kernels.SC,
                 half: npt.NDArray[np.uint16] | None, n_out: int, bias: F32 | None) -> None:
        self.codes = codes
        self.scales = scales
        self.mins = mins
        self.half = half
        self.bias = bias
        # 4-bit codes packed two per byte, set by pack4(); codes is then None.
        self.nibs: npt.NDArray[np.uint8] | None = None
        self.offset = 0.0
        tiles = codes if codes is not None else half
        assert tiles is not None
        self.n_chunks = int(tiles.shape[0])
        self.n_in = int(tiles.shape[1]) * (int(tiles.shape[2]) if codes is not None else 1)
        self.n_out = n_out
        self.w = np.zeros((0, 0), dtype=np.float32)

    def __call__(self, x: F32) -> F32:
        t = int(x.shape[0])
        x = np.ascontiguousarray(x, dtype=np.float32)
        padded = self.n_chunks * kernels.W
        y = np.empty((t, padded), dtype=np.float32)
        codes = self.nibs if self.nibs is not None else self.codes
        if codes is None:  # float16
            assert self.half is not None
            half = self.half
            if t <= QUANT_KERNEL_ROWS:
                kernels.hmatmul(x, half, y)
            else:
                kernels.banded(x, self.n_chunks, lambda c0, part: kernels.hdequant(half, c0, part), y)
        elif kernels.INT8_ACTIVATIONS:
            kernels.qgemm_int8(x, codes, self.offset, self.scales, self.mins, y)
        elif t <= QUANT_KERNEL_ROWS:
            kernels.qmatmul(x, codes, self.offset, self.scales, self.mins, y)
        else:
            kernels.banded(x, self.n_chunks, kernels.expand_tiles(codes, self.offset, self.scales, self.mins), y)
        if padded != self.n_out:
            y = y[:, :self.n_out]
        if self.bias is not None:
            y += self.bias
        return y

    def pack4(self, offset: int) -> None:
        """Keep the codes (all within ``-offset .. 15 - offset``) as 4 bits each: half the
        bytes to stream per token."""
        assert self.codes is not None
        self.nibs = kernels.pack_nibbles(self.codes, offset)
        self.offset = float(offset)
        self.codes = None

    def rows(self, ids: npt.NDArray[np.int32]) -> F32:
        """Output rows ``ids`` of the weight as float32 ``(T, n_in)``: an embedding lookup
        served by the tiles (``code * scale + min``, the same values as the file's blocks)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.n_out):
            raise IndexError(f"token id out of range 0..{self.n_out - 1}")
        c, lane = ids // kernels.W, ids % kernels.W
        if self.half is not None:
            return self.half[c, :, lane].view(np.float16).astype(np.float32)
        if self.nibs is not None:
            q = kernels.unpack_nibbles(self.nibs[c, :, :, lane], self.offset).astype(np.float32)  # (T, nb, g)
        else:
            assert self.codes is not None
            q = self.codes[c, :, :, lane].astype(np.float32)  # (T, nb, g)
        out = q * kernels.scales_f32(self.scales[c, :, lane])[:, :, None]
        if self.mins.shape[0] > 0:
            out += kernels.scales_f32(self.mins[c, :, lane])[:, :, None]
        return out.reshape(len(ids), self.n_in)

    @property
    def nbytes(self) -> int:
        n = int(self.scales.nbytes) + int(self.mins.nbytes)
        if self.nibs is not None:
            n += int(self.nibs.nbytes)
        if self.codes is not None:
            n += int(self.codes.nbytes)
        if self.half is not None:
            n += int(self.half.nbytes)
        if self.bias is not None:
            n += int(self.bias.nbytes)
        return n


# glibc mallopt(): blocks up to 64 MiB from the heap, and up to 256 MiB of free heap kept.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_malloc_tuned: list[bool] = [False]


def _reuse_freed_blocks() -> None:
    """Let a prompt's large temporaries (activations, expanded bands) reuse freed heap memory:
    by default glibc maps each block over 128 KiB fresh and every page faults in again
    (about a third of a first 512-token prefill, docs/performance.md)."""
    if _malloc_tuned[0]:
        return
    _malloc_tuned[0] = True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


class WeightLoader:
    """Reads tensors from a :class:`GGUFFile` into float32 or lean layouts."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory mode {memory!r} is not one of {MEMORY_MODES}")
        self.f = f
        self.memory = memory
        # Matrices kept as tiles, by tensor name: a tied embedding's lookups read them instead
        # of the file, so its pages are not held twice.
        self._tiles: dict[str, QuantLinear] = {}
        if memory == "lean" and kernels.HAVE_NUMBA:
            # Every kernel this file needs loaded now, so numba's compiler can leave memory.
            types = {t.type_id for t in f.tensors.values()}
            kernels.warm(half_scales=bool(types & _HALF_SCALE_TYPES),
                         float_scales=bool(types - _HALF_SCALE_TYPES - {GGMLType.F32, GGMLType.F16}))
            kernels.release_compiler_pages()
            _reuse_freed_blocks()

    def has(self, name: str) -> bool:
        return name in self.f.tensors

    def tensor(self, name: str) -> F32:
        """A tensor dequantized to float32 in numpy order."""
        info = self.f.tensor_info(name)
        return dequantize(info.type_id, self.f.tensor_data(name), info.shape, name)

    def vector(self, name: str) -> F32:
        return self.tensor(name).reshape(-1)

    def optional_vector(self, name: str) -> F32 | None:
        return self.vector(name) if self.has(name) else None

    def rows(self, name: str, ids: npt.NDArray[np.int32]) -> F32:
        """Selected rows of a matrix (embedding lookup) without dequantizing the rest."""
        tiles = self._tiles.get(name)
        if tiles is not None:
            return tiles.rows(ids)
        info = self.f.tensor_info(name)
        n_rows = info.shape[0]
        row_len = info.dims[0]
        row_bytes = info.n_bytes // n_rows
        raw = self.f.tensor_data(name).reshape(n_rows, row_bytes)
        picked = raw[ids]  # (T, row_bytes) copy of just these rows
        return dequantize(info.type_id, picked.reshape(-1), (len(ids), row_len), name)

    def linear(self, names: list[str], row_perm: list[npt.NDArray[np.intp] | None] | None = None,
               biases: list[str] | None = None) -> Linear:
        """Fuse the matrices ``names`` (each stored ``(out_i, in)``) along the output axis.

        ``row_perm[i]`` reorders the output rows of matrix ``i`` (used for the rope
        layout); ``biases`` names optional bias vectors, one per matrix.
        """
        perms: list[npt.NDArray[np.intp] | None] = list(row_perm) if row_perm is not None else [None] * len(names)
        bias_parts: list[F32] = []
        has_bias = False
        if biases is not None:
            for bname, name in zip(biases, names):
                if bname and self.has(bname):
                    bias_parts.append(self.vector(bname))
                    has_bias = True
                else:
                    bias_parts.append(np.zeros(self.f.tensor_info(name).shape[0], dtype=np.float32))
        for i, p in enumerate(perms):
            if p is not None and has_bias:
                bias_parts[i] = bias_parts[i][p]
        bias = np.concatenate(bias_parts).astype(np.float32) if has_bias else None
        if self.memory == "lean":
            quant = self._quant(names, perms, bias)
            if quant is not None:
                self._release(names)
                return quant
        # Each matrix is dequantized straight into its (in, out) slice of the fused weight.
        infos = [self.f.tensor_info(n) for n in names]
        n_in = infos[0].shape[1]
        n_out = sum(i.shape[0] for i in infos)
        w_t = np.empty((n_in, n_out), dtype=np.float32)  # (in, out)
        col = 0
        for info, p in zip(infos, perms):
            rows, cols = info.shape
            if cols != n_in:
                raise ValueError(f"cannot fuse {names}: input widths differ ({cols} vs {n_in})")
            part = dequantize_transposed(info.type_id, self.f.tensor_data(info.name), rows, cols, info.name)
            w_t[:, col:col + rows] = part if p is None else part[:, p]
            col += rows
        self._release(names)
        return Linear(w_t, bias)

    def _release(self, names: list[str]) -> None:
        for name in names:
            self.f.release_tensor(name)

    def _quant(self, names: list[str], perms: list[npt.NDArray[np.intp] | None], bias: F32 | None
               ) -> QuantLinear | None:
        """The matrices ``names`` fused along the output axis into one :class:`QuantLinear`,
        or None when a type has no integer-code form (F32, IQ4_NL: kept float32)."""
        infos = [self.f.tensor_info(n) for n in names]
        if any(len(i.shape) != 2 for i in infos):
            return None
        n_in = infos[0].shape[1]
        for info in infos:
            if info.shape[1] != n_in:
                raise ValueError(f"cannot fuse {names}: input widths differ ({info.shape[1]} vs {n_in})")
        n_out = sum(i.shape[0] for i in infos)
        n_chunks = -(-n_out // kernels.W)
        if all(i.type_id == GGMLType.F16 for i in infos):
            return QuantLinear(None, _NO_SCALES, _NO_SCALES, self._half_tiles(infos, perms, n_chunks),
                               n_out, bias)
        groups = [code_group(i.type_id) for i in infos]
        if 0 in groups:
            return None
        g = min(groups)  # a fused product shares the finest grouping: coarser scales repeat
        nb = n_in // g
        codes = np.zeros((n_chunks, nb, g, kernels.W), dtype=np.int8)  # (C, nb, g, W)
        scales = np.zeros((n_chunks, nb, kernels.W), dtype=np.float32)  # (C, nb, W)
        with_mins = any(i.type_id in _TYPES_WITH_MINS for i in infos)
        mins = np.zeros((n_chunks, nb, kernels.W), dtype=np.float32) if with_mins else _NO_SCALES
        r = 0
        for info, p, gi in zip(infos, perms, groups):
            rows = info.shape[0]
            row_bytes = info.n_bytes // rows
            by_row = self.f.tensor_data(info.name).reshape(rows, row_bytes)
            if p is not None:
                by_row = by_row[p]
            band = max(kernels.W, _REPACK_BAND_BYTES // max(1, row_bytes) // kernels.W * kernels.W)
            for r0 in range(0, rows, band):
                r1 = min(rows, r0 + band)
                split = split_codes(info.type_id, by_row[r0:r1].reshape(-1), r1 - r0, n_in)
                if p is None:  # done with these file pages: a big matrix never sits twice in memory
                    self.f.release_tensor(info.name, r0 * row_bytes, r1 * row_bytes)
                assert split is not None  # code_group() said the type has codes
                cd, d, m = split
                if gi != g:
                    d = np.repeat(d, gi // g, axis=1)
                    m = None if m is None else np.repeat(m, gi // g, axis=1)
                _scatter_rows(codes, scales, mins if m is not None else None, r + r0,
                              cd.reshape(r1 - r0, nb, g), d, m)
            r += rows
        # A hostile file's inf/NaN scales would turn every answer into NaN: refuse it now.
        if not bool(np.isfinite(scales).all()) or not bool(np.isfinite(mins).all()):
            raise ValueError(f"{', '.join(names)}: block scales hold inf or NaN (corrupt file?)")
        if all(i.type_id in _HALF_SCALE_TYPES for i in infos):  # the kernels warm() loaded by type
            lin = QuantLinear(codes, scales.astype(np.float16).view(np.uint16),
                              mins.astype(np.float16).view(np.uint16), None, n_out, bias)
        else:
            lin = QuantLinear(codes, scales, mins, None, n_out, bias)
        offsets = {_NIBBLE_OFFSET.get(i.type_id, -1) for i in infos}
        if len(offsets) == 1 and min(offsets) >= 0 and g % 2 == 0:
            lin.pack4(offsets.pop())
        return lin

    def _half_tiles(self, infos: list[TensorInfo], perms: list[npt.NDArray[np.intp] | None],
                    n_chunks: int) -> npt.NDArray[np.uint16]:
        """F16 matrices fused into ``(C, n_in, W)`` tiles of float16 bits."""
        n_in = infos[0].shape[1]
        half = np.zeros((n_chunks * kernels.W, n_in), dtype=np.uint16)
        r = 0
        for info, p in zip(infos, perms):
            rows = info.shape[0]
            h = self.f.tensor_data(info.name).view(np.uint16).reshape(rows, n_in)
            half[r:r + rows] = h if p is None else h[p]
            r += rows
        if bool(((half & np.uint16(0x7C00)) == np.uint16(0x7C00)).any()):
            names = ", ".join(i.name for i in infos)
            raise ValueError(f"{names}: float16 weights hold inf or NaN (corrupt file?)")
        return np.ascontiguousarray(half.reshape(n_chunks, kernels.W, n_in).transpose(0, 2, 1))

    def output_head(self, name: str) -> Linear:
        """The vocabulary projection ``(dim, n_vocab)``, as a view of the ``(n_vocab, dim)`` rows."""
        if self.memory == "lean":
            quant = self._quant([name], [None], None)
            if quant is not None:
                self._release([name])
                self._tiles[name] = quant
                return quant
        head = Linear(self.tensor(name).T, None)
        self._release([name])
        return head


def _scatter_rows(codes: npt.NDArray[np.int8], scales: F32, mins: F32 | None, start: int,
                  cd: npt.NDArray[np.int8], d: F32, m: F32 | None) -> None:
    """Write output rows ``start ..`` (codes ``(n, nb, g)``, scales/mins ``(n, nb)``) into
    the tiles: row R goes to chunk ``R // 64``, lane ``R % 64``."""
    n = int(cd.shape[0])
    w = kernels.W
    if start % w == 0 and (n % w == 0 or start + n == codes.shape[0] * w):
        c0 = start // w
        k = -(-n // w)
        if n % w:  # the last chunk is partly padding: pad the band
            pad = k * w - n
            cd = np.concatenate([cd, np.zeros((pad,) + cd.shape[1:], dtype=np.int8)])
            d = np.concatenate([d, np.zeros((pad, d.shape[1]), dtype=np.float32)])
            m = None if m is None else np.concatenate([m, np.zeros((pad, m.shape[1]), dtype=np.float32)])
        codes[c0:c0 + k] = cd.reshape(k, w, cd.shape[1], cd.shape[2]).transpose(0, 2, 3, 1)
        scales[c0:c0 + k] = d.reshape(k, w, d.shape[1]).transpose(0, 2, 1)
        if mins is not None and m is not None:
            mins[c0:c0 + k] = m.reshape(k, w, m.shape[1]).transpose(0, 2, 1)
        return
    rows = np.arange(start, start + n)
    chunk, lane = rows // w, rows % w
    codes[chunk, :, :, lane] = cd
    scales[chunk, :, lane] = d
    if mins is not None and m is not None:
        mins[chunk, :, lane] = m
