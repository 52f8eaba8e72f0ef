"""Architectures, one module each, chosen by ``general.architecture``."""

from __future__ import annotations

import importlib
from typing import Final, cast

from ..gguf import GGUFFile
from ..transformer import ModelArgs, Transformer

# general.architecture -> its ModelArgs class and its model class, as "module.Name" (each
# module imported on first use). Families that only set LLaMA's switches use LLaMA's model.
_CLASSES: Final = {
    "gemma2": ("gemma2.Gemma2Args", "gemma2.Gemma2"), "gemma3": ("gemma3.Gemma3Args", "gemma3.Gemma3"),
    "llama": ("llama.LlamaArgs", "llama.Llama"), "phi3": ("phi3.Phi3Args", "phi3.Phi3"),
    "qwen2": ("qwen2.Qwen2Args", "llama.Llama"), "qwen3": ("qwen3.Qwen3Args", "llama.Llama"),
    "smollm3": ("smollm3.SmolLM3Args", "llama.Llama"),
}
_SUPPORTED = tuple(sorted(_CLASSES))


def supported_architectures() -> list[str]:
    return list(_SUPPORTED)


def _named(ref: str) -> object:
    module, name = ref.split(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _construct(f: GGUFFile, memory: str) -> Transformer:
    arch = f.architecture
    if arch not in _CLASSES:
        raise ValueError(
            f"architecture {arch!r} is not supported; supported: {', '.join(supported_architectures())}"
        )
    args_ref, model_ref = _CLASSES[arch]
    args_class = cast(type[ModelArgs], _named(args_ref))
    model_class = cast(type[Transformer], _named(model_ref))
    model: Transformer = model_class(f, args_class.from_gguf(f), memory)
    return model


def build_model(f: GGUFFile, memory: str = "speed") -> Transformer:
    """The :class:`Transformer` for ``f``'s architecture (weights prepared lazily; every
    tensor's presence and shape checked now, so a contradictory file fails at load)."""
    model = _construct(f, memory)
    model.check_tensors()
    return model
