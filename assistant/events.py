"""The one event type that flows from the engine to the clients.

A backend turns each generated piece into events (``LocalBackend._events``);
the chat layer, the model workers' queues and the answer job pass the same events on; at
the edge each becomes what its client reads, in one function each:
:func:`ws_frames` for the chat websocket (docs/protocol.md), and the OpenAI output classes
(:mod:`assistant.openai_output`) for an SSE chunk or a whole response.
"""

from __future__ import annotations

from typing import Any, Required, TypedDict, cast


class Alternative(TypedDict, total=False):
    """One token with its log-probability (a ``top_logprobs`` entry, or a prompt token)."""

    id: int
    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list["Alternative"]


class Event(TypedDict, total=False):
    """One event; ``type`` says which of the fields below it carries (docs/protocol.md).

    - ``token``: ``text``; from a local model also ``id``, and with logprobs ``logprob``,
      ``bytes`` and ``top_logprobs``
    - ``prompt`` (completions with echo): ``text``, ``tokens``
    - ``trimmed``: ``dropped``, ``message``
    - ``tool_call``: ``name``, ``arguments``, ``error``; ``tool_result``: ``name``, ``ok``, ``content``
    - ``queued``: ``position``, ``state``; ``start``: ``message_id``, ``model``
    - ``done``: ``finish_reason``, ``stats``; after the tool loop also ``content`` and
      ``new_messages``; once saved also ``message_id``
    - ``error``: ``message``, optionally ``code`` and ``message_id``
    - ``embedding``: ``index``, ``vector``, ``tokens``

    ``index`` numbers the alternative (``n`` > 1) an event belongs to.
    """

    type: Required[str]
    text: str
    id: int
    logprob: float
    bytes: list[int]
    top_logprobs: list[Alternative]
    tokens: Any  # prompt: list[Alternative]; embedding: the token count
    index: int
    dropped: int
    message: str
    name: str
    arguments: Any
    error: str
    ok: bool
    content: str
    position: int
    state: str
    message_id: int
    model: str
    finish_reason: str
    stats: dict[str, float]
    new_messages: list[dict[str, Any]]
    code: str
    vector: Any


# What the websocket protocol sends of each event type; other fields stay on the server.
WS_FIELDS: dict[str, tuple[str, ...]] = {
    "token": ("text",),
    "trimmed": ("dropped", "message"),
    "tool_call": ("name", "arguments", "error"),
    "tool_result": ("name", "ok", "content", "message_id"),
    "queued": ("position", "state"),
    "start": ("message_id", "model"),
    "done": ("finish_reason", "message_id"),
    "error": ("message", "code", "message_id"),
}


def ws_frames(ev: Event) -> list[dict[str, Any]]:
    """The websocket frames for one event: a finished answer's ``stats`` go first, as their own frame."""
    kind = ev["type"]
    fields = WS_FIELDS.get(kind)
    if fields is None:
        return [dict(ev)]
    frames: list[dict[str, Any]] = []
    if kind == "done" and ev.get("stats"):
        frames.append({"type": "stats", **ev["stats"]})
    given = cast(dict[str, Any], ev)
    frames.append({"type": kind} | {k: given[k] for k in fields if k in given})
    return frames
