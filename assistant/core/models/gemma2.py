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
from dataclasses import dataclass
from typing import Final, cast

from ..gguf import GGUFFile
from ..ops import Rope
from ..transformer import Block, ModelArgs
from .gemma3 import Gemma, GemmaArgs, GemmaBlock

# Gemma 2 27B's layer count: its query scale is 1/sqrt(dim / n_heads).
LAYERS_27B: Final = 46


@dataclass
class Gemma2Args(GemmaArgs):
    attn_softcap: float = 50.0  # attn_logit_softcapping
    final_softcap: float = 30.0  # final_logit_softcapping

    def read_arch(self, f: GGUFFile) -> None:
        per_head = self.dim / self.n_heads if self.n_layers == LAYERS_27B else self.head_dim
        self.query_scale = 1.0 / math.sqrt(per_head)
        self.attn_softcap = f.get_float("gemma2.attn_logit_softcapping", 50.0)
        self.final_softcap = f.get_float("gemma2.final_logit_softcapping", 30.0)


class Gemma2(Gemma):
    """Gemma 2 (text)."""

    def __init__(self, f: GGUFFile, args: ModelArgs, memory: str = "speed") -> None:
        super().__init__(f, args, memory)
        a = cast(Gemma2Args, args)
        self.attn_softcap = a.attn_softcap
        self.final_softcap = a.final_softcap
        self.rope = Rope(a.head_dim, a.n_rot, a.rope_base, a.rope_freq_scale, exact_rows=self.exact_rows)

    def make_block(self, layer: int) -> Block:
        window = self.args.sliding_window if layer % 2 == 0 else 0
        return GemmaBlock(self.gemma_args, self.loader, layer, self.rope, window, self.attn_softcap)
