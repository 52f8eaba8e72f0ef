"""``phi3``: Phi-3 / Phi-3.5 / Phi-4-mini, LLaMA's layer with fused tensors and LongRoPE.

* ``attn_qkv`` holds the q, k and v rows in one matrix; ``ffn_up`` holds the gate rows
  then the up rows (the ``[gate | up]`` layout :func:`~assistant.core.ops.swiglu` takes).
* NEOX rope. Files with ``rope_factors_long``/``rope_factors_short`` (LongRoPE) divide
  each pair's frequency by a factor: the long set when the context size, padded to a
  multiple of 256, exceeds ``rope.scaling.original_context_length``, else the short one,
  whatever the sequence length (llama.cpp's rule, so that logits match it).
* ``rope.scaling.attn_factor`` multiplies rope's cos and sin, so q and k each grow by it
  and the attention scores by its square.
* The sliding window some files name is ignored, as llama.cpp does for this architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, cast

from ..gguf import GGUFFile
from ..ops import Rope
from ..transformer import Block, ModelArgs
from .llama import Llama, LlamaArgs, LlamaBlock

# llama.cpp rounds the context size up to a multiple of this before choosing the factors.
CTX_PAD: Final = 256


@dataclass
class Phi3Args(LlamaArgs):
    permute_qk: bool = False
    fused: bool = True
    attn_factor: float = 1.0  # rope.scaling.attn_factor
    original_ctx: int = 0  # rope.scaling.original_context_length (default: the training context)

    def read_arch(self, f: GGUFFile) -> None:
        self.attn_factor = f.get_float("phi3.rope.scaling.attn_factor", 1.0)
        self.original_ctx = f.get_int("phi3.rope.scaling.original_context_length", self.n_ctx_train)


class Phi3(Llama):
    """Phi-3 family."""

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        super().__init__(f, args, memory)
        a = cast(Phi3Args, args)
        self.phi3_args = a
        self.long_factors = self.loader.optional_vector("rope_factors_long.weight")
        self.short_factors = self.loader.optional_vector("rope_factors_short.weight")
        for name, factors in (("long", self.long_factors), ("short", self.short_factors)):
            if factors is not None and factors.shape[0] != a.n_rot // 2:
                raise ValueError(f"{f.path}: rope_factors_{name}.weight has {factors.shape[0]} factors, "
                                 f"expected {a.n_rot // 2}")
        self.set_context(a.n_ctx_train)

    def set_context(self, n_ctx: int) -> None:
        a = self.args
        padded = (n_ctx + CTX_PAD - 1) // CTX_PAD * CTX_PAD
        factors = self.long_factors if padded > self.phi3_args.original_ctx else self.short_factors
        self.rope = Rope(a.head_dim, a.n_rot, a.rope_base, a.rope_freq_scale, factors, self.exact_rows)
        for b in self._blocks:  # blocks built already rotate with the new factors
            if isinstance(b, LlamaBlock):
                b.attn.rope = self.rope

    def make_block(self, layer: int) -> Block:
        factor = self.phi3_args.attn_factor
        scale = factor * factor / math.sqrt(self.args.head_dim)
        return LlamaBlock(self.phi3_args, self.loader, layer, self.rope, scale)
