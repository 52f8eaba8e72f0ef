"""``assistant bench``: load time, first token, prefill and decode speed, peak memory.

Each measurement runs ``reps`` times and reports the median and the spread (min..max).
"Cold start to first token" is measured in a fresh process (interpreter start, imports,
model open, a 16-token prompt, one generated token).

Each decode repetition is followed by the floor: the same number of passes of bare
matrix-vector products over this model's prepared weights (float32 or quantized, as
loaded; no attention, no norms, no sampling), then the same with the attention op over
the decode's average context between each layer's products. The memory floor is the bytes
one token reads (weights as stored, plus the cached keys and values) over the bandwidth
measured in the same run. Timing them in one process, back to back, with the
same statistic makes ``decode_vs_floor`` and ``decode_vs_floor_attention`` fair ratios on
a machine whose speed drifts between runs.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .core.engine import GenerationSettings, Model
from .core.sampling import SamplingSettings

COLD_START_SNIPPET = """
import time, sys
t0 = time.perf_counter()
from assistant.core.engine import Model, GenerationSettings
from assistant.core.sampling import SamplingSettings
m = Model(sys.argv[1], memory=sys.argv[2])
ids = m.tokenize("Hello there! Tell me a short story about a llama who learns to fly over the mountains.")[:16]
for p in m.generate(ids, GenerationSettings(max_tokens=1, sampling=SamplingSettings(temperature=0))):
    break
print(time.perf_counter() - t0)
"""


def _ordinary_range(n_vocab: int) -> tuple[int, int]:
    """Token ids for random prompts: the middle of the vocabulary, past the special and byte
    tokens at its start (a tiny test vocabulary has fewer than 1000 tokens)."""
    return min(1000, n_vocab // 2), min(n_vocab, 30000)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def floor_tps(model: Model, passes: int, attention_ctx: int = 0) -> float:
    """Passes per second of ``passes`` forward passes made of nothing but the model's
    matrix products (one random row through every prepared weight matrix, in the
    memory mode the model was loaded in: float32 BLAS or the quantized kernels).

    With ``attention_ctx``, each layer also runs the decoding attention for one query over
    that many cached positions (random keys and values, one cache per layer as in
    decoding), between its q/k/v and output products: the floor plus the one other cost
    that grows with the context, with the weights evicting the cache from CPU caches.
    """
    from .core import kernels
    from .core.ops import attention
    from .core.transformer import attention_scale

    net = model.net
    a = net.args
    layers = [net.block(i).linears() for i in range(a.n_layers)]
    head = net.head()
    rng = np.random.default_rng(0)
    xs = {lin.n_in: rng.standard_normal((1, lin.n_in)).astype(np.float32)
          for lin in [head] + [lin for ls in layers for lin in ls]}
    kv = [(rng.standard_normal((a.n_kv_heads, attention_ctx, a.head_dim)).astype(np.float32),
           rng.standard_normal((a.n_kv_heads, attention_ctx, a.head_dim)).astype(np.float32))
          for _ in range(a.n_layers if attention_ctx > 0 else 0)]
    q = rng.standard_normal((a.n_heads, 1, a.head_dim)).astype(np.float32)
    q2 = np.ascontiguousarray(q[:, 0])
    scale = attention_scale(a.head_dim)
    kernel_attention = net.new_cache(1).kernel_attention  # the attention decoding runs
    t = time.perf_counter()
    for _ in range(passes):
        for layer, ls in enumerate(layers):
            for j, lin in enumerate(ls):
                lin(xs[lin.n_in])
                if j == 0 and kv:
                    k, v = kv[layer]
                    if kernel_attention:
                        kernels.attend_one(q2, k, v, attention_ctx, 0, scale)
                    else:
                        attention(q, k, v, attention_ctx - 1, scale)
        head(xs[head.n_in])
    return passes / (time.perf_counter() - t)


def memory_bandwidth_gbs(mb: int = 256) -> float:
    """Bytes per second this machine streams from memory into the cores (best of 5 passes
    over an array much larger than the caches), as the decode kernels read weights."""
    from .core import kernels

    a = np.ones(mb << 20, dtype=np.int8)
    kernels.stream_sum(a)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        kernels.stream_sum(a)
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def bytes_per_token(model: Model, ctx: int) -> int:
    """Bytes one decoded token must read: every weight matrix as stored, plus the keys and
    values of ``ctx`` cached positions."""
    a = model.net.args
    weights = sum(lin.nbytes for lin in model.net.linears())
    return int(weights + 2 * 4 * a.n_layers * a.n_kv_heads * a.head_dim * ctx)


def _decode_rounds(model: Model, prompt: list[int], n_gen: int, reps: int) -> dict[str, list[float]]:
    """Per repetition: prefill and decode speed, then the two floors timed right after them."""
    rounds: dict[str, list[float]] = {"prefill": [], "decode": [], "floor": [], "floor_att": []}
    # Plain one-token-at-a-time decoding: prompt-lookup drafting is measured separately
    # (benchmarks/compare_llamacpp.py), since greedy loops on a random prompt flatter it.
    settings = GenerationSettings(max_tokens=n_gen, sampling=SamplingSettings(temperature=0), ignore_eos=True,
                                  lookup_decoding=False)
    for _ in range(reps):
        model.reset()
        stats: dict[str, float] = {}
        for piece in model.generate(prompt, settings):
            if piece.done:
                stats = piece.stats
        rounds["prefill"].append(len(prompt) / stats["prefill_s"])
        rounds["decode"].append(stats["generated_tokens"] / stats["decode_s"])
        rounds["floor"].append(floor_tps(model, n_gen))
        rounds["floor_att"].append(floor_tps(model, n_gen, len(prompt) + n_gen // 2))
    return rounds


def _turn2_first_token(model: Model, rng: np.random.Generator) -> dict[str, float]:
    """Seconds to the first token of turn 2 of a chat with a ~1,000-token history (shorter when
    the model's context is: tiny test models hold 256), from scratch and with the prefix cached."""
    history = [int(x) for x in rng.integers(*_ordinary_range(model.n_vocab), size=min(1000, model.n_ctx - 32))]
    turn2 = history + [int(x) for x in rng.integers(*_ordinary_range(model.n_vocab), size=20)]
    first_token: dict[str, float] = {}
    for label, warm in (("full", False), ("cached", True)):
        model.reset()
        if warm:
            for _piece in model.generate(history, GenerationSettings(max_tokens=1)):
                pass
        t = time.perf_counter()
        for _piece in model.generate(turn2, GenerationSettings(max_tokens=1, sampling=SamplingSettings(temperature=0))):
            break
        first_token[label] = time.perf_counter() - t
    return first_token


def _cold_starts(path: str, memory: str, reps: int) -> list[float]:
    """Seconds from a fresh interpreter to the first token (COLD_START_SNIPPET), up to 3 times."""
    cold = []
    for _ in range(max(1, min(reps, 3))):
        out = subprocess.run([sys.executable, "-c", COLD_START_SNIPPET, path, memory], capture_output=True, text=True)
        if out.returncode == 0:
            cold.append(float(out.stdout.strip().splitlines()[-1]))
    return cold


def _median(xs: list[float], digits: int) -> float | None:
    return round(statistics.median(xs), digits) if xs else None


def _spread(xs: list[float], digits: int) -> list[float] | None:
    return [round(min(xs), digits), round(max(xs), digits)] if xs else None


def _ratio(num: list[float], den: list[float]) -> float | None:
    return round(statistics.median(n / d for n, d in zip(num, den)), 3) if den else None


def run_bench(path: str, n_prompt: int = 512, n_gen: int = 128, reps: int = 3, memory: str = "lean") -> dict[str, Any]:
    from .diagnostics import core_status

    t0 = time.perf_counter()
    model = Model(path, memory=memory, n_ctx=max(n_prompt + n_gen + 8, 1100))
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    prompt = [int(x) for x in rng.integers(*_ordinary_range(model.n_vocab), size=n_prompt)]
    t1 = time.perf_counter()
    model.net.prepare()
    prepare_s = time.perf_counter() - t1
    r = _decode_rounds(model, prompt, n_gen, reps)
    first_token = _turn2_first_token(model, rng)
    cold = _cold_starts(path, memory, reps)
    st = core_status()
    peak_mb = peak_rss_mb()  # before the bandwidth probe's own array
    bandwidth = memory_bandwidth_gbs()
    per_token = bytes_per_token(model, n_prompt + n_gen // 2)
    memory_floor_tps = bandwidth * 1e9 / per_token
    return {
        "model": model.name, "memory": memory, "n_prompt": n_prompt, "n_gen": n_gen, "reps": reps,
        "load_s": round(load_s, 4), "prepare_s": round(prepare_s, 3), "first_token_s": _median(cold, 3),
        "prefill_tps": _median(r["prefill"], 2), "prefill_spread": _spread(r["prefill"], 2),
        "decode_tps": _median(r["decode"], 2), "decode_spread": _spread(r["decode"], 2),
        "floor_tps": _median(r["floor"], 2), "decode_vs_floor": _ratio(r["decode"], r["floor"]),
        "floor_attention_tps": _median(r["floor_att"], 2),
        "decode_vs_floor_attention": _ratio(r["decode"], r["floor_att"]),
        "turn2_first_token_s": round(first_token["cached"], 4), "full_reprefill_s": round(first_token["full"], 4),
        "prompt_cache_ratio": round(first_token["cached"] / first_token["full"], 4),
        "peak_rss_mb": round(peak_mb, 1), "weight_mb": round(model.net.weight_bytes / 1e6, 1),
        "bandwidth_gbs": round(bandwidth, 2), "bytes_per_token_mb": round(per_token / 1e6, 2),
        "memory_floor_tps": round(memory_floor_tps, 2),
        "decode_vs_memory_floor": round(statistics.median(r["decode"]) / memory_floor_tps, 3),
        "kernels": st["kernels"],
        "compiled": st["compiled"], "blas": st["blas"], "threads": [b.get("threads") for b in st["blas"]],
    }


@dataclass
class TimedStream:
    """One streamed answer, timed from the request: what a remote entry lets us measure."""

    text: str = ""
    finish_reason: str = ""
    first_token_s: float | None = None
    total_s: float = 0.0
    tokens: int = 0  # the server's usage count when it sends one, else streamed pieces

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first one."""
        span = self.total_s - (self.first_token_s or 0.0)
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


def timed_stream(events: Iterator[dict[str, Any]], echo: Callable[[str], Any] | None = None) -> TimedStream:
    """Consume a backend's event stream (``token`` ... ``done``), timing the first token."""
    out = TimedStream()
    t0 = time.perf_counter()
    pieces = 0
    for ev in events:
        if ev["type"] == "token" and ev["text"]:
            if out.first_token_s is None:
                out.first_token_s = time.perf_counter() - t0
            pieces += 1
            out.text += ev["text"]
            if echo is not None:
                echo(ev["text"])
        elif ev["type"] == "done":
            out.finish_reason = str(ev.get("finish_reason", ""))
            out.tokens = int(ev.get("stats", {}).get("generated_tokens", 0)) or pieces
    out.total_s = time.perf_counter() - t0
    out.tokens = out.tokens or pieces
    return out


# Filler for a remote prompt of about n words (~1 token each in the usual vocabularies).
_WORDS = ("llama", "river", "mountain", "green", "quiet", "stone", "bright", "morning", "valley", "story")


def run_remote_bench(backend: Any, n_prompt: int = 512, n_gen: int = 128, reps: int = 3) -> dict[str, Any]:
    """Time to first token and tokens per second through a remote (OpenAI-compatible) entry:
    the server's load, prefill and memory are out of sight. The median of ``reps`` requests."""
    from .chat import ChatSettings

    words = " ".join(_WORDS[i % len(_WORDS)] for i in range(max(0, n_prompt - 12)))
    prompt = f"{words}\n\nNow write a long story about a llama who learns to fly."
    settings = ChatSettings(max_tokens=n_gen, sampling=SamplingSettings(temperature=0))
    runs = [timed_stream(backend.complete(prompt, settings, None)) for _ in range(max(1, reps))]
    ttft = [r.first_token_s for r in runs if r.first_token_s is not None]
    tps = [r.decode_tps for r in runs if r.decode_tps > 0]
    return {
        "model": backend.name, "backend": getattr(backend, "kind", "remote"), "n_prompt_words": n_prompt,
        "n_gen": n_gen, "reps": len(runs),
        "first_token_s": _median(ttft, 4), "first_token_spread": _spread(ttft, 4),
        "decode_tps": _median(tps, 2), "decode_spread": _spread(tps, 2),
        "generated_tokens": [r.tokens for r in runs],
    }

if __name__ == "__main__":
    print(json.dumps(run_bench(sys.argv[1])))
