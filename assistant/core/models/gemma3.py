"""``gemma3``: Gemma 3 text models.

Differences from LLaMA: the embedding is scaled by ``sqrt(dim)``; RMS norms on queries and
keys (per head); extra norms after attention and after the feed-forward; a GELU-gated
feed-forward; five sliding-window ("local") layers for every global one, with their own
rope base (10,000); queries scaled by ``1/sqrt(key_length)``; output head tied to the
embedding. Gemma's ``(1 + w)`` norm convention is already folded into the GGUF weights by
the converter, so plain RMSNorm applies.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ..gguf import GGUFFile
from ..ops import Rope, geglu, rms_norm
from ..transformer import Block, KVCache, ModelArgs, Transformer, attend
from ..weights import Linear, WeightLoader
from .llama import llama_layer_tensors

F32 = npt.NDArray[np.float32]

LOCAL_ROPE_BASE = 10000.0
# Layers il with (il + 1) % SWA_PERIOD != 0 are sliding-window layers.
SWA_PERIOD = 6


class GemmaBlock(Block):
    """Gemma 2/3 layer: norms before and after attention and feed-forward, GELU gating;
    Gemma 3 norms q and k per head, Gemma 2 soft-caps the attention scores instead."""

    def __init__(self, args: ModelArgs, loader: WeightLoader, layer: int, rope: Rope,
                 window: int, query_scale: float, qk_norm: bool = True, softcap: float = 0.0) -> None:
        p = f"blk.{layer}."
        self.n_heads = args.n_heads
        self.n_kv = args.n_kv_heads
        self.head_dim = args.head_dim
        self.eps = args.eps
        self.rope = rope
        self.window = window
        self.query_scale = query_scale
        self.softcap = softcap
        self.ffn_dim = args.ffn_dim
        self.attn_norm = loader.vector(p + "attn_norm.weight")
        self.q_norm = loader.vector(p + "attn_q_norm.weight") if qk_norm else None
        self.k_norm = loader.vector(p + "attn_k_norm.weight") if qk_norm else None
        self.post_attn_norm = loader.vector(p + "post_attention_norm.weight")
        self.ffn_norm = loader.vector(p + "ffn_norm.weight")
        self.post_ffn_norm = loader.vector(p + "post_ffw_norm.weight")
        self.qkv: Linear = loader.linear([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"])
        self.wo: Linear = loader.linear([p + "attn_output.weight"])
        self.gate_up: Linear = loader.linear([p + "ffn_gate.weight", p + "ffn_up.weight"])
        self.down: Linear = loader.linear([p + "ffn_down.weight"])

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        t = x.shape[0]
        hd = self.head_dim
        nq = self.n_heads * hd
        nk = self.n_kv * hd
        h = rms_norm(x, self.attn_norm, self.eps)
        qkv = self.qkv(h)
        q = qkv[:, :nq].reshape(t, self.n_heads, hd).transpose(1, 0, 2)  # (n_heads, T, hd)
        k = qkv[:, nq:nq + nk].reshape(t, self.n_kv, hd).transpose(1, 0, 2)  # (n_kv, T, hd)
        v = qkv[:, nq + nk:].reshape(t, self.n_kv, hd).transpose(1, 0, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q = rms_norm(q, self.q_norm, self.eps)
            k = rms_norm(k, self.k_norm, self.eps)
        else:  # rope rotates in place: not through views of the fused product
            q = q.copy()
            k = k.copy()
        parallel = len(caches) > 1
        self.rope.apply(q, pos, parallel)
        self.rope.apply(k, pos, parallel)
        a = attend(q, k, v, caches, layer, pos, self.query_scale, self.window, self.softcap)
        a = rms_norm(self.wo(a), self.post_attn_norm, self.eps)
        x = x + a
        h = rms_norm(x, self.ffn_norm, self.eps)
        gu = self.gate_up(h)
        f = self.ffn_dim
        y = self.down(geglu(gu, f))
        return x + rms_norm(y, self.post_ffn_norm, self.eps)

    def linears(self) -> list[Linear]:
        return [self.qkv, self.wo, self.gate_up, self.down]


def gemma_layer_tensors(args: ModelArgs, layer: int, qk_norm: bool) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a Gemma 2/3 layer and their shapes (see ``Transformer.check_tensors``)."""
    p = f"blk.{layer}."
    d = args.dim
    out = llama_layer_tensors(args, layer, qk_norm=qk_norm)
    return out + [(p + "post_attention_norm.weight", (d,)), (p + "post_ffw_norm.weight", (d,))]


class Gemma3(Transformer):
    """Gemma 3 (text)."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        args = ModelArgs(f)
        super().__init__(f, args, memory)
        self.embed_scale = math.sqrt(args.dim)
        self.query_scale = 1.0 / math.sqrt(args.head_dim)
        local_base = f.get_float("gemma3.rope.local.freq_base", LOCAL_ROPE_BASE)
        self.global_rope = Rope(args.head_dim, args.n_rot, args.rope_base, args.rope_freq_scale)
        self.local_rope = Rope(args.head_dim, args.n_rot, local_base, 1.0)

    def is_local(self, layer: int) -> bool:
        return self.args.sliding_window > 0 and (layer + 1) % SWA_PERIOD != 0

    def make_block(self, layer: int) -> Block:
        local = self.is_local(layer)
        rope = self.local_rope if local else self.global_rope
        window = self.args.sliding_window if local else 0
        return GemmaBlock(self.args, self.loader, layer, rope, window, self.query_scale)

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        return gemma_layer_tensors(self.args, layer, qk_norm=True)
