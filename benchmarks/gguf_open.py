"""How long opening a GGUF file takes: header, metadata, tensor table and vocabulary.

    python benchmarks/gguf_open.py [MODEL ...]      (names from models.toml or .gguf paths)

Prints the median of 5 opens per model and, for comparison, gguf.GGUFReader's time when the
`gguf` package is installed (it builds a numpy object per vocabulary entry).
"""

from __future__ import annotations

import statistics
import sys
import time

from assistant.config import load_registry, resolve_model_path
from assistant.core.gguf import open_gguf
from assistant.core.tokenizer import tokenizer_from_gguf


def main(names: list[str]) -> None:
    reg = load_registry()
    for name in names or list(reg.models):
        path, _ = resolve_model_path(name, reg)
        times = []
        tok_times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f = open_gguf(str(path))
            vocab = f.get_strings("tokenizer.ggml.tokens")
            t1 = time.perf_counter()
            tokenizer_from_gguf(f)
            tok_times.append(time.perf_counter() - t1)
            times.append(t1 - t0)
        line = (f"{name:<16} open+metadata+tensors+vocab ({len(vocab)} tokens, {len(f.tensors)} tensors): "
                f"{statistics.median(times) * 1000:7.1f} ms; tokenizer build {statistics.median(tok_times) * 1000:6.1f} ms")
        try:
            import gguf

            t0 = time.perf_counter()
            gguf.GGUFReader(str(path))
            line += f"; gguf.GGUFReader {time.perf_counter() - t0:5.1f} s"
        except ImportError:
            pass
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
