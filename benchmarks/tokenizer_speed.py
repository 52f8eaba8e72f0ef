"""Tokenizer throughput in MB/s on ~1 MB of mixed English and code, per model.

    python benchmarks/tokenizer_speed.py [--size-mb 1.0]

Runs the installed package (compiled core) and, in a subprocess, the same source
uncompiled (PYTHONPATH=repo), and llama.cpp's tokenizer when llama-cpp-python is
importable (set LLAMA_CPP_PYTHON=/path/to/venv/bin/python to use a scratch venv).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SNIPPET = r'''
import json, sys, time
from assistant.config import load_registry, resolve_model_path
from assistant.core.gguf import open_gguf
from assistant.core.tokenizer import tokenizer_from_gguf
import assistant.core.tokenizer as T
text = open(sys.argv[1], encoding="utf-8").read()
out = {"compiled": T.__file__.endswith(".so")}
reg = load_registry()
for name in sys.argv[2:]:
    path, _ = resolve_model_path(name, reg)
    tok = tokenizer_from_gguf(open_gguf(str(path)))
    t0 = time.perf_counter()
    ids = tok.encode(text, add_special=False)
    dt = time.perf_counter() - t0
    out[name] = {"mb_s": len(text.encode()) / 1e6 / dt, "tokens": len(ids)}
print(json.dumps(out))
'''

LLAMA_SNIPPET = r'''
import json, sys, time
from llama_cpp import Llama
text = open(sys.argv[1], encoding="utf-8").read().encode()
out = {}
for name, path in zip(sys.argv[2::2], sys.argv[3::2]):
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    t0 = time.perf_counter()
    ids = llm.tokenize(text, add_bos=False, special=False)
    out[name] = {"mb_s": len(text) / 1e6 / (time.perf_counter() - t0), "tokens": len(ids)}
print(json.dumps(out))
'''


def corpus(size_mb: float) -> str:
    parts = []
    for p in sorted((REPO / "assistant").rglob("*.py")) + [REPO / "README.md", REPO / "docs" / "security.md"]:
        parts.append(p.read_text(encoding="utf-8"))
    english = ("The quick brown fox jumps over the lazy dog. A local assistant keeps your conversations on "
               "your own machine, answers questions, writes code and remembers notes. ") * 20
    text = ""
    i = 0
    while len(text.encode()) < size_mb * 1e6:
        text += parts[i % len(parts)] + "\n" + english + "\n"
        i += 1
    return text[: int(size_mb * 1e6)]


def main() -> None:
    size = float(sys.argv[sys.argv.index("--size-mb") + 1]) if "--size-mb" in sys.argv else 1.0
    names = ["smollm2", "qwen2.5-coder", "gemma3-270m"]
    path = Path("/tmp/assistant-tokenizer-corpus.txt")
    path.write_text(corpus(size), encoding="utf-8")
    runs = {}
    runs["installed"] = json.loads(subprocess.check_output([sys.executable, "-c", SNIPPET, str(path), *names],
                                                           cwd="/tmp").decode().splitlines()[-1])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs["source"] = json.loads(subprocess.check_output([sys.executable, "-c", SNIPPET, str(path), *names],
                                                        cwd="/tmp", env=env).decode().splitlines()[-1])
    llama_py = os.environ.get("LLAMA_CPP_PYTHON", sys.executable)
    try:
        from assistant.config import load_registry, resolve_model_path

        reg = load_registry()
        args = []
        for n in names:
            args += [n, str(resolve_model_path(n, reg)[0])]
        runs["llama.cpp"] = json.loads(subprocess.check_output([llama_py, "-c", LLAMA_SNIPPET, str(path), *args],
                                                               stderr=subprocess.DEVNULL).decode().splitlines()[-1])
    except (subprocess.CalledProcessError, FileNotFoundError):
        print("llama.cpp (llama-cpp-python) is not available here: showing our figures only")
    print(f"{'model':<16}{'compiled MB/s':>15}{'uncompiled MB/s':>17}{'llama.cpp MB/s':>16}")
    for n in names:
        c = runs["installed"][n]["mb_s"]
        u = runs["source"][n]["mb_s"]
        ll = runs.get("llama.cpp", {}).get(n, {}).get("mb_s")
        print(f"{n:<16}{c:>15.2f}{u:>17.2f}{(f'{ll:.2f}' if ll else '-'):>16}")
    print(f"(installed core compiled: {runs['installed']['compiled']}; corpus {size} MB)")


if __name__ == "__main__":
    main()
