"""``llama``: LLaMA 1/2/3, Alpaca, Vicuna, TinyLlama, SmolLM/SmolLM2, Mistral 7B.

RMSNorm, rotary embeddings, SwiGLU feed-forward, grouped-query attention, an output head
tied to the embedding when ``output.weight`` is absent, and rope scaling from metadata
(linear, and LLaMA 3.1's ``rope_freqs`` tensor).

GGUF stores LLaMA's q/k rows interleaved for ggml's NORM rope (pairs ``(0,1), (2,3)``);
we permute those rows once when the weights are prepared so attention can use the NEOX
layout (halves) that :class:`~assistant.core.ops.Rope` implements. Attention scores are
unchanged by a permutation applied to both q and k.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..gguf import GGUFFile
from ..ops import Rope, neox_permutation, rms_norm, swiglu
from ..transformer import Block, KVCache, ModelArgs, Transformer, attend, attention_scale
from ..weights import Linear, WeightLoader

F32 = npt.NDArray[np.float32]


class LlamaBlock(Block):
    """Pre-norm attention + SwiGLU feed-forward, q/k/v and gate/up fused."""

    def __init__(self, args: ModelArgs, loader: WeightLoader, layer: int, rope: Rope,
                 permute_qk: bool, qkv_bias: bool) -> None:
        p = f"blk.{layer}."
        hd = args.head_dim
        self.n_heads = args.n_heads
        self.n_kv = args.n_kv_heads
        self.head_dim = hd
        self.eps = args.eps
        self.rope = rope
        self.scale = attention_scale(hd)
        perms: list[npt.NDArray[np.intp] | None] = [None, None, None]
        if permute_qk:
            perms = [neox_permutation(args.n_heads, hd), neox_permutation(args.n_kv_heads, hd), None]
        biases = [p + "attn_q.bias", p + "attn_k.bias", p + "attn_v.bias"] if qkv_bias else None
        self.attn_norm = loader.vector(p + "attn_norm.weight")
        self.qkv: Linear = loader.linear([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], perms, biases)
        self.wo: Linear = loader.linear([p + "attn_output.weight"])
        self.ffn_norm = loader.vector(p + "ffn_norm.weight")
        self.gate_up: Linear = loader.linear([p + "ffn_gate.weight", p + "ffn_up.weight"])
        self.down: Linear = loader.linear([p + "ffn_down.weight"])
        self.ffn_dim = args.ffn_dim

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        t = x.shape[0]
        hd = self.head_dim
        nq = self.n_heads * hd
        nk = self.n_kv * hd
        h = rms_norm(x, self.attn_norm, self.eps)
        qkv = self.qkv(h)  # (T, (n_heads + 2 n_kv) * hd)
        # q and k are adjacent columns: rotate them together in one call.
        qk = qkv[:, :nq + nk].reshape(t, self.n_heads + self.n_kv, hd).transpose(1, 0, 2).copy()
        self.rope.apply(qk, pos, len(caches) > 1)  # (n_heads + n_kv, T, hd)
        q = qk[:self.n_heads]  # (n_heads, T, hd)
        k = qk[self.n_heads:]  # (n_kv, T, hd)
        v = qkv[:, nq + nk:].reshape(t, self.n_kv, hd).transpose(1, 0, 2)  # (n_kv, T, hd)
        a = attend(q, k, v, caches, layer, pos, self.scale)  # (T, n_heads * hd)
        x = x + self.wo(a)
        h = rms_norm(x, self.ffn_norm, self.eps)
        gu = self.gate_up(h)  # (T, 2 * ffn)
        f = self.ffn_dim
        return x + self.down(swiglu(gu, f))

    def linears(self) -> list[Linear]:
        return [self.qkv, self.wo, self.gate_up, self.down]

    def nbytes(self) -> int:
        return super().nbytes() + int(self.attn_norm.nbytes) * 2


class Llama(Transformer):
    """The LLaMA family."""

    permute_qk: bool = True
    qkv_bias: bool = False

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        args = ModelArgs(f)
        super().__init__(f, args, memory)
        factors: npt.NDArray[np.float32] | None = None
        if self.loader.has("rope_freqs.weight"):
            factors = self.loader.vector("rope_freqs.weight")
        self.rope = Rope(args.head_dim, args.n_rot, args.rope_base, args.rope_freq_scale, factors)

    def make_block(self, layer: int) -> Block:
        return LlamaBlock(self.args, self.loader, layer, self.rope, self.permute_qk, self.qkv_bias)
