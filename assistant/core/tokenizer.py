"""Tokenizers built from a GGUF vocabulary, token for token identical to llama.cpp.

Two algorithms, chosen by ``tokenizer.ggml.model``:

* ``gpt2`` (byte-level BPE: LLaMA 3, SmolLM2, Qwen2, ...): text is pre-tokenized by the
  expressions named in ``tokenizer.ggml.pre`` (:mod:`.pretokenize`), each word's bytes are
  mapped to GPT-2's printable alphabet and merged by merge rank, lowest first and leftmost
  on ties, exactly as llama.cpp's ``llm_tokenizer_bpe`` does. Words are cached.
* ``llama`` (SentencePiece vocabularies: LLaMA 1/2, Gemma, ...): a faithful implementation
  of llama.cpp's ``llm_tokenizer_spm``: spaces become ``▁``, characters are merged
  pairwise by the score of the merged piece (highest first, leftmost on ties) and pieces
  missing from the vocabulary fall back to ``<0xNN>`` byte tokens. We implement the
  algorithm rather than build a ``sentencepiece`` model from the GGUF because llama.cpp
  does not use the SentencePiece library either: it splits user-defined tokens out of the
  text first (Gemma's runs of newlines and tabs are such tokens) and applies its own
  ``add_space_prefix`` rule, which a SentencePiece model proto cannot express. Where a
  model entry names an original ``tokenizer.model`` file, :class:`SentencePieceFileTokenizer`
  uses the library itself.

Special tokens follow llama.cpp's ``tokenizer_st_partition``: control tokens such as
``<|im_start|>`` are recognised in text only with ``parse_special=True``; user-defined
tokens are always split out first.
"""

from __future__ import annotations

import heapq
import importlib
import re
from typing import Final

import numpy as np
import numpy.typing as npt

from .gguf import GGUFFile
from .pretokenize import IGNORE_MERGES, NO_CLEAN_SPACES, PreTokenizer

# Token types (llama_token_type).
TT_NORMAL: Final = 1
TT_UNKNOWN: Final = 2
TT_CONTROL: Final = 3
TT_USER_DEFINED: Final = 4
TT_UNUSED: Final = 5
TT_BYTE: Final = 6

SPM_SPACE: Final = "\u2581"

# Words remembered with their token ids. A server tokenizes every turn's whole history, so
# an ever-growing memo showed up as slow RSS growth in the soak; when full it starts over
# (a few MB at most; hot words come back within a message).
WORD_CACHE_ENTRIES: Final = 32768

# Tokens that end a turn, recognised by their text as llama.cpp does.
EOG_TEXTS: Final = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>",
})


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


_INNER_SPACE: Final = re.compile("[^\u2581]\u2581")
_C_SPACE: Final = " \t\n\v\f\r"  # C's isspace, which llama.cpp's RSTRIP uses

# Special-token markers for Tokenizer._partition: plane 15 private-use characters, one per
# special token. Text that contains any of them takes the slower fragment-list path.
_MARKER_BASE: Final = 0xF0000
_MARKER_COUNT: Final = 0xFFFE
_MARKER_RE: Final = re.compile("([\U000F0000-\U000FFFFD])")


class TokenizerError(ValueError):
    """The vocabulary is unusable, or an id is out of range."""


class Vocab:
    """The token table and special-token settings read from GGUF metadata."""

    def __init__(self, tokens: list[str], types: list[int], scores: list[float], model: str, pre: str) -> None:
        if not tokens:
            raise TokenizerError("the vocabulary is empty (tokenizer.ggml.tokens missing)")
        self.tokens = tokens
        self.types = types
        self.scores = scores
        self.model = model
        self.pre = pre
        self.token_to_id: dict[str, int] = {}
        for i, t in enumerate(tokens):
            # llama.cpp keeps the first id for a duplicated text.
            if t not in self.token_to_id:
                self.token_to_id[t] = i
        self.bos_id = -1
        self.eos_id = -1
        self.eot_id = -1
        self.unk_id = -1
        self.pad_id = -1
        self.add_bos = False
        self.add_eos = False
        self.add_space_prefix = False
        self.eog_ids: set[int] = set()
        # Special tokens that swallow the whitespace after them (llama.cpp's RSTRIP attribute).
        self.rstrip_ids: set[int] = set()

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def special_ids(self) -> list[int]:
        """Control, user-defined and unknown tokens, longest text first (llama.cpp order)."""
        ids = [i for i, t in enumerate(self.types) if t in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN)]
        ids.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))
        return ids


def phi3_rstrip_ids(v: Vocab) -> set[int]:
    """The special tokens llama.cpp marks RSTRIP when ``general.name`` says Phi-3: all of them and
    ``</s>``, but not ``<unk>``, ``<s>`` or ``<|endoftext|>``. Nothing in the vocabulary itself says
    so; llama.cpp keys this on the name, and so must we to give the same tokens."""
    ids = {i for i, t in enumerate(v.types) if t in (TT_CONTROL, TT_USER_DEFINED, TT_UNKNOWN)}
    eos_text = v.token_to_id.get("</s>", -1)
    if eos_text >= 0:
        ids.add(eos_text)
    for text in ("<unk>", "<s>", "<|endoftext|>"):
        ids.discard(v.token_to_id.get(text, -1))
    return ids


def vocab_from_gguf(f: GGUFFile) -> Vocab:
    """Build the :class:`Vocab` from a GGUF file's ``tokenizer.ggml.*`` metadata."""
    model = f.get_str("tokenizer.ggml.model", "")
    tokens = f.get_strings("tokenizer.ggml.tokens")
    n = len(tokens)
    types_arr = f.get_numbers("tokenizer.ggml.token_type")
    types: list[int] = [int(t) for t in types_arr.tolist()] if types_arr is not None else [TT_NORMAL] * n
    scores_arr = f.get_numbers("tokenizer.ggml.scores")
    scores: list[float] = [float(s) for s in scores_arr.tolist()] if scores_arr is not None else [0.0] * n
    if len(types) != n or len(scores) != n:
        raise TokenizerError(
            f"vocabulary arrays disagree: {n} tokens, {len(types)} types, {len(scores)} scores"
        )
    pre = f.get_str("tokenizer.ggml.pre", "default")
    v = Vocab(tokens, types, scores, model, pre)
    v.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1)
    v.eos_id = f.get_int("tokenizer.ggml.eos_token_id", -1)
    v.unk_id = f.get_int("tokenizer.ggml.unknown_token_id", -1)
    v.pad_id = f.get_int("tokenizer.ggml.padding_token_id", -1)
    v.eot_id = f.get_int("tokenizer.ggml.eot_token_id", -1)
    default_bos = model == "llama"
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", default_bos)
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", False)
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", model == "llama")
    for tid in (v.bos_id, v.eos_id, v.unk_id, v.pad_id, v.eot_id):
        if tid >= n:
            raise TokenizerError(f"special token id {tid} is outside the vocabulary of {n} tokens")
    for text in EOG_TEXTS:
        tid = v.token_to_id.get(text, -1)
        if tid >= 0 and types[tid] in (TT_CONTROL, TT_USER_DEFINED):
            v.eog_ids.add(tid)
            if v.eot_id < 0 and text != "<|endoftext|>":
                v.eot_id = tid
    if v.eos_id >= 0:
        v.eog_ids.add(v.eos_id)
    if v.eot_id >= 0:
        v.eog_ids.add(v.eot_id)
    name = f.get_str("general.name", "").lower()
    if "phi-3" in name or "phi3" in name:
        v.rstrip_ids = phi3_rstrip_ids(v)
    return v


class Tokenizer:
    """Common front end: special-token partition, BOS/EOS, detokenization."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._special = vocab.special_ids()
        self._piece_cache: dict[int, bytes] = {}
        self.clean_spaces = False
        self._markers_safe = len(self._special) <= _MARKER_COUNT and not any(
            _MARKER_RE.search(vocab.tokens[t]) for t in self._special)
        # For each special token, the index (in self._special) of the special token that is its
        # text minus the last character, or -1.
        index = {vocab.tokens[t]: k for k, t in enumerate(self._special)}
        self._prefix_parent: list[int] = [
            index.get(vocab.tokens[t][:-1], -1) if len(vocab.tokens[t]) > 1 else -1 for t in self._special]

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    # ------------------------------------------------------------------ encoding
    def _partition(self, text: str, parse_special: bool) -> list[tuple[str, int]]:
        """Split ``text`` into ``(raw_text, -1)`` and ``("", token_id)`` fragments.

        llama.cpp takes the special tokens one by one, longest first, and splits every
        remaining text fragment at that token's leftmost non-overlapping occurrences. Replacing
        each occurrence by a marker character that no token contains does exactly that in one
        C-level ``str.replace`` per token: a later token can never match across a marker, just
        as it cannot cross a fragment boundary.
        """
        if self._markers_safe and not _MARKER_RE.search(text):
            vocab = self.vocab
            special = self._special
            n = len(special)
            # Which tokens occur at all, shortest first: a token whose text minus its last
            # character is an absent token is absent too (runs of "\n", "\t" and spaces).
            present = [False] * n
            for k in range(n - 1, -1, -1):
                tid = special[k]
                if not (parse_special or vocab.types[tid] == TT_USER_DEFINED):
                    continue
                parent = self._prefix_parent[k]
                # The parent is shorter, so already tested here if it is considered at all.
                if parent >= 0 and (parse_special or vocab.types[special[parent]] == TT_USER_DEFINED) \
                        and not present[parent]:
                    continue
                piece = vocab.tokens[tid]
                if piece:
                    present[k] = piece in text
            marked = text
            for k in range(n):
                if present[k]:
                    piece = vocab.tokens[special[k]]
                    if piece in marked:
                        marked = marked.replace(piece, chr(_MARKER_BASE + k))
            if marked is text:
                return [(text, -1)]
            frags: list[tuple[str, int]] = []
            for part in _MARKER_RE.split(marked):
                if not part:
                    continue
                if len(part) == 1 and _MARKER_BASE <= ord(part) < _MARKER_BASE + len(special):
                    frags.append(("", special[ord(part) - _MARKER_BASE]))
                else:
                    frags.append((part, -1))
            return frags
        return self._partition_slow(text, parse_special)

    def _fragments(self, text: str, parse_special: bool) -> list[tuple[str, int]]:
        """:meth:`_partition`, then whitespace after an RSTRIP token removed (a fragment left
        empty is dropped), as llama.cpp's partition does while it splits."""
        frags = self._partition(text, parse_special)
        rstrip = self.vocab.rstrip_ids
        if not rstrip:
            return frags
        out: list[tuple[str, int]] = []
        strip = False
        for raw, tok in frags:
            if tok >= 0:
                out.append((raw, tok))
                strip = tok in rstrip
                continue
            if strip:
                raw = raw.lstrip(_C_SPACE)
            strip = False
            if raw:
                out.append((raw, tok))
        return out

    def _partition_slow(self, text: str, parse_special: bool) -> list[tuple[str, int]]:
        """:meth:`_partition` for text that contains the marker characters itself."""
        frags: list[tuple[str, int]] = [(text, -1)]
        vocab = self.vocab
        for tid in self._special:
            ttype = vocab.types[tid]
            if not parse_special and ttype != TT_USER_DEFINED:
                continue
            piece = vocab.tokens[tid]
            if not piece:
                continue
            if not any(tok < 0 and piece in raw for raw, tok in frags):
                continue
            out: list[tuple[str, int]] = []
            for raw, tok in frags:
                if tok >= 0 or piece not in raw:
                    out.append((raw, tok))
                    continue
                start = 0
                while True:
                    pos = raw.find(piece, start)
                    if pos < 0:
                        break
                    if pos > start:
                        out.append((raw[start:pos], -1))
                    out.append(("", tid))
                    start = pos + len(piece)
                if start < len(raw):
                    out.append((raw[start:], -1))
            frags = out
        return frags

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``.

        ``add_special`` adds BOS/EOS where the file's ``add_bos_token``/``add_eos_token``
        say so; ``parse_special`` recognises control tokens written in the text.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ decoding
    def token_bytes(self, tid: int, special: bool = False) -> bytes:
        """The bytes a token stands for (control tokens give ``b""`` unless ``special``)."""
        self.check_id(tid)
        cached = self._piece_cache.get(tid) if not special else None
        if cached is not None:
            return cached
        v = self.vocab
        ttype = v.types[tid]
        text = v.tokens[tid]
        if ttype in (TT_CONTROL, TT_UNKNOWN):
            result = text.encode("utf-8") if special else b""
        elif ttype == TT_USER_DEFINED:
            result = text.encode("utf-8")
        else:
            result = self.piece_bytes(text, ttype)
        if not special:
            self._piece_cache[tid] = result
        return result

    def piece_bytes(self, text: str, ttype: int) -> bytes:
        """The bytes of a normal (or byte) token's text; each vocabulary kind decodes its own."""
        raise NotImplementedError

    def check_id(self, tid: int) -> None:
        if tid < 0 or tid >= self.vocab.n_vocab:
            raise TokenizerError(f"token id {tid} is out of range 0..{self.vocab.n_vocab - 1}")

    def decode_bytes(self, ids: list[int], special: bool = False) -> bytes:
        """Concatenated bytes of ``ids`` (see :meth:`decode`)."""
        parts: list[bytes] = []
        for tid in ids:
            parts.append(self.token_bytes(tid, special))
        return b"".join(parts)

    def decode(self, ids: list[int], special: bool = False) -> str:
        """Text of ``ids``, as llama.cpp's detokenize with ``remove_special``.

        A leading BOS is dropped; with ``add_space_prefix`` the space SentencePiece put
        before the first word is removed. Invalid UTF-8 becomes U+FFFD.
        """
        v = self.vocab
        start = 0
        remove_space = v.add_space_prefix
        if v.add_bos and ids and ids[0] == v.bos_id:
            start = 1
            remove_space = False
        out = self.decode_bytes(ids[start:], special)
        if remove_space and out.startswith(b" "):
            out = out[1:]
        text = out.decode("utf-8", errors="replace")
        if self.clean_spaces:
            text = _clean_up_spaces(text)
        return text

    def piece(self, tid: int) -> str:
        """Printable form of a token for listings (``llama-tokenize``-style)."""
        return self.token_bytes(tid, True).decode("utf-8", errors="replace")


def _clean_up_spaces(text: str) -> str:
    for a, b in ((" ?", "?"), (" !", "!"), (" .", "."), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


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
        self._byte_ids: list[int] = [vocab.token_to_id.get(BYTE_TO_UNICODE[b], -1) for b in range(256)]

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
            syms[left] = joined
            syms[right] = ""
            nr = nxt[right]
            nxt[left] = nr
            if nr >= 0:
                prev[nr] = left
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
            syms[left] = joined
            syms[right] = ""
            nr = nxt[right]
            nxt[left] = nr
            if nr >= 0:
                prev[nr] = left
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
        # Every merged symbol is a piece; only single characters can be missing from the
        # vocabulary, and those fall back to byte tokens (llama.cpp's resegment).
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


class StreamingDetokenizer:
    """Turns tokens into text as they arrive, never splitting a UTF-8 character.

    ``add_token`` returns the new, complete text; ``finalize`` returns what is left
    (invalid trailing bytes as U+FFFD). The concatenation of everything returned equals
    :meth:`Tokenizer.decode` of all the tokens.
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.special = special
        self._pending = b""
        self._first = True
        self.text = ""

    def add_token(self, tid: int) -> str:
        tok = self.tokenizer
        v = tok.vocab
        if self._first and v.add_bos and tid == v.bos_id:
            self._first = False
            return ""
        data = tok.token_bytes(tid, self.special)
        if self._first and data:
            if v.add_space_prefix and data.startswith(b" "):
                data = data[1:]
            self._first = False
        buf = self._pending + data
        cut = _complete_prefix(buf)
        self._pending = buf[cut:]
        seg = buf[:cut].decode("utf-8", errors="replace")
        self.text += seg
        return seg

    def finalize(self) -> str:
        seg = self._pending.decode("utf-8", errors="replace")
        self._pending = b""
        self.text += seg
        return seg


def _complete_prefix(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that does not end inside a UTF-8 sequence."""
    n = len(buf)
    # Look back at most 3 bytes for the start of an unfinished multi-byte sequence.
    i = n - 1
    back = 0
    while i >= 0 and back < 4:
        b = buf[i]
        if b & 0xC0 != 0x80:
            if b >= 0xF0:
                need = 4
            elif b >= 0xE0:
                need = 3
            elif b >= 0xC0:
                need = 2
            else:
                need = 1
            return i if n - i < need else n
        i -= 1
        back += 1
    return n


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


def tokenizer_from_gguf(f: GGUFFile, tokenizer_model: str = "") -> Tokenizer:
    """The tokenizer for a GGUF file (``tokenizer_model`` names an optional SentencePiece file)."""
    vocab = vocab_from_gguf(f)
    if tokenizer_model:
        return SentencePieceFileTokenizer(vocab, tokenizer_model)
    if vocab.model == "gpt2":
        merges = f.get_strings("tokenizer.ggml.merges")
        if not merges:
            raise TokenizerError("a gpt2 (BPE) vocabulary needs tokenizer.ggml.merges")
        return BPETokenizer(vocab, merges)
    if vocab.model == "llama":
        return SPMTokenizer(vocab)
    raise TokenizerError(
        f"tokenizer model {vocab.model!r} (tokenizer.ggml.model) is not supported; "
        f"supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece)"
    )


def ids_array(ids: list[int]) -> npt.NDArray[np.int32]:
    """ids as an int32 numpy array (for the engine)."""
    return np.asarray(ids, dtype=np.int32)
