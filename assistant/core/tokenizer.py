"""Tokenizers built from a GGUF vocabulary, token for token identical to llama.cpp.

The algorithm is chosen by ``tokenizer.ggml.model``: ``gpt2`` is byte-level BPE
(:mod:`.bpe`), ``llama`` a SentencePiece vocabulary (:mod:`.spm`). The vocabulary lives in
:mod:`.vocab`, the special-token partition and decoding every tokenizer shares in
:mod:`.basetokenizer`, streaming detokenization in :mod:`.detokenizer`. This module picks
one and keeps the public names importable from one place.
"""

from __future__ import annotations

from .basetokenizer import WORD_CACHE_ENTRIES, Tokenizer
from .bpe import BYTE_TO_UNICODE, UNICODE_TO_BYTE, BPETokenizer
from .detokenizer import StreamingDetokenizer
from .gguf import GGUFFile
from .spm import SPM_SPACE, SentencePieceFileTokenizer, SPMTokenizer
from .vocab import (EOG_TEXTS, TT_BYTE, TT_CONTROL, TT_NORMAL, TT_UNKNOWN, TT_UNUSED, TT_USER_DEFINED,
                    TokenizerError, Vocab, phi3_rstrip_ids, vocab_from_gguf)

__all__ = [
    "BPETokenizer", "BYTE_TO_UNICODE", "EOG_TEXTS", "SPMTokenizer", "SPM_SPACE", "SentencePieceFileTokenizer",
    "StreamingDetokenizer", "TT_BYTE", "TT_CONTROL", "TT_NORMAL", "TT_UNKNOWN", "TT_UNUSED", "TT_USER_DEFINED",
    "Tokenizer", "TokenizerError", "UNICODE_TO_BYTE", "Vocab", "WORD_CACHE_ENTRIES", "phi3_rstrip_ids",
    "tokenizer_from_gguf", "vocab_from_gguf",
]


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

