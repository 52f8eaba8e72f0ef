"""``qwen2``: Qwen2 / Qwen2.5, LLaMA's layer with biases on q, k and v.

Its GGUF q/k rows are already in NEOX order (ggml applies NEOX rope for qwen2), so no
permutation is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gguf import GGUFFile
from .llama import Llama, LlamaArgs


@dataclass
class Qwen2Args(LlamaArgs):
    permute_qk: bool = False
    qkv_bias: bool = True


class Qwen2(Llama):
    """Qwen2: LLaMA blocks with q/k/v biases and NEOX rope."""

    def __init__(self, f: GGUFFile, memory: str = "speed") -> None:
        super().__init__(f, memory, Qwen2Args.from_gguf(f))
