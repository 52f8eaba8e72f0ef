"""Finding tool calls in what a model wrote, in the shapes models actually write them.

Lenient, as llama.cpp's chat parsers are: Hermes/Qwen ``<tool_call>{...}</tool_call>`` tags
(or a format plugin's own markers, declared through ``register_tool_call_syntax``), a bare
JSON object (or list of them) at the start of a line, a fenced ```` ```json ```` block, and
Llama-3's ``{"name": ..., "parameters": ...}``. Untagged JSON counts as a call only when it
names one of the offered tools, so an answer that merely contains JSON stays an answer.

:class:`VisibleEnd` says how much of a stream can be shown while it may still become a
call: the OpenAI API's streaming and the chat page's tool loop both hold back from there
(:func:`visible_end` is the same for a whole text at once).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Markers every model family we ship may use; plugins add their own.
DEFAULT_MARKERS: tuple[tuple[str, str], ...] = (("<tool_call>", "</tool_call>"),)
FENCE = "```"
_FENCE_LANGS = ("", "json", "tool_call", "tool_code", "javascript", "js")
_DECODER = json.JSONDecoder()


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # set when the model's call could not be parsed
    raw: str = ""


def syntax_markers() -> list[tuple[str, str]]:
    """(open, close) markers: the defaults plus what format plugins declare."""
    from .plugin_manager import get_plugins

    found = list(DEFAULT_MARKERS)

    def register(open: str, close: str = "") -> None:
        if isinstance(open, str) and open and (open, close) not in found:
            found.append((open, str(close or "")))

    get_plugins().call_safely("register_tool_call_syntax", register=register)
    return found


def _call_from(obj: Any, raw: str) -> ToolCall | None:
    """A call from one decoded JSON value, or None when it does not look like one."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # OpenAI's own shape, echoed back
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str):
        return None
    args: Any = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return ToolCall(name, error="the tool arguments are a string that is not JSON", raw=raw)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCall(name, error="tool arguments must be a JSON object", raw=raw)
    return ToolCall(name, args, raw=raw)


def _decode_calls(raw: str) -> tuple[list[ToolCall], int]:
    """Calls in JSON text starting at ``raw``'s first character: (calls, characters used)."""
    try:
        obj, end = _DECODER.raw_decode(raw)
    except json.JSONDecodeError as err:
        return [ToolCall("", error=f"the tool call is not valid JSON ({err.msg})", raw=raw)], len(raw)
    items = obj if isinstance(obj, list) else [obj]
    calls = [_call_from(o, raw[:end]) for o in items]
    if not items or any(c is None for c in calls):
        return [ToolCall("", error="a tool call needs a \"name\" string", raw=raw[:end])], end
    return [c for c in calls if c is not None], end


def _marked(text: str, markers: list[tuple[str, str]]) -> tuple[int, list[ToolCall]]:
    """Calls between markers: (start of the first marker or -1, calls)."""
    first = -1
    calls: list[ToolCall] = []
    for open_, close in markers:
        pos = text.find(open_)
        while pos >= 0:
            first = pos if first < 0 else min(first, pos)
            body_start = pos + len(open_)
            end = text.find(close, body_start) if close else -1
            body = text[body_start:end if end >= 0 else len(text)].strip()
            if body.startswith(FENCE):  # some models fence inside the tags
                body = body.strip("`").removeprefix("json").strip()
            if body:
                calls.extend(_decode_calls(body)[0])
            pos = text.find(open_, end + len(close)) if end >= 0 else -1
    return first, calls


def _fence_body(text: str, pos: int) -> tuple[str | None, int]:
    """For a fence at ``pos``: (its JSON-looking body or None, index after the block)."""
    nl = text.find("\n", pos + 3)
    if nl < 0:
        return None, len(text)
    lang = text[pos + 3:nl].strip().lower()
    close = text.find(FENCE, nl + 1)
    end = close + 3 if close >= 0 else len(text)
    body = text[nl + 1:close if close >= 0 else len(text)].strip()
    if lang not in _FENCE_LANGS or not body.startswith(("{", "[")):
        return None, end
    return body, end


_LINE_JSON = re.compile(r"(?m)^[ \t]*[\[{]")
# The first non-space character after a position (visible_end's peek past `[` / `{`).
_NEXT_CHAR = re.compile(r"\s*(\S)")


def _untagged(text: str, names: set[str] | None) -> tuple[int, list[ToolCall]]:
    """Fenced or bare JSON calls: (start of the first one or -1, calls)."""
    pos = 0
    while True:
        fence = text.find(FENCE, pos)
        line = _LINE_JSON.search(text, pos)
        if fence < 0 and line is None:
            return -1, []
        if line is not None and (fence < 0 or line.start() < fence):
            start = line.start()
            calls, used = _decode_calls(text[start:].lstrip())
            if _known(calls, names):
                return start, calls
            pos = line.end()
            continue
        body, after = _fence_body(text, fence)
        if body is not None:
            calls = _decode_calls(body)[0]
            if _known(calls, names):
                return fence, calls
        pos = after


def _known(calls: list[ToolCall], names: set[str] | None) -> bool:
    if not calls or any(c.error for c in calls):
        return False
    return names is None or all(c.name in names for c in calls)


def parse_tool_calls(text: str, names: set[str] | None = None,
                     markers: list[tuple[str, str]] | None = None) -> tuple[str, list[ToolCall]]:
    """(the text before the calls, the calls) in model output; no calls -> (text, []).

    Marked calls are taken whatever they contain (a malformed one becomes a call with
    ``error`` set, so the model can be told); untagged JSON must name a tool in ``names``
    (any name when ``names`` is None) and parse.
    """
    first, calls = _marked(text, list(markers or DEFAULT_MARKERS))
    if first < 0:
        first, calls = _untagged(text, names)
    if first < 0:
        return text, []
    return text[:first].rstrip(), calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def visible_end(text: str, markers: list[tuple[str, str]] | None = None) -> int:
    """How much of a partial answer can be shown: everything before anything that may
    still turn out to be a tool call (a marker, a fenced or line-start JSON value, or a
    partial marker or fence at the end)."""
    return VisibleEnd(markers).update(text)


class VisibleEnd:
    """:func:`visible_end` for an answer that grows token by token, each call scanning only
    what the last one left undecided: ``update(text)`` after every token returns what
    ``visible_end(text)`` would, without the rescan from 0 that made a long answer O(n^2).

    What is decided stays decided as the text grows (a fence's language, a line's first
    character, a closed code block), so the state below is where each scan resumes. The result
    can still drop, as the full scan's does: `` at the end may become a fence that holds back.
    The text only grows (each call's text starts with the last one's); a shorter text starts
    the scan over.
    """

    def __init__(self, markers: list[tuple[str, str]] | None = None) -> None:
        self.markers = list(markers or DEFAULT_MARKERS)
        self._start()

    def _start(self) -> None:
        self.marker_from = [0] * len(self.markers)  # no marker starts before these
        self.fence_pos = 0  # the fence scan resumes here, outside any code block
        self.block = -1  # the fence of the code block the text ends in (close unseen), or -1
        self.close_from = 0  # where that block's closing fence may start
        self.released: list[tuple[int, int]] = []  # code blocks (not calls) after line_pos
        self.line_pos = 0  # every line-start `[` / `{` before here was shown for good
        self.ink_checked = 0  # text before here was searched for its last non-space character,
        self.ink_end = 0  # which ends here (0: none)
        self.length = 0

    def update(self, text: str) -> int:
        """How much of ``text`` (the previous call's text plus what came since) can be shown."""
        if len(text) < self.length:
            self._start()
        self.length = len(text)
        end = len(text)
        for i, (open_, _close) in enumerate(self.markers):
            pos = text.find(open_, self.marker_from[i])
            self.marker_from[i] = pos if pos >= 0 else max(self.marker_from[i], len(text) - len(open_) + 1)
            end = min(end, pos if pos >= 0 else len(text) - _partial_suffix(text, open_))
        end = self._fences(text, end)
        end = self._lines(text, end)
        return end - _partial_suffix(text[max(0, end - 2):end], FENCE)

    def _fences(self, text: str, end: int) -> int:
        """``end`` cut at a fence that may open a call; code blocks passed are ``released``."""
        pos = self.fence_pos
        if self.block >= 0:  # still inside the code block the last text ended in
            close = text.find(FENCE, self.close_from)
            pos = close + 3 if close >= 0 else len(text)
            self.released[-1] = (self.block, pos)
            if close < 0:
                self.close_from = max(self.close_from, len(text) - 2)
                return end
            self.block = -1
        while pos < end:
            fence = text.find(FENCE, pos, end + 2)  # a fence starting before end
            if fence < 0:
                pos = max(pos, min(end, len(text) - 2))  # a fence may yet end where the text does
                break
            nl = text.find("\n", fence + 3)
            body = _NEXT_CHAR.match(text, nl + 1) if nl >= 0 else None
            lang = text[fence + 3:nl].strip().lower() if nl >= 0 else ""
            if nl < 0 or (lang in _FENCE_LANGS and (body is None or body.group(1) in "{[")):
                pos = end = fence  # may be a fenced call: hold back until it is decided
                break
            close = text.find(FENCE, nl + 1)
            self.released.append((fence, close + 3 if close >= 0 else len(text)))
            if close < 0:
                self.block, self.close_from = fence, max(nl + 1, len(text) - 2)
                break
            pos = close + 3
        self.fence_pos = pos
        return end

    def _lines(self, text: str, end: int) -> int:
        """``end`` cut at a line-start `[` / `{` that may open a JSON call."""
        for m in _LINE_JSON.finditer(text, self.line_pos, end):
            if any(a <= m.start() < b for a, b in self.released):
                continue
            nxt = _NEXT_CHAR.match(text, m.end(), end)
            if nxt and nxt.group(1) != ('"' if text[m.end() - 1] == "{" else "{"):
                continue  # plainly not a JSON call ("[1] a source", "{name}"): shown as it streams
            self.line_pos = m.start()  # undecided, or a call: looked at again next time
            return m.start()
        self.line_pos = self._decided_to(text, min(end, len(text) - 2))
        self.released = [r for r in self.released if r[1] > self.line_pos or r[0] == self.block]
        return end

    def _decided_to(self, text: str, bound: int) -> int:
        """Where the next line scan may start: each line-start `[` / `{` before it is no call,
        as a character before ``bound`` shows (a fence the text's end may yet become cuts the
        next scan no lower than ``bound``)."""
        last = self._ink_end(text, bound)  # just after the last character before bound not a space
        if last <= self.line_pos:  # only blanks since: of their lines only the last can still start a call
            nl = text.rfind("\n", self.line_pos, bound)
            if nl >= 0:
                return nl + 1
            at_line_start = self.line_pos == 0 or text[self.line_pos - 1] == "\n"
            return self.line_pos if at_line_start else bound
        nl = text.rfind("\n", self.line_pos, last - 1)
        line = nl + 1 if nl >= 0 else self.line_pos
        m = _LINE_JSON.match(text, line, bound)
        if m and m.end() == last:  # its `[` / `{` is the last character so far: undecided
            return line
        nl = text.find("\n", last, bound)  # lines after it hold only blanks so far
        return nl + 1 if nl >= 0 else bound

    def _ink_end(self, text: str, bound: int) -> int:
        """Just after the last character before ``bound`` that is not a space (0: none),
        searching only what the last call did not: a run of blanks is not walked again."""
        if bound < self.ink_checked:  # the bound moved back (a fence now holds text back)
            self.ink_checked, self.ink_end = 0, 0
        kept = len(text[self.ink_checked:bound].rstrip())
        if kept:
            self.ink_end = self.ink_checked + kept
        self.ink_checked = bound
        return self.ink_end
