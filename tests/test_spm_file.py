"""A model entry may name an original SentencePiece tokenizer.model; then the library is used."""

from __future__ import annotations

import gguf
import numpy as np
import sentencepiece as spm

from assistant.core.gguf import open_gguf
from assistant.core.tokenizer import SentencePieceFileTokenizer, SPMTokenizer, tokenizer_from_gguf

TEXT = ("the quick brown fox jumps over the lazy dog. a llama walks in the mountains, "
        "alpaca and vicuna are llamas too. hello world! ") * 50


def test_tokenizer_model_file_is_used(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT.replace(". ", ".\n"))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tok"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, bos_id=1, eos_id=2, unk_id=0,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1
             for i in range(sp.get_piece_size())]
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_tensor("x", np.zeros(32, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    f = open_gguf(str(tmp_path / "m.gguf"))
    tok = tokenizer_from_gguf(f, str(tmp_path / "tok.model"))
    assert isinstance(tok, SentencePieceFileTokenizer)
    for text in ("hello world", "the llama walks", "Zebra ünïcode 日本"):
        assert tok.encode(text, add_special=True) == [1] + sp.encode(text)
        assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text))
    # The GGUF-only implementation agrees with the library on ordinary text.
    assert isinstance(tokenizer_from_gguf(f), SPMTokenizer)
    assert tokenizer_from_gguf(f).encode("hello world", add_special=False) == sp.encode("hello world")
