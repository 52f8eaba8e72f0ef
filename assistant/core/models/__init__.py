"""Architectures, one module each, chosen by ``general.architecture``."""

from __future__ import annotations

import importlib
from typing import Final

from ..gguf import GGUFFile
from ..transformer import Transformer

# general.architecture -> (module, class); each module is imported on first use.
_CLASSES: Final = {
    "gemma2": ("gemma2", "Gemma2"), "gemma3": ("gemma3", "Gemma3"), "llama": ("llama", "Llama"),
    "phi3": ("phi3", "Phi3"), "qwen2": ("qwen2", "Qwen2"), "qwen3": ("qwen3", "Qwen3"),
    "smollm3": ("smollm3", "SmolLM3"),
}
_SUPPORTED = tuple(sorted(_CLASSES))


def supported_architectures() -> list[str]:
    return list(_SUPPORTED)


def _construct(f: GGUFFile, memory: str) -> Transformer:
    arch = f.architecture
    if arch not in _CLASSES:
        raise ValueError(
            f"architecture {arch!r} is not supported; supported: {', '.join(supported_architectures())}"
        )
    module, name = _CLASSES[arch]
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    model: Transformer = cls(f, memory)
    return model


def build_model(f: GGUFFile, memory: str = "speed") -> Transformer:
    """The :class:`Transformer` for ``f``'s architecture (weights prepared lazily; every
    tensor's presence and shape checked now, so a contradictory file fails at load)."""
    model = _construct(f, memory)
    model.check_tensors()
    return model
