"""What every tokenizer shares: llama.cpp's special-token partition, BOS/EOS, decoding.

Special tokens follow llama.cpp's ``tokenizer_st_partition``: control tokens such as
``<|im_start|>`` are recognised in text only with ``parse_special=True``; user-defined
tokens are always split out first. Each vocabulary kind (:mod:`.bpe`, :mod:`.spm`) supplies
``encode`` and ``piece_bytes``.
"""

from __future__ import annotations

import re
from typing import Final

from .vocab import TT_CONTROL, TT_UNKNOWN, TT_USER_DEFINED, TokenizerError, Vocab

# Words remembered with their token ids; when full the memo starts over, because a server
# tokenizes every turn's whole history (docs/performance.md, "Tokenizers").
WORD_CACHE_ENTRIES: Final = 32768

_C_SPACE: Final = " \t\n\v\f\r"  # C's isspace, which llama.cpp's RSTRIP uses

# Special-token markers for Tokenizer._partition: plane 15 private-use characters, one per
# special token. Text that contains any of them takes the slower fragment-list path.
_MARKER_BASE: Final = 0xF0000
_MARKER_COUNT: Final = 0xFFFE
_MARKER_RE: Final = re.compile("([\U000F0000-\U000FFFFD])")

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


def join_pair(syms: list[str], prev: list[int], nxt: list[int], left: int, right: int, joined: str) -> None:
    """One merge step of BPE and SentencePiece alike: symbol ``left`` becomes ``joined`` and
    ``right`` leaves the doubly linked list of symbols (``prev``/``nxt``, -1 at the ends)."""
    syms[left] = joined
    syms[right] = ""
    nr = nxt[right]
    nxt[left] = nr
    if nr >= 0:
        prev[nr] = left
