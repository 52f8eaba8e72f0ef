"""The tool-call parser on each shape models write, and what a stream may show meanwhile."""

from __future__ import annotations

import random

import pytest

from assistant.toolcalls import VisibleEnd, parse_tool_calls, syntax_markers, visible_end
from visible_end_reference import full_scan

NAMES = {"get_weather", "calculator"}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize("text, content", [
    (f"<tool_call>\n{CALL}\n</tool_call>", ""),                      # Hermes / Qwen tags
    (f"Let me check.\n<tool_call>{CALL}</tool_call>", "Let me check."),
    (f"<tool_call>\n```json\n{CALL}\n```\n</tool_call>", ""),          # fenced inside the tags
    (CALL, ""),                                                        # bare JSON
    (f"  {CALL}\n", ""),
    (f"```json\n{CALL}\n```", ""),                                     # fenced JSON (qwen2.5-coder's habit)
    (f"Sure! Here is the call:\n```\n{CALL}\n```\nDone.", "Sure! Here is the call:"),
    ('{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),  # Llama 3
    ('{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}', ""),
    (f"[{CALL}]", ""),                                                 # a list of calls
])
def test_each_shape_parses(text, content):
    got_content, calls = parse_tool_calls(text, NAMES)
    assert got_content == content
    assert [(c.name, c.arguments, c.error) for c in calls] == [("get_weather", {"city": "Paris"}, "")]


def test_several_calls_and_malformed_tagged_calls():
    text = (f"<tool_call>{CALL}</tool_call>\n<tool_call>"
            '{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call><tool_call>{oops</tool_call>')
    _content, calls = parse_tool_calls(text, NAMES)
    assert [c.name for c in calls] == ["get_weather", "calculator", ""]
    assert calls[2].error.startswith("the tool call is not valid JSON")


@pytest.mark.parametrize("text", [
    "The answer is 42.",
    '```json\n{"name": "Alice", "age": 30}\n```',                # JSON, but no tool's name
    '{"name": "unknown_tool", "arguments": {}}',                  # untagged call to a tool not offered
    "```python\nprint({'name': 'get_weather'})\n```",
    "{not json at all",
])
def test_answers_that_are_not_calls_stay_answers(text):
    assert parse_tool_calls(text, NAMES) == (text, [])


def test_streaming_holds_back_what_may_become_a_call():
    # A partial marker, a fence whose language line is not finished, bare JSON: held back.
    assert visible_end("Hello <tool") == len("Hello ")
    assert visible_end("Hello <tool_call>{") == len("Hello ")
    assert visible_end("Hi\n``") == len("Hi\n")
    assert visible_end("Hi\n```js") == len("Hi\n")
    assert visible_end("Hi\n```json\n{\"na") == len("Hi\n")
    assert visible_end('{"name": "get_we') == 0
    # Plain prose and code that plainly is not a call flow through.
    assert visible_end("Hello there") == len("Hello there")
    code = "Here:\n```python\ndef f():\n    return {1: 2}\n```\nThat is all"
    assert visible_end(code) == len(code)
    assert visible_end("x = {\n  1\n}") == len("x = {\n  1\n}")
    # A line that starts with a bracket but plainly is not JSON streams on; one that may be waits.
    sources = "Sources:\n[1] Wikipedia, Rainbow\n{name} is a placeholder\nMore text"
    assert visible_end(sources) == len(sources)
    assert visible_end("Sure.\n[") == len("Sure.\n")
    assert visible_end("Sure.\n[\n  {\"na") == len("Sure.\n")
    assert visible_end("Sure.\n{ \"name\"") == len("Sure.\n")


STREAMED = [
    f"Let me check.\n<tool_call>\n{CALL}\n</tool_call>",
    f"Sources:\n[1] Wikipedia, Rainbow\n{{name}} is a placeholder\n  [\n  {CALL}\n]",
    f"Sure.\n{{ \"name\": \"get_weather\"}}\nand <tool_ then <tool_call>{CALL}</tool_call>",
    "Here:\n```python\ndef f():\n    return {1: 2}\n[x for x in y]\n```\nThat is all\n```json\n{\"a\": 1}\n```",
    "Code:\n```js\nlet a = [1]\n```\n```\n\n  {\"name\": 1}\n```\n",
    "[ ```\n{\"name\"}\n```\n[\n ```json\n[",  # a fence completed later holds back what was shown
    "x ``` y\n`` `\n```tool_call\n  [ {}]\n``",
    f"Ok [TOOL_CA\n[TOOL_CALLS] [{CALL}]",
    "Hi." + "\n" * 300 + "[\n" + " " * 200 + "{\"name\"",  # runs of blanks, then a call
    "```py\n" + "  \n" * 100 + "```\n" + " " * 50 + "\n{",
]


@pytest.mark.parametrize("text", STREAMED)
@pytest.mark.parametrize("seed", range(4))
def test_incremental_visible_end_matches_the_full_scan(text, seed):
    # Fed 1-3 characters per token, the scan that resumes where the last one stopped
    # agrees after every token with the old scan of the whole text (tests/visible_end_reference.py).
    markers = syntax_markers()
    rng = random.Random(seed)
    held = VisibleEnd(markers)
    i = 0
    while i < len(text):
        i += rng.randint(1, 3)
        assert held.update(text[:i]) == full_scan(text[:i], markers) == visible_end(text[:i], markers), text[:i]


def test_incremental_visible_end_on_random_streams():
    """Random answers built from the pieces that matter (markers and their halves, fences,
    languages, line-start brackets, blanks), fed 0-8 characters per token."""
    markers = syntax_markers()
    pieces = ["Hi", " ", "\n", "\n\n", "  ", "\t", "```", "``", "`", "json", "python", "tool_call", "{", "[",
              "}", "]", '"', "name", ":", "1", "<tool", "_call>", "</tool_call>", "[TOOL_CALLS]", "\u00a0", "\r\n"]
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        held = VisibleEnd(markers)
        i = 0
        while i < len(text):
            i += rng.randint(0, 8)
            assert held.update(text[:i]) == full_scan(text[:i], markers), repr(text[:i])


def test_incremental_visible_end_starts_over_on_a_shorter_text():
    held = VisibleEnd()
    held.update("```py\ncode\n")
    assert held.update("```json\n{") == full_scan("```json\n{") == 0


def test_format_plugins_declare_their_markers():
    markers = syntax_markers()
    assert ("<tool_call>", "</tool_call>") in markers and ("[TOOL_CALLS]", "") in markers
    content, calls = parse_tool_calls(f"[TOOL_CALLS] [{CALL}]", NAMES, markers)
    assert content == "" and calls[0].arguments == {"city": "Paris"}
    assert visible_end("Ok [TOOL_CA", markers) == len("Ok ")
