"""What every route shares: request limits, the error shape, and validation of the request
fields the conversation API, the websocket and the OpenAI API have in common.

Every error a client can cause is a :class:`BadRequest` (400) or an :class:`ApiError` (its own
status, ``code`` and ``param``), answered in OpenAI's ``{"error": {...}}`` shape.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, jsonify, request

from .chat import merged_sampling
from .config import ModelEntry
from .core.sampling import SAMPLING_FIELDS, SamplingSettings

MAX_BODY_BYTES = 1 << 20
MAX_WS_MESSAGE_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 100_000
MAX_MESSAGES = 500
MAX_TOKENS_LIMIT = 8192
MAX_N = 8
MAX_STOP_STRINGS = 8
SAMPLING_KEYS = tuple(f.name for f in SAMPLING_FIELDS)
ROLES = ("system", "user", "assistant", "tool")


class BadRequest(ValueError):
    """A client sent something invalid; becomes a 400 (or a websocket error message)."""


class UnknownModel(BadRequest):
    """A request names neither a model nor an alias of one (the OpenAI API answers 404)."""


class ApiError(ValueError):
    """A 4xx in OpenAI's shape with its ``code`` and ``param``."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def error_response(message: str, status: int, etype: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> Response:
    """An error in OpenAI's shape, which every route uses."""
    resp = jsonify({"error": {"message": message, "type": etype, "param": param, "code": code}})
    resp.status_code = status
    return resp


def json_body(known: set[str] | None = None, route: str = "") -> dict[str, Any]:
    """The request's JSON object; with ``known``, an option outside it is refused by name."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    if known is not None:
        unknown = sorted(k for k, v in data.items() if k not in known and v is not None)  # null = not given
        if unknown:
            raise ApiError(f"{route} does not support the option {unknown[0]!r} here; supported: "
                           f"{', '.join(sorted(known))}", param=unknown[0])
    return data


def int_field(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{key} must be an integer between {lo} and {hi}, got {v!r}")
    return v


def sampling_overrides(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields a request sets, top-level (OpenAI) or under ``sampling`` (the page)."""
    out = {k: body[k] for k in SAMPLING_KEYS if body.get(k) is not None}
    if isinstance(body.get("sampling"), dict):
        out.update(body["sampling"])
    return out


def request_sampling(entry: ModelEntry, body: dict[str, Any]) -> SamplingSettings:
    """The model's sampling settings with what the request overrides; BadRequest names a bad one."""
    try:
        return merged_sampling(entry, sampling_overrides(body))
    except ValueError as err:
        raise BadRequest(str(err)) from None


def stop_field(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, list) and all(isinstance(s, str) for s in v) and len(v) <= MAX_STOP_STRINGS:
        return [s for s in v if s]
    raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings")


def messages_field(v: Any) -> list[dict[str, Any]]:
    """A chat request's ``messages``, checked, with text parts joined and tool-call arguments decoded."""
    if not isinstance(v, list) or not v:
        raise BadRequest("messages must be a non-empty list")
    if len(v) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages per request")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] needs a role of system, user, assistant or tool")
        msg: dict[str, Any] = {"role": m["role"], "content": _content(m.get("content", ""), i)}
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls_for_template(m["tool_calls"], i)
        out.append(msg)
    return out


def _content(content: Any, i: int) -> str:
    if isinstance(content, list):  # OpenAI content parts: text only
        for j, p in enumerate(content):
            kind = p.get("type") if isinstance(p, dict) else None
            if kind != "text" or not isinstance(p.get("text"), str):
                raise BadRequest(f"messages[{i}].content[{j}] is a {kind or 'malformed'} part; "
                                 f"this model takes text only")
        content = "".join(p["text"] for p in content)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise BadRequest(f"messages[{i}].content must be a string")
    if len(content) > MAX_MESSAGE_CHARS:
        raise BadRequest(f"messages[{i}].content is longer than {MAX_MESSAGE_CHARS} characters")
    return content


def _tool_calls_for_template(calls: Any, i: int) -> list[dict[str, Any]]:
    """OpenAI-shaped calls with their ``arguments`` decoded (templates serialise them again)."""
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise BadRequest(f"messages[{i}].tool_calls must be a list of objects")
    out = []
    for c in calls:
        fn = dict(c["function"]) if isinstance(c.get("function"), dict) else dict(c)
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"] or "{}")
            except json.JSONDecodeError:
                raise BadRequest(f"messages[{i}].tool_calls: arguments must be a JSON object") from None
        out.append(dict(c, function=fn, name=fn.get("name", ""), arguments=fn.get("arguments", {})))
    return out


def settings_schema() -> dict[str, Any]:
    """The request settings a client can set, for the page to build its settings panel from."""
    return {"sampling": [f._asdict() for f in SAMPLING_FIELDS],
            "max_tokens": {"name": "max_tokens", "kind": "int", "lo": 1, "hi": MAX_TOKENS_LIMIT,
                           "help": "the longest answer, in tokens"}}
