"""The tokenizers of the families people download: Llama 3, Qwen3, SmolLM, GPT-4o/Phi-4 (BPE)
and Gemma 2, Phi-3 (SentencePiece).

Real vocabularies where we have them (tests/data/tokenizers/, llama.cpp's ids beside them);
split rules checked on examples worked out by hand from each published expression.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.core.gguf import open_gguf
from assistant.core.pretokenize import NO_CLEAN_SPACES, PRETOKENIZERS, PreTokenizer
from assistant.core.tokenizer import SPMTokenizer, Tokenizer, Vocab, tokenizer_from_gguf
from vocabs import phi3_tokenizer

DATA = Path(__file__).parent / "data" / "tokenizers"
VOCABS = ("llama3-bpe", "llama2-spm")
FIELDS = {"ids_plain": (False, False), "ids_special": (False, True),
          "ids_with_bos": (True, False), "ids_with_bos_special": (True, True)}

_loaded: dict[str, Tokenizer] = {}


def vocab_tokenizer(name: str) -> Tokenizer:
    if name not in _loaded:
        _loaded[name] = tokenizer_from_gguf(open_gguf(str(DATA / f"{name}.vocab.gguf")))
    return _loaded[name]


def corpus(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", VOCABS)
def test_real_vocabulary_matches_llama_cpp_ids(name):
    """Llama 3's real vocabulary (llama-bpe) and Llama 2's (the SentencePiece vocabulary Phi-3
    also uses): every corpus string, with and without BOS and special-token parsing."""
    t = vocab_tokenizer(name)
    g = corpus(name)
    assert t.n_vocab == g["n_vocab"] and t.vocab.bos_id == g["bos_id"] and t.vocab.pre == g.get("tokenizer_pre", t.vocab.pre)
    assert len(g["tokenize"]) >= 25
    for case in g["tokenize"]:
        for field, (add_special, parse_special) in FIELDS.items():
            got = t.encode(case["text"], add_special=add_special, parse_special=parse_special)
            assert got == case[field], (field, case["text"])


@pytest.mark.parametrize("name", VOCABS)
def test_real_vocabulary_detokenizes_like_llama_cpp(name):
    t = vocab_tokenizer(name)
    for case in corpus(name)["tokenize"]:
        for ids_field, detok_field in (("ids_with_bos", "detok_with_bos_b64"),
                                       ("ids_with_bos_special", "detok_with_bos_special_b64")):
            want = base64.b64decode(case[detok_field]).decode("utf-8", errors="replace")
            assert t.decode(case[ids_field]) == want, case["text"]


def test_llama3_keeps_clean_up_of_spaces_on():
    """llama.cpp cleans up spaces for llama-bpe (not for qwen2, smollm or gpt-4o)."""
    t = vocab_tokenizer("llama3-bpe")
    ids = t.encode("a , b . it 's", add_special=False)
    assert t.decode(ids) == "a, b. it's"
    assert "llama-bpe" not in NO_CLEAN_SPACES
    assert {"qwen2", "smollm", "gpt-4o"} <= NO_CLEAN_SPACES


def test_llama3_takes_a_pretoken_that_is_a_token_whole():
    """ignore_merges (tiktoken's rule): " grandmother" is one token; CJK and emoji, split into
    bytes by the BPE, decode back to the same text."""
    t = vocab_tokenizer("llama3-bpe")
    for text in ("日本語のテキストです。中文也可以。", "Emoji: 😀🎉👍🏽 and ❤️"):
        ids = t.encode(text, add_special=False)
        assert t.decode(ids) == text
    word = t.vocab.token_to_id["Ġgrandmother"]
    assert t.encode(" grandmother", add_special=False) == [word]


# Examples worked out from each published split expression (tokenizer.json's "pattern"):
# - llama-bpe (Llama 3): contractions match case-insensitively as their own piece, a word may
#   take one leading non-letter (" don", "。中文"), digits go in groups of 1-3, "\s+(?!\S)"
#   leaves the last space for the next word.
# - qwen2 (Qwen2, Qwen2.5, Qwen3): as llama-bpe but every digit alone.
# - smollm: every digit alone first, then GPT-2's rule (lower-case contractions only, a word
#   takes at most one leading space, punctuation runs apart from letters).
# - gpt-4o (o200k, Phi-4): a word is capitals then lower case, so "CamelCase" splits; the
#   contraction stays on its word; digits in groups of 1-3; "/" and newlines end a symbol run.
SPLITS = {
    "llama-bpe": {
        "I'm sure we'VE 12345 don't": ["I", "'m", " sure", " we", "'VE", " ", "123", "45", " don", "'t"],
        "HelloWorld iPhone 1234567": ["HelloWorld", " iPhone", " ", "123", "456", "7"],
        "日本語のテキストです。中文也可以": ["日本語のテキストです", "。中文也可以"],
        "Hi 😀🎉! ok": ["Hi", " 😀🎉!", " ok"],
        "a\n\n  b": ["a", "\n\n", " ", " b"],
    },
    "qwen2": {
        "I'm sure we'VE 12345 don't": ["I", "'m", " sure", " we", "'VE", " ", "1", "2", "3", "4", "5", " don", "'t"],
        "HelloWorld iPhone 1234567": ["HelloWorld", " iPhone", " ", "1", "2", "3", "4", "5", "6", "7"],
        "日本語のテキストです。中文也可以": ["日本語のテキストです", "。中文也可以"],
        "Hi 😀🎉! ok": ["Hi", " 😀🎉!", " ok"],
        "a\n\n  b": ["a", "\n\n", " ", " b"],
    },
    "smollm": {
        "I'm sure we'VE 12345 don't": ["I", "'m", " sure", " we", "'", "VE", " ", "1", "2", "3", "4", "5", " don", "'t"],
        "HelloWorld iPhone 1234567": ["HelloWorld", " iPhone", " ", "1", "2", "3", "4", "5", "6", "7"],
        "日本語のテキストです。中文也可以": ["日本語のテキストです", "。", "中文也可以"],
        "Hi 😀🎉! ok": ["Hi", " 😀🎉!", " ok"],
        "a\n\n  b": ["a", "\n\n ", " b"],
    },
    "gpt-4o": {
        "I'm sure we'VE 12345 don't": ["I'm", " sure", " we'VE", " ", "123", "45", " don't"],
        "HelloWorld iPhone 1234567": ["Hello", "World", " i", "Phone", " ", "123", "456", "7"],
        "XMLHttpRequest path/to\n/x": ["XMLHttp", "Request", " path", "/to", "\n", "/x"],
        "日本語のテキストです。中文也可以": ["日本語のテキストです", "。中文也可以"],
        "Hi 😀🎉! ok": ["Hi", " 😀🎉!", " ok"],
        "a\n\n  b": ["a", "\n\n", " ", " b"],
    },
}


@pytest.mark.parametrize("pre", sorted(SPLITS))
def test_split_rules_follow_the_published_expressions(pre):
    """qwen2/Qwen3, smollm and gpt-4o: no real vocabulary of these families is in the
    repository, so only their split rules are checked here (llama-bpe's also end to end above)."""
    p = PreTokenizer(pre)
    for text, want in SPLITS[pre].items():
        assert p.split(text) == want, text


@pytest.mark.parametrize("alias,same_as", [("llama4", "gpt-4o"), ("deepseek-r1-qwen", "qwen2"),
                                           ("llama3", "llama-bpe"), ("dbrx", "llama-bpe")])
def test_pretokenizer_aliases(alias, same_as):
    text = "Don't split 2024's CamelCase 日本 😀!"
    assert PreTokenizer(alias).split(text) == PreTokenizer(same_as).split(text)


def _gemma2_like_vocab() -> Vocab:
    """A Gemma-2-shaped SentencePiece vocabulary: no space prefix, runs of newlines as
    user-defined tokens, <start_of_turn>/<end_of_turn> as control tokens. (No real Gemma 2
    vocabulary is in the repository; Gemma 3's, in the real-model tests, works the same way.)"""
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n\n", "\n",
              "▁", "H", "i", "Hi", "▁Hi", "u", "s", "e", "r", "us", "er", "user", "!"]
    types = [3, 3, 3, 2, 3, 3, 4, 1] + [1] * (len(pieces) - 8)
    scores = [0.0] * 8 + [-float(i) for i in range(len(pieces) - 8)]
    v = Vocab(pieces, types, scores, "llama", "default")
    v.bos_id, v.eos_id, v.unk_id, v.add_bos, v.add_space_prefix = 2, 1, 3, True, False
    return v


def test_gemma2_style_spm_has_no_space_prefix_and_splits_newline_runs():
    t = SPMTokenizer(_gemma2_like_vocab())
    tid = t.vocab.token_to_id
    ids = t.encode("<start_of_turn>user\nHi\n\n Hi!<end_of_turn>", add_special=True, parse_special=True)
    assert ids == [2, tid["<start_of_turn>"], tid["user"], tid["\n"], tid["Hi"], tid["\n\n"],
                   tid["▁Hi"], tid["!"], tid["<end_of_turn>"]]
    # Without a space prefix, text at the start is not given a "▁".
    assert t.encode("Hi", add_special=False) == [tid["Hi"]]


def test_phi3_style_spm_on_the_real_llama2_vocabulary():
    """Phi-3's vocabulary is Llama 2's with chat tokens appended: the space prefix goes before
    the first text and again after each special token, as llama.cpp does."""
    t = vocab_tokenizer("llama2-spm")
    hello = t.encode("Hello", add_special=False)
    assert t.vocab.tokens[hello[0]] == "▁Hello"
    assert t.encode("", add_special=False) == []
    assert t.encode("", add_special=True) == [1]


def test_phi3_special_tokens_swallow_the_whitespace_after_them():
    """llama.cpp's ids for a Phi-3 turn: a file named Phi-3 marks its chat tokens RSTRIP, so the
    newline after <|user|> goes and SentencePiece's space prefix makes "▁S" "YS" of "SYS"."""
    text = "<|user|>\nSYS\nHI<|end|>\n<|assistant|>\n"
    assert phi3_tokenizer().encode(text, add_special=True, parse_special=True) == \
        [1, 32010, 317, 21554, 13, 17628, 32007, 32001]
    # Any other SentencePiece model keeps the whitespace.
    kept = phi3_tokenizer(named_phi3=False).encode(text, add_special=True, parse_special=True)
    assert kept[:4] == [1, 32010, 29871, 13] and len(kept) > 8
    # Without special-token parsing nothing is split out, so nothing is stripped.
    plain = phi3_tokenizer().encode(text, add_special=False)
    assert phi3_tokenizer(named_phi3=False).encode(text, add_special=False) == plain


def test_phi3_rstrip_comes_from_the_files_name(tmp_path):
    import numpy as np

    from assistant.core.gguf import T_ARRAY, T_INT32, T_STRING
    from assistant.core.gguf_writer import write_gguf
    from vocabs import PHI3_CHAT

    base = vocab_tokenizer("llama2-spm").vocab
    tokens = base.tokens + PHI3_CHAT
    types = base.types + [3] * len(PHI3_CHAT)
    scores = base.scores + [0.0] * len(PHI3_CHAT)
    for name, stripped in (("Phi3 Mini 4k Instruct", True), ("Llama 2 7B Chat", False)):
        path = tmp_path / f"{stripped}.gguf"
        write_gguf(str(path), [
            ("general.architecture", T_STRING, "llama"), ("general.name", T_STRING, name),
            ("tokenizer.ggml.model", T_STRING, "llama"),
            ("tokenizer.ggml.tokens", T_ARRAY, tokens),
            ("tokenizer.ggml.scores", T_ARRAY, np.array(scores, dtype=np.float32)),
            ("tokenizer.ggml.token_type", T_ARRAY, np.array(types, dtype=np.int32)),
            ("tokenizer.ggml.bos_token_id", T_INT32, 1), ("tokenizer.ggml.eos_token_id", T_INT32, 32000),
        ], [])
        v = tokenizer_from_gguf(open_gguf(str(path))).vocab
        assert (v.token_to_id["<|user|>"] in v.rstrip_ids) is stripped
        assert v.token_to_id["<|endoftext|>"] not in v.rstrip_ids and 1 not in v.rstrip_ids


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_every_split_rule_loses_nothing(text):
    for name in PRETOKENIZERS:
        assert "".join(PreTokenizer(name).split(text)) == text, name
