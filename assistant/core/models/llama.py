"""``llama``: LLaMA 1/2/3, Alpaca, Vicuna, TinyLlama, SmolLM/SmolLM2, Mistral 7B.

RMSNorm, rotary embeddings, SwiGLU feed-forward, grouped-query attention, an output head
tied to the embedding when ``output.weight`` is absent, and rope scaling from metadata
(linear, and LLaMA 3.1's ``rope_freqs`` tensor). The block also serves Qwen2/3, SmolLM3
and Phi-3, whose layers differ from it in a detail or two.

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
    """Pre-norm attention + SwiGLU feed-forward, q/k/v and gate/up fused.

    Options the LLaMA-like families need: no rope (``rope`` None, SmolLM3's every fourth
    layer), per-head RMSNorm of q and k before rope (Qwen3), and an attention ``scale``.
    """

    def __init__(self, args: ModelArgs, loader: WeightLoader, layer: int, rope: Rope | None,
                 permute_qk: bool, qkv_bias: bool, qk_norm: bool = False, scale: float = 0.0) -> None:
        p = f"blk.{layer}."
        hd = args.head_dim
        self.n_heads = args.n_heads
        self.n_kv = args.n_kv_heads
        self.head_dim = hd
        self.eps = args.eps
        self.rope = rope
        self.scale = scale if scale > 0.0 else attention_scale(hd)
        perms: list[npt.NDArray[np.intp] | None] = [None, None, None]
        if permute_qk:
            perms = [neox_permutation(args.n_heads, hd), neox_permutation(args.n_kv_heads, hd), None]
        biases = [p + "attn_q.bias", p + "attn_k.bias", p + "attn_v.bias"] if qkv_bias else None
        self.attn_norm = loader.vector(p + "attn_norm.weight")
        self.qkv: Linear = self.load_qkv(loader, p, perms, biases)
        self.wo: Linear = loader.linear([p + "attn_output.weight"])
        self.ffn_norm = loader.vector(p + "ffn_norm.weight")
        self.gate_up: Linear = self.load_gate_up(loader, p)
        self.down: Linear = loader.linear([p + "ffn_down.weight"])
        self.ffn_dim = args.ffn_dim
        # (n_heads + n_kv, 1, hd): q's norm weight for each query head, then k's for each KV head.
        self.qk_norm: F32 | None = None
        if qk_norm:
            qn = loader.vector(p + "attn_q_norm.weight")
            kn = loader.vector(p + "attn_k_norm.weight")
            if permute_qk:
                qn, kn = qn[neox_permutation(1, hd)], kn[neox_permutation(1, hd)]
            self.qk_norm = np.concatenate([np.tile(qn, (self.n_heads, 1)), np.tile(kn, (self.n_kv, 1))])[:, None, :]

    def load_qkv(self, loader: WeightLoader, p: str, perms: list[npt.NDArray[np.intp] | None],
                 biases: list[str] | None) -> Linear:
        return loader.linear([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], perms, biases)

    def load_gate_up(self, loader: WeightLoader, p: str) -> Linear:
        return loader.linear([p + "ffn_gate.weight", p + "ffn_up.weight"])

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        t = x.shape[0]
        hd = self.head_dim
        nq = self.n_heads * hd
        nk = self.n_kv * hd
        h = rms_norm(x, self.attn_norm, self.eps)
        qkv = self.qkv(h)  # (T, (n_heads + 2 n_kv) * hd)
        # q and k are adjacent columns: normalize and rotate them together in one call.
        qk = qkv[:, :nq + nk].reshape(t, self.n_heads + self.n_kv, hd).transpose(1, 0, 2).copy()
        if self.qk_norm is not None:
            qk = rms_norm(qk, self.qk_norm, self.eps)
        if self.rope is not None:
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


def llama_layer_tensors(args: ModelArgs, layer: int, qkv_fused: bool = False,
                        qk_norm: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a LLaMA-like layer and their shapes (see ``Transformer.check_tensors``)."""
    p = f"blk.{layer}."
    d, hd, f = args.dim, args.head_dim, args.ffn_dim
    nq, nk = args.n_heads * hd, args.n_kv_heads * hd
    out: list[tuple[str, tuple[int, ...]]] = [(p + "attn_norm.weight", (d,)), (p + "ffn_norm.weight", (d,)),
                                              (p + "attn_output.weight", (d, nq)), (p + "ffn_down.weight", (d, f))]
    if qkv_fused:
        out += [(p + "attn_qkv.weight", (nq + 2 * nk, d)), (p + "ffn_up.weight", (2 * f, d))]
    else:
        out += [(p + "attn_q.weight", (nq, d)), (p + "attn_k.weight", (nk, d)), (p + "attn_v.weight", (nk, d)),
                (p + "ffn_gate.weight", (f, d)), (p + "ffn_up.weight", (f, d))]
    if qk_norm:
        out += [(p + "attn_q_norm.weight", (hd,)), (p + "attn_k_norm.weight", (hd,))]
    return out


class Llama(Transformer):
    """The LLaMA family."""

    permute_qk: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        args = ModelArgs(f)
        super().__init__(f, args, memory)
        factors: npt.NDArray[np.float32] | None = None
        if self.loader.has("rope_freqs.weight"):
            factors = self.loader.vector("rope_freqs.weight")
            if factors.shape[0] < args.n_rot // 2:
                raise ValueError(f"{f.path}: rope_freqs.weight has {factors.shape[0]} factors, "
                                 f"expected {args.n_rot // 2}")
        self.rope = Rope(args.head_dim, args.n_rot, args.rope_base, args.rope_freq_scale, factors)

    def layer_rope(self, layer: int) -> Rope | None:
        return self.rope

    def make_block(self, layer: int) -> Block:
        return LlamaBlock(self.args, self.loader, layer, self.layer_rope(layer), self.permute_qk,
                          self.qkv_bias, self.qk_norm)

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        return llama_layer_tensors(self.args, layer, qk_norm=self.qk_norm)
