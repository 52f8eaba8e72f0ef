"""Perplexity over a text, computed as llama.cpp's ``llama-perplexity`` does.

The text is tokenized once and cut into chunks of ``n_ctx`` tokens; each chunk starts with
BOS when the model adds one, is evaluated from an empty cache, and only the predictions
in its second half are scored (the first half gives every scored token some context).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .core.engine import Model
from .core.sampling import log_softmax


def perplexity(model: Model, text: str, n_ctx: int = 512, max_chunks: int = 0,
               report: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    ids = model.tokenize(text, add_special=True, parse_special=False)
    if len(ids) < 2 * n_ctx:
        raise ValueError(f"the text has {len(ids)} tokens; perplexity needs at least {2 * n_ctx} (2 x ctx)")
    n_chunks = len(ids) // n_ctx
    if max_chunks > 0:
        n_chunks = min(n_chunks, max_chunks)
    vocab = model.tokenizer.vocab
    first = n_ctx // 2
    nll = 0.0
    count = 0
    for c in range(n_chunks):
        chunk = list(ids[c * n_ctx:(c + 1) * n_ctx])
        if vocab.add_bos and vocab.bos_id >= 0:
            chunk[0] = vocab.bos_id
        logits = model.logits(chunk)  # (n_ctx, n_vocab)
        for j in range(first, n_ctx - 1):
            lp = log_softmax(logits[j])
            nll -= float(lp[chunk[j + 1]])
            count += 1
        if report is not None:
            report(c + 1, n_chunks, math.exp(nll / count))
    return {"perplexity": math.exp(nll / count), "tokens_scored": count, "chunks": n_chunks,
            "mean_nll": nll / count}


