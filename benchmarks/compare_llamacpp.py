"""Our engine beside llama.cpp on the same file, prompt and thread count, in one run.

    python benchmarks/compare_llamacpp.py [-m smollm2] [--prompt 512] [--gen 128]

llama.cpp runs through llama-cpp-python from a scratch virtual environment outside the
repository (not a project dependency): set LLAMA_CPP_PYTHON to its python (default
/tmp/llamacpp/venv/bin/python). Without it, only our figures are printed.
Ours runs in the default memory mode (lean: the weights stay quantized, numba kernels) and,
for reference, in speed mode (float32 weights, BLAS). Also measured: the floor (bare
quantized products, then with the attention kernel between them, paired in the bench
process), the memory floor (bytes read per token over the bandwidth measured in the same
run), and prompt-lookup decoding on a "repeat this code" task against llama.cpp's plain
decode of the same prompt.

Both sides report the median of 3 repetitions. Then ``--rounds`` paired rounds alternate a
fresh process of ours and of llama.cpp on the same prompt and print each round's prefill,
decode and peak-RSS ratio: on a shared machine whose speed drifts by tens of percent, the median of
paired ratios is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date

LLAMA_SNIPPET = r'''
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
from llama_cpp import Llama
path, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rewrite = json.loads(sys.argv[5])  # [] skips the rewrite task
reps = int(sys.argv[6]) if len(sys.argv) > 6 else 3  # 1 for a paired round
llm = Llama(model_path=path, n_ctx=max(2048, n_prompt + n_gen + 16), n_threads=threads, n_threads_batch=threads,
            n_batch=512, verbose=False)
load_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
prompt = [int(x) for x in rng.integers(1000, min(llm.n_vocab(), 30000), size=n_prompt)]
def run(prompt, n_gen):
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    n_vocab = llm.n_vocab()
    for _ in range(n_gen):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        llm.eval([int(np.argmax(logits))])
    return prefill, time.perf_counter() - t
res = {"load_s": load_s}
pf, dc = [], []
for _ in range(reps):  # the median of 3, as `assistant bench` reports ours
    a, b = run(prompt, n_gen)
    pf.append(n_prompt / a); dc.append(n_gen / b)
res["prefill_tps"] = float(np.median(pf)); res["decode_tps"] = float(np.median(dc))
if rewrite:
    a, b = run(rewrite, n_gen)
    res["rewrite_decode_tps"] = n_gen / b
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
'''

# Paired rounds: our engine and llama.cpp alternate, one fresh process each per round, on
# the same prompt (prefill, then greedy decoding), so both sides meet the same machine
# conditions; the ratio of each round is reported and the table uses their medians.
OURS_PAIR = r'''
import json, sys
import numpy as np
from assistant.core.engine import Model, GenerationSettings
from assistant.core.sampling import SamplingSettings
import resource
path, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
memory = sys.argv[4] if len(sys.argv) > 4 else "lean"
m = Model(path, memory=memory, n_ctx=max(2048, n_prompt + n_gen + 16))
m.net.prepare()
prompt = [int(x) for x in np.random.default_rng(0).integers(1000, min(m.n_vocab, 30000), size=n_prompt)]
st = {}
for p in m.generate(prompt, GenerationSettings(max_tokens=n_gen, ignore_eos=True, lookup_decoding=False,
                                               sampling=SamplingSettings(temperature=0))):
    if p.done:
        st = p.stats
print(json.dumps({"prefill_tps": n_prompt / st["prefill_s"], "decode_tps": st["generated_tokens"] / st["decode_s"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

OURS_REWRITE = r'''
import json, sys, time
from assistant.core.engine import Model, GenerationSettings
from assistant.core.sampling import SamplingSettings
path, n_gen, ids = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
m = Model(path, n_ctx=2048)
m.net.prepare()
out = {}
for look in (False, True):
    best = 0.0
    for _ in range(2):
        m.reset()
        st = {}
        for p in m.generate(ids, GenerationSettings(max_tokens=n_gen, ignore_eos=True, lookup_decoding=look,
                                                    sampling=SamplingSettings(temperature=0))):
            if p.done:
                st = p.stats
        best = max(best, st["generated_tokens"] / st["decode_s"])
    out["lookup" if look else "plain"] = best
    out["accepted" if look else "_"] = st.get("accepted_tokens", 0)
print(json.dumps(out))
'''

LOOP = r'''
import json, sys, time
import assistant.core.engine as E
from assistant.core.engine import Model, GenerationSettings
from assistant.core.sampling import SamplingSettings
m = Model(sys.argv[1], n_ctx=1024)
m.net.prepare()
ids = m.tokenize("Once upon a time, in a land far away,", add_special=True)
best = 0.0
for seed in range(3):
    m.reset()
    st = {}
    for p in m.generate(ids, GenerationSettings(max_tokens=96, ignore_eos=True, lookup_decoding=False,
                                                sampling=SamplingSettings(temperature=0.8, top_k=40, top_p=0.95,
                                                                          repeat_penalty=1.1, seed=seed))):
        if p.done:
            st = p.stats
    best = max(best, st["generated_tokens"] / st["decode_s"])
print(json.dumps({"decode_tps": best, "compiled": E.__file__.endswith(".so")}))
'''

PARALLEL = r'''
import json, sys, time
from assistant.core.engine import Model, GenerationSettings
from assistant.core.sampling import SamplingSettings
m = Model(sys.argv[1], n_ctx=1024)
m.net.prepare()
ids = m.tokenize("Once upon a time, in a land far away,", add_special=True)
s = GenerationSettings(max_tokens=64, ignore_eos=True, sampling=SamplingSettings(temperature=0.8, seed=1))
out = {}
for n in (1, 4):
    best = 1e9
    for _ in range(2):
        m.reset()
        t = time.perf_counter()
        for _i, _p in m.generate_parallel(ids, n, s):
            pass
        best = min(best, time.perf_counter() - t)
    out[str(n)] = best
print(json.dumps(out))
'''

REWRITE_CODE = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b


def factorial(n):
    """Return n factorial."""
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def is_prime(n):
    """True when n is a prime number."""
    if n < 2:
        return False
    for d in range(2, int(n ** 0.5) + 1):
        if n % d == 0:
            return False
    return True
'''


def sh(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="smollm2")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="paired prefill/decode rounds against llama.cpp")
    args = ap.parse_args()
    from assistant.config import load_registry, resolve_model_path
    from assistant.core.engine import Model

    path = str(resolve_model_path(args.model, load_registry())[0])
    tok = Model(path, n_ctx=2048)
    rewrite_ids = tok.tokenize(tok.chat_template and
                               "<|im_start|>user\nRepeat this code exactly:\n```python\n" + REWRITE_CODE +
                               "```<|im_end|>\n<|im_start|>assistant\n```python\n" or
                               "Repeat this code exactly:\n" + REWRITE_CODE + "\nHere it is again:\n",
                               add_special=True, parse_special=True)
    threads = 2
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{date.today().isoformat()}; model {args.model}; prompt {args.prompt}, gen {args.gen}, {threads} threads")
    bench = [sys.executable, "-m", "assistant", "bench", "-m", args.model, "--prompt", str(args.prompt),
             "--gen", str(args.gen), "--reps", str(args.reps), "--json", "--threads", str(threads)]
    ours = sh(bench)  # the default memory mode: weights stay quantized
    speed = sh(bench[:-2] + ["--memory", "speed", "--reps", "1"])
    rewrite = sh([sys.executable, "-c", OURS_REWRITE, path, str(args.gen), json.dumps(rewrite_ids)])
    parallel = sh([sys.executable, "-c", PARALLEL, path])
    loop_c = sh([sys.executable, "-c", LOOP, path])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loop_u = sh([sys.executable, "-c", LOOP, path], env=dict(os.environ, PYTHONPATH=repo))
    llama_py = os.environ.get("LLAMA_CPP_PYTHON", "/tmp/llamacpp/venv/bin/python")
    ll = None
    if os.path.exists(llama_py):
        try:
            ll = sh([llama_py, "-c", LLAMA_SNIPPET, path, str(args.prompt), str(args.gen), str(threads),
                     json.dumps(rewrite_ids)])
        except RuntimeError as err:
            print(f"llama.cpp failed: {err}")
    else:
        print(f"llama.cpp (llama-cpp-python) is not available at {llama_py}: printing our figures only")
    paired = paired_rounds(path, args.prompt, args.gen, threads, args.rounds, llama_py) if ll is not None else {}
    for key, ratios in paired.items():
        print(f"{key}, ours / llama.cpp in {args.rounds} alternating rounds (fresh processes): "
              + ", ".join(f"{r:.2f}x" for r in ratios) + f"; median {statistics.median(ratios):.2f}x")
    print(f"kernels: {ours['kernels']}; BLAS: {ours['blas']}; compiled core: {ours['compiled']}")
    rows = [
        ("load (s)", ours["load_s"], ll and ll["load_s"]),
        ("cold start to first token (s)", ours["first_token_s"], None),
        ("prefill tok/s", ours["prefill_tps"], ll and ll["prefill_tps"]),
        ("prefill tok/s (speed: float32)", speed["prefill_tps"], ll and ll["prefill_tps"]),
        ("decode tok/s", ours["decode_tps"], ll and ll["decode_tps"]),
        ("decode tok/s (speed: float32)", speed["decode_tps"], ll and ll["decode_tps"]),
        ("decode tok/s, rewrite task, plain", rewrite["plain"], ll and ll["rewrite_decode_tps"]),
        ("decode tok/s, rewrite task, lookup", rewrite["lookup"], ll and ll["rewrite_decode_tps"]),
        ("peak RSS MB", ours["peak_rss_mb"], ll and ll["peak_rss_mb"]),
        ("peak RSS MB (speed: float32)", speed["peak_rss_mb"], ll and ll["peak_rss_mb"]),
    ]
    print(f"{'measure':<38}{'ours':>10}{'llama.cpp':>11}{'ratio':>8}")
    for name, mine, theirs in rows:
        ratio = f"{mine / theirs:.2f}x" if theirs else "-"
        print(f"{name:<38}{mine:>10.2f}{(f'{theirs:.2f}' if theirs else '-'):>11}{ratio:>8}")
    print(f"prompt cache: turn 2 after a 1,000-token history reaches its first token in {ours['turn2_first_token_s']:.3f} s "
          f"vs {ours['full_reprefill_s']:.3f} s re-prefilling ({ours['prompt_cache_ratio'] * 100:.1f}%)")
    print(f"decode / floor (bare quantized products, paired in the bench process): {ours['decode_vs_floor']:.2f} "
          f"({ours['floor_tps']:.1f} tok/s); / products + attention at {args.prompt + args.gen // 2} positions: "
          f"{ours['decode_vs_floor_attention']:.2f} ({ours['floor_attention_tps']:.1f} tok/s)")
    print(f"memory floor: {ours['bytes_per_token_mb']:.1f} MB read per token at {ours['bandwidth_gbs']:.1f} GB/s = "
          f"{ours['memory_floor_tps']:.1f} tok/s; decode reaches {ours['decode_vs_memory_floor']:.2f} of it")
    print(f"lookup accepted {rewrite.get('accepted', 0):.0f} drafted tokens; lookup/plain {rewrite['lookup'] / rewrite['plain']:.2f}x")
    print(f"sampled decode (top-k/top-p/repeat penalty): compiled core {loop_c['decode_tps']:.1f} tok/s "
          f"(compiled={loop_c['compiled']}), same source uncompiled {loop_u['decode_tps']:.1f} tok/s "
          f"(compiled={loop_u['compiled']}): {loop_c['decode_tps'] / loop_u['decode_tps']:.2f}x")
    print(f"parallel sampling: 4 completions of 64 tokens took {parallel['4'] / parallel['1']:.2f}x the time of one")


def paired_rounds(path: str, n_prompt: int, n_gen: int, threads: int, rounds: int, llama_py: str,
                  memory: str = "lean") -> dict[str, list[float]]:
    """Alternate fresh processes of ours and llama.cpp on the same prompt; each round's
    prefill, decode and peak-RSS ratios (ours / llama.cpp)."""
    out: dict[str, list[float]] = {"prefill": [], "decode": [], "peak RSS": []}
    for _ in range(rounds):
        mine = sh([sys.executable, "-c", OURS_PAIR, path, str(n_prompt), str(n_gen), memory],
                  env=dict(os.environ, ASSISTANT_THREADS=str(threads)))
        theirs = sh([llama_py, "-c", LLAMA_SNIPPET, path, str(n_prompt), str(n_gen), str(threads), "[]", "1"])
        out["prefill"].append(mine["prefill_tps"] / theirs["prefill_tps"])
        out["decode"].append(mine["decode_tps"] / theirs["decode_tps"])
        out["peak RSS"].append(mine["peak_rss_mb"] / theirs["peak_rss_mb"])
    return out

if __name__ == "__main__":
    main()
