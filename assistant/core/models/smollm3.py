"""``smollm3``: SmolLM3, LLaMA's layer with no rotary embedding on every fourth layer.

Layers with ``(layer + 1) % 4 == 0`` attend without positions (NoPE), as llama.cpp's
``n_no_rope_layer_step`` (fixed at 4 for this architecture) has it. Its GGUF q/k rows are
interleaved like LLaMA's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llama import LlamaArgs


@dataclass
class SmolLM3Args(LlamaArgs):
    no_rope_layer_step: int = 4  # fixed for this architecture in llama.cpp, not in the metadata
