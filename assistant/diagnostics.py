"""What the installation runs on: compiled core, numpy and BLAS, the kernels."""

from __future__ import annotations

import os
import sys
from typing import Any

from .version import __version__


def core_status() -> dict[str, Any]:
    """Whether the core is mypyc-compiled, and which numpy/BLAS it runs on."""
    from .core import engine, gguf, tokenizer

    compiled = all(m.__file__ is not None and m.__file__.endswith((".so", ".pyd")) for m in (gguf, tokenizer, engine))
    import numpy as np

    blas: list[dict[str, Any]] = []
    try:
        from threadpoolctl import threadpool_info

        for info in threadpool_info():
            blas.append({"api": info.get("internal_api"), "version": info.get("version"),
                         "threads": info.get("num_threads"), "arch": info.get("architecture")})
    except Exception as err:  # threadpoolctl missing or broken: say so
        blas.append({"error": str(err)})
    from .core.kernels import status as kernel_status

    return {"version": __version__, "compiled": compiled, "core_file": gguf.__file__,
            "numpy": np.__version__, "blas": blas, "kernels": kernel_status(), "cpus": os.cpu_count(),
            "python": sys.version.split()[0]}


def kernels_line(k: dict[str, Any]) -> str:
    """One line saying what runs the quantized products."""
    if k.get("kernels") != "numba":
        return f"numpy fallback ({k.get('reason')})"
    return (f"numba {k['numba']} ({k['cpu']}, {'/'.join(k['simd']) or 'no SIMD'}, "
            f"{k['threads']} threads, threading layer {k['threading_layer']}; "
            f"products {k.get('products', '?')})")
