"""``llama``: LLaMA 1/2/3, Alpaca, Vicuna, TinyLlama, SmolLM/SmolLM2, Mistral 7B.

RMSNorm, rotary embeddings, SwiGLU feed-forward, grouped-query attention, an output head
tied to the embedding when ``output.weight`` is absent, and rope scaling from metadata
(linear, and LLaMA 3.1's ``rope_freqs`` tensor). Its parts (:class:`Attention`,
:class:`MLP`) also serve Qwen2/3, SmolLM3, Phi-3 and Gemma 2/3, whose layers differ from
LLaMA's in a detail or two, set in their :class:`LlamaArgs` subclass.

GGUF stores LLaMA's q/k rows interleaved for ggml's NORM rope (pairs ``(0,1), (2,3)``);
we permute those rows once when the weights are prepared so attention can use the NEOX
layout (halves) that :class:`~assistant.core.ops.Rope` implements. Attention scores are
unchanged by a permutation applied to both q and k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from ..gguf import GGUFFile
from ..ops import Rope, geglu, neox_permutation, rms_norm, swiglu
from ..transformer import Block, KVCache, ModelArgs, Transformer, attend, attention_scale
from ..weights import Linear, WeightLoader

F32 = npt.NDArray[np.float32]


@dataclass
class LlamaArgs(ModelArgs):
    """LLaMA's hyper-parameters, and the switches of the families that reuse its parts."""

    permute_qk: bool = True  # q/k rows interleaved for ggml's NORM rope (not Qwen, Phi-3, Gemma)
    qkv_bias: bool = False  # biases on q, k and v (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm of q and k before rope (Qwen3, Gemma 3)
    fused: bool = False  # q/k/v in one tensor attn_qkv, gate/up in one ffn_up (Phi-3)
    hidden_act: str = "silu"  # the feed-forward's gate: "silu" (SwiGLU) or "gelu" (GeGLU, Gemma)
    no_rope_layer_step: int = 0  # > 0: layers (il + 1) % step == 0 attend without rope (SmolLM3)


class Attention:
    """Grouped-query attention: the fused q/k/v product, optional q/k norms, rope, the KV
    cache and the output product. ``window`` > 0 makes a sliding-window layer; ``softcap`` > 0
    caps the scores (Gemma 2)."""

    def __init__(self, args: LlamaArgs, loader: WeightLoader, layer: int, rope: Rope | None, scale: float,
                 window: int = 0, softcap: float = 0.0) -> None:
        p = f"blk.{layer}."
        hd = args.head_dim
        self.n_heads = args.n_heads
        self.n_kv = args.n_kv_heads
        self.head_dim = hd
        self.eps = args.eps
        self.rope = rope
        self.scale = scale
        self.window = window
        self.softcap = softcap
        perms: list[npt.NDArray[np.intp] | None] = [None, None, None]
        if args.permute_qk:
            perms = [neox_permutation(args.n_heads, hd), neox_permutation(args.n_kv_heads, hd), None]
        biases = [p + "attn_q.bias", p + "attn_k.bias", p + "attn_v.bias"] if args.qkv_bias else None
        if args.fused:
            self.qkv: Linear = loader.linear([p + "attn_qkv.weight"])
        else:
            self.qkv = loader.linear([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], perms, biases)
        self.wo: Linear = loader.linear([p + "attn_output.weight"])
        # (n_heads + n_kv, 1, hd): q's norm weight for each query head, then k's for each KV head.
        self.qk_norm: F32 | None = None
        if args.qk_norm:
            qn = loader.vector(p + "attn_q_norm.weight")
            kn = loader.vector(p + "attn_k_norm.weight")
            if args.permute_qk:
                qn, kn = qn[neox_permutation(1, hd)], kn[neox_permutation(1, hd)]
            self.qk_norm = np.concatenate([np.tile(qn, (self.n_heads, 1)), np.tile(kn, (self.n_kv, 1))])[:, None, :]

    def __call__(self, h: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        """The attention output ``(T, dim)`` of the normed input ``h`` ``(T, dim)``."""
        t = h.shape[0]
        hd = self.head_dim
        nq = self.n_heads * hd
        nk = self.n_kv * hd
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
        a = attend(q, k, v, caches, layer, pos, self.scale, self.window, self.softcap)  # (T, n_heads * hd)
        return self.wo(a)

    def linears(self) -> list[Linear]:
        return [self.qkv, self.wo]


class MLP:
    """Gated feed-forward ``down(act(gate) * up)``, gate and up in one product."""

    def __init__(self, args: LlamaArgs, loader: WeightLoader, layer: int) -> None:
        p = f"blk.{layer}."
        if args.hidden_act not in ("silu", "gelu"):
            raise ValueError(f"{args.arch}: feed-forward activation {args.hidden_act!r} is not supported")
        self.gelu = args.hidden_act == "gelu"
        self.ffn_dim = args.ffn_dim
        if args.fused:  # ffn_up holds the gate rows, then the up rows
            self.gate_up: Linear = loader.linear([p + "ffn_up.weight"])
        else:
            self.gate_up = loader.linear([p + "ffn_gate.weight", p + "ffn_up.weight"])
        self.down: Linear = loader.linear([p + "ffn_down.weight"])

    def __call__(self, h: F32) -> F32:
        gu = self.gate_up(h)  # (T, 2 * ffn)
        f = self.ffn_dim
        return self.down(geglu(gu, f) if self.gelu else swiglu(gu, f))

    def linears(self) -> list[Linear]:
        return [self.gate_up, self.down]


class LlamaBlock(Block):
    """Pre-norm attention + gated feed-forward (no rope on SmolLM3's NoPE layers)."""

    def __init__(self, args: LlamaArgs, loader: WeightLoader, layer: int, rope: Rope | None, scale: float) -> None:
        p = f"blk.{layer}."
        self.eps = args.eps
        self.attn_norm = loader.vector(p + "attn_norm.weight")
        self.attn = Attention(args, loader, layer, rope, scale)
        self.ffn_norm = loader.vector(p + "ffn_norm.weight")
        self.mlp = MLP(args, loader, layer)

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        x = x + self.attn(rms_norm(x, self.attn_norm, self.eps), caches, layer, pos)
        return x + self.mlp(rms_norm(x, self.ffn_norm, self.eps))

    def linears(self) -> list[Linear]:
        return self.attn.linears() + self.mlp.linears()

    def nbytes(self) -> int:
        return super().nbytes() + int(self.attn_norm.nbytes) * 2


def llama_layer_tensors(args: LlamaArgs, layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a LLaMA-like layer and their shapes (see ``Transformer.check_tensors``)."""
    p = f"blk.{layer}."
    d, hd, f = args.dim, args.head_dim, args.ffn_dim
    nq, nk = args.n_heads * hd, args.n_kv_heads * hd
    out: list[tuple[str, tuple[int, ...]]] = [(p + "attn_norm.weight", (d,)), (p + "ffn_norm.weight", (d,)),
                                              (p + "attn_output.weight", (d, nq)), (p + "ffn_down.weight", (d, f))]
    if args.fused:
        out += [(p + "attn_qkv.weight", (nq + 2 * nk, d)), (p + "ffn_up.weight", (2 * f, d))]
    else:
        out += [(p + "attn_q.weight", (nq, d)), (p + "attn_k.weight", (nk, d)), (p + "attn_v.weight", (nk, d)),
                (p + "ffn_gate.weight", (f, d)), (p + "ffn_up.weight", (f, d))]
    if args.qk_norm:
        out += [(p + "attn_q_norm.weight", (hd,)), (p + "attn_k_norm.weight", (hd,))]
    return out


class Llama(Transformer):
    """The LLaMA family, and the families that only set its switches (Qwen2/3, SmolLM3)."""

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        super().__init__(f, args, memory)
        a = cast(LlamaArgs, args)
        self.llama_args = a  # self.args, typed as this family's
        factors: npt.NDArray[np.float32] | None = None
        if self.loader.has("rope_freqs.weight"):
            factors = self.loader.vector("rope_freqs.weight")
            if factors.shape[0] < a.n_rot // 2:
                raise ValueError(f"{f.path}: rope_freqs.weight has {factors.shape[0]} factors, "
                                 f"expected {a.n_rot // 2}")
        self.rope = Rope(a.head_dim, a.n_rot, a.rope_base, a.rope_freq_scale, factors, self.exact_rows)

    def layer_rope(self, layer: int) -> Rope | None:
        step = self.llama_args.no_rope_layer_step
        return None if step > 0 and (layer + 1) % step == 0 else self.rope

    def make_block(self, layer: int) -> Block:
        return LlamaBlock(self.llama_args, self.loader, layer, self.layer_rope(layer),
                          attention_scale(self.args.head_dim))

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        return llama_layer_tensors(self.llama_args, layer)
