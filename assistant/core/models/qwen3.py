"""``qwen3``: Qwen3 dense models, LLaMA's layer with per-head RMSNorm on queries and keys.

The norms apply before rope; no q/k/v biases (unlike Qwen2). Head size comes from
``key_length`` and need not be ``dim / n_heads`` (Qwen3-0.6B: 16 x 128 = 2048 over a width
of 1024). Its GGUF q/k rows are in NEOX order, like Qwen2's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llama import LlamaArgs


@dataclass
class Qwen3Args(LlamaArgs):
    """Qwen3's differences from LLaMA: per-head q/k norms, q/k rows already in NEOX order."""

    permute_qk: bool = False
    qk_norm: bool = True
