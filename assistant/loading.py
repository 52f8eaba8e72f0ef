"""Loading a local model: the one path the Python API, the CLI and the server share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import ModelEntry

if TYPE_CHECKING:
    from .core.engine import Model


def choose_memory_mode(entry_memory: str, n_params: int) -> str:
    """``auto`` -> lean (weights stay quantized) where the numba kernels run; on the numpy
    fallback, speed when float32 weights fit comfortably in free memory, else lean."""
    if entry_memory in ("speed", "lean"):
        return entry_memory
    from .core.kernels import HAVE_NUMBA

    if HAVE_NUMBA:
        return "lean"
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if ":" in line}
        avail = info.get("MemAvailable", 0)
    except OSError:
        avail = 0
    if avail == 0:
        return "speed"
    return "speed" if n_params * 4 < avail * 0.5 else "lean"


def count_parameters(path: str | Path) -> int:
    from .core.gguf import open_gguf

    return sum(t.n_elements for t in open_gguf(str(path)).tensors.values())


def load_local_model(path: str | Path, entry: ModelEntry | None = None, memory: str = "auto",
                     n_ctx: int = 0) -> "Model":
    """The engine for a .gguf file. ``entry`` (from models.toml) supplies the memory mode,
    context length, threads and tokenizer when the arguments leave them at their defaults."""
    from .core.engine import Model

    chosen = memory if memory != "auto" else (entry.memory if entry else "auto")
    mode = choose_memory_mode(chosen, count_parameters(path))
    if entry is not None and entry.threads > 0:
        from .core.kernels import set_threads

        set_threads(entry.threads, default=True)
    return Model(str(path), memory=mode, n_ctx=n_ctx or (entry.context_length if entry else 0),
                 tokenizer_model=entry.tokenizer_model if entry else "",
                 name=entry.name if entry else str(path))
