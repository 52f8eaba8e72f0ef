"""assistant: ChatGPT on your own laptop.

>>> import assistant
>>> model = assistant.load_model("smollm2")          # a models.toml name or a .gguf path
>>> ids = model.tokenize("Hello", add_special=True, parse_special=False)
>>> model.detokenize(ids)
'Hello'
>>> logits = model.logits(ids)                      # float32 (len(ids), n_vocab)
>>> for piece in model.generate(ids):               # streaming pieces with .text, .done, .stats
...     print(piece.text, end="")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .core.engine import Model


def load_model(path_or_name: str, memory: str = "auto", n_ctx: int = 0, config: str | None = None) -> "Model":
    """Load a model by models.toml name or .gguf path (weights are prepared lazily)."""
    from .chat import choose_memory_mode
    from .config import load_registry, resolve_model_path
    from .core.engine import Model
    from .core.gguf import open_gguf

    reg = load_registry(config)
    path, entry = resolve_model_path(path_or_name, reg)
    n_params = sum(t.n_elements for t in open_gguf(str(path)).tensors.values())
    mode = choose_memory_mode(memory if memory != "auto" else (entry.memory if entry else "auto"), n_params)
    ctx = n_ctx or (entry.context_length if entry else 0)
    return Model(str(path), memory=mode, n_ctx=ctx, tokenizer_model=entry.tokenizer_model if entry else "",
                 name=entry.name if entry else str(path))


def __getattr__(name: str) -> Any:
    if name in ("GenerationSettings", "SamplingSettings"):
        from .core import engine, sampling

        return getattr(engine, name, None) or getattr(sampling, name)
    raise AttributeError(name)
