"""The public model object: tokenize, detokenize, logits and streaming generation.

``Model`` ties a GGUF file, its tokenizer and its architecture together with one KV cache
that is reused across calls: a chat's next turn shares its prefix with the cached tokens,
so only the new tokens are processed (the prompt cache).
"""

from __future__ import annotations

import time
from typing import Callable, Final, Iterable, Iterator, SupportsInt

import numpy as np
import numpy.typing as npt

from .gguf import GGUFFile, open_gguf
from .models import build_model
from .sampling import Sampler, SamplingSettings, TokenConstraint, log_softmax
from .tokenizer import StreamingDetokenizer, Tokenizer, tokenizer_from_gguf
from .transformer import EXACT_ROWS, ContextFullError, KVCache, Transformer

F32 = npt.NDArray[np.float32]

CONTEXT_POLICIES = ("error", "shift")


class Piece:
    """One step of generation: new visible ``text`` for ``token``; the last has ``done``."""

    def __init__(self, text: str, token: int, done: bool = False, finish_reason: str = "",
                 logprob: float = 0.0, top_logprobs: list[tuple[int, float]] | None = None) -> None:
        self.text = text
        self.token = token
        self.done = done
        self.finish_reason = finish_reason
        self.logprob = logprob
        self.top_logprobs = top_logprobs if top_logprobs is not None else []
        self.stats: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Piece({self.text!r}, token={self.token}, done={self.done}, finish={self.finish_reason!r})"


class GenerationSettings:
    """What to generate: length, stops, sampling, context policy and extras."""

    def __init__(self, max_tokens: int = 256, sampling: SamplingSettings | None = None,
                 stop: list[str] | None = None, ignore_eos: bool = False,
                 context_policy: str = "error", n_keep: int = 0, logprobs: int = 0,
                 lookup_decoding: bool = True, constraint: TokenConstraint | None = None) -> None:
        self.max_tokens = max_tokens
        self.sampling = sampling if sampling is not None else SamplingSettings()
        self.stop = [s for s in (stop or []) if s]
        self.ignore_eos = ignore_eos
        if context_policy not in CONTEXT_POLICIES:
            raise ValueError(f"context policy {context_policy!r} is not one of {CONTEXT_POLICIES}")
        self.context_policy = context_policy
        self.n_keep = n_keep
        self.logprobs = logprobs
        self.lookup_decoding = lookup_decoding
        self.constraint = constraint  # which tokens may come next (e.g. JSON); fresh per sequence


class _Emitter:
    """Turns sampled tokens into visible text for one sequence: end-of-generation tokens,
    streaming detokenization, stop strings held back until they can no longer match,
    the token limit, and log-probabilities."""

    def __init__(self, model: "Model", s: GenerationSettings) -> None:
        self.model = model
        self.s = s
        self.detok = StreamingDetokenizer(model.tokenizer)
        self.pending = ""  # text held back because it may begin a stop string
        self.finish = ""
        self.stopped_by_string = False
        self.generated = 0

    def push(self, tid: int, row: F32) -> list[Piece]:
        """The pieces to emit for ``tid`` (sampled from logits ``row``); sets ``finish``."""
        s = self.s
        lp = 0.0
        tops: list[tuple[int, float]] = []
        if s.logprobs > 0:
            ls = log_softmax(row)
            lp = float(ls[tid])
            best = np.argsort(-ls)[: s.logprobs]
            tops = [(int(i), float(ls[i])) for i in best]
        if not s.ignore_eos and self.model.is_eog(tid):
            self.finish = "stop"
            return []
        self.generated += 1
        text = self.pending + self.detok.add_token(tid)
        out: list[Piece] = []
        if s.stop:
            hit = -1
            for stop in s.stop:
                j = text.find(stop)
                if j >= 0 and (hit < 0 or j < hit):
                    hit = j
            if hit >= 0:
                if hit > 0:
                    out.append(Piece(text[:hit], tid, logprob=lp, top_logprobs=tops))
                self.pending = ""
                self.finish = "stop"
                self.stopped_by_string = True
                return out
            hold = _held_back(text, s.stop)
            self.pending = text[len(text) - hold:] if hold else ""
            text = text[:len(text) - hold]
        out.append(Piece(text, tid, logprob=lp, top_logprobs=tops))
        if self.generated >= s.max_tokens:
            self.finish = "length"
        return out

    def end(self, stats: dict[str, float]) -> Piece:
        tail = "" if self.stopped_by_string else self.pending + self.detok.finalize()
        piece = Piece(tail, -1, done=True, finish_reason=self.finish)
        piece.stats = stats
        return piece


# Prompt-lookup drafting: how far back to search, and how many matching tokens of context
# a draft needs (at least) and can use (at most) to choose where to copy from. Verifying a
# draft costs about two plain steps, so it needs context enough to be likely right
# (docs/performance.md, "Prompt-lookup decoding").
LOOKUP_WINDOW: Final = 4096
LOOKUP_MIN_CONTEXT: Final = 3
LOOKUP_MAX_CONTEXT: Final = 8
# First and largest draft where the products run on the quantized kernels (see LookupState).
LOOKUP_DRAFT_QUANT: Final = (4, 8)
# A pass over [token] + the longest draft stays on the exact one-row routes (sampled lookup).
assert LOOKUP_DRAFT_QUANT[1] + 1 <= EXACT_ROWS


class LookupState:
    """Drafts for prompt-lookup decoding, with an adaptive draft length.

    A draft is the continuation of the earlier occurrence that shares the longest context
    with the end of the history (at least 3 tokens, compared up to 8). Verifying k drafted
    tokens costs one forward pass over k+1 rows; a draft starts at ``k0`` tokens, doubles up
    to ``k_max`` while drafts are accepted whole, and drafting pauses briefly after a draft is
    rejected outright. The lengths follow what an extra row costs on each kind of product
    (docs/performance.md, "Prompt-lookup decoding").
    """

    def __init__(self, k0: int = 8, k_max: int = 16) -> None:
        self.k0 = k0
        self.k_max = k_max
        self.k = k0
        self.cooldown = 0
        self.drafted = 0
        self.accepted = 0

    def draft(self, history: list[int], limit: int) -> list[int]:
        if self.cooldown > 0:
            self.cooldown -= 1
            return []
        k = min(self.k, limit)
        if k <= 0:
            return []
        n_hist = len(history)
        lo = max(0, n_hist - LOOKUP_WINDOW)
        # The earlier position whose preceding tokens match the end of the history longest
        # (the most recent one among equals): when the model is copying, that is the place
        # it is copying from, where the most recent short n-gram often is not.
        last = history[n_hist - 1]
        best_len = 0
        best_i = -1
        i = n_hist - 2
        while i >= lo:
            if history[i] == last:
                m = 1
                while m < LOOKUP_MAX_CONTEXT and i - m >= lo and history[i - m] == history[n_hist - 1 - m]:
                    m += 1
                if m > best_len:
                    best_len = m
                    best_i = i
                    if m == LOOKUP_MAX_CONTEXT:
                        break
            i -= 1
        if best_len < LOOKUP_MIN_CONTEXT:
            return []
        cont = history[best_i + 1:best_i + 1 + k]
        self.drafted += len(cont)
        return cont

    def record(self, accepted: int, drafted: int) -> None:
        self.accepted += accepted
        if accepted == drafted:
            self.k = min(self.k_max, self.k * 2)
        else:
            self.k = self.k0
            if accepted == 0:
                self.cooldown = 2


class _DraftVerifier:
    """Prompt-lookup decoding for one generation: a forward pass over ``[token] + draft``
    gives the logits after each drafted token, so drafted tokens that the sampler reproduces
    are accepted without another pass; the rest are forgotten from the cache."""

    def __init__(self, model: "Model", enabled: bool) -> None:
        self.net = model.net
        self.cache = model.cache
        self.n_ctx = model.n_ctx
        self.enabled = enabled
        # Lengths by what an extra row costs: the quantized kernels (lean) or BLAS (speed).
        self.state = LookupState(LOOKUP_DRAFT_QUANT[0], LOOKUP_DRAFT_QUANT[1]) if model.net.memory == "lean" \
            else LookupState()
        self.draft: list[int] = []
        self.batch = np.zeros((0, 0), dtype=np.float32)  # (1 + len(draft), n_vocab)
        self.bi = 0  # drafted tokens accepted so far
        self.base_n = 0  # cache length before the pass over the draft

    def next_row(self, tid: int) -> F32 | None:
        """The logits after ``tid`` when the current draft predicted it; else None (and the
        draft ends: its acceptance recorded, its rejected tokens forgotten)."""
        draft = self.draft
        if not draft:
            return None
        bi = self.bi
        if bi < len(draft) and tid == draft[bi]:
            self.bi = bi + 1
            row: F32 = self.batch[bi + 1]
            return row
        self.state.record(bi, len(draft))
        self.forget_rejected()
        self.draft = []
        return None

    def step(self, tid: int, history: list[int], max_left: int) -> F32:
        """The logits after ``tid``: one pass over ``tid`` and a new draft when the history
        offers one (at most ``max_left`` tokens), else over ``tid`` alone."""
        if self.enabled:
            self.draft = self.state.draft(history, min(self.n_ctx - self.cache.n - 1, max_left))
        if self.draft:
            self.base_n = self.cache.n
            self.bi = 0
            self.batch = self.net.forward(np.asarray([tid] + self.draft, dtype=np.int32), self.cache,
                                          all_logits=True)
            first: F32 = self.batch[0]
            return first
        last: F32 = self.net.forward(np.asarray([tid], dtype=np.int32), self.cache)[-1]
        return last

    def forget_rejected(self) -> None:
        """Drop the current draft's tokens after the accepted ones from the cache."""
        if self.draft and self.bi < len(self.draft):
            self.cache.truncate(self.base_n + 1 + self.bi)


def _parallel_sampler(s: GenerationSettings, i: int) -> Sampler:
    """Sequence ``i``'s sampler of a parallel generation (its seed: SamplingSettings.for_choice)."""
    return Sampler(s.sampling.for_choice(i), s.constraint.fresh() if s.constraint is not None else None)


def _as_ints(ids: Iterable[SupportsInt]) -> list[int]:
    """Token ids from any sequence of integers (numpy integers included)."""
    try:
        return [int(t) for t in ids]
    except (TypeError, ValueError):
        raise TypeError("token ids must be a sequence of integers") from None


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that begins some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class Model:
    """A loaded model. Not thread-safe: one generation at a time (the server queues)."""

    def __init__(self, path: str, memory: str = "lean", n_ctx: int = 0,
                 tokenizer_model: str = "", name: str = "") -> None:
        t0 = time.perf_counter()
        self.path = path
        self.name = name or path
        self.gguf: GGUFFile = open_gguf(path)
        self.tokenizer: Tokenizer = tokenizer_from_gguf(self.gguf, tokenizer_model)
        self.net: Transformer = build_model(self.gguf, memory)
        self.memory = memory
        train_ctx = self.net.args.n_ctx_train
        self.n_ctx = min(n_ctx, train_ctx) if n_ctx > 0 else min(train_ctx, 4096)
        self.net.set_context(self.n_ctx)
        self.cache: KVCache = self.net.new_cache(self.n_ctx)
        self.load_seconds = time.perf_counter() - t0
        self.chat_template = self.gguf.get_str("tokenizer.chat_template", "")

    # ------------------------------------------------------------------ text
    @property
    def n_vocab(self) -> int:
        return self.tokenizer.n_vocab

    @property
    def architecture(self) -> str:
        return self.gguf.architecture

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text`` (see :meth:`Tokenizer.encode`)."""
        return self.tokenizer.encode(text, add_special, parse_special)

    def detokenize(self, ids: list[int], special: bool = False) -> str:
        """Text of ``ids``; raises :class:`TokenizerError` for ids out of range."""
        return self.tokenizer.decode(_as_ints(ids), special)

    def token_text(self, tid: int) -> str:
        return self.tokenizer.piece(tid)

    def is_eog(self, tid: int) -> bool:
        return tid in self.tokenizer.vocab.eog_ids

    # ------------------------------------------------------------------ numbers
    def logits(self, ids: list[int]) -> F32:
        """float32 logits ``(len(ids), n_vocab)`` for every position, from an empty cache."""
        ids = _as_ints(ids)
        for tid in ids:
            self.tokenizer.check_id(tid)
        cache = self.net.new_cache(max(1, len(ids)))
        return self.net.forward(np.asarray(ids, dtype=np.int32), cache, all_logits=True)

    def reset(self) -> None:
        """Forget the cached prompt."""
        self.cache.truncate(0)

    # ------------------------------------------------------------------ generation
    def _fit_prompt(self, prompt: list[int], settings: GenerationSettings) -> list[int]:
        room = self.n_ctx - 1
        if len(prompt) <= room:
            return prompt
        if settings.context_policy == "error":
            raise ContextFullError(
                f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}; "
                f"shorten the conversation or raise context_length"
            )
        keep = min(settings.n_keep, room // 2)
        tail = room - keep - max(0, min(settings.max_tokens, room // 4))
        return prompt[:keep] + prompt[len(prompt) - tail:]

    def _prefill(self, prompt: list[int], cancel: Callable[[], bool] | None) -> tuple[F32, int]:
        """Process the part of ``prompt`` not already cached; logits of its last token."""
        cache = self.cache
        cached = cache.tokens
        n = 0
        limit = min(len(cached), len(prompt) - 1, cache.n)
        while n < limit and cached[n] == prompt[n]:
            n += 1
        cache.truncate(n)
        logits = self.net.forward(np.asarray(prompt[n:], dtype=np.int32), cache, False, cancel)
        return logits, n

    def _begin(self, prompt: list[int], s: GenerationSettings,
               cancel: Callable[[], bool] | None) -> tuple[list[int], F32, int, float]:
        """Check ``prompt``, fit it to the context and prefill it: the prompt as run, the
        logits of its last token (none when cancelled), the cached tokens reused, seconds."""
        prompt = _as_ints(prompt)
        for tid in prompt:
            self.tokenizer.check_id(tid)
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token")
        prompt = self._fit_prompt(prompt, s)
        t0 = time.perf_counter()
        logits, cached = self._prefill(prompt, cancel)
        return prompt, logits, cached, time.perf_counter() - t0

    def _stats(self, prompt: list[int], cached: int, generated: int, prefill_s: float, decode_s: float,
               drafted: int = 0, accepted: int = 0) -> dict[str, float]:
        """The ``stats`` of a generation's last :class:`Piece`."""
        return {
            "prompt_tokens": float(len(prompt)), "cached_tokens": float(cached),
            "generated_tokens": float(generated), "prefill_s": prefill_s, "decode_s": decode_s,
            "load_s": self.load_seconds, "drafted_tokens": float(drafted), "accepted_tokens": float(accepted),
        }

    def generate(self, prompt: list[int], settings: GenerationSettings | None = None,
                 cancel: Callable[[], bool] | None = None) -> Iterator[Piece]:
        """Stream the completion of ``prompt`` (token ids) as :class:`Piece` objects.

        The last piece has ``done=True``, a ``finish_reason`` (``stop``, ``length``,
        ``context``, ``cancelled``) and ``stats``: prompt_tokens, cached_tokens,
        generated_tokens, prefill_s, decode_s. ``cancel`` is polled between tokens and
        between prefill chunks.
        """
        s = settings if settings is not None else GenerationSettings()
        prompt, logits, cached, prefill_s = self._begin(prompt, s, cancel)
        sampler = Sampler(s.sampling, s.constraint.fresh() if s.constraint is not None else None)
        history: list[int] = list(prompt)
        out = _Emitter(self, s)
        # Prompt-lookup decoding only where it cannot change the output: greedy sampling, or
        # any sampling where a pass over drafts gives each row its one-row numbers exactly.
        drafts = _DraftVerifier(self, s.lookup_decoding and (s.sampling.temperature <= 0.0 or self.net.rows_exact()))
        t1 = time.perf_counter()
        row = logits[-1] if logits.shape[0] else np.zeros(0, dtype=np.float32)
        if logits.shape[0] == 0:
            out.finish = "cancelled"
        while not out.finish:
            if cancel is not None and cancel():
                out.finish = "cancelled"
                break
            tid = sampler(row, history)
            for piece in out.push(tid, row):
                yield piece
            if out.finish:
                break
            history.append(tid)
            drafted_row = drafts.next_row(tid)
            if drafted_row is not None:
                row = drafted_row
                continue
            if self.cache.n >= self.n_ctx:
                if s.context_policy != "shift":
                    out.finish = "context"
                    break
                self._shift_cache(s)
            row = drafts.step(tid, history, s.max_tokens - out.generated)
        drafts.forget_rejected()
        yield out.end(self._stats(prompt, cached, out.generated, prefill_s, time.perf_counter() - t1,
                                  drafts.state.drafted, drafts.state.accepted))

    def generate_parallel(self, prompt: list[int], n: int, settings: GenerationSettings | None = None,
                          cancel: Callable[[], bool] | None = None) -> Iterator[tuple[int, Piece]]:
        """``n`` completions of one prompt decoded as one batch: ``(index, Piece)`` pairs.

        The prompt is processed once; each step then runs one row per unfinished sequence
        through the model together, so the weights are read once per step for all of
        them. Sequence ``i`` samples with seed ``seed + i`` (when a seed is set).
        """
        s = settings if settings is not None else GenerationSettings()
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        prompt, logits, cached, prefill_s = self._begin(prompt, s, cancel)
        t1 = time.perf_counter()
        samplers = [_parallel_sampler(s, i) for i in range(n)]
        emitters = [_Emitter(self, s) for _ in range(n)]
        histories = [list(prompt) for _ in range(n)]
        caches = [self.cache.fork() for _ in range(n)]
        rows: list[F32] = [logits[-1] for _ in range(n)] if logits.shape[0] else []
        active = list(range(n)) if rows else []
        if not rows:
            for e in emitters:
                e.finish = "cancelled"
        while active:
            if cancel is not None and cancel():
                for i in active:
                    emitters[i].finish = "cancelled"
                break
            tokens: list[int] = []
            still: list[int] = []
            for i in active:
                tid = samplers[i](rows[i], histories[i])
                for piece in emitters[i].push(tid, rows[i]):
                    yield i, piece
                if not emitters[i].finish:
                    histories[i].append(tid)
                    if caches[i].n >= self.n_ctx:
                        emitters[i].finish = "context"
                        continue
                    tokens.append(tid)
                    still.append(i)
            if not still:
                break
            out = self.net.step_parallel(np.asarray(tokens, dtype=np.int32), [caches[i] for i in still])
            for j, i in enumerate(still):
                rows[i] = out[j]
            active = still
        decode_s = time.perf_counter() - t1
        for i, e in enumerate(emitters):
            yield i, e.end(self._stats(prompt, cached, e.generated, prefill_s, decode_s))

    def _shift_cache(self, s: GenerationSettings) -> None:
        tokens = list(self.cache.tokens)
        keep = min(s.n_keep, len(tokens) // 2)
        discard = (len(tokens) - keep) // 2
        kept = tokens[:keep] + tokens[keep + discard:]
        self.cache.truncate(0)
        self.net.forward(np.asarray(kept, dtype=np.int32), self.cache)


def load(path: str, memory: str = "lean", n_ctx: int = 0, tokenizer_model: str = "", name: str = "") -> Model:
    """Open a GGUF model file (weights are prepared lazily on first use)."""
    return Model(path, memory, n_ctx, tokenizer_model, name)
