"""``qwen2``: Qwen2 / Qwen2.5, LLaMA's layer with biases on q, k and v.

Its GGUF q/k rows are already in NEOX order (ggml applies NEOX rope for qwen2), so no
permutation is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llama import LlamaArgs


@dataclass
class Qwen2Args(LlamaArgs):
    """Qwen2's differences from LLaMA: q/k/v biases, q/k rows already in NEOX order."""

    permute_qk: bool = False
    qkv_bias: bool = True
