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

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .version import __version__


def _alias_source_checkout() -> None:
    """Run from a source checkout (``PYTHONPATH=repo``), ``plugins/`` and ``web/`` sit beside
    this package instead of inside it as installed; make them importable under the same
    names (``assistant.plugins``, ``assistant.web``) so the checkout behaves like an install."""
    here = Path(__file__).resolve().parent
    for sub in ("plugins", "web"):
        init = here.parent / sub / "__init__.py"
        name = f"{__name__}.{sub}"
        if (here / sub).exists() or name in sys.modules or not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_alias_source_checkout()

if TYPE_CHECKING:
    from .core.engine import Model


def load_model(path_or_name: str, memory: str = "auto", n_ctx: int = 0, config: str | None = None) -> "Model":
    """Load a model by models.toml name or .gguf path (weights are prepared lazily)."""
    from .config import load_registry, resolve_model_path
    from .loading import load_local_model

    reg = load_registry(config)
    path, entry = resolve_model_path(path_or_name, reg)
    if entry is not None and entry.backend != "local":
        raise ValueError(f"model {entry.name!r} is served remotely ({entry.base_url}); load_model needs a .gguf file")
    return load_local_model(path, entry, memory=memory, n_ctx=n_ctx)


def __getattr__(name: str) -> Any:
    if name in ("GenerationSettings", "SamplingSettings"):
        from .core import engine, sampling

        return getattr(engine, name, None) or getattr(sampling, name)
    raise AttributeError(name)
