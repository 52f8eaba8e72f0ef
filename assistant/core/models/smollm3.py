"""``smollm3``: SmolLM3, LLaMA's layer with no rotary embedding on every fourth layer.

Layers with ``(layer + 1) % 4 == 0`` attend without positions (NoPE), as llama.cpp's
``n_no_rope_layer_step`` (fixed at 4 for this architecture) has it. Its GGUF q/k rows are
interleaved like LLaMA's.
"""

from __future__ import annotations

from typing import Final

from ..ops import Rope
from .llama import Llama

NO_ROPE_LAYER_STEP: Final = 4


class SmolLM3(Llama):
    """SmolLM3: LLaMA with NoPE layers."""

    def layer_rope(self, layer: int) -> Rope | None:
        return None if (layer + 1) % NO_ROPE_LAYER_STEP == 0 else self.rope
