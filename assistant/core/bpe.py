"""Byte-level BPE (``tokenizer.ggml.model`` = ``gpt2``: LLaMA 3, SmolLM2, Qwen2, ...).

Text is pre-tokenized by the expressions named in ``tokenizer.ggml.pre``
(:mod:`.pretokenize`), each word's bytes are mapped to GPT-2's printable alphabet and merged
by merge rank, lowest first and leftmost on ties, exactly as llama.cpp's
``llm_tokenizer_bpe`` does. Words are cached.
"""

from __future__ import annotations

import heapq
from typing import Final

from .basetokenizer import WORD_CACHE_ENTRIES, Tokenizer, join_pair
from .pretokenize import IGNORE_MERGES, NO_CLEAN_SPACES, PreTokenizer
from .vocab import TT_NORMAL, TokenizerError, Vocab


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out: list[str] = [""] * 256
    extra = 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


BYTE_TO_UNICODE: Final = _bytes_to_unicode()
UNICODE_TO_BYTE: Final[dict[str, int]] = {c: b for b, c in enumerate(BYTE_TO_UNICODE)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE with llama.cpp's merge order and a per-word cache."""

    def __init__(self, vocab: Vocab, merges: list[str]) -> None:
        super().__init__(vocab)
        self.pre = PreTokenizer(vocab.pre)
        self.ignore_merges = vocab.pre in IGNORE_MERGES
        self.clean_spaces = vocab.pre not in NO_CLEAN_SPACES
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, m in enumerate(merges):
            sep = m.find(" ", 1)
            if sep < 0:
                raise TokenizerError(f"merge {rank} {m!r} has no space separating its two parts")
            pair = (m[:sep], m[sep + 1:])
            if pair not in self.ranks:
                self.ranks[pair] = rank
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos and v.bos_id >= 0:
            out.append(v.bos_id)
        for raw, tok in self._fragments(text, parse_special):
            if tok >= 0:
                out.append(tok)
            else:
                for word in self.pre.split(raw):
                    out.extend(self._word_ids(word))
        if add_special and v.add_eos and v.eos_id >= 0:
            out.append(v.eos_id)
        return out

    def _word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        mapped = "".join([BYTE_TO_UNICODE[b] for b in word.encode("utf-8")])
        ids = self._bpe(mapped)
        if len(self._cache) >= WORD_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _bpe(self, word: str) -> list[int]:
        t2i = self.vocab.token_to_id
        if self.ignore_merges:
            whole = t2i.get(word, -1)
            if whole >= 0:
                return [whole]
        n = len(word)
        syms: list[str] = list(word)
        prev: list[int] = [i - 1 for i in range(n)]
        nxt: list[int] = [i + 1 if i + 1 < n else -1 for i in range(n)]
        ranks = self.ranks
        heap: list[tuple[int, int, int, str]] = []
        for i in range(1, n):
            r = ranks.get((syms[i - 1], syms[i]), -1)
            if r >= 0:
                heap.append((r, i - 1, i, syms[i - 1] + syms[i]))
        heapq.heapify(heap)
        while heap:
            r, left, right, joined = heapq.heappop(heap)
            ls = syms[left]
            rs = syms[right]
            if not ls or not rs or nxt[left] != right or ls + rs != joined:
                continue
            join_pair(syms, prev, nxt, left, right, joined)
            nr = nxt[left]
            p = prev[left]
            if p >= 0:
                r2 = ranks.get((syms[p], joined), -1)
                if r2 >= 0:
                    heapq.heappush(heap, (r2, p, left, syms[p] + joined))
            if nr >= 0:
                r2 = ranks.get((joined, syms[nr]), -1)
                if r2 >= 0:
                    heapq.heappush(heap, (r2, left, nr, joined + syms[nr]))
        out: list[int] = []
        i = 0
        while i >= 0 and i < n:
            s = syms[i]
            tid = t2i.get(s, -1)
            if tid >= 0:
                out.append(tid)
            else:
                for ch in s:
                    bt = t2i.get(ch, -1)
                    if bt >= 0:
                        out.append(bt)
            i = nxt[i]
        return out

    def piece_bytes(self, text: str, ttype: int) -> bytes:
        if ttype != TT_NORMAL:
            return b""
        buf = bytearray()
        for ch in text:
            b = UNICODE_TO_BYTE.get(ch, -1)
            if b >= 0:
                buf.append(b)
            else:
                buf.extend(ch.encode("utf-8"))
        return bytes(buf)


