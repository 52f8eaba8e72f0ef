"""``smollm3``: SmolLM3, LLaMA's layer with no rotary embedding on every fourth layer.

Layers with ``(layer + 1) % 4 == 0`` attend without positions (NoPE), as llama.cpp's
``n_no_rope_layer_step`` (fixed at 4 for this architecture) has it. Its GGUF q/k rows are
interleaved like LLaMA's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gguf import GGUFFile
from ..ops import Rope
from .llama import Llama, LlamaArgs


@dataclass
class SmolLM3Args(LlamaArgs):
    no_rope_layer_step: int = 4  # fixed for this architecture in llama.cpp, not in the metadata


class SmolLM3(Llama):
    """SmolLM3: LLaMA with NoPE layers."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        args = SmolLM3Args.from_gguf(f)
        super().__init__(f, memory, args)
        self.no_rope_layer_step = args.no_rope_layer_step

    def layer_rope(self, layer: int) -> Rope | None:
        return None if (layer + 1) % self.no_rope_layer_step == 0 else self.rope
