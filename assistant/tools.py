"""Tools: plain annotated functions the model (or the user, with /commands) can call.

A tool's JSON schema comes from its signature and its description from its docstring.
Calls run in a worker thread with a time limit; whatever a tool raises or returns, the
caller gets a :class:`ToolResult` (``ok`` or an error message), never an exception.

Calls the model writes are found by :mod:`assistant.toolcalls` (tags, bare or fenced
JSON); malformed ones become visible errors.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, get_type_hints

from .plugin_manager import get_plugins
from .store import Store, open_store

DEFAULT_TIMEOUT_S = 5.0
MAX_RESULT_CHARS = 8000

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                               list: "array", dict: "object"}


# A tool's parameter of this name annotated ToolContext receives the call's context; it is
# not in the schema (a parameter "context" of another type is an ordinary argument).
CONTEXT_PARAM = "context"


class ToolError(Exception):
    """Raise from a tool to report a clear, user-facing problem with its input."""


@dataclass(frozen=True)
class ToolContext:
    """What a call may use beyond its arguments, from whoever runs it: the database of the
    server (or terminal chat) it runs for, so two servers in one process keep their own notes."""

    db_path: Path

    def __post_init__(self) -> None:
        # Resolved now: a relative DB_PATH must not mean another file if the directory changes.
        object.__setattr__(self, "db_path", Path(self.db_path).resolve())

    def store(self) -> Store:
        """That database (opened once per process)."""
        return open_store(self.db_path)


@dataclass
class Tool:
    name: str
    fn: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    plugin: str = ""
    wants_context: bool = False  # fn takes ``context: ToolContext``: the context of the call

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function schema (what chat templates announce)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def tool_from_function(fn: Callable[..., Any], name: str | None = None, plugin: str = "") -> Tool:
    """Build a :class:`Tool` from an annotated function and its docstring."""
    sig = inspect.signature(fn)
    hints = get_type_hints(fn)
    props: dict[str, Any] = {}
    required: list[str] = []
    doc = inspect.getdoc(fn) or ""
    arg_docs = dict(re.findall(r"^\s*(\w+):\s*(.+)$", doc, re.M))
    wants_context = CONTEXT_PARAM in sig.parameters and hints.get(CONTEXT_PARAM) is ToolContext
    for pname, param in sig.parameters.items():
        if pname == CONTEXT_PARAM and wants_context:
            continue
        typ = hints.get(pname, str)
        prop: dict[str, Any] = {"type": _JSON_TYPES.get(getattr(typ, "__origin__", typ), "string")}
        if pname in arg_docs:
            prop["description"] = arg_docs[pname]
        props[pname] = prop
        if param.default is inspect.Parameter.empty:
            required.append(pname)
    description = doc.split("\n\n")[0].strip() if doc else (name or fn.__name__)
    return Tool(name or fn.__name__, fn, description,
                {"type": "object", "properties": props, "required": required}, plugin, wants_context)


@dataclass
class ToolResult:
    name: str
    arguments: dict[str, Any]
    ok: bool
    content: str
    seconds: float = 0.0


def registered_tools() -> dict[str, Tool]:
    """Every tool the loaded plugins register, by name."""
    pm = get_plugins()
    tools: dict[str, Tool] = {}

    for impl in pm.pm.hook.register_tools.get_hookimpls():
        plugin_name = pm.pm.get_name(impl.plugin) or ""

        def register(fn: Callable[..., Any], name: str | None = None, _p: str = plugin_name) -> None:
            t = tool_from_function(fn, name, _p)
            tools[t.name] = t

        try:
            impl.function(register=register)
        except Exception as err:
            info = pm.infos.get(plugin_name)
            if info is not None:
                info.error = f"register_tools raised {type(err).__name__}: {err}"
    return tools


def _coerce(tool: Tool, args: dict[str, Any]) -> dict[str, Any]:
    props = tool.parameters.get("properties", {})
    out: dict[str, Any] = {}
    for k, v in args.items():
        if k not in props:
            raise ToolError(f"{tool.name} has no argument {k!r}; it takes {', '.join(props) or 'none'}")
        want = props[k].get("type")
        if want == "number" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if want == "string" and not isinstance(v, str):
            v = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        out[k] = v
    for req in tool.parameters.get("required", []):
        if req not in out:
            raise ToolError(f"{tool.name} needs the argument {req!r}")
    return out


def run_tool(tool: Tool, arguments: dict[str, Any], context: ToolContext | None = None, *,
             timeout: float = DEFAULT_TIMEOUT_S) -> ToolResult:
    """Run ``tool`` in a thread with a time limit; errors become ``ok=False`` results.
    ``context`` is what a tool that asks for it gets (its caller's database)."""
    import time

    try:
        args = _coerce(tool, arguments if isinstance(arguments, dict) else {})
    except ToolError as err:
        return ToolResult(tool.name, arguments, False, str(err))
    if tool.wants_context and context is None:
        return ToolResult(tool.name, args, False, f"{tool.name} needs the context of a chat (its database) to run")
    extra = {CONTEXT_PARAM: context} if tool.wants_context else {}
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = tool.fn(**args, **extra)
        except ToolError as err:
            box["error"] = str(err)
        except Exception as err:  # a broken tool is contained, not fatal
            box["error"] = f"{tool.name} failed: {type(err).__name__}: {err}"

    t0 = time.perf_counter()
    th = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    th.start()
    th.join(timeout)
    dt = time.perf_counter() - t0
    if th.is_alive():
        return ToolResult(tool.name, args, False, f"{tool.name} did not finish within {timeout:g} s", dt)
    if "error" in box:
        return ToolResult(tool.name, args, False, box["error"], dt)
    value = box.get("value")
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    except Exception:
        text = repr(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + " [truncated]"
    return ToolResult(tool.name, args, True, text, dt)


def parse_slash_command(text: str, tools: dict[str, Tool]) -> tuple[Tool, dict[str, Any]] | None:
    """``/calc 2*(3+4)`` -> (calculator tool, {"expression": "2*(3+4)"}); None if not a tool command."""
    if not text.startswith("/"):
        return None
    head, _, rest = text[1:].partition(" ")
    aliases = {"calc": "calculator", "time": "clock", "note": "notes", "notes": "notes"}
    name = aliases.get(head, head)
    tool = tools.get(name)
    if tool is None:
        return None
    props = list(tool.parameters.get("properties", {}))
    rest = rest.strip()
    if not props:
        return tool, {}
    if len(props) == 1:
        return tool, ({props[0]: rest} if rest else {})
    # First word to the first parameter, the remainder to the second (e.g. "/note add milk").
    first, _, remainder = rest.partition(" ")
    args: dict[str, Any] = {}
    if first:
        args[props[0]] = first
    if remainder:
        args[props[1]] = remainder.strip()
    return tool, args
