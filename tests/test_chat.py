"""The chat layer: the tool-calling loop and the context policy."""

from __future__ import annotations

import pytest

from assistant.errors import ChatError
from assistant.chat import ChatRunner, ChatSettings, LocalBackend
from assistant.config import load_registry
from assistant.tools import registered_tools


class ScriptedBackend:
    """Answers with scripted texts, one per generation round."""

    name = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []
        self.entry = type("E", (), {"tools": ["calculator", "clock"]})()

    def stream(self, messages, tools, settings, cancel):
        self.seen.append((list(messages), tools))
        text = self.replies.pop(0)
        for i in range(0, len(text), 7):
            yield {"type": "token", "text": text[i:i + 7]}
        yield {"type": "done", "finish_reason": "stop", "stats": {"prompt_tokens": 10, "generated_tokens": 5}}


def test_tool_call_loop_runs_the_tool_and_continues():
    backend = ScriptedBackend([
        'Let me compute.<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>',
        "The answer is 42.",
    ])
    events = list(ChatRunner(backend, registered_tools()).run([{"role": "user", "content": "6 times 7?"}], ChatSettings()))
    kinds = [e["type"] for e in events]
    assert "tool_call" in kinds and "tool_result" in kinds
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["ok"] and result["content"] == "42"
    visible = "".join(e["text"] for e in events if e["type"] == "token")
    assert "<tool_call>" not in visible and visible.endswith("The answer is 42.")
    done = events[-1]
    assert done["content"] == "The answer is 42."
    roles = [m["role"] for m in done["new_messages"]]
    assert roles == ["assistant", "tool", "assistant"]
    # The second round saw the tool result, and the first was told about the tools.
    assert backend.seen[1][0][-1] == {"role": "tool", "name": "calculator", "content": "42"}
    assert {t["function"]["name"] for t in backend.seen[0][1]} == {"calculator", "clock"}


def test_malformed_and_unknown_tool_calls_become_visible_errors():
    backend = ScriptedBackend([
        "<tool_call>{broken</tool_call>",
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        "Sorry.",
    ])
    events = list(ChatRunner(backend, registered_tools()).run([{"role": "user", "content": "x"}], ChatSettings()))
    results = [e for e in events if e["type"] == "tool_result"]
    assert not results[0]["ok"] and "not valid JSON" in results[0]["content"]
    assert not results[1]["ok"] and "no tool named 'rm_rf'" in results[1]["content"]
    assert events[-1]["content"] == "Sorry."


def test_tool_rounds_are_bounded():
    call = '<tool_call>{"name": "clock", "arguments": {}}</tool_call>'
    backend = ScriptedBackend([call] * 10)
    events = list(ChatRunner(backend, registered_tools()).run([{"role": "user", "content": "x"}], ChatSettings()))
    assert sum(e["type"] == "tool_call" for e in events) == 4
    assert events[-1]["type"] == "done"


@pytest.mark.real_model
def test_context_policy_drops_oldest_turns_and_says_so(smollm2_path):
    reg = load_registry()
    entry = reg.get("smollm2")
    entry.context_length = 256
    backend = LocalBackend.load(entry)
    history = [{"role": "system", "content": "You are terse."}]
    for i in range(12):
        history += [{"role": "user", "content": f"Tell me fact {i} about the moon, in detail please."},
                    {"role": "assistant", "content": "The moon is Earth's only natural satellite. " * 3}]
    history.append({"role": "user", "content": "Thanks!"})
    settings = ChatSettings(max_tokens=32)
    events = list(backend.stream(history, None, settings, None))
    trimmed = [e for e in events if e["type"] == "trimmed"]
    assert trimmed and trimmed[0]["dropped"] > 0 and "context trimmed" in trimmed[0]["message"]
    ids, dropped = backend.fit(history, None, settings)
    assert len(ids) + 32 <= 256 and dropped == trimmed[0]["dropped"]
    text = backend.model.detokenize(ids, special=True)
    assert "You are terse." in text and "Thanks!" in text  # system prompt and last turn kept
    with pytest.raises(ChatError, match="context holds 256"):
        backend.fit(history, None, ChatSettings(max_tokens=32, context_policy="error"))
