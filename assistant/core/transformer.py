"""The decoder-only transformer skeleton every architecture plugs its blocks into.

An architecture module supplies its hyper-parameters (read from GGUF metadata) and a
block class; this module owns the KV cache, the embedding lookup, the layer loop, the
final norm and the output head, and the chunked prefill that keeps prompt processing a
sequence of matrix-matrix products.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Final, TypeVar

import numpy as np
import numpy.typing as npt

from . import kernels
from .gguf import GGUFFile
from .ops import ROW_BY_ROW, attention, rms_norm, softcap_inplace
from .weights import QUANT_KERNEL_ROWS, Linear, QuantLinear, WeightLoader

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

# Up to this many rows of one sequence attend through the decoding kernel, a row at a time
# (each as when decoded alone).
KERNEL_ATTENTION_ROWS: Final = 16
PREPARE_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
# Prompt attention with fewer (query, key) pairs than this stays on one thread: a short chunk
# is not worth the hand-off (at 256 x 512 pairs the threads measured even; they pay on long
# prompts, docs/performance.md).
ATTENTION_THREADS_MIN: Final = 1 << 17


# Passes over this many rows at most take every one-row route (products, norms, rope,
# attention): see Transformer.rows_exact.
EXACT_ROWS: Final = min(ROW_BY_ROW, kernels.FEW_ROWS, QUANT_KERNEL_ROWS, KERNEL_ATTENTION_ROWS)


class ContextFullError(ValueError):
    """The tokens do not fit in the context window."""


class Stopped(Exception):
    """Raised inside a forward pass when the caller asked to stop."""


@dataclass
class ModelArgs:
    """Hyper-parameters common to the supported architectures, read from GGUF metadata.

    Each architecture module subclasses it with the settings its layers add (defaults
    in the fields, metadata read in :meth:`read_arch`); :meth:`from_gguf` builds either.
    """

    arch: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    eps: float
    rope_base: float
    n_rot: int
    rope_freq_scale: float
    n_ctx_train: int
    sliding_window: int
    n_vocab: int

    @classmethod
    def from_gguf(cls: type[A], f: GGUFFile) -> A:
        """The arguments of ``f`` (``ValueError`` when the metadata is missing or contradictory)."""
        arch = f.architecture
        p = arch + "."
        dim = _positive(f, p + "embedding_length")
        n_layers = _positive(f, p + "block_count")
        n_heads = _positive(f, p + "attention.head_count")
        n_kv_heads = f.get_int(p + "attention.head_count_kv", n_heads)
        head_dim = f.get_int(p + "attention.key_length", dim // n_heads)
        ffn_dim = _positive(f, p + "feed_forward_length")
        eps = f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5)
        rope_base = f.get_float(p + "rope.freq_base", 10000.0)
        n_rot = f.get_int(p + "rope.dimension_count", head_dim)
        scaling = f.get_str(p + "rope.scaling.type", "")
        factor = f.get_float(p + "rope.scaling.factor", 0.0)
        rope_freq_scale = 1.0 / factor if scaling == "linear" and factor > 0 else 1.0
        n_ctx_train = f.get_int(p + "context_length", 2048)
        sliding_window = f.get_int(p + "attention.sliding_window", 0)
        emb = f.tensor_info("token_embd.weight")
        if n_heads % max(1, n_kv_heads) != 0 or n_kv_heads <= 0:
            raise ValueError(f"{arch}: {n_heads} heads cannot be grouped over {n_kv_heads} KV heads")
        if n_rot > head_dim or n_rot % 2 or head_dim <= 0:
            raise ValueError(f"{arch}: rope dimension {n_rot} exceeds the head size {head_dim} or is odd")
        if emb.shape[1] != dim:
            raise ValueError(f"token_embd.weight has width {emb.shape[1]}, expected {dim}")
        args = cls(arch, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, eps, rope_base, n_rot,
                   rope_freq_scale, n_ctx_train, sliding_window, emb.shape[0])
        args.read_arch(f)
        return args

    def read_arch(self, f: GGUFFile) -> None:
        """Read the metadata an architecture adds (subclasses; the common fields are set)."""


A = TypeVar("A", bound=ModelArgs)


def _positive(f: GGUFFile, key: str) -> int:
    v = f.get_int(key, -1)
    if v <= 0:
        raise ValueError(f"{f.path}: metadata {key} is missing or not positive")
    return v


class KVCache:
    """Preallocated keys and values, one ``(n_kv_heads, n_ctx, head_dim)`` pair per layer.

    ``np.zeros`` maps untouched pages lazily, so a long context costs memory only as it
    fills. ``n`` is the number of positions holding valid entries.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int) -> None:
        self.n_ctx = n_ctx
        self.k: list[F32] = [np.zeros((n_kv_heads, n_ctx, head_dim), dtype=np.float32) for _ in range(n_layers)]
        self.v: list[F32] = [np.zeros((n_kv_heads, n_ctx, head_dim), dtype=np.float32) for _ in range(n_layers)]
        self.n = 0
        # Decoding rows attend through the numba kernel (set where the products run on numba
        # too: in speed mode BLAS's spinning threads and numba's would fight over the cores).
        self.kernel_attention = False
        # The tokens whose keys/values are cached (for prompt-cache prefix reuse).
        self.tokens: list[int] = []

    def store(self, layer: int, pos: int, k: F32, v: F32) -> tuple[F32, F32]:
        """Write ``k``/``v`` ``(n_kv, T, hd)`` at ``pos`` and return views of ``0 .. pos+T``."""
        t = k.shape[1]
        self.k[layer][:, pos:pos + t] = k
        self.v[layer][:, pos:pos + t] = v
        return self.k[layer][:, :pos + t], self.v[layer][:, :pos + t]

    def fork(self) -> "KVCache":
        """A new cache holding a copy of this one's entries (for parallel sequences)."""
        n_kv, n_ctx, hd = self.k[0].shape
        other = KVCache(len(self.k), n_kv, n_ctx, hd)
        for layer in range(len(self.k)):
            other.k[layer][:, :self.n] = self.k[layer][:, :self.n]
            other.v[layer][:, :self.n] = self.v[layer][:, :self.n]
        other.n = self.n
        other.kernel_attention = self.kernel_attention
        other.tokens = list(self.tokens)
        return other

    def truncate(self, n: int) -> None:
        """Forget everything from position ``n`` on (the stale entries are overwritten later)."""
        self.n = min(self.n, n)
        del self.tokens[n:]


class Block:
    """One transformer layer; architectures subclass it.

    ``x`` holds either T consecutive tokens of one sequence (one cache) or one token of
    each of several parallel sequences at the same position (one cache per row).
    """

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        raise NotImplementedError

    def nbytes(self) -> int:
        """Bytes held by this layer's prepared weights (its products'; architectures add
        other tensors they keep)."""
        return sum(lin.nbytes for lin in self.linears())

    def linears(self) -> list[Linear]:
        """This layer's matrix products, in the order one token runs them (benchmarks time
        them bare, as the float32 floor)."""
        raise NotImplementedError


class Transformer:
    """Embedding, blocks (built lazily on first use), final norm and output head."""

    # Tokens per prefill chunk: large enough for efficient matrix products, small enough
    # that cancellation between chunks is prompt.
    prefill_chunk: int = 256

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        self.f = f
        self.args = args
        self.loader = WeightLoader(f, memory)
        self.memory = memory
        # Where a pass over a few rows can give each its one-row numbers (see rows_exact).
        self.exact_rows = memory == "lean" and kernels.HAVE_NUMBA
        self._blocks: list[Block | None] = [None] * args.n_layers
        self._head: Linear | None = None
        self.output_norm = self.loader.vector("output_norm.weight")
        self.embed_scale = 1.0
        # > 0: logits are capped to cap * tanh(logit / cap) (Gemma 2).
        self.final_softcap = 0.0
        self._prepared = False
        self._rows_exact: bool | None = None

    # --------------------------------------------------------------- architecture hooks
    def make_block(self, layer: int) -> Block:
        raise NotImplementedError

    def head_name(self) -> str:
        return "output.weight" if self.loader.has("output.weight") else "token_embd.weight"

    def set_context(self, n_ctx: int) -> None:
        """Called once with the context size the model runs with (Phi-3's LongRoPE picks its
        rope factors from it, as llama.cpp does); most architectures ignore it."""

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        """Every tensor layer ``layer`` reads, with its shape in numpy order, for
        :meth:`check_tensors`."""
        raise NotImplementedError

    def check_tensors(self) -> None:
        """Raise ``ValueError`` now, at load time, if a tensor the layers need is missing or
        its shape contradicts the metadata (blocks are only built when they first run)."""
        a = self.args
        want: list[tuple[str, tuple[int, ...]]] = [("output_norm.weight", (a.dim,)),
                                                   (self.head_name(), (a.n_vocab, a.dim))]
        for layer in range(a.n_layers):
            want.extend(self.layer_tensors(layer))
        for name, shape in want:
            if not self.loader.has(name):
                raise ValueError(f"{self.f.path}: {a.arch} needs tensor {name!r}, which the file lacks")
            got = self.f.tensor_info(name).shape
            if tuple(got) != shape:
                raise ValueError(f"{self.f.path}: tensor {name!r} has shape {tuple(got)}, but the metadata "
                                 f"({a.n_heads} heads, {a.n_kv_heads} KV heads, head size {a.head_dim}, "
                                 f"width {a.dim}, feed-forward {a.ffn_dim}) implies {shape}")

    # --------------------------------------------------------------- pieces
    def block(self, layer: int) -> Block:
        b = self._blocks[layer]
        if b is None:
            b = self.make_block(layer)
            self._blocks[layer] = b
        return b

    def head(self) -> Linear:
        h = self._head
        if h is None:
            h = self.loader.output_head(self.head_name())
            self._head = h
        return h

    def prepare(self, threads: int = 2) -> None:
        """Prepare every layer's weights now, ``threads`` layers at a time (numpy releases
        the GIL while it dequantizes, so two threads use two cores)."""
        if self._prepared:
            return
        if threads > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                head = pool.submit(self.head)
                list(pool.map(self.block, range(self.args.n_layers)))
                head.result()
        else:
            for i in range(self.args.n_layers):
                self.block(i)
            self.head()
        self._prepared = True
        # The weights now live in their prepared form; the file's pages are not needed,
        # except the embedding's, which every lookup reads. In speed mode, fault those in
        # once now, or a long-running server's resident memory creeps up as new token ids
        # appear; lean mode leaves them to be read on demand (clean pages the kernel may drop).
        if self.memory == "speed":
            self.f.release_pages(keep="token_embd.weight")
            # Fault them in: a tied head dropped them after dequantizing; an untied model never read them.
            self.f.touch_tensor("token_embd.weight")
        else:
            self.f.release_pages()

    def new_cache(self, n_ctx: int) -> KVCache:
        a = self.args
        cache = KVCache(a.n_layers, a.n_kv_heads, n_ctx, a.head_dim)
        cache.kernel_attention = kernels.HAVE_NUMBA and self.memory == "lean"
        return cache

    def embed(self, tokens: I32) -> F32:
        x = self.loader.rows("token_embd.weight", tokens)  # (T, dim)
        if self.embed_scale != 1.0:
            x *= np.float32(self.embed_scale)
        return x

    # --------------------------------------------------------------- forward
    def hidden(self, tokens: I32, cache: KVCache, should_stop: Callable[[], bool] | None = None) -> F32:
        """Run ``tokens`` at positions ``cache.n ..``; returns final-normed hidden ``(T, dim)``.

        ``should_stop`` is polled between layers; when it fires, :class:`Stopped` is raised
        and the cache is left as it was (entries written past ``cache.n`` are overwritten later).
        """
        pos = cache.n
        t = int(tokens.shape[0])
        if pos + t > cache.n_ctx:
            raise ContextFullError(
                f"{pos + t} tokens do not fit in the context of {cache.n_ctx}"
            )
        x = self.embed(tokens)
        caches = [cache]
        for layer in range(self.args.n_layers):
            if should_stop is not None and should_stop():
                raise Stopped()
            x = self.block(layer)(x, caches, layer, pos)
        cache.n = pos + t
        cache.tokens.extend(int(i) for i in tokens)
        return rms_norm(x, self.output_norm, self.args.eps)

    def step_parallel(self, tokens: I32, caches: list[KVCache]) -> F32:
        """One token for each of several sequences at the same position (parallel
        sampling): the weights are read once for all rows. Logits ``(B, n_vocab)``."""
        if not self._prepared:
            self.prepare(PREPARE_THREADS)
        pos = caches[0].n
        for c in caches:
            if c.n != pos or pos + 1 > c.n_ctx:
                raise ContextFullError(f"parallel sequences must share a position with room; got {c.n}")
        x = self.embed(tokens)  # (B, dim)
        for layer in range(self.args.n_layers):
            x = self.block(layer)(x, caches, layer, pos)
        for c, tok in zip(caches, tokens):
            c.n = pos + 1
            c.tokens.append(int(tok))
        return self.output(rms_norm(x, self.output_norm, self.args.eps))

    def forward(self, tokens: I32, cache: KVCache, all_logits: bool = False,
                should_stop: Callable[[], bool] | None = None) -> F32:
        """Process ``tokens`` in prefill chunks; logits ``(T, n_vocab)`` or of the last ``(1, n_vocab)``.

        ``should_stop`` is polled between chunks and between layers (so a stop lands within
        one layer's work); the chunks completed so far stay cached and an empty
        ``(0, n_vocab)`` array is returned.
        """
        n = int(tokens.shape[0])
        if not self._prepared:
            self.prepare(PREPARE_THREADS)
        outs: list[F32] = []
        last = np.zeros((0, self.args.dim), dtype=np.float32)
        for start in range(0, n, self.prefill_chunk):
            if should_stop is not None and should_stop():
                return np.zeros((0, self.args.n_vocab), dtype=np.float32)
            chunk = tokens[start:start + self.prefill_chunk]
            try:
                h = self.hidden(chunk, cache, should_stop)
            except Stopped:
                return np.zeros((0, self.args.n_vocab), dtype=np.float32)
            if all_logits:
                outs.append(self.output(h))
            last = h[-1:]
        if all_logits:
            return np.concatenate(outs, axis=0) if outs else np.zeros((0, self.args.n_vocab), dtype=np.float32)
        if last.shape[0] == 0:
            return np.zeros((0, self.args.n_vocab), dtype=np.float32)
        return self.output(last)

    def pooled_hidden(self, tokens: I32) -> F32:
        """Unit-length mean of the final-normed hidden states of ``tokens`` ``(dim,)``, run
        from an empty cache of their own (what /v1/embeddings returns)."""
        if not self._prepared:
            self.prepare(PREPARE_THREADS)
        n = int(tokens.shape[0])
        cache = self.new_cache(max(1, n))
        total = np.zeros(self.args.dim, dtype=np.float64)  # (dim,)
        for start in range(0, n, self.prefill_chunk):
            h = self.hidden(tokens[start:start + self.prefill_chunk], cache)  # (T, dim)
            total += h.sum(axis=0, dtype=np.float64)
        mean = total / max(1, n)
        norm = float(np.linalg.norm(mean))
        out: F32 = (mean / norm if norm > 0.0 else mean).astype(np.float32)
        return out

    def rows_exact(self) -> bool:
        """Whether a pass over up to EXACT_ROWS rows (drafts being verified) gives each row
        exactly the numbers of a pass over it alone: lean mode's kernels, every product on the
        quantized tiles (BLAS's matrix-matrix and matrix-vector products round differently)."""
        if self._rows_exact is None:
            self._rows_exact = self.exact_rows and all(isinstance(lin, QuantLinear) for lin in self.linears())
        return self._rows_exact

    def linears(self) -> list[Linear]:
        """Every matrix product of one token's forward pass, in order, the head last."""
        out: list[Linear] = []
        for layer in range(self.args.n_layers):
            out.extend(self.block(layer).linears())
        out.append(self.head())
        return out

    def output(self, h: F32) -> F32:
        """Logits ``(T, n_vocab)`` of final-normed hidden states ``h`` ``(T, dim)``."""
        logits = self.head()(h)
        if self.final_softcap > 0.0:
            softcap_inplace(logits, self.final_softcap)
        return logits

    @property
    def weight_bytes(self) -> int:
        """Bytes held by the weights prepared so far."""
        n = 0
        for b in self._blocks:
            if b is not None:
                n += b.nbytes()
        if self._head is not None:
            n += self._head.nbytes
        return n


def attend(q: F32, k: F32, v: F32, caches: list[KVCache], layer: int, pos: int, scale: float,
           window: int = 0, softcap: float = 0.0) -> F32:
    """Store k/v and attend. q ``(n_heads, R, hd)``, k/v ``(n_kv, R, hd)``: R tokens of one
    sequence (one cache), or one token per parallel sequence (one cache per row).
    Returns ``(R, n_heads * hd)``."""
    if len(caches) == 1:
        keys, values = caches[0].store(layer, pos, k, v)
        t = q.shape[1]
        if caches[0].kernel_attention and t <= KERNEL_ATTENTION_ROWS:
            # Decoding rows (drafts being verified too) stay on numba's threads: BLAS's
            # would spin against them.
            return kernels.attend_rows(q, caches[0].k[layer], caches[0].v[layer], pos, window, scale, softcap)
        if caches[0].kernel_attention and kernels.INT8_ACTIVATIONS:
            return _attend_on_threads(q, keys, values, pos, scale, window, softcap)
        return attention(q, keys, values, pos, scale, window, softcap)
    outs: list[F32] = []
    for i, c in enumerate(caches):
        keys, values = c.store(layer, pos, k[:, i:i + 1], v[:, i:i + 1])
        if c.kernel_attention:
            outs.append(kernels.attend_rows(q[:, i:i + 1], c.k[layer], c.v[layer], pos, window, scale, softcap))
        else:
            outs.append(attention(q[:, i:i + 1], keys, values, pos, scale, window, softcap))
    return np.concatenate(outs, axis=0)


_pools: dict[int, ThreadPoolExecutor] = {}


def _attend_on_threads(q: F32, keys: F32, values: F32, pos: int, scale: float, window: int,
                       softcap: float) -> F32:
    """Prompt attention (see :func:`attention`) while numba's threads run the products: BLAS
    on the calling thread only (the two pools' idle workers would spin against each other),
    the heads split over as many Python threads as the kernels use."""
    n_heads, t, hd = q.shape
    n_kv = keys.shape[0]
    group = n_heads // n_kv
    n = kernels.thread_count()
    with kernels.blas_on_caller():
        if n == 1 or t * (pos + t) < ATTENTION_THREADS_MIN:
            return attention(q, keys, values, pos, scale, window, softcap)
        split = 1 if n_kv % n == 0 else min(group, n)  # cut each group when the KV heads do not divide
        pieces = [(j, j * group + i * group // split, j * group + (i + 1) * group // split)
                  for j in range(n_kv) for i in range(split)]
        out = np.empty((t, n_heads * hd), dtype=np.float32)

        def run(piece: tuple[int, int, int]) -> None:
            j, h0, h1 = piece
            if h1 > h0:
                out[:, h0 * hd:h1 * hd] = attention(q[h0:h1], keys[j:j + 1], values[j:j + 1], pos, scale, window,
                                                    softcap)

        pool = _pools.get(n) or _pools.setdefault(n, ThreadPoolExecutor(n, thread_name_prefix="attention"))
        list(pool.map(run, pieces))
    return out


def attention_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
