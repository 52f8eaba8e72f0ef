"""What JSON-constrained decoding costs per token, beside a decode step, on one model.

    python benchmarks/constraint_overhead.py [-m qwen2.5-coder] [--tokens 120]

Generates answers under a JSON Schema at temperature 0.8 (several seeds) and times every
call the sampler makes into the constraint (the pick check, the mask when the pick is
refused, advancing the matcher; the constraint adds them up itself), once with a cold mask cache (the first request with a new
schema: trie walks for every new state) and once warm (the same schema again). The decode
step is the median time of one token's forward pass in the same process. Each is printed
per generated token and as a share of the decode step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from assistant.config import load_registry
from assistant.core.engine import GenerationSettings, Model
from assistant.core.json_constraint import ConstraintFactory
from assistant.core.sampling import SamplingSettings

SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string"}, "country": {"type": "string"}, "population_millions": {"type": "number"},
    "landmarks": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "continent": {"enum": ["Africa", "Asia", "Europe", "North America", "South America", "Oceania"]}},
    "required": ["city", "country", "continent"]}


def run(model: Model, factory: ConstraintFactory, prompts: list[list[int]], max_tokens: int) -> tuple[float, int, int]:
    """(seconds in the constraint, tokens checked, masks applied) over one answer per prompt."""
    cache = factory.cache
    seconds0, applied0 = cache.seconds, cache.applied
    tokens = 0
    for seed, ids in enumerate(prompts):
        s = GenerationSettings(max_tokens=max_tokens, sampling=SamplingSettings(temperature=0.8, seed=seed),
                               constraint=factory.new())
        for piece in model.generate(ids, s):
            if piece.done:
                tokens += int(piece.stats["generated_tokens"]) + 1  # + the end token, also checked
    return cache.seconds - seconds0, tokens, cache.applied - applied0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="qwen2.5-coder")
    ap.add_argument("--tokens", type=int, default=120)
    ap.add_argument("--prompts", type=int, default=4)
    a = ap.parse_args()
    entry = load_registry(None).get(a.model)
    model = Model(str(entry.local_path), n_ctx=2048, name=entry.name)
    tok = model.tokenizer
    t0 = time.perf_counter()
    factory = ConstraintFactory(SCHEMA, tok, sorted(tok.vocab.eog_ids))
    build_s = time.perf_counter() - t0
    cities = ["Tokyo", "Paris", "Lagos", "Lima", "Sydney", "Cairo", "Toronto", "Berlin"][: a.prompts]
    prompts = [tok.encode(f"<|im_start|>user\nDescribe {c} as JSON.<|im_end|>\n<|im_start|>assistant\n",
                          True, True) for c in cities]
    # The decode step: one token's forward pass, median of 30, on a warm cache.
    first = prompts[0]
    cache = model.net.new_cache(len(first) + 32)
    model.net.forward(np.asarray(first, dtype=np.int32), cache)
    steps = []
    for i in range(30):
        t1 = time.perf_counter()
        model.net.forward(np.asarray([first[i % len(first)]], dtype=np.int32), cache)
        steps.append(time.perf_counter() - t1)
    step = statistics.median(steps)
    print(f"model {entry.name}: vocabulary {tok.n_vocab}, trie + token bytes built in {build_s:.2f} s "
          f"({len(factory.cache.trie.lo)} nodes); decode step {step * 1000:.1f} ms")
    # Masking every step (as a grammar sampler without the pick check would): the cost of
    # applying each state's cached mask to a row of logits, over one document's states.
    fresh = ConstraintFactory(SCHEMA, tok, sorted(tok.vocab.eog_ids))  # its own cache: cold
    c = fresh.new()
    doc = '{"city": "Paris", "country": "France", "population_millions": 2.1, "landmarks": ["Louvre"], ' \
          '"continent": "Europe"}'
    row = np.random.default_rng(0).standard_normal(tok.n_vocab).astype(np.float32)
    walk_s = 0.0
    apply_s = 0.0
    ids = tok.encode(doc, False, False)
    for tid in ids:
        t1 = time.perf_counter()
        fresh.cache.mask(c.state)  # build (or find) the state's mask
        t2 = time.perf_counter()
        c.apply(row)
        t3 = time.perf_counter()
        walk_s += t2 - t1
        apply_s += t3 - t2
        c.accept(tid)
    print(f"masking every step: build {walk_s / len(ids) * 1000:.2f} ms/token cold, apply "
          f"{apply_s / len(ids) * 1000:.2f} ms/token = {100 * apply_s / len(ids) / step:.2f}% of a decode step warm")
    for label in ("cold cache", "warm cache"):
        misses0 = factory.cache.misses
        seconds, tokens, masks = run(model, factory, prompts, a.tokens)
        per = seconds / max(1, tokens)
        print(f"{label}: {tokens} tokens, constraint {per * 1000:.2f} ms/token = {100 * per / step:.2f}% of a "
              f"decode step; masks applied {masks}, built {factory.cache.misses - misses0}")


if __name__ == "__main__":
    main()
