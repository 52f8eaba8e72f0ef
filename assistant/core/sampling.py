"""Token sampling: small pure functions over logits, applied in one declared order.

Order (as llama.cpp's default chain): penalties -> top-k -> top-p -> min-p -> temperature
-> draw. Temperature 0 short-circuits to the arg-max after penalties. An optional
:class:`TokenConstraint` (constrained decoding) checks the pick; only when it refuses is
its mask applied to the logits and the pick made again, as llama.cpp's grammar sampler. Each step takes and
returns a candidate set ``(ids, logits)`` sorted by descending logit, so later steps
work on a few dozen candidates rather than the whole vocabulary.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]



class SamplingField(NamedTuple):
    """One sampling knob: the single list the config, the CLI, the API and the page read."""

    name: str
    kind: str  # "float" or "int"
    default: float
    lo: float
    hi: float
    help: str


SAMPLING_FIELDS: Final = (
    SamplingField("temperature", "float", 0.8, 0.0, 100.0, "randomness; 0 always picks the likeliest token"),
    SamplingField("top_k", "int", 40, 0.0, 1e9, "keep the k likeliest tokens (0: all)"),
    SamplingField("top_p", "float", 0.95, 0.0, 1.0, "keep the likeliest tokens up to this total probability"),
    SamplingField("min_p", "float", 0.05, 0.0, 1.0, "drop tokens below this fraction of the likeliest one"),
    SamplingField("repeat_penalty", "float", 1.0, 0.01, 100.0, "divide repeated tokens' logits by this (1: off)"),
    SamplingField("repeat_last_n", "int", 64, -1.0, 1e9, "how many recent tokens the penalties see (-1: all)"),
    SamplingField("frequency_penalty", "float", 0.0, -2.0, 2.0, "subtract this per earlier occurrence"),
    SamplingField("presence_penalty", "float", 0.0, -2.0, 2.0, "subtract this once for any earlier occurrence"),
    SamplingField("seed", "int", -1, -1.0, float(2**63), "random seed (-1: a fresh one each time)"),
)


class SamplingError(ValueError):
    """A sampling parameter is out of its allowed range."""


class SamplingSettings:
    """All sampling knobs with llama.cpp's defaults; :meth:`validate` range-checks them."""

    def __init__(self, temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95,
                 min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 seed: int = -1) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.min_p = min_p
        self.repeat_penalty = repeat_penalty
        self.repeat_last_n = repeat_last_n
        self.frequency_penalty = frequency_penalty
        self.presence_penalty = presence_penalty
        self.seed = seed

    def validate(self) -> None:
        """Raise :class:`SamplingError` naming the first bad value."""
        values = self.as_dict()
        for f in SAMPLING_FIELDS:
            value = float(values[f.name])
            if not (math.isfinite(value) and f.lo <= value <= f.hi):
                raise SamplingError(f"{f.name} must be between {f.lo:g} and {f.hi:g}, got {values[f.name]!r}")

    def copy(self) -> "SamplingSettings":
        return SamplingSettings(self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty,
                                self.repeat_last_n, self.frequency_penalty, self.presence_penalty, self.seed)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in SAMPLING_FIELDS}

    def for_choice(self, i: int) -> "SamplingSettings":
        """Alternative ``i``'s settings of several answered at once: seed ``seed + i`` when
        seeded, so the answers differ but repeat (the one rule for the engine and the API)."""
        sp = self.copy()
        if sp.seed >= 0:
            sp.seed = sp.seed + i
        return sp


def apply_penalties(logits: F32, history: list[int], repeat_penalty: float, last_n: int,
                    frequency_penalty: float, presence_penalty: float) -> F32:
    """llama.cpp's repetition, frequency and presence penalties over the last ``last_n`` tokens."""
    if (repeat_penalty == 1.0 and frequency_penalty == 0.0 and presence_penalty == 0.0) or not history:
        return logits
    window = history if last_n < 0 else history[-last_n:] if last_n > 0 else []
    if not window:
        return logits
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    ids = ids[(ids >= 0) & (ids < logits.shape[0])]
    counts = counts[: ids.shape[0]]
    out = logits.copy()
    vals = out[ids]
    if repeat_penalty != 1.0:
        rp = np.float32(repeat_penalty)
        vals = np.where(vals > 0, vals / rp, vals * rp).astype(np.float32)
    vals = vals - (counts.astype(np.float32) * np.float32(frequency_penalty)
                   + np.float32(presence_penalty))
    out[ids] = vals
    return out


def top_k(ids: I64, logits: F32, k: int) -> tuple[I64, F32]:
    """Keep the ``k`` best candidates (all when k <= 0), sorted descending."""
    n = logits.shape[0]
    if 0 < k < n:
        part = np.argpartition(-logits, k - 1)[:k]
        order = part[np.argsort(-logits[part], kind="stable")]
    else:
        order = np.argsort(-logits, kind="stable")
    return ids[order], logits[order]


def _probs(logits: F32) -> F32:
    e = np.exp(logits - logits[0])
    out: F32 = (e / np.sum(e)).astype(np.float32)
    return out


def top_p(ids: I64, logits: F32, p: float) -> tuple[I64, F32]:
    """Keep the smallest prefix whose probability mass reaches ``p`` (sorted input)."""
    if p >= 1.0 or ids.shape[0] <= 1:
        return ids, logits
    cum = np.cumsum(_probs(logits))
    keep = int(np.searchsorted(cum, np.float32(p), side="left")) + 1
    keep = max(1, min(keep, ids.shape[0]))
    return ids[:keep], logits[:keep]


def min_p(ids: I64, logits: F32, p: float) -> tuple[I64, F32]:
    """Drop candidates whose probability is below ``p`` times the best one's."""
    if p <= 0.0 or ids.shape[0] <= 1:
        return ids, logits
    threshold = logits[0] + np.float32(math.log(p))
    keep = int(np.count_nonzero(logits >= threshold))
    keep = max(1, keep)
    return ids[:keep], logits[:keep]


def temperature(logits: F32, t: float) -> F32:
    return (logits / np.float32(t)).astype(np.float32)


def draw(ids: I64, logits: F32, rng: np.random.Generator) -> int:
    """Sample one id from the softmax of ``logits``."""
    probs = _probs(logits).astype(np.float64)
    probs /= probs.sum()
    r = float(rng.random())
    idx = int(np.searchsorted(np.cumsum(probs), r, side="right"))
    return int(ids[min(idx, ids.shape[0] - 1)])


class TokenConstraint:
    """Which tokens may come next (e.g. JSON that must parse); one per generation."""

    def allows(self, tid: int) -> bool:
        """Whether ``tid`` may be the next token."""
        raise NotImplementedError

    def accept(self, tid: int) -> None:
        """Record that ``tid`` was chosen."""
        raise NotImplementedError

    def apply(self, logits: F32) -> F32:
        """``logits`` with every token that may not come next set to -inf."""
        raise NotImplementedError

    def fresh(self) -> "TokenConstraint":
        """The same constraint from its start (for another sequence)."""
        raise NotImplementedError


class Sampler:
    """Composes the steps above; owns the seeded random generator."""

    def __init__(self, settings: SamplingSettings, constraint: TokenConstraint | None = None) -> None:
        settings.validate()
        self.s = settings
        seed = settings.seed
        self.rng = np.random.default_rng(None if seed < 0 else seed)
        self.constraint = constraint

    def __call__(self, logits: F32, history: list[int]) -> int:
        s = self.s
        logits = apply_penalties(logits, history, s.repeat_penalty, s.repeat_last_n,
                                 s.frequency_penalty, s.presence_penalty)
        c = self.constraint
        if c is None:
            return self._pick(logits)
        # Check the unconstrained pick first: when it is allowed (most steps) the mask is
        # never applied; otherwise pick again from the masked logits. For a plain draw this
        # is exact: p(t) + p(refused) * p(t) / p(allowed) = p(t) / p(allowed).
        tid = self._pick(logits)
        if not c.allows(tid):
            tid = self._pick(c.apply(logits))
        c.accept(tid)
        return tid

    def _pick(self, logits: F32) -> int:
        s = self.s
        if s.temperature <= 0.0:
            return int(np.argmax(logits))
        ids = np.arange(logits.shape[0], dtype=np.int64)
        ids, cand = top_k(ids, logits, s.top_k)
        ids, cand = top_p(ids, cand, s.top_p)
        ids, cand = min_p(ids, cand, s.min_p)
        cand = temperature(cand, s.temperature)
        return draw(ids, cand, self.rng)


def log_softmax(logits: F32) -> F32:
    """Log-probabilities over the vocabulary (for ``logprobs``)."""
    m = np.max(logits)
    shifted = logits - m
    out: F32 = (shifted - np.float32(np.log(np.sum(np.exp(shifted))))).astype(np.float32)
    return out
