"""Events in OpenAI's shapes: a whole ``chat.completion`` / ``text_completion``, or its
server-sent-event chunks. One method makes each kind of chunk (:meth:`ChatOutput.chunk`,
:meth:`CompletionOutput.body`); the token usage is summed once, as the events pass
(:class:`Choices`)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterator

from flask import Response, jsonify, stream_with_context

from .errors import ChatError
from .events import Alternative, Event
from .openai_request import Request, tool_name
from .toolcalls import ToolCall, VisibleEnd, parse_tool_calls, syntax_markers

FINISH_REASONS = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop",
                  "tool_calls": "tool_calls"}
Entry = dict[str, Any]


def finish_reason(reason: str | None) -> str:
    return FINISH_REASONS.get(reason or "stop", "stop")


class Choices:
    """A request's events as (choice index, event), summing the token usage as they pass."""

    def __init__(self, events: Iterator[tuple[int, Event]]) -> None:
        self._events = events
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __iter__(self) -> Iterator[tuple[int, Event]]:
        for idx, ev in self._events:
            if ev["type"] == "done":
                st = ev.get("stats", {})
                self.prompt_tokens = int(st.get("prompt_tokens", 0))  # the same prompt for every choice
                self.completion_tokens += int(st.get("generated_tokens", 0))
            yield idx, ev

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def respond(out: "ChatOutput | CompletionOutput", choices: Choices) -> Response:
    return sse(out.chunks(choices)) if out.r.stream else jsonify(out.response(choices))


def sse(chunks: Iterator[dict[str, Any]]) -> Response:
    def gen() -> Iterator[str]:
        try:
            for c in chunks:
                yield "data: " + json.dumps(c, ensure_ascii=False) + "\n\n"
        except ChatError as err:
            yield "data: " + json.dumps({"error": {"message": str(err), "type": "invalid_request_error"}}) + "\n\n"
        yield "data: [DONE]\n\n"

    resp = Response(stream_with_context(gen()), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def logprob_entry(ev: Event, top: int) -> Entry:
    """A chat ``logprobs.content`` entry from a token event, with at most ``top`` alternatives."""
    raw = bytes(ev.get("bytes", b""))
    alts: list[Alternative] = ev.get("top_logprobs", [])[:top]
    return {"token": raw.decode("utf-8", errors="replace") if raw else ev.get("text", ""),
            "logprob": ev.get("logprob", 0.0), "bytes": list(raw),
            "top_logprobs": [{"token": a["token"], "logprob": a["logprob"], "bytes": a["bytes"]} for a in alts]}


def collect(choices: Choices, n: int, prompt: str, entry: Callable[[Event], Entry]
            ) -> tuple[list[str], list[str], list[list[Entry]]]:
    """Whole answers from events: (texts, finish reasons, logprob entries)."""
    texts = [""] * n
    finish = ["stop"] * n
    entries: list[list[Entry]] = [[] for _ in range(n)]
    for idx, ev in choices:
        if ev["type"] == "prompt":  # echo: the prompt and its tokens come first
            texts[idx] = prompt + texts[idx]
            entries[idx] = list(ev["tokens"]) + entries[idx]
        elif ev["type"] == "token":
            texts[idx] += ev["text"]
            if "logprob" in ev:
                entries[idx].append(entry(ev))
        elif ev["type"] == "done":
            finish[idx] = finish_reason(ev["finish_reason"])
    return texts, finish, entries


def openai_calls(calls: list[ToolCall], parallel: bool) -> list[dict[str, Any]]:
    good = [c for c in calls if not c.error]
    if not parallel:
        good = good[:1]
    return [{"id": "call_" + uuid.uuid4().hex[:16], "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in good]


class ChatOutput:
    """Chat events as one ``chat.completion`` or as ``chat.completion.chunk`` deltas."""

    def __init__(self, model: str, created: int, r: Request) -> None:
        self.cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = created
        self.model = model
        self.r = r
        self.markers = syntax_markers() if r.render_tools else []
        self.names = {tool_name(t) for t in r.tools or []}

    def _calls(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if not self.r.render_tools:
            return text, []
        content, calls = parse_tool_calls(text, self.names, self.markers)
        out = openai_calls(calls, self.r.parallel)
        return (content, out) if out else (text, [])

    def _entry(self, ev: Event) -> Entry:
        return logprob_entry(ev, self.r.top)

    def response(self, choices: Choices) -> dict[str, Any]:
        n = self.r.n
        texts, finish, lps = collect(choices, n, "", self._entry)
        out = []
        for i in range(n):
            content, calls = self._calls(texts[i])
            msg: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
            if calls:
                msg["tool_calls"] = calls
                finish[i] = "tool_calls"
            out.append({"index": i, "message": msg, "finish_reason": finish[i],
                        "logprobs": {"content": lps[i]} if self.r.want_logprobs else None})
        return {"id": self.cid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": out, "usage": choices.usage()}

    def chunk(self, idx: int | None, delta: dict[str, Any], fr: str | None = None,
              logprobs: list[Entry] | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        """The one place a ``chat.completion.chunk`` is made (``idx`` None: the usage chunk)."""
        c: dict[str, Any] = {"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "choices": [] if idx is None else [
                                 {"index": idx, "delta": delta, "finish_reason": fr,
                                  "logprobs": {"content": logprobs} if logprobs is not None else None}]}
        if self.r.include_usage:
            c["usage"] = usage
        return c

    def chunks(self, choices: Choices) -> Iterator[dict[str, Any]]:
        streams = [_ChatStream(self, i) for i in range(self.r.n)]
        for idx, ev in choices:
            yield from streams[idx].add(ev)
        if self.r.include_usage:
            yield self.chunk(None, {}, usage=choices.usage())


class _ChatStream:
    """One choice's chunks: text as it becomes visible, tool calls once decided, then the finish."""

    def __init__(self, out: ChatOutput, idx: int) -> None:
        self.out = out
        self.idx = idx
        self.started = False
        self.text = ""
        self.sent = 0
        self.pending: list[Entry] = []  # logprobs of text not sent yet
        self.held = VisibleEnd(out.markers) if out.r.render_tools else None

    def add(self, ev: Event) -> Iterator[dict[str, Any]]:
        out, r = self.out, self.out.r
        if not self.started:
            self.started = True
            yield out.chunk(self.idx, {"role": "assistant", "content": ""})
        if ev["type"] == "token":
            self.text += ev["text"]
            if r.want_logprobs and "logprob" in ev:
                self.pending.append(out._entry(ev))
            # Text that may still become a tool call is held back until it is decided.
            end = self.held.update(self.text) if self.held is not None else len(self.text)
            if end > self.sent:
                piece, self.sent = self.text[self.sent:end], end
                yield out.chunk(self.idx, {"content": piece}, None, self._take())
        elif ev["type"] == "done":
            yield from self._finish(finish_reason(ev["finish_reason"]))

    def _finish(self, fr: str) -> Iterator[dict[str, Any]]:
        out = self.out
        _content, calls = out._calls(self.text)
        for k, c in enumerate(calls):
            yield out.chunk(self.idx, {"tool_calls": [{"index": k, "id": c["id"], "type": "function", "function": {
                "name": c["function"]["name"], "arguments": ""}}]})
            yield out.chunk(self.idx, {"tool_calls": [{"index": k, "function": {
                "arguments": c["function"]["arguments"]}}]})
        if calls:
            fr = "tool_calls"
        elif self.sent < len(self.text):
            yield out.chunk(self.idx, {"content": self.text[self.sent:]}, None, self._take())
        yield out.chunk(self.idx, {}, fr, self._take() if self.pending else None)

    def _take(self) -> list[Entry] | None:
        if not self.out.r.want_logprobs:
            return None
        taken, self.pending = self.pending, []
        return taken


class CompletionOutput:
    """Completion events as one ``text_completion`` or as streamed chunks (legacy logprobs)."""

    def __init__(self, model: str, created: int, r: Request, prompt: str) -> None:
        self.cid = "cmpl-" + uuid.uuid4().hex[:24]
        self.created = created
        self.model = model
        self.r = r
        self.prompt = prompt

    def _entry(self, ev: Event) -> Entry:
        return logprob_entry(ev, self.r.top)

    def _logprobs(self, entries: list[Entry], offset: int) -> dict[str, Any]:
        """OpenAI's legacy shape: parallel lists, and each position's alternatives as a dict."""
        tokens, lps, tops, offsets = [], [], [], []
        pos = offset
        for e in entries:
            tokens.append(e["token"])
            lps.append(e["logprob"])
            tops.append({a["token"]: a["logprob"] for a in e.get("top_logprobs", [])[: self.r.top]})
            offsets.append(pos)
            pos += len(e["token"])
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def body(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None,
             chunk: bool = False) -> dict[str, Any]:
        """The one place a ``text_completion`` (whole, or a streamed chunk) is made."""
        out = {"id": self.cid, "object": "text_completion", "created": self.created, "model": self.model,
               "choices": choices}
        if not chunk or self.r.include_usage:
            out["usage"] = usage
        return out

    def response(self, choices: Choices) -> dict[str, Any]:
        n = self.r.n
        texts, finish, entries = collect(choices, n, self.prompt, self._entry)
        return self.body([{"index": i, "text": texts[i], "finish_reason": finish[i],
                           "logprobs": self._logprobs(entries[i], 0) if self.r.want_logprobs else None}
                          for i in range(n)], choices.usage())

    def chunks(self, choices: Choices) -> Iterator[dict[str, Any]]:
        offsets = [0] * self.r.n
        for idx, ev in choices:
            text, fr, lp = self._piece(ev, offsets[idx])
            offsets[idx] += len(text)
            if text or fr or lp:
                yield self.body([{"index": idx, "text": text, "finish_reason": fr, "logprobs": lp}], chunk=True)
        if self.r.include_usage:
            yield self.body([], choices.usage(), chunk=True)

    def _piece(self, ev: Event, offset: int) -> tuple[str, str | None, dict[str, Any] | None]:
        """(text, finish reason, logprobs) of one streamed event."""
        want = self.r.want_logprobs
        if ev["type"] == "prompt":
            return self.prompt, None, self._logprobs(ev["tokens"], 0) if want else None
        if ev["type"] == "token":
            lp = self._logprobs([self._entry(ev)], offset) if want and "logprob" in ev else None
            return ev.get("text", ""), None, lp
        return ev.get("text", ""), finish_reason(ev.get("finish_reason")), None
