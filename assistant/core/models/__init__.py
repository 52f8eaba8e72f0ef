"""Architectures, one module each, chosen by ``general.architecture``."""

from __future__ import annotations

from ..gguf import GGUFFile
from ..transformer import Transformer

_SUPPORTED = ("gemma2", "gemma3", "llama", "phi3", "qwen2", "qwen3", "smollm3")


def supported_architectures() -> list[str]:
    return list(_SUPPORTED)


def _construct(f: GGUFFile, memory: str) -> Transformer:
    arch = f.architecture
    if arch == "llama":
        from .llama import Llama

        return Llama(f, memory)
    if arch == "qwen2":
        from .qwen2 import Qwen2

        return Qwen2(f, memory)
    if arch == "qwen3":
        from .qwen3 import Qwen3

        return Qwen3(f, memory)
    if arch == "smollm3":
        from .smollm3 import SmolLM3

        return SmolLM3(f, memory)
    if arch == "phi3":
        from .phi3 import Phi3

        return Phi3(f, memory)
    if arch == "gemma2":
        from .gemma2 import Gemma2

        return Gemma2(f, memory)
    if arch == "gemma3":
        from .gemma3 import Gemma3

        return Gemma3(f, memory)
    raise ValueError(
        f"architecture {arch!r} is not supported; supported: {', '.join(supported_architectures())}"
    )


def build_model(f: GGUFFile, memory: str = "speed") -> Transformer:
    """The :class:`Transformer` for ``f``'s architecture (weights prepared lazily; every
    tensor's presence and shape checked now, so a contradictory file fails at load)."""
    model = _construct(f, memory)
    model.check_tensors()
    return model
