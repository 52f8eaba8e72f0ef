"""What one OpenAI chat or completion request asks for, validated: every option either works
or gets a 400 naming it (README's "OpenAI-compatible API" lists them)."""

from __future__ import annotations

from typing import Any

from .chat import ChatSettings, parse_response_format
from .config import ModelEntry
from .core.json_constraint import JsonSchemaError, check_schema
from .http import MAX_N, MAX_TOKENS_LIMIT, SAMPLING_KEYS, ApiError, int_field, request_sampling, \
    stop_field

COMMON_KEYS = set(SAMPLING_KEYS) | {"sampling", "model", "stream", "stream_options", "n", "stop", "max_tokens",
                                    "user"}
CHAT_KEYS = COMMON_KEYS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools",
                           "tool_choice", "parallel_tool_calls", "response_format"}
COMPLETION_KEYS = COMMON_KEYS | {"prompt", "logprobs", "echo", "response_format"}
EMBEDDING_KEYS = {"model", "input", "encoding_format", "dimensions", "user"}
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5


class Request:
    """What one chat (``chat=True``) or completion request asks for, validated."""

    def __init__(self, b: dict[str, Any], entry: ModelEntry, chat: bool) -> None:
        sampling = request_sampling(entry, b)
        self.echo = bool(b.get("echo", False)) if not chat else False
        key = "max_completion_tokens" if "max_completion_tokens" in b else "max_tokens"
        max_tokens = int_field(b, key, entry.max_tokens, 0 if self.echo else 1, MAX_TOKENS_LIMIT)
        self.want_logprobs, self.top = _chat_logprobs(b) if chat else _completion_logprobs(b)
        self.n = int_field(b, "n", 1, 1, MAX_N)
        self.stream, self.include_usage = _stream_options(b)
        self.tools = _tools(b) if chat else None
        self.tool_mode, self.tool_name = _tool_choice(b, self.tools) if chat else ("none", "")
        self.parallel = _flag(b, "parallel_tool_calls", True)
        try:
            schema = parse_response_format(b.get("response_format"))
        except ValueError as err:
            raise ApiError(str(err), param="response_format") from None
        if self.tool_mode in ("required", "named") and self.tools:
            schema = call_schema(self.tools, self.tool_name)
        # A logprobs request with top_logprobs 0 still needs each token's own logprob.
        self.settings = ChatSettings(max_tokens=max_tokens, sampling=sampling, stop=stop_field(b.get("stop")),
                                     logprobs=max(self.top, 1) if self.want_logprobs else 0,
                                     context_policy="error", json_schema=schema, echo=self.echo)

    @property
    def render_tools(self) -> list[dict[str, Any]] | None:
        return self.tools if self.tool_mode != "none" else None


def _flag(b: dict[str, Any], key: str, default: bool) -> bool:
    v = b.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(f"{key} must be true or false", param=key)
    return v


def _chat_logprobs(b: dict[str, Any]) -> tuple[bool, int]:
    """(logprobs wanted, how many alternatives) from ``logprobs`` and ``top_logprobs``."""
    v = b.get("logprobs")
    if v not in (None, True, False):
        raise ApiError("logprobs must be true or false", param="logprobs")
    if v:
        return True, int_field(b, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)
    if b.get("top_logprobs") is not None:
        raise ApiError("top_logprobs needs logprobs: true", param="top_logprobs")
    return False, 0


def _completion_logprobs(b: dict[str, Any]) -> tuple[bool, int]:
    """The legacy ``logprobs``: how many alternatives, 0 to 5."""
    if b.get("logprobs") is None:
        return False, 0
    return True, int_field(b, "logprobs", 0, 0, MAX_COMPLETION_LOGPROBS)


def _stream_options(b: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = bool(b.get("stream", False))
    opts = b.get("stream_options")
    if opts is None:
        return stream, False
    if not stream:
        raise ApiError("stream_options needs stream: true", param="stream_options")
    if not isinstance(opts, dict) or any(k != "include_usage" for k in opts):
        raise ApiError("stream_options supports only include_usage", param="stream_options")
    return stream, bool(opts.get("include_usage", False))


def tool_name(t: dict[str, Any]) -> str:
    fn = t.get("function") if isinstance(t, dict) else None
    return str(fn.get("name", "")) if isinstance(fn, dict) else ""


def _tools(b: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = b.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type", "function") == "function"
                                              and tool_name(t) for t in tools):
        raise ApiError("tools must be a list of {\"type\": \"function\", \"function\": {\"name\": ...}}",
                       param="tools")
    return tools or None


def _tool_choice(b: dict[str, Any], tools: list[dict[str, Any]] | None) -> tuple[str, str]:
    """(mode, function name): mode is none, auto, required or named."""
    v = b.get("tool_choice")
    if v is None:
        return ("auto" if tools else "none"), ""
    if v in ("none", "auto", "required"):
        if v != "none" and not tools:
            raise ApiError(f"tool_choice {v!r} needs tools", param="tool_choice")
        return str(v), ""
    if isinstance(v, dict) and isinstance(v.get("function"), dict) and isinstance(v["function"].get("name"), str):
        name = v["function"]["name"]
        names = [tool_name(t) for t in tools or []]
        if name not in names:
            raise ApiError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})",
                           param="tool_choice")
        return "named", name
    raise ApiError("tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": "
                   "{\"name\": ...}}", param="tool_choice")


def call_schema(tools: list[dict[str, Any]], only: str = "") -> dict[str, Any]:
    """JSON Schema of one call to one of ``tools``: {"name": ..., "arguments": {...}}.

    A tool whose parameters use what the constraint cannot enforce gets any object as its
    arguments (the name is still forced)."""
    alts = []
    for t in tools:
        fn = t["function"]
        if only and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object"}
        try:
            check_schema(params)
        except JsonSchemaError:
            params = {"type": "object"}
        alts.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                     "required": ["name", "arguments"]})
    return alts[0] if len(alts) == 1 else {"anyOf": alts}
