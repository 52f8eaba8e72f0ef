"""Architectures, one module each, chosen by ``general.architecture``."""

from __future__ import annotations

from ..gguf import GGUFFile
from ..transformer import Transformer


def supported_architectures() -> list[str]:
    return ["gemma3", "llama", "qwen2"]


def build_model(f: GGUFFile, memory: str = "speed") -> Transformer:
    """The :class:`Transformer` for ``f``'s architecture (weights prepared lazily)."""
    arch = f.architecture
    if arch == "llama":
        from .llama import Llama

        return Llama(f, memory)
    if arch == "qwen2":
        from .qwen2 import Qwen2

        return Qwen2(f, memory)
    if arch == "gemma3":
        from .gemma3 import Gemma3

        return Gemma3(f, memory)
    raise ValueError(
        f"architecture {arch!r} is not supported; supported: {', '.join(supported_architectures())}"
    )
