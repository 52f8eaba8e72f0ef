"""Tokenizers for the tests built from the real vocabularies in tests/data/tokenizers."""

from __future__ import annotations

from pathlib import Path

from assistant.core.gguf import open_gguf
from assistant.core.tokenizer import TT_CONTROL, SPMTokenizer, Vocab, phi3_rstrip_ids, vocab_from_gguf

TOKENIZERS = Path(__file__).parent / "data" / "tokenizers"

# Phi-3's chat tokens, at the ids Phi-3 files give them (32000..32010).
PHI3_CHAT = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
             "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def phi3_tokenizer(named_phi3: bool = True, add_bos: bool = True) -> SPMTokenizer:
    """Phi-3's vocabulary: Llama 2's 32,000 pieces plus its chat tokens. ``named_phi3`` is what
    a file whose general.name contains "phi-3"/"phi3" gets from vocab_from_gguf: special tokens
    that swallow the whitespace after them, as in llama.cpp."""
    base = vocab_from_gguf(open_gguf(str(TOKENIZERS / "llama2-spm.vocab.gguf")))
    v = Vocab(base.tokens + PHI3_CHAT, base.types + [TT_CONTROL] * len(PHI3_CHAT),
              base.scores + [0.0] * len(PHI3_CHAT), "llama", "default")
    v.bos_id, v.eos_id, v.unk_id = 1, v.token_to_id["<|endoftext|>"], 0
    v.add_bos, v.add_space_prefix = add_bos, True
    if named_phi3:
        v.rstrip_ids = phi3_rstrip_ids(v)
    return SPMTokenizer(v)
