"""``qwen2``: Qwen2 / Qwen2.5, LLaMA's layer with biases on q, k and v.

Its GGUF q/k rows are already in NEOX order (ggml applies NEOX rope for qwen2), so no
permutation is needed.
"""

from __future__ import annotations

from .llama import Llama


class Qwen2(Llama):
    """Qwen2: LLaMA blocks with q/k/v biases and NEOX rope."""

    permute_qk: bool = False
    qkv_bias: bool = True
