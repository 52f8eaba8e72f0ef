"""The Python around each decoded token, compiled core vs the same source uncompiled.

    python benchmarks/loop_overhead.py [-m smollm2] [--steps 2000]

A decode step is one forward pass (numpy/BLAS, the same either way) plus the per-token loop
mypyc compiles: sampling (penalties, top-k, top-p, min-p, temperature), the streaming
detokenizer and stop-string matching, and prompt-lookup drafting (a scan of the history).
This times those alone on real-sized logits (random rows of the model's vocabulary size),
in two subprocesses: the installed package and the source tree on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SNIPPET = r'''
import json, sys, time
import numpy as np
import assistant.core.engine as E
from assistant.config import load_registry, resolve_model_path
from assistant.core.gguf import open_gguf
from assistant.core.sampling import Sampler, SamplingSettings
from assistant.core.tokenizer import StreamingDetokenizer, tokenizer_from_gguf
name, steps = sys.argv[1], int(sys.argv[2])
tok = tokenizer_from_gguf(open_gguf(str(resolve_model_path(name, load_registry())[0])))
rng = np.random.default_rng(0)
rows = rng.standard_normal((16, tok.n_vocab)).astype(np.float32) * 3
out = {"compiled": E.__file__.endswith(".so")}
for label, settings in (("greedy", SamplingSettings(temperature=0)),
                        ("sampled", SamplingSettings(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                                                     repeat_penalty=1.1, seed=1))):
    sampler = Sampler(settings)
    detok = StreamingDetokenizer(tok)
    history = list(range(100, 400))
    text = ""
    t0 = time.perf_counter()
    for i in range(steps):
        tid = sampler(rows[i % 16], history)
        history.append(tid)
        text += detok.add_token(tid)
        if "</s>" in text[-16:]:
            break
    out[label + "_us"] = (time.perf_counter() - t0) / steps * 1e6
# Prompt-lookup drafting: scanning a long history for the last n-gram, every step.
hist = [int(x) for x in rng.integers(0, 2000, size=3000)]
look = E.LookupState()
t0 = time.perf_counter()
for i in range(steps):
    look.cooldown = 0
    look.draft(hist + [i % 2000, (i * 7) % 2000, (i * 13) % 2000], 8)
out["draft_us"] = (time.perf_counter() - t0) / steps * 1e6
# Streaming detokenization alone.
detok = StreamingDetokenizer(tok)
ids = [int(x) for x in rng.integers(0, tok.n_vocab, size=steps)]
t0 = time.perf_counter()
for t in ids:
    detok.add_token(t)
out["detok_us"] = (time.perf_counter() - t0) / steps * 1e6
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="smollm2")
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    cmd = [sys.executable, "-c", SNIPPET, args.model, str(args.steps)]
    comp = json.loads(subprocess.check_output(cmd, cwd="/tmp").decode().splitlines()[-1])
    src = json.loads(subprocess.check_output(cmd, cwd="/tmp", env=dict(os.environ, PYTHONPATH=str(REPO)))
                     .decode().splitlines()[-1])
    print(f"per-token loop on {args.model} logits ({args.steps} steps):")
    for label in ("greedy", "sampled", "draft", "detok"):
        c, u = comp[label + "_us"], src[label + "_us"]
        print(f"  {label:<8} compiled {c:8.0f} us   uncompiled {u:8.0f} us   {u / c:.2f}x faster compiled")
    print(f"(compiled: {comp['compiled']}, uncompiled: {not src['compiled']})")


if __name__ == "__main__":
    main()
