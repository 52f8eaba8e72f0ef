"""``gemma2``: Gemma 2 text models.

Gemma 3's layer (see :mod:`.gemma3`) without q/k norms, and with:

* attention scores soft-capped, ``cap * tanh(score / cap)`` (``attn_logit_softcapping``,
  50 in the released models), after the query scaling and before the mask;
* final logits soft-capped the same way (``final_logit_softcapping``, 30);
* a sliding window on the even layers (0, 2, ...), full attention on the odd ones, one
  rope base for both;
* queries scaled by ``1/sqrt(head_dim)``, except the 46-layer 27B whose checkpoints use
  ``1/sqrt(dim / n_heads)`` (llama.cpp tells them apart by layer count, as we do).
"""

from __future__ import annotations

import math
from typing import Final

from ..gguf import GGUFFile
from ..ops import Rope
from ..transformer import Block, ModelArgs, Transformer
from .gemma3 import GemmaBlock, gemma_layer_tensors

# Gemma 2 27B's layer count: its query scale is 1/sqrt(dim / n_heads).
LAYERS_27B: Final = 46


class Gemma2(Transformer):
    """Gemma 2 (text)."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        args = ModelArgs(f)
        super().__init__(f, args, memory)
        self.embed_scale = math.sqrt(args.dim)
        per_head = args.dim / args.n_heads if args.n_layers == LAYERS_27B else args.head_dim
        self.query_scale = 1.0 / math.sqrt(per_head)
        self.attn_softcap = f.get_float("gemma2.attn_logit_softcapping", 50.0)
        self.final_softcap = f.get_float("gemma2.final_logit_softcapping", 30.0)
        self.rope = Rope(args.head_dim, args.n_rot, args.rope_base, args.rope_freq_scale)

    def make_block(self, layer: int) -> Block:
        window = self.args.sliding_window if layer % 2 == 0 else 0
        return GemmaBlock(self.args, self.loader, layer, self.rope, window, self.query_scale,
                          qk_norm=False, softcap=self.attn_softcap)

    def layer_tensors(self, layer: int) -> list[tuple[str, tuple[int, ...]]]:
        return gemma_layer_tensors(self.args, layer, qk_norm=False)
