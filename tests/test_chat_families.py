"""Chat formats of the families people download: llama-3, qwen3 (with its <think> block),
gemma and phi-3. Each named format must give the same tokens as the family's own template
rendered in the sandbox (tests/data/templates/, written to mirror the published ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.chat import ChatRunner, ChatSettings, prompt_tokens, prompt_formats
from assistant.core.gguf import open_gguf
from assistant.core.tokenizer import (BYTE_TO_UNICODE, TT_BYTE, TT_CONTROL, TT_NORMAL, TT_UNKNOWN,
                                      TT_USER_DEFINED, BPETokenizer, SPMTokenizer, Tokenizer, Vocab,
                                      tokenizer_from_gguf)
from assistant.formats import TemplateError, auto_format, fold_system, split_thinking, without_old_thinking
from vocabs import phi3_tokenizer

DATA = Path(__file__).parent / "data"
TEMPLATES = DATA / "templates"

# Three turns with a system prompt; the first reply thought before answering (as Qwen3 does).
CONV = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "<think>\nThe user asks about France.\n</think>\n\nParis."},
    {"role": "user", "content": "And of Japan?"},
    {"role": "assistant", "content": "Tokyo."},
    {"role": "user", "content": "Thanks! Which is bigger?"},
]


def _llama3() -> tuple[Tokenizer, str, str]:
    """The real Llama 3 vocabulary (tests/data/tokenizers)."""
    return tokenizer_from_gguf(open_gguf(str(DATA / "tokenizers" / "llama3-bpe.vocab.gguf"))), "<|begin_of_text|>", "<|eot_id|>"


def _qwen3() -> tuple[Tokenizer, str, str]:
    """No Qwen3 vocabulary is in the repository: a byte-level one with Qwen3's chat tokens
    (<|im_start|>/<|im_end|> control, <think>/</think> user-defined, as converted files mark them)."""
    specials = {"<|endoftext|>": TT_CONTROL, "<|im_start|>": TT_CONTROL, "<|im_end|>": TT_CONTROL,
                "<think>": TT_USER_DEFINED, "</think>": TT_USER_DEFINED}
    tokens = list(BYTE_TO_UNICODE) + list(specials)
    types = [TT_NORMAL] * 256 + list(specials.values())
    v = Vocab(tokens, types, [0.0] * len(tokens), "gpt2", "qwen2")
    v.eos_id = v.token_to_id["<|im_end|>"]
    return BPETokenizer(v, []), "", "<|im_end|>"


def _gemma() -> tuple[Tokenizer, str, str]:
    """No Gemma vocabulary small enough is in the repository: a SentencePiece one with Gemma's
    control tokens, byte fallback and no space prefix (as Gemma 2 and 3 files say)."""
    pieces = [("<pad>", TT_CONTROL), ("<eos>", TT_CONTROL), ("<bos>", TT_CONTROL), ("<unk>", TT_UNKNOWN),
              ("<start_of_turn>", TT_CONTROL), ("<end_of_turn>", TT_CONTROL)]
    pieces += [(f"<0x{b:02X}>", TT_BYTE) for b in range(256)] + [("▁", TT_NORMAL)]
    v = Vocab([p for p, _t in pieces], [t for _p, t in pieces], [0.0] * len(pieces), "llama", "default")
    v.bos_id, v.eos_id, v.unk_id, v.add_bos, v.add_space_prefix = 2, 1, 3, True, False
    return SPMTokenizer(v), "<bos>", "<eos>"


def _phi3() -> tuple[Tokenizer, str, str]:
    """Phi-3's vocabulary: Llama 2's (tests/data/tokenizers) plus its chat tokens; Phi-3.5 files
    do not add a BOS."""
    return phi3_tokenizer(add_bos=False), "<s>", "<|endoftext|>"


FAMILIES = {"llama-3": _llama3, "qwen3": _qwen3, "gemma": _gemma, "phi-3": _phi3}
TURN_START = {"llama-3": "<|start_header_id|>", "qwen3": "<|im_start|>", "gemma": "<start_of_turn>",
              "phi-3": None}


def template(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_named_format_and_the_files_template_give_the_same_tokens(family):
    tok, bos, eos = FAMILIES[family]()
    named = prompt_formats()[family]
    own = auto_format(template(family), bos, eos)
    history = without_old_thinking(CONV)  # what the chat layer hands to the format
    named_ids = prompt_tokens(tok, named.render(history))
    own_ids = prompt_tokens(tok, own.render(history))
    assert named_ids == own_ids
    assert named.render(history) == own.render(history).removeprefix(bos) or \
        named.render(history) == own.render(history)
    text = tok.decode(named_ids, special=True)
    assert "<think>" not in text and "Paris." in text and "Which is bigger?" in text
    if tok.vocab.bos_id >= 0 and tok.vocab.add_bos:
        assert named_ids[0] == tok.vocab.bos_id and named_ids.count(tok.vocab.bos_id) == 1
    # Every turn opens with its control token: recognised as one token, not spelled out.
    marker = TURN_START[family]
    if marker:
        turns = 5 if family == "gemma" else 6  # gemma has no system turn of its own
        assert named_ids.count(tok.vocab.token_to_id[marker]) == turns + 1  # + the generation prompt
    else:
        for m in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
            assert tok.vocab.token_to_id[m] in named_ids


def test_qwen3_template_and_format_leave_out_earlier_thinking_by_themselves():
    """Even without the chat layer's pruning, Qwen3's rule drops reasoning before the last query,
    and keeps it for a reply after it (a tool round of the current turn)."""
    tok, bos, eos = _qwen3()
    named, own = prompt_formats()["qwen3"], auto_format(template("qwen3"), bos, eos)
    assert named.render(CONV) == own.render(CONV)
    assert "<think>" not in named.render(CONV)
    tool_round = CONV + [
        {"role": "assistant", "content": "<think>\nI should measure.\n</think>\n\n<tool_call>{}</tool_call>"},
        {"role": "tool", "content": "Tokyo: 14M"}, {"role": "tool", "content": "Paris: 2M"}]
    rendered = named.render(tool_round)
    assert rendered == own.render(tool_round)
    assert "<think>\nI should measure.\n</think>\n\n<tool_call>" in rendered
    assert "<|im_start|>user\n<tool_response>\nTokyo: 14M\n</tool_response>\n<tool_response>\nParis: 2M" in rendered
    assert prompt_tokens(tok, rendered) == prompt_tokens(tok, own.render(tool_round))


def test_split_thinking():
    assert split_thinking("<think>\nhmm\n</think>\n\nHi") == ("hmm", "Hi")
    assert split_thinking("Hi") == ("", "Hi")
    assert split_thinking("<think>\nstill thinking") == ("still thinking", "")  # cut off mid-thought


def test_chat_layer_keeps_thinking_in_the_answer_but_not_in_the_next_prompt():
    class Backend:
        name = "scripted"
        entry = type("E", (), {"tools": []})()

        def __init__(self):
            self.seen = []

        def stream(self, messages, tools, settings, cancel):
            self.seen.append(messages)
            yield {"type": "token", "text": "<think>\nshort\n</think>\n\n"}
            yield {"type": "token", "text": "Hello!"}
            yield {"type": "done", "finish_reason": "stop", "stats": {}}

    backend = Backend()
    runner = ChatRunner(backend, {})
    events = list(runner.run([{"role": "user", "content": "Hi"}], ChatSettings()))
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    assert streamed == "<think>\nshort\n</think>\n\nHello!"  # the page folds it; the text stays
    history = [{"role": "user", "content": "Hi"}] + events[-1]["new_messages"] + [{"role": "user", "content": "Again"}]
    assert history[1]["content"].startswith("<think>")  # the transcript keeps it
    list(runner.run(history, ChatSettings()))
    assert backend.seen[-1][1] == {"role": "assistant", "content": "Hello!"}


def test_gemma2_template_refuses_a_system_role_so_it_is_folded_into_the_first_turn():
    tok, bos, eos = _gemma()
    own = auto_format(template("gemma-2"), bos, eos)
    history = without_old_thinking(CONV)
    with pytest.raises(TemplateError, match="System role not supported"):
        own.render(history)
    folded = own.render(fold_system(history))
    assert folded == auto_format(template("gemma"), bos, eos).render(history)
    assert prompt_tokens(tok, folded) == prompt_tokens(tok, prompt_formats()["gemma"].render(history))


def test_a_template_that_writes_bos_does_not_get_a_second_one():
    tok, bos, _eos = _llama3()
    ids = prompt_tokens(tok, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
    assert ids[:2] == [tok.vocab.bos_id, tok.vocab.token_to_id["<|start_header_id|>"]]
    assert prompt_tokens(tok, "Hi")[0] == tok.vocab.bos_id  # the tokenizer still adds one


@pytest.mark.parametrize("family,stops", [("qwen3", ["<|im_end|>"]), ("phi-3", ["<|end|>", "<|endoftext|>"])])
def test_new_formats_stop_at_their_end_of_turn(family, stops):
    assert prompt_formats()[family].stop == stops


def test_local_backend_folds_the_system_prompt_only_when_the_files_template_refuses_it():
    from assistant.chat import LocalBackend

    backend = LocalBackend.__new__(LocalBackend)  # rendering needs no model
    _tok, bos, eos = _gemma()
    history = without_old_thinking(CONV)
    backend.format = auto_format(template("gemma-2"), bos, eos)
    assert backend.render(history, None) == auto_format(template("gemma"), bos, eos).render(history)
    backend.format = auto_format("{{ raise_exception('broken') }}", bos, eos)
    with pytest.raises(TemplateError, match="broken"):
        backend.render([{"role": "user", "content": "hi"}], None)  # no system prompt: a real error
