"""Streaming detokenization: text as tokens arrive, never splitting a UTF-8 character."""

from __future__ import annotations

from .basetokenizer import Tokenizer


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


