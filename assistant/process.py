"""Process-wide settings for a long-running server."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from typing import Any

# glibc's mallopt() parameter number for the arena cap (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8

DEFAULT_ARENAS = 2


@functools.cache
def _glibc(name: str, *argtypes: Any) -> Any:
    """glibc's function ``name`` returning int, or None elsewhere (musl, macOS)."""
    lib = ctypes.util.find_library("c")  # runs `ldconfig -p`: cached, once per function
    try:
        fn = getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes = list(argtypes)
        fn.restype = ctypes.c_int
    return fn


# Trim at most this often: each trim walks the heaps (a few milliseconds).
TRIM_INTERVAL_S = 10.0
_last_trim = [0.0]


def release_free_memory(min_interval: float = TRIM_INTERVAL_S) -> bool:
    """Hand the memory malloc holds free back to the system (glibc's ``malloc_trim``).

    glibc keeps freed heap memory for reuse, which a long-running server sees as slowly
    rising RSS (docs/performance.md, "Server"). Called when a model's queue runs empty, at
    most every ``min_interval`` seconds. True if it trimmed.
    """
    now = time.monotonic()
    if now - _last_trim[0] < min_interval:
        return False
    _last_trim[0] = now
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


def limit_malloc_arenas(n: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``n`` (unless MALLOC_ARENA_MAX is set); True if applied.

    The server runs every request on a new thread and glibc gives threads arenas of their own,
    whose freed scraps add up (docs/performance.md, "Server"). No-op elsewhere than glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the user chose; glibc read it at startup
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, max(1, int(n))))
