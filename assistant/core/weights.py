"""Weights as the engine computes with them, prepared lazily from the mapped GGUF file.

Two memory modes (models.toml ``memory``):

* ``speed``: each matrix becomes float32 stored transposed ``(in, out)``, 4 bytes per
  weight, the layout numpy's BLAS streams fastest for one-row products; q/k/v and
  gate/up are fused into one matrix each so one product reads them all.
* ``lean``: linear block types (Q4_0 .. Q8_0 and the K-quants) are kept as int8 codes
  ``(in, out)`` plus float32 scales and minimums per group of ``g`` input rows
  ``(in // g, out)`` (g = 32, or 16 for Q2_K/Q3_K/Q6_K): 1.25 to 1.5 bytes per weight. Each
  product expands the codes tile by tile (a few hundred input rows at a time) into a reused
  float32 buffer that stays in cache. ``code * scale + min`` is exactly the dequantized
  weight, so lean and speed mode compute the same numbers up to float32 summation order.
  Only IQ4_NL (a lookup table, not a linear code) stays float32.

Nothing is dequantized when the model is opened: each layer's weights are prepared the
first time the layer runs.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from .gguf import GGUFFile
from .quants import dequantize, dequantize_transposed, split_codes

F32 = npt.NDArray[np.float32]

MEMORY_MODES: Final = ("speed", "lean")
# Lean mode expands about this many float32 weights per tile (1 MiB: stays in cache).
_LEAN_TILE_ELEMS: Final = 1 << 19
# Up to this many rows, lean products apply scales to per-block partial sums (few rows:
# decoding); above it, to the expanded weights (many rows: prompt processing).
_LEAN_FEW_ROWS: Final = 4


def lean_tile_rows(n_out: int) -> int:
    """Input rows per lean tile: a multiple of 32 with about ``_LEAN_TILE_ELEMS`` weights."""
    return max(32, min(1024, _LEAN_TILE_ELEMS // max(1, n_out) // 32 * 32))


class Scratch:
    """One float32 buffer shared by every lean product of a model (they never overlap:
    a model runs one forward pass at a time)."""

    def __init__(self) -> None:
        self.buf = np.empty(0, dtype=np.float32)

    def get(self, n: int) -> F32:
        if self.buf.shape[0] < n:
            self.buf = np.empty(n, dtype=np.float32)
        return self.buf[:n]


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


class LeanLinear(Linear):
    """``y = x @ W + b`` with ``W`` kept as int8 codes and per-group scales/mins.

    codes ``(in, out)`` int8, scales and mins ``(in // g, out)`` float32 for groups of ``g``
    consecutive input rows (``g`` = in // scales.shape[0]). Each tile of
    :func:`lean_tile_rows` input rows is expanded into the model's shared scratch buffer
    (``codes * scale + min`` broadcast along the long output axis) and multiplied.
    """

    def __init__(self, codes: npt.NDArray[np.int8], scales: F32, mins: F32 | None, bias: F32 | None,
                 scratch: Scratch) -> None:
        self.codes = codes
        self.scales = scales
        self.mins = mins
        self.bias = bias
        self.n_in = int(codes.shape[0])
        self.n_out = int(codes.shape[1])
        self.group = self.n_in // int(scales.shape[0])
        self.w = np.zeros((0, 0), dtype=np.float32)
        self.scratch = scratch
        self.tile_rows = lean_tile_rows(self.n_out)

    def __call__(self, x: F32) -> F32:
        t = x.shape[0]
        n_out = self.n_out
        y = np.zeros((t, n_out), dtype=np.float32)
        step = self.tile_rows
        flat = self.scratch.get(step * n_out)
        g = self.group
        if t <= _LEAN_FEW_ROWS:
            # y = sum over groups b of d_b * (x_b @ codes_b) + sum(x_b) * m_b: the codes are
            # converted once and read once; scales touch only (groups, out) partial sums.
            xs = x.reshape(t, self.n_in // g, g)
            for start in range(0, self.n_in, step):
                stop = min(self.n_in, start + step)
                b0 = start // g
                nb = (stop - start) // g
                tile = flat[:(stop - start) * n_out].reshape(nb, g, n_out)
                np.copyto(tile, self.codes[start:stop].reshape(nb, g, n_out), casting="unsafe")
                xb = xs[:, b0:b0 + nb, :]  # (T, nb, g)
                part = np.matmul(xb.transpose(1, 0, 2), tile)  # (nb, T, out)
                part *= self.scales[b0:b0 + nb, None, :]
                y += part.sum(axis=0)
                if self.mins is not None:
                    y += xb.sum(axis=2) @ self.mins[b0:b0 + nb]
            if self.bias is not None:
                y += self.bias
            return y
        for start in range(0, self.n_in, step):
            stop = min(self.n_in, start + step)
            rows = stop - start
            b0 = start // g
            nb = rows // g
            buf = flat[:rows * n_out].reshape(rows, n_out)
            tile = buf.reshape(nb, g, n_out)
            np.copyto(buf, self.codes[start:stop], casting="unsafe")
            np.multiply(tile, self.scales[b0:b0 + nb, None, :], out=tile)
            if self.mins is not None:
                np.add(tile, self.mins[b0:b0 + nb, None, :], out=tile)
            y += x[:, start:stop] @ buf
        if self.bias is not None:
            y += self.bias
        return y

    @property
    def nbytes(self) -> int:
        n = int(self.codes.nbytes) + int(self.scales.nbytes)
        if self.mins is not None:
            n += int(self.mins.nbytes)
        if self.bias is not None:
            n += int(self.bias.nbytes)
        return n


class WeightLoader:
    """Reads tensors from a :class:`GGUFFile` into float32 or lean layouts."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory mode {memory!r} is not one of {MEMORY_MODES}")
        self.f = f
        self.memory = memory
        self.scratch = Scratch()

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
            lean = self._lean(names, perms, bias)
            if lean is not None:
                self._release(names)
                return lean
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

    def _lean(self, names: list[str], perms: list[npt.NDArray[np.intp] | None], bias: F32 | None) -> LeanLinear | None:
        codes_l: list[npt.NDArray[np.int8]] = []
        scales_l: list[F32] = []
        mins_l: list[F32 | None] = []
        for name, p in zip(names, perms):
            info = self.f.tensor_info(name)
            if len(info.shape) != 2:
                return None
            rows, cols = info.shape
            split = split_codes(info.type_id, self.f.tensor_data(name), rows, cols, transposed=True)
            if split is None:
                return None
            codes, scales, mins = split  # (in, out_i), (in/g, out_i), (in/g, out_i) | None
            if p is not None:
                codes, scales = codes[:, p], scales[:, p]
                mins = mins[:, p] if mins is not None else None
            codes_l.append(codes)
            scales_l.append(scales)
            mins_l.append(mins)
        # Fused matrices may group differently (Q4_K_M files mix Q4_K's 32-row groups with
        # Q6_K's 16): repeat the coarser scales so all share the finest grouping, exactly.
        n_groups = max(int(sc.shape[0]) for sc in scales_l)
        for i, sc in enumerate(scales_l):
            factor = n_groups // int(sc.shape[0])
            if factor * int(sc.shape[0]) != n_groups:
                return None
            if factor > 1:
                scales_l[i] = np.repeat(sc, factor, axis=0)
                m = mins_l[i]
                if m is not None:
                    mins_l[i] = np.repeat(m, factor, axis=0)
        if len(codes_l) == 1:  # nothing to fuse: no copy (the vocabulary head is big)
            return LeanLinear(np.ascontiguousarray(codes_l[0]), np.ascontiguousarray(scales_l[0]),
                              None if mins_l[0] is None else np.ascontiguousarray(mins_l[0]), bias, self.scratch)
        codes_t = np.ascontiguousarray(np.concatenate(codes_l, axis=1))  # (in, out)
        scales_t = np.ascontiguousarray(np.concatenate(scales_l, axis=1))  # (in/g, out)
        mins_t: F32 | None = None
        if any(m is not None for m in mins_l):
            mins_t = np.ascontiguousarray(np.concatenate(
                [m if m is not None else np.zeros_like(sc) for m, sc in zip(mins_l, scales_l)], axis=1))
        return LeanLinear(codes_t, scales_t, mins_t, bias, self.scratch)

    def output_head(self, name: str) -> Linear:
        """The vocabulary projection ``(dim, n_vocab)``, as a view of the ``(n_vocab, dim)`` rows."""
        if self.memory == "lean":
            lean = self._lean([name], [None], None)
            if lean is not None:
                self._release([name])
                return lean
        head = Linear(self.tensor(name).T, None)
        self._release([name])
        return head
