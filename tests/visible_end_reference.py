"""The test oracle for toolcalls.VisibleEnd: visible_end as it was before it became
incremental, a scan of the whole text from 0 (kept apart so a bug in the incremental scan's
shared logic cannot hide behind itself)."""

from __future__ import annotations

from assistant.toolcalls import _FENCE_LANGS, _LINE_JSON, _NEXT_CHAR, DEFAULT_MARKERS, FENCE, _partial_suffix


def full_scan(text: str, markers: list[tuple[str, str]] | None = None) -> int:
    """How much of a partial answer can be shown: everything before anything that may
    still turn out to be a tool call (a marker, a fenced or line-start JSON value, or a
    partial marker or fence at the end)."""
    end = len(text)
    for open_, _close in markers or DEFAULT_MARKERS:
        pos = text.find(open_)
        end = min(end, pos if pos >= 0 else len(text) - _partial_suffix(text, open_))
    released: list[tuple[int, int]] = []  # fenced blocks that are plainly not calls (code)
    pos = 0
    while pos < end:
        fence = text.find(FENCE, pos)
        if fence < 0 or fence >= end:
            break
        nl = text.find("\n", fence + 3)
        body = text[nl + 1:].lstrip() if nl >= 0 else ""
        lang = text[fence + 3:nl].strip().lower() if nl >= 0 else ""
        if nl < 0 or (lang in _FENCE_LANGS and (not body or body[0] in "{[")):
            end = fence  # may be a fenced call: hold back until it is decided
            break
        close = text.find(FENCE, nl + 1)
        pos = close + 3 if close >= 0 else len(text)
        released.append((fence, pos))
    for m in _LINE_JSON.finditer(text, 0, end):
        if any(a <= m.start() < b for a, b in released):
            continue
        nxt = _NEXT_CHAR.match(text, m.end(), end)  # no copy of the rest: this runs per token
        if nxt and nxt.group(1) != ('"' if text[m.end() - 1] == "{" else "{"):
            continue  # plainly not a JSON call ("[1] a source", "{name}"): shown as it streams
        end = m.start()
        break
    return end - _partial_suffix(text[:end], FENCE)
