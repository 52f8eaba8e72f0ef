"""SentencePiece vocabularies (``tokenizer.ggml.model`` = ``llama``: LLaMA 1/2, Gemma, ...).

:class:`SPMTokenizer` is a faithful implementation of llama.cpp's ``llm_tokenizer_spm``:
spaces become ``▁``, characters are merged pairwise by the score of the merged piece
(highest first, leftmost on ties) and pieces missing from the vocabulary fall back to
``<0xNN>`` byte tokens. We implement the algorithm rather than build a ``sentencepiece``
model from the GGUF because llama.cpp does not use the SentencePiece library either: it
splits user-defined tokens out of the text first (Gemma's runs of newlines and tabs are
such tokens) and applies its own ``add_space_prefix`` rule, which a SentencePiece model
proto cannot express. Where a model entry names an original ``tokenizer.model`` file,
:class:`SentencePieceFileTokenizer` uses the library itself.
"""

from __future__ import annotations

import heapq
import importlib
import re
from typing import Final

from .basetokenizer import WORD_CACHE_ENTRIES, Tokenizer, join_pair
from .vocab import TT_BYTE, TT_NORMAL, TokenizerError, Vocab

SPM_SPACE: Final = "\u2581"

_INNER_SPACE: Final = re.compile("[^\u2581]\u2581")


class SPMTokenizer(Tokenizer):
    """llama.cpp's SentencePiece-vocabulary tokenizer (score-ordered pair merging)."""

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        self._byte_ids: list[int] = []
        for b in range(256):
            tid = vocab.token_to_id.get(f"<0x{b:02X}>", -1)
            if tid < 0:
                tid = vocab.token_to_id.get(chr(b), vocab.unk_id)
            self._byte_ids.append(tid)
        self._cache: dict[str, list[int]] = {}
        # Every merged symbol is a vocabulary piece, so a merge can only cross the point between
        # characters a and b if some piece contains "ab". Before each "▁" whose left neighbour
        # never precedes "▁" inside a piece, the text therefore splits into words that merge
        # (and cache) one by one with exactly the result of merging the whole text. Gemma has a
        # single such piece (">▁</"), so only ">" keeps a word glued to the next.
        glue: set[str] = set()
        for piece in vocab.tokens:
            for m in _INNER_SPACE.finditer(piece):
                glue.add(m.group()[0])
        self._word_start = re.compile(
            "(?<=[^" + re.escape(SPM_SPACE + "".join(sorted(glue))) + "])(?=" + SPM_SPACE + ")")
        # Merge priority of every piece: 0 for the highest score, equal scores equal ranks (so
        # ties still go to the leftmost pair). Small ints make the merge heap plain int keys.
        by_score = sorted(set(vocab.scores), reverse=True)
        rank_of = {sc: r for r, sc in enumerate(by_score)}
        self._rank: dict[str, int] = {piece: rank_of[vocab.scores[tid]] for piece, tid in vocab.token_to_id.items()}

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        v = self.vocab
        out: list[int] = []
        prev_special = True
        if add_special and v.add_bos and v.bos_id >= 0:
            out.append(v.bos_id)
        for raw, tok in self._fragments(text, parse_special):
            if tok >= 0:
                out.append(tok)
                prev_special = True
                continue
            if not raw:
                continue  # llama.cpp makes no fragment of empty text: "" gives no "▁"
            if v.add_space_prefix and prev_special:
                raw = " " + raw
            out.extend(self._segment(raw.replace(" ", SPM_SPACE)))
            prev_special = False
        if add_special and v.add_eos and v.eos_id >= 0:
            out.append(v.eos_id)
        return out

    def _segment(self, text: str) -> list[int]:
        if len(text) > 16:
            out: list[int] = []
            for word in self._word_start.split(text):
                if word:
                    out.extend(self._segment_word(word))
            return out
        return self._segment_word(text)

    def _segment_word(self, text: str) -> list[int]:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        ids = self._merge(text)
        if len(text) < 256:
            if len(self._cache) >= WORD_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def _merge(self, text: str) -> list[int]:
        """llama.cpp's SPM merge: repeatedly join the adjacent pair whose union is the
        highest-scoring piece (leftmost on ties); leftovers become byte tokens."""
        n = len(text)
        if n == 0:
            return []
        rank = self._rank
        syms: list[str] = list(text)
        prev: list[int] = [i - 1 for i in range(n)]
        nxt: list[int] = [i + 1 if i + 1 < n else -1 for i in range(n)]
        # Heap keys pack (rank, left, size) into one int, ordered as the tuple would be. A
        # popped pair is stale unless its two symbols are unchanged; symbols only ever grow,
        # so "their lengths still add up to size" is exactly that test.
        shift = n.bit_length() + 1
        mask = (1 << shift) - 1
        heap: list[int] = []
        for i in range(1, n):
            r = rank.get(syms[i - 1] + syms[i], -1)
            if r >= 0:
                heap.append((((r << shift) | (i - 1)) << shift) | 2)
        heapq.heapify(heap)
        while heap:
            key = heapq.heappop(heap)
            size = key & mask
            left = (key >> shift) & mask
            ls = syms[left]
            right = nxt[left]
            if right < 0 or len(ls) + len(syms[right]) != size or not ls:
                continue
            joined = ls + syms[right]
            join_pair(syms, prev, nxt, left, right, joined)
            nr = nxt[left]
            p = prev[left]
            if p >= 0:
                cand = syms[p] + joined
                r = rank.get(cand, -1)
                if r >= 0:
                    heapq.heappush(heap, (((r << shift) | p) << shift) | len(cand))
            if nr >= 0:
                cand = joined + syms[nr]
                r = rank.get(cand, -1)
                if r >= 0:
                    heapq.heappush(heap, (((r << shift) | left) << shift) | len(cand))
        return self._symbol_ids(syms, nxt)

    def _symbol_ids(self, syms: list[str], nxt: list[int]) -> list[int]:
        """The ids of the merged symbols, in list order from the first. Every merged symbol
        is a piece; only single characters can be missing from the vocabulary, and those
        fall back to byte tokens (llama.cpp's resegment)."""
        t2i = self.vocab.token_to_id
        byte_ids = self._byte_ids
        out: list[int] = []
        i = 0
        while i >= 0:
            sym = syms[i]
            tid = t2i.get(sym, -1)
            if tid >= 0:
                out.append(tid)
            else:
                for b in sym.encode("utf-8"):
                    bt = byte_ids[b]
                    if bt >= 0:
                        out.append(bt)
            i = nxt[i]
        return out

    def piece_bytes(self, text: str, ttype: int) -> bytes:
        if ttype == TT_NORMAL:
            return text.replace(SPM_SPACE, " ").encode("utf-8")
        if ttype == TT_BYTE and len(text) == 6:
            return bytes([int(text[3:5], 16)])
        return b""


class SentencePieceFileTokenizer(Tokenizer):
    """Uses the ``sentencepiece`` library on an original ``tokenizer.model`` file.

    For LLaMA/Alpaca/Vicuna releases that ship their tokenizer file; ids must agree
    with the GGUF vocabulary (the same size), which is checked.
    """

    def __init__(self, vocab: Vocab, model_file: str) -> None:
        super().__init__(vocab)
        # Imported by name: the library has no type information for the compiler.
        spm = importlib.import_module("sentencepiece")
        self.sp: object = spm.SentencePieceProcessor(model_file=model_file)
        size = int(getattr(self.sp, "get_piece_size")())
        if size > vocab.n_vocab:
            raise TokenizerError(
                f"{model_file!r} has {size} pieces but the model's vocabulary has {vocab.n_vocab}"
            )
        self._spm = SPMTokenizer(vocab)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos and v.bos_id >= 0:
            out.append(v.bos_id)
        enc = getattr(self.sp, "encode")
        for raw, tok in self._fragments(text, parse_special):
            if tok >= 0:
                out.append(tok)
            elif raw:
                out.extend(int(i) for i in enc(raw))
        if add_special and v.add_eos and v.eos_id >= 0:
            out.append(v.eos_id)
        return out

    def piece_bytes(self, text: str, ttype: int) -> bytes:
        return self._spm.piece_bytes(text, ttype)


