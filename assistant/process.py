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
def _libc() -> Any:
    # find_library runs `ldconfig -p` in a subprocess: once is enough.
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


# Trim at most this often: each trim walks the heaps (a few milliseconds).
TRIM_INTERVAL_S = 10.0
_last_trim = [0.0]


def release_free_memory(min_interval: float = TRIM_INTERVAL_S) -> bool:
    """Hand the memory malloc holds free back to the system (glibc's ``malloc_trim``).

    glibc keeps freed heap memory for reuse; in a long-running server that shows up as RSS
    creeping up by about a kilobyte per chat turn, though nothing is alive in it: one trim
    after 600 turns took the process 6 MB below where it started. Called when a model's
    queue runs empty, at most every ``min_interval`` seconds. True if it trimmed.
    """
    now = time.monotonic()
    if now - _last_trim[0] < min_interval:
        return False
    _last_trim[0] = now
    try:
        libc = _libc()
        trim = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):
        return False  # not glibc
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def limit_malloc_arenas(n: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``n`` (unless MALLOC_ARENA_MAX is set); True if applied.

    The server runs every request on a new thread, and glibc gives threads their own arenas
    (up to 8 per core). Memory freed in an arena is kept for reuse there, so an idle arena's
    scraps add up: measured here, resident memory grew 1.46 KB per websocket chat with the
    default and 0.11 KB with two arenas, at the same speed (`benchmarks/soak.py` shows the
    effect over 30 minutes). numpy's big arrays are mmapped and unaffected. No-op elsewhere
    than glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the user chose; glibc read it at startup
    try:
        libc = _libc()
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, max(1, int(n))))
