"""Numeric building blocks shared by every architecture: norms, RoPE, attention, activations.

Everything is float32 end to end: one float64 scalar would silently promote the residual
stream and make decoding many times slower, so constants are ``np.float32`` and tests
check the dtypes.
"""

from __future__ import annotations

import math
from typing import Final, cast

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

_ONE: Final = np.float32(1.0)
NEG_INF: Final = np.float32(-np.inf)
_GELU_A: Final = np.float32(-2.0 * math.sqrt(2.0 / math.pi) * 0.044715)
_GELU_B: Final = np.float32(-2.0 * math.sqrt(2.0 / math.pi))
_EXP_MAX: Final = np.float32(88.0)
# Up to this many rows (decoding, drafts being verified: kernels.FEW_ROWS) are normed one by one.
ROW_BY_ROW: Final = 16


def rms_norm(x: F32, weight: F32, eps: float) -> F32:
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * weight``."""
    if x.ndim == 2 and x.shape[0] <= ROW_BY_ROW:
        # Decoding rows: a BLAS dot and scalar math per row instead of five small-array calls,
        # each with numpy's fixed per-call cost (docs/performance.md, "numpy operations"); and
        # a row gets the numbers it gets alone, whatever rows come with it (drafts verified).
        out = np.empty_like(x)
        for r in range(x.shape[0]):
            row = x[r]
            inv = np.float32(1.0 / math.sqrt(float(np.dot(row, row)) / row.shape[0] + eps))
            np.multiply(row, inv, out=out[r])
        out *= weight
        return out
    # Sums of squares in one pass without a squared temporary (einsum), then small-array
    # math and two passes over x (measured in docs/performance.md, "numpy operations").
    inv = np.einsum("...i,...i->...", x, x)[..., None]  # (..., 1)
    inv *= np.float32(1.0 / x.shape[-1])
    inv += np.float32(eps)
    np.sqrt(inv, out=inv)
    np.divide(_ONE, inv, out=inv)
    out = x * inv
    out *= weight
    return cast(F32, out)


def swiglu(gu: F32, f: int) -> F32:
    """``silu(gate) * up`` for ``gu`` = ``(T, 2f)`` [gate | up], in one buffer, where
    ``silu(x) = x / (1 + exp(-x))``.

    The same float32 operations as computing ``silu(gate) * up`` directly, without four temporaries of
    ``(T, f)`` (each a fresh page-faulting allocation at prompt-processing sizes).
    """
    g = gu[:, :f]
    out = np.negative(g)
    # Clamped: for g < -88, silu(g) is below 1e-36 in magnitude either way, and exp stays finite.
    np.minimum(out, _EXP_MAX, out=out)
    np.exp(out, out=out)
    out += _ONE
    np.divide(g, out, out=out)
    out *= gu[:, f:]
    return out


def geglu(gu: F32, f: int) -> F32:
    """``gelu_tanh(gate) * up`` for ``gu`` = ``(T, 2f)`` [gate | up], in one buffer."""
    out = gelu_tanh(gu[:, :f])
    out *= gu[:, f:]
    return out


def gelu_tanh(x: F32) -> F32:
    """GELU with the tanh approximation (ggml's ``gelu``).

    ``0.5 x (1 + tanh(z))`` is computed as the identical ``x / (1 + exp(-2z))``: ``exp`` is
    cheaper than ``tanh`` and the form needs fewer passes, with the same error against float64
    (docs/performance.md, "numpy operations").
    """
    inner = x * x
    inner *= _GELU_A
    inner += _GELU_B
    inner *= x  # -2z = -2 sqrt(2/pi) (x + 0.044715 x^3)
    # exp(88) is near float32's largest: clamped there (x below about -10), GELU is below
    # 1e-36 in magnitude either way, and exp stays finite.
    np.minimum(inner, _EXP_MAX, out=inner)
    np.exp(inner, out=inner)
    inner += _ONE
    np.divide(x, inner, out=inner)
    return inner


def softcap_inplace(x: F32, cap: float) -> F32:
    """``cap * tanh(x / cap)`` in place (Gemma 2's attention-score and final-logit capping)."""
    np.multiply(x, np.float32(1.0 / cap), out=x)
    np.tanh(x, out=x)
    np.multiply(x, np.float32(cap), out=x)
    return x


def softmax_inplace(x: F32) -> F32:
    """Softmax over the last axis, in place. Scores may be -inf (masked), but every row
    needs one finite score, or it comes out NaN; causal attention guarantees that (each
    query sees its own key, also inside a sliding window)."""
    m = np.maximum.reduce(x, axis=-1, keepdims=True)
    np.subtract(x, m, out=x)
    np.exp(x, out=x)
    s = np.add.reduce(x, axis=-1, keepdims=True)
    np.divide(x, s, out=x)
    return x


def rope_inv_freq(head_dim: int, n_rot: int, base: float, freq_scale: float,
                  factors: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float64]:
    """Per-pair inverse frequencies ``(n_rot // 2,)`` in float64 (cast after the product)."""
    i = np.arange(0, n_rot, 2, dtype=np.float64)
    inv = freq_scale / np.power(np.float64(base), i / n_rot)
    if factors is not None:
        inv = inv / factors.astype(np.float64)[: n_rot // 2]
    return inv


# Up to this head size, decoding rotates with a (head_dim, head_dim) matrix product, faster
# than the elementwise form for small heads only (docs/performance.md, "numpy operations").
ROPE_MATRIX_MAX_DIM: Final = 128
# Rotation matrices cached (positions of one decoding step or pass over drafts, and then some).
ROPE_MATRICES_KEPT: Final = 64


class Rope:
    """Rotary embedding in the NEOX layout (rotate the first and second half of each head).

    LLaMA GGUF files store q/k rows interleaved for ggml's NORM rope; the llama module
    permutes those rows once at load time so every architecture uses this one layout.
    """

    def __init__(self, head_dim: int, n_rot: int, base: float, freq_scale: float = 1.0,
                 factors: npt.NDArray[np.float32] | None = None, exact_rows: bool = False) -> None:
        self.head_dim = head_dim
        # Rotate a few rows each as when decoded alone (slower than elementwise): where the
        # rest of the pass is exact too (Transformer.exact_rows).
        self.exact_rows = exact_rows
        self.n_rot = n_rot
        self.inv = rope_inv_freq(head_dim, n_rot, base, freq_scale, factors)
        self._cos = np.zeros((0, n_rot // 2), dtype=np.float32)
        self._sin = np.zeros((0, n_rot // 2), dtype=np.float32)
        # The rotation matrices of the positions last asked for (every layer of one decoding
        # step, or of one pass over drafts, rotates at the same few positions).
        self._rots: dict[int, F32] = {}
        half = n_rot // 2
        i = np.arange(half)
        # Where cos and sin go in a rotation matrix: out = x @ R, with
        # out[i] = x[i] cos - x[i+half] sin and out[i+half] = x[i+half] cos + x[i] sin.
        self._diag = (np.concatenate([i, i + half]), np.concatenate([i, i + half]))
        self._minus_sin = (i + half, i)
        self._plus_sin = (i, i + half)

    def _tables(self, end: int) -> tuple[F32, F32]:
        if end > self._cos.shape[0]:
            n = max(end, 2 * self._cos.shape[0], 256)
            ang = np.arange(n, dtype=np.float64)[:, None] * self.inv[None, :]
            self._cos = np.cos(ang).astype(np.float32)
            self._sin = np.sin(ang).astype(np.float32)
        return self._cos, self._sin

    def rotation(self, pos: int) -> F32:
        """The ``(head_dim, head_dim)`` matrix that rotates a row at ``pos``: ``x @ R``."""
        r = self._rots.get(pos)
        if r is None:
            if len(self._rots) >= ROPE_MATRICES_KEPT:
                self._rots.clear()
            cos_t, sin_t = self._tables(pos + 1)
            r = np.eye(self.head_dim, dtype=np.float32)
            r[self._diag] = np.concatenate([cos_t[pos], cos_t[pos]])
            r[self._minus_sin] = -sin_t[pos]
            r[self._plus_sin] = sin_t[pos]
            self._rots[pos] = r
        return r

    def apply(self, x: F32, pos: int, same_position: bool = False) -> F32:
        """Rotate ``x`` ``(n_heads, T, head_dim)`` in place for positions ``pos .. pos+T-1``
        (or, with ``same_position``, every row at ``pos``: rows of parallel sequences)."""
        t = x.shape[1]
        if (t == 1 or same_position) and self.head_dim <= ROPE_MATRIX_MAX_DIM:
            # All rows at one position (decoding): one small matrix product with the cached
            # rotation instead of a dozen elementwise calls on tiny slices. The zeros in R
            # add exact zeros, so this is the same rotation up to float32 rounding.
            n_heads, _, hd = x.shape
            x[...] = (x.reshape(n_heads * t, hd) @ self.rotation(pos)).reshape(x.shape)
            return x
        if self.exact_rows and t <= ROW_BY_ROW and self.head_dim <= ROPE_MATRIX_MAX_DIM:
            # Drafts being verified: each position as it is rotated when decoded alone.
            for r in range(t):
                x[:, r] = np.ascontiguousarray(x[:, r]) @ self.rotation(pos + r)
            return x
        end = pos + 1 if same_position else pos + t
        cos_t, sin_t = self._tables(end)
        cos = cos_t[pos:end]  # (T or 1, n_rot/2)
        sin = sin_t[pos:end]
        half = self.n_rot // 2
        x1 = x[..., :half]
        x2 = x[..., half:self.n_rot]
        r1 = x1 * cos - x2 * sin
        r2 = x2 * cos + x1 * sin
        x[..., :half] = r1
        x[..., half:self.n_rot] = r2
        return x


def neox_permutation(n_heads: int, head_dim: int) -> npt.NDArray[np.intp]:
    """Row order that turns ggml NORM-rope (interleaved pairs) heads into NEOX layout."""
    per_head = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    out: npt.NDArray[np.intp] = (np.arange(n_heads)[:, None] * head_dim + per_head[None, :]).reshape(-1)
    return out


# Additive masks already built: every layer of a prefill chunk needs the same ones. Each
# entry is immutable once stored, so threads running different models may share them.
# Bounded in bytes: a mask is (rows, keys) float32, 4 MB for 128 rows after 8K tokens.
_masks: dict[tuple[int, int, int, int, int], F32] = {}
_MASK_CACHE_BYTES: Final = 8 << 20

# Prompt chunks attend in blocks of this many query rows, each against only the keys its
# rows can see (causal, and within a sliding window): a 256-token chunk at the start of a
# prompt then computes 3/4 of the scores (and their exp), one after 256 cached tokens 7/8.
# The block size is measured in docs/performance.md, "numpy operations".
ATTENTION_ROW_BLOCK: Final = 128


def _additive_mask(pos: int, t: int, k0: int, s: int, window: int) -> F32:
    """``(T, S)`` 0 / -inf for queries at ``pos ..`` and keys at ``k0 .. k0+S-1``: query
    ``p`` sees keys ``<= p`` (and ``> p - window`` when ``window`` > 0)."""
    key = (pos, t, k0, s, window)
    mask = _masks.get(key)
    if mask is not None:
        return mask
    qpos = np.arange(pos, pos + t)[:, None]
    kpos = np.arange(k0, k0 + s)[None, :]
    masked = kpos > qpos
    if window > 0:
        masked = masked | (qpos - kpos >= window)
    mask = np.where(masked, NEG_INF, np.float32(0))  # float32 already: no second copy
    held = list(_masks.values())  # a snapshot: another thread may be adding to the dict
    if sum(int(m.nbytes) for m in held) + int(mask.nbytes) > _MASK_CACHE_BYTES:
        _masks.clear()
    _masks[key] = mask
    return mask


def attention(q: F32, k: F32, v: F32, pos: int, scale: float, window: int = 0, softcap: float = 0.0) -> F32:
    """Causal grouped-query attention.

    q: ``(n_heads, T, head_dim)`` for positions ``pos .. pos+T-1``; k, v: ``(n_kv_heads, S,
    head_dim)`` for positions ``0 .. S-1`` (S = pos + T). ``window`` > 0 limits each query
    to the last ``window`` keys (sliding-window layers); ``softcap`` > 0 caps the scaled
    scores with :func:`softcap_inplace` before masking. Returns ``(T, n_heads * head_dim)``.
    """
    n_heads, t, hd = q.shape
    if t <= ATTENTION_ROW_BLOCK:
        k0 = max(0, pos - window + 1) if window > 0 else 0  # keys before k0: outside every row's window
        return _attend_keys(q, k[:, k0:], v[:, k0:], pos, k0, scale, window, softcap)
    out = np.empty((t, n_heads * hd), dtype=np.float32)
    for r0 in range(0, t, ATTENTION_ROW_BLOCK):
        r1 = min(t, r0 + ATTENTION_ROW_BLOCK)
        k0 = max(0, pos + r0 - window + 1) if window > 0 else 0
        out[r0:r1] = _attend_keys(q[:, r0:r1], k[:, k0:pos + r1], v[:, k0:pos + r1], pos + r0, k0, scale, window,
                                    softcap)
    return out


def _attend_keys(q: F32, k: F32, v: F32, pos: int, k0: int, scale: float, window: int,
                 softcap: float = 0.0) -> F32:
    """:func:`attention` for queries at ``pos ..`` against the keys at ``k0 .. pos+T-1``."""
    n_heads, t, hd = q.shape
    n_kv = k.shape[0]
    s = k.shape[1]
    group = n_heads // n_kv
    rows = group * t
    # Decoding: OpenBLAS's sgemm takes longer for 2 or 3 rows than for 4, so a group of 2-3
    # query heads gets zero rows padded in, sliced off after (docs/performance.md, "numpy
    # operations"); 7 rows and 1 row (a gemv) are not padded.
    pad = 4 - rows if t == 1 and 2 <= rows <= 3 else 0
    qg = q.reshape(n_kv, rows, hd)
    if pad:
        padded = np.zeros((n_kv, rows + pad, hd), dtype=np.float32)
        np.multiply(qg, np.float32(scale), out=padded[:, :rows])
        qg = padded
    elif scale != 1.0:
        qg = qg * np.float32(scale)
    scores = np.matmul(qg, k.transpose(0, 2, 1))  # (n_kv, rows + pad, S); padded rows score 0
    live = scores[:, :rows].reshape(n_kv, group, t, s)  # a view: t == 1 only inserts an axis
    if softcap > 0.0:
        softcap_inplace(live, softcap)
    # Decoding rows get only their window's keys (see attention), so they need no mask.
    if t > 1 or (window > 0 and s > window):
        # One broadcast add of 0 / -inf, faster than boolean-mask assignment (docs/performance.md).
        live += _additive_mask(pos, t, k0, s, window)
    softmax_inplace(live)
    out = np.matmul(scores, v)  # (n_kv, rows + pad, hd); padded rows are 0 * V
    if t == 1:
        row: F32 = out[:, :rows].reshape(1, n_heads * hd)  # already in head order
        return row
    out = out.reshape(n_heads, t, hd).transpose(1, 0, 2)
    return np.ascontiguousarray(out).reshape(t, n_heads * hd)
