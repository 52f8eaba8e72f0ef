"""Tokenizers match llama.cpp token for token on the golden cases of all three models."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.core.gguf import open_gguf
from assistant.core.pretokenize import PreTokenizer
from assistant.core.tokenizer import (BYTE_TO_UNICODE, BPETokenizer, StreamingDetokenizer, TokenizerError,
                                      tokenizer_from_gguf)
from conftest import REAL_MODELS, golden, real_model_path

_cache: dict = {}


def tok(name):
    if name not in _cache:
        _cache[name] = tokenizer_from_gguf(open_gguf(str(real_model_path(name))))
    return _cache[name]


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_golden_tokenization(model):
    t = tok(model)
    cases = golden(model)["tokenize"]
    assert len(cases) >= 20
    for c in cases:
        assert t.encode(c["text"], add_special=False, parse_special=False) == c["ids_plain"], c["text"]
        assert t.encode(c["text"], add_special=False, parse_special=True) == c["ids_special"], c["text"]
        assert t.encode(c["text"], add_special=True, parse_special=False) == c["ids_with_bos"], c["text"]


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_golden_round_trip_and_prompts(model):
    t = tok(model)
    g = golden(model)
    for c in g["tokenize"]:
        assert t.decode(c["ids_plain"]) == c["text"]
        assert t.decode(c["ids_with_bos"]) == c["text"]
    for c in g["generate"]:
        assert t.encode(c["prompt"], add_special=True, parse_special=True) == c["prompt_ids"]
        assert t.decode(c["greedy_ids"]) == c["greedy_text"]


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_streaming_detokenizer_never_splits_characters(model):
    t = tok(model)
    for c in golden(model)["tokenize"]:
        ids = c["ids_with_bos"]
        sd = StreamingDetokenizer(t)
        parts = [sd.add_token(i) for i in ids] + [sd.finalize()]
        assert "".join(parts) == t.decode(ids)
        assert all("\ufffd" not in p for p in parts), parts


@pytest.mark.real_model
def test_control_tokens_only_parsed_when_asked():
    t = tok("smollm2")
    text = "<|im_start|>user"
    assert 1 not in t.encode(text, add_special=False, parse_special=False)
    assert t.encode(text, add_special=False, parse_special=True)[0] == 1


@pytest.mark.real_model
def test_out_of_range_id_is_an_error():
    with pytest.raises(TokenizerError, match="out of range"):
        tok("smollm2").decode([10**7])


def test_unknown_pretokenizer_is_named():
    with pytest.raises(ValueError, match="'mystery'.*supported"):
        PreTokenizer("mystery")


def test_pretokenizer_fragments_concatenate():
    for name in ("default", "gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm"):
        p = PreTokenizer(name)
        text = "Hello, world! 12345 can't\n\n  x=1;  ünïcödé 日本"
        assert "".join(p.split(text)) == text


unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=unicode_text)
def test_property_random_unicode(model, text):
    t = tok(model)
    ids = t.encode(text, add_special=True, parse_special=False)
    assert all(0 <= i < t.n_vocab for i in ids)
    sd = StreamingDetokenizer(t)
    streamed = "".join(sd.add_token(i) for i in ids) + sd.finalize()
    assert streamed == t.decode(ids)
    # Lossless wherever the vocabulary has a token for every byte (llama.cpp drops bytes
    # it has no token for, and so do we).
    has_byte = _byte_tokens(t)
    if all(has_byte[b] for b in text.encode("utf-8")):
        assert t.decode(ids) == text


def _byte_tokens(t):
    """For each byte value, whether the vocabulary has a token for it (BPE: GPT-2's character
    for the byte; SentencePiece: ``<0xNN>`` or the character itself)."""
    if isinstance(t, BPETokenizer):
        return [BYTE_TO_UNICODE[b] in t.vocab.token_to_id for b in range(256)]
    return [i >= 0 for i in t._byte_ids]


def _special_soup(model):
    """Text built from a model's special-token pieces, their fragments and ordinary text."""
    t = tok(model)
    pieces = [t.vocab.tokens[i] for i in t._special if t.vocab.tokens[i]][:400]
    bits = pieces + [p[: len(p) // 2] for p in pieces] + [p[len(p) // 2:] for p in pieces]
    bits += [" ", "  ", "\n", "\t", "a", "<", ">", "</", "> </", "x", "é", "日本"]
    return st.lists(st.sampled_from(bits), max_size=40).map("".join)


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_marker_partition_equals_fragment_by_fragment_split(model, data):
    """The one-replace-per-token partition gives llama.cpp's token-by-token fragment split."""
    t = tok(model)
    text = data.draw(_special_soup(model))
    for parse_special in (False, True):
        assert t._partition(text, parse_special) == t._partition_slow(text, parse_special)


@pytest.mark.real_model
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(["a", "b", ">", "</", " ", "  ", "the", "▁", "é", "x>", "\n"]),
                     max_size=60).map("".join))
def test_spm_word_split_equals_whole_text_merge(text):
    """Merging word by word (split where no piece can cross) equals merging the whole text."""
    t = tok("gemma3-270m")
    spm = text.replace(" ", "\u2581")
    assert t._segment(spm) == t._merge(spm)


def _naive_spm(t, text):
    """The SPM merge written the obvious quadratic way: join the best pair, leftmost on ties."""
    syms = list(text)
    t2i, scores = t.vocab.token_to_id, t.vocab.scores
    while True:
        best = None
        for i in range(len(syms) - 1):
            tid = t2i.get(syms[i] + syms[i + 1])
            if tid is not None and (best is None or scores[tid] > best[0]):
                best = (scores[tid], i)
        if best is None:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    out = []
    for s in syms:
        if s in t2i:
            out.append(t2i[s])
        else:
            out.extend(b for b in (t._byte_ids[c] for c in s.encode()) if b >= 0)
    return out


@pytest.mark.real_model
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.lists(st.sampled_from(["a", "an", "the", "ing", "▁", "é", "日本", "\U0001f600", "x", "<", ">", "e"]),
             max_size=30).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)))
def test_spm_merge_equals_naive_merge(text):
    t = tok("gemma3-270m")
    assert t._merge(text) == _naive_spm(t, text)


def test_user_defined_token_whose_prefix_is_a_control_token():
    """Without parse_special, '<b>' (user-defined) is split out even though its prefix '<b'
    is a control token that is not looked for: the presence shortcut must not skip it."""
    from assistant.core.tokenizer import SPMTokenizer, Vocab

    tokens = ["<unk>", "<s>", "</s>", "<b", "<b>", "x", "y", "<", "b", ">"]
    types = [2, 3, 3, 3, 4, 1, 1, 1, 1, 1]
    t = SPMTokenizer(Vocab(tokens, types, [0.0] * len(tokens), "llama", "default"))
    for parse_special in (False, True):
        frags = t._partition("x<b>y<b", parse_special)
        assert frags == t._partition_slow("x<b>y<b", parse_special)
        assert ("", 4) in frags
    assert t.encode("x<b>y", add_special=False) == [5, 4, 6]


@pytest.mark.parametrize("model", ["smollm2", "gemma3-270m"])
def test_word_memo_stays_bounded(model, monkeypatch):
    """A server tokenizes every turn's history: the word memo must not grow without bound,
    and starting it over changes no token."""
    import importlib

    t = tok(model)
    impl = next(o for o in (t, getattr(t, "impl", None), getattr(t, "_impl", None)) if hasattr(o, "_cache"))
    T = importlib.import_module(type(impl).__module__)  # the module whose constant the memo reads
    words = " ".join(f"w{i:05d}x" for i in range(3000))
    expected = t.encode(words, add_special=False)
    if getattr(T, "__file__", "").endswith(".so"):
        limit = T.WORD_CACHE_ENTRIES  # compiled: the constant is built in
        impl._cache.clear()
        for i in range(limit // 3000 + 2):
            t.encode(" ".join(f"v{i}w{j:05d}" for j in range(3000)), add_special=False)
    else:
        limit = 500
        monkeypatch.setattr(T, "WORD_CACHE_ENTRIES", limit)
        impl._cache.clear()
    assert t.encode(words, add_special=False) == expected
    assert 0 < len(impl._cache) <= limit
