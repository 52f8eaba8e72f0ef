"""Tools: schemas from signatures, the built-ins, hostile input, and containment."""

from __future__ import annotations

import time

import pytest

from assistant.toolcalls import parse_tool_calls
from assistant.tools import ToolContext, parse_slash_command, registered_tools, run_tool, tool_from_function


def test_schema_from_signature_and_docstring():
    def weather(city: str, days: int = 1) -> str:
        """Forecast for a city.

        city: the city name
        days: how many days
        """
        return city

    t = tool_from_function(weather)
    assert t.description == "Forecast for a city."
    assert t.parameters == {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "the city name"},
        "days": {"type": "integer", "description": "how many days"}}}


def test_builtin_tools_are_registered():
    assert {"calculator", "clock", "notes"} <= set(registered_tools())


def calc(expr):
    return run_tool(registered_tools()["calculator"], {"expression": expr})


@pytest.mark.parametrize("expr, value", [("2*(3+4)", "14"), ("2**10", "1024"), ("7/2", "3.5"),
                                         ("sqrt(16)", "4"), ("-3 + 10 % 4", "-1"), ("2^8", "256")])
def test_calculator(expr, value):
    r = calc(expr)
    assert r.ok and r.content == value


@pytest.mark.parametrize("expr", ["__import__('os')", "(1).__class__", "x", "lambda: 1", "[i for i in range(9)]",
                                  "9**9**9**9", "10**10**10", "1 << 100000", "factorial(100000)", "2**99999",
                                  "open('/etc/passwd')", "1/0", "'a'*10"])
def test_calculator_refuses_hostile_input_quickly(expr):
    t0 = time.perf_counter()
    r = calc(expr)
    assert not r.ok and r.content
    assert time.perf_counter() - t0 < 0.1


def test_clock_and_bad_timezone():
    tools = registered_tools()
    assert run_tool(tools["clock"], {}).ok
    assert run_tool(tools["clock"], {"timezone": "Europe/Paris"}).ok
    bad = run_tool(tools["clock"], {"timezone": "../../etc/passwd"})
    assert not bad.ok and "time zone" in bad.content


def test_notes_add_list_search_delete(tmp_path):
    notes = registered_tools()["notes"]
    assert "context" not in notes.parameters["properties"]  # the caller's, not the model's to give
    ctx = ToolContext(tmp_path / "notes.db")
    assert run_tool(notes, {"action": "add", "text": "buy milk"}, ctx).ok
    assert run_tool(notes, {"action": "add", "text": "call mum"}, ctx).ok
    assert "buy milk" in run_tool(notes, {"action": "list"}, ctx).content
    assert "call mum" in run_tool(notes, {"action": "search", "text": "mum"}, ctx).content
    assert run_tool(notes, {"action": "delete", "text": "1"}, ctx).ok
    assert "buy milk" not in run_tool(notes, {"action": "list"}, ctx).content
    assert not run_tool(notes, {"action": "add", "text": "a\x00b"}, ctx).ok
    assert not run_tool(notes, {"action": "explode"}, ctx).ok
    # A model cannot pass a context of its own, and a call without one is refused plainly.
    assert "has no argument 'context'" in run_tool(notes, {"action": "list", "context": "x"}, ctx).content
    assert run_tool(notes, {"action": "list"}).content == "notes needs the context of a chat (its database) to run"


def test_a_context_parameter_of_another_type_is_an_argument():
    def translate(text: str, context: str = "") -> str:
        """Translate text.

        context: what the text is about
        """
        return f"{text}|{context}"

    tool = tool_from_function(translate)
    assert not tool.wants_context and "context" in tool.parameters["properties"]
    assert run_tool(tool, {"text": "bank", "context": "rivers"}).content == "bank|rivers"


def test_tool_that_raises_or_hangs_is_contained():
    def boom() -> str:
        """Explodes."""
        raise RuntimeError("kaboom")

    def slow() -> str:
        """Hangs."""
        time.sleep(5)
        return "late"

    r = run_tool(tool_from_function(boom), {})
    assert not r.ok and "kaboom" in r.content
    t0 = time.perf_counter()
    r = run_tool(tool_from_function(slow), {}, timeout=0.2)
    assert not r.ok and "did not finish" in r.content and time.perf_counter() - t0 < 1


def test_parse_tool_calls():
    content, calls = parse_tool_calls('x <tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>'
                             '<tool_call>{not json}</tool_call>')
    assert content == "x" and calls[0].name == "calculator" and calls[0].arguments == {"expression": "1+1"}
    assert calls[1].error.startswith("the tool call is not valid JSON")


def test_slash_commands():
    tools = registered_tools()
    tool, args = parse_slash_command("/calc 2*(3+4)", tools)
    assert tool.name == "calculator" and args == {"expression": "2*(3+4)"}
    tool, args = parse_slash_command("/note add buy milk", tools)
    assert tool.name == "notes" and args == {"action": "add", "text": "buy milk"}
    assert parse_slash_command("/time", tools)[0].name == "clock"
    assert parse_slash_command("/unknown x", tools) is None
