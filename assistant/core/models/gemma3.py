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
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from ..gguf import GGUFFile
from ..ops import Rope, rms_norm
from ..transformer import Block, KVCache, ModelArgs, Transformer
from ..weights import Linear, WeightLoader
from .llama import MLP, Attention, LlamaArgs, llama_layer_tensors

F32 = npt.NDArray[np.float32]

LOCAL_ROPE_BASE: Final = 10000.0
# Layers il with (il + 1) % SWA_PERIOD != 0 are sliding-window layers.
SWA_PERIOD: Final = 6


@dataclass
class GemmaArgs(LlamaArgs):
    """What Gemma 2 and 3 share: LLaMA's attention and a GELU-gated feed-forward, the
    embedding scaled by ``sqrt(dim)``, queries by ``query_scale``."""

    permute_qk: bool = False
    hidden_act: str = "gelu"
    query_scale: float = 0.0

    def read_arch(self, f: GGUFFile) -> None:
        self.query_scale = 1.0 / math.sqrt(self.head_dim)


@dataclass
class Gemma3Args(GemmaArgs):
    qk_norm: bool = True
    local_rope_base: float = LOCAL_ROPE_BASE  # the sliding-window layers' rope base

    def read_arch(self, f: GGUFFile) -> None:
        super().read_arch(f)
        self.local_rope_base = f.get_float("gemma3.rope.local.freq_base", LOCAL_ROPE_BASE)


class GemmaBlock(Block):
    """Gemma 2/3 layer: norms before and after attention and feed-forward."""

    def __init__(self, args: GemmaArgs, loader: WeightLoader, layer: int, rope: Rope, window: int,
                 softcap: float = 0.0) -> None:
        p = f"blk.{layer}."
        self.eps = args.eps
        self.attn_norm = loader.vector(p + "attn_norm.weight")
        self.attn = Attention(args, loader, layer, rope, args.query_scale, window, softcap)
        self.post_attn_norm = loader.vector(p + "post_attention_norm.weight")
        self.ffn_norm = loader.vector(p + "ffn_norm.weight")
        self.mlp = MLP(args, loader, layer)
        self.post_ffn_norm = loader.vector(p + "post_ffw_norm.weight")

    def __call__(self, x: F32, caches: list[KVCache], layer: int, pos: int) -> F32:
        a = self.attn(rms_norm(x, self.attn_norm, self.eps), caches, layer, pos)
        x = x + rms_norm(a, self.post_attn_norm, self.eps)
        y = self.mlp(rms_norm(x, self.ffn_norm, self.eps))
        return x + rms_norm(y, self.post_ffn_norm, self.eps)

    def linears(self) -> list[Linear]:
        return self.attn.linears() + self.mlp.linears()


def gemma_layer_tensors(args: GemmaArgs, layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a Gemma 2/3 layer and their shapes (see ``Transformer.check_tensors``)."""
    p = f"blk.{layer}."
    d = args.dim
    out = llama_layer_tensors(args, layer)
    return out + [(p + "post_attention_norm.weight", (d,)), (p + "post_ffw_norm.weight", (d,))]


class Gemma(Transformer):
    """What Gemma 2 and 3 models share: the embedding scaled by ``sqrt(dim)``, Gemma layers."""

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        super().__init__(f, args, memory)
        self.gemma_args = cast(GemmaArgs, args)  # self.args, typed as this family's
        self.embed_scale = math.sqrt(args.dim)

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        return gemma_layer_tensors(self.gemma_args, layer)


class Gemma3(Gemma):
    """Gemma 3 (text)."""

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        super().__init__(f, args, memory)
        a = cast(Gemma3Args, args)
        self.global_rope = Rope(a.head_dim, a.n_rot, a.rope_base, a.rope_freq_scale, exact_rows=self.exact_rows)
        self.local_rope = Rope(a.head_dim, a.n_rot, a.local_rope_base, 1.0, exact_rows=self.exact_rows)

    def is_local(self, layer: int) -> bool:
        return self.args.sliding_window > 0 and (layer + 1) % SWA_PERIOD != 0

    def make_block(self, layer: int) -> Block:
        local = self.is_local(layer)
        rope = self.local_rope if local else self.global_rope
        window = self.args.sliding_window if local else 0
        return GemmaBlock(self.gemma_args, self.loader, layer, rope, window)
