"""OpenAI-compatible HTTP API (and llama-server's /tokenize, /detokenize).

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` run through the same
model workers and queues as the chat page; ``stream: true`` answers with server-sent
events. Tool schemas from the client are rendered into the prompt (when the model's
template supports tools) and the calls the model writes, tagged or as bare or fenced JSON
(:mod:`assistant.toolcalls`), come back as ``tool_calls``; the client runs them.
``response_format`` and ``tool_choice: required`` are enforced while sampling
(:mod:`assistant.core.json_constraint`). Every request option either works or gets a 400
naming it; README's "OpenAI-compatible API" section lists them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from flask import Flask, Response, jsonify, request, stream_with_context

from .chat import ChatSettings, merged_sampling, parse_response_format
from .errors import ChatError
from .core.json_constraint import JsonSchemaError, check_schema
from .core.tokenizer import TokenizerError
from .toolcalls import ToolCall, parse_tool_calls, syntax_markers, visible_end
from .worker import Busy

if TYPE_CHECKING:
    from .server import AppState

REQUEST_TIMEOUT_S = 600.0
MAX_EMBEDDING_INPUTS = 256

_SAMPLING_KEYS = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n",
                  "frequency_penalty", "presence_penalty", "seed", "sampling"}
_COMMON_KEYS = _SAMPLING_KEYS | {"model", "stream", "stream_options", "n", "stop", "max_tokens", "user"}
CHAT_KEYS = _COMMON_KEYS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools",
                            "tool_choice", "parallel_tool_calls", "response_format"}
COMPLETION_KEYS = _COMMON_KEYS | {"prompt", "logprobs", "echo", "response_format"}
EMBEDDING_KEYS = {"model", "input", "encoding_format", "dimensions", "user"}


class ApiError(ValueError):
    """A 4xx in OpenAI's shape with its ``code`` and ``param``."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def _error(message: str, status: int, etype: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> Response:
    resp = jsonify({"error": {"message": message, "type": etype, "param": param, "code": code}})
    resp.status_code = status
    return resp


def _only_known(b: dict[str, Any], known: set[str], route: str) -> None:
    """Refuse options this server does not implement, naming them (never ignore silently)."""
    unknown = sorted(k for k, v in b.items() if k not in known and v is not None)  # null = not given
    if unknown:
        raise ApiError(f"{route} does not support the option {unknown[0]!r} here; supported: "
                       f"{', '.join(sorted(known))}", param=unknown[0])


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
        names = [_tool_name(t) for t in tools or []]
        if name not in names:
            raise ApiError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})",
                           param="tool_choice")
        return "named", name
    raise ApiError("tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": "
                   "{\"name\": ...}}", param="tool_choice")


def _tool_name(t: dict[str, Any]) -> str:
    fn = t.get("function") if isinstance(t, dict) else None
    return str(fn.get("name", "")) if isinstance(fn, dict) else ""


def _tools(b: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = b.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) and t.get("type", "function") == "function"
                                              and _tool_name(t) for t in tools):
        raise ApiError("tools must be a list of {\"type\": \"function\", \"function\": {\"name\": ...}}",
                       param="tools")
    return tools or None


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


def _openai_calls(calls: list[ToolCall], parallel: bool) -> list[dict[str, Any]]:
    good = [c for c in calls if not c.error]
    if not parallel:
        good = good[:1]
    return [{"id": "call_" + uuid.uuid4().hex[:16], "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in good]


def _logprob_entry(ev: dict[str, Any]) -> dict[str, Any]:
    """A chat ``logprobs.content`` entry from a token event."""
    raw = bytes(ev.get("bytes", b""))
    return {"token": raw.decode("utf-8", errors="replace") if raw else ev.get("text", ""),
            "logprob": ev.get("logprob", 0.0), "bytes": list(raw),
            "top_logprobs": [{"token": a["token"], "logprob": a["logprob"], "bytes": a["bytes"]}
                             for a in ev.get("top_logprobs", [])]}


class Request:
    """What one chat or completion request asks for, validated."""

    def __init__(self, b: dict[str, Any], entry: Any, chat: bool) -> None:
        from .server import MAX_N, MAX_TOKENS_LIMIT, BadRequest, _int, _sampling_overrides, _stop_list

        try:
            sampling = merged_sampling(entry, _sampling_overrides(b))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        key = "max_completion_tokens" if "max_completion_tokens" in b else "max_tokens"
        self.echo = bool(b.get("echo", False)) if not chat else False
        max_tokens = _int(b, key, entry.max_tokens, 0 if self.echo else 1, MAX_TOKENS_LIMIT)
        top = 0
        if chat:
            if b.get("logprobs") not in (None, True, False):
                raise ApiError("logprobs must be true or false", param="logprobs")
            if b.get("logprobs"):
                top = _int(b, "top_logprobs", 0, 0, 20)
                self.want_logprobs = True
            else:
                if b.get("top_logprobs") is not None:
                    raise ApiError("top_logprobs needs logprobs: true", param="top_logprobs")
                self.want_logprobs = False
        else:
            top = _int(b, "logprobs", 0, 0, 5) if b.get("logprobs") is not None else 0
            self.want_logprobs = b.get("logprobs") is not None
        self.n = _int(b, "n", 1, 1, MAX_N)
        self.stream = bool(b.get("stream", False))
        opts = b.get("stream_options")
        if opts is not None:
            if not self.stream:
                raise ApiError("stream_options needs stream: true", param="stream_options")
            if not isinstance(opts, dict) or any(k != "include_usage" for k in opts):
                raise ApiError("stream_options supports only include_usage", param="stream_options")
        self.include_usage = bool((opts or {}).get("include_usage", False))
        self.tools = _tools(b) if chat else None
        self.tool_mode, self.tool_name = _tool_choice(b, self.tools) if chat else ("none", "")
        pt = True if b.get("parallel_tool_calls") is None else b["parallel_tool_calls"]
        if not isinstance(pt, bool):
            raise ApiError("parallel_tool_calls must be true or false", param="parallel_tool_calls")
        self.parallel = pt
        try:
            schema = parse_response_format(b.get("response_format"))
        except ValueError as err:
            raise ApiError(str(err), param="response_format") from None
        if self.tool_mode in ("required", "named") and self.tools:
            schema = call_schema(self.tools, self.tool_name)
        # A logprobs request with top_logprobs 0 still needs each token's own logprob.
        self.settings = ChatSettings(max_tokens=max_tokens, sampling=sampling, stop=_stop_list(b.get("stop")),
                                     logprobs=max(top, 1) if self.want_logprobs else 0, context_policy="error",
                                     json_schema=schema, echo=self.echo)
        self.top = top

    @property
    def render_tools(self) -> list[dict[str, Any]] | None:
        return self.tools if self.tool_mode != "none" else None


def register_openai_routes(app: Flask, state: "AppState") -> None:
    from .server import BadRequest, _messages

    def body(known: set[str], route: str) -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        _only_known(data, known, route)
        return data

    def body_and_model(known: set[str], route: str) -> tuple[dict[str, Any], Any]:
        b = body(known, route)
        return b, _entry(b)

    def run_job(model: str, fn: Callable[[Any, Callable[[], bool]], Iterator[dict[str, Any]]]) -> Any:
        try:
            return state.manager.submit(model, fn)
        except Busy as err:
            raise _BusyError(str(err)) from None

    @app.errorhandler(_BusyError)
    def busy(err: "_BusyError") -> Response:
        resp = _error(str(err), 503, "server_busy")
        resp.headers["Retry-After"] = "2"
        return resp

    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> Response:
        return _error(str(err), err.status, param=err.param, code=err.code)

    @app.get("/v1/models")
    def models() -> Response:
        data = []
        for name, e in state.registry.models.items():
            for mid in [name, *e.aliases]:
                data.append({"id": mid, "object": "model", "created": 0, "owned_by": "assistant"})
        return jsonify({"object": "list", "data": data})

    def _gen_events(entry: Any, r: Request, messages: list[dict[str, Any]] | None,
                    prompt: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
        """Run ``r.n`` generations in the model's worker; yield (choice index, event)."""
        n = r.n
        settings = r.settings
        tools = r.render_tools
        seed = settings.sampling.seed

        def job(backend: Any, cancel: Callable[[], bool]) -> Iterator[dict[str, Any]]:
            if n > 1 and messages is not None and hasattr(backend, "stream_parallel"):
                # n alternatives decoded as one batch, at close to the cost of one.
                yield from backend.stream_parallel(messages, tools, settings, n, cancel)
                return
            for i in range(n):
                s = settings
                if n > 1:
                    sp = s.sampling.copy()
                    sp.seed = (seed + i) if seed >= 0 else -1
                    s = ChatSettings(max_tokens=s.max_tokens, sampling=sp, stop=s.stop, logprobs=s.logprobs,
                                     context_policy=s.context_policy, json_schema=s.json_schema, echo=s.echo)
                if messages is not None:
                    stream = backend.stream(messages, tools, s, cancel)
                else:
                    stream = backend.complete(prompt or "", s, cancel)
                for ev in stream:
                    ev["index"] = i
                    yield ev

        j = run_job(entry.name, job)
        try:
            for ev in j.iter_events(REQUEST_TIMEOUT_S):
                if ev["type"] == "error":
                    raise ChatError(ev["message"])
                if ev["type"] in ("token", "done", "prompt"):
                    yield int(ev.get("index", 0)), ev
        finally:
            j.cancel()

    def _entry(b: dict[str, Any]) -> Any:
        model = b.get("model")
        if model is None:
            return state.entry(None)
        if not isinstance(model, str):
            raise BadRequest("model must be a string")
        name = state.registry.resolve(model)
        if name is None:
            raise ApiError(f"The model {model!r} does not exist; available: "
                           f"{', '.join(sorted(state.registry.models))} (models.toml may declare aliases)",
                           404, "model_not_found", "model")
        return state.entry(name)

    @app.post("/v1/chat/completions")
    def chat_completions() -> Response:
        b, entry = body_and_model(CHAT_KEYS, "/v1/chat/completions")
        messages = _messages(b.get("messages"))
        r = Request(b, entry, chat=True)
        out = _ChatOutput("chatcmpl-" + uuid.uuid4().hex[:24], int(time.time()), entry.name, r)
        return _respond(out, r, _gen_events(entry, r, messages, None))

    @app.post("/v1/completions")
    def completions() -> Response:
        b, entry = body_and_model(COMPLETION_KEYS, "/v1/completions")
        prompt = b.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        r = Request(b, entry, chat=False)
        out = _CompletionOutput("cmpl-" + uuid.uuid4().hex[:24], int(time.time()), entry.name, r, prompt)
        return _respond(out, r, _gen_events(entry, r, None, prompt))

    @app.post("/v1/embeddings")
    def embeddings() -> Response:
        b, entry = body_and_model(EMBEDDING_KEYS, "/v1/embeddings")
        inputs = b.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(isinstance(t, int) for t in inputs)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_EMBEDDING_INPUTS or not all(
                isinstance(x, str) and x or isinstance(x, list) and x and all(
                    isinstance(t, int) and not isinstance(t, bool) for t in x) for x in inputs):
            raise ApiError(f"input must be a non-empty string, a list of token ids, or a list of up to "
                           f"{MAX_EMBEDDING_INPUTS} of either", param="input")
        fmt = b.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError("encoding_format must be float or base64", param="encoding_format")

        def job(backend: Any, cancel: Callable[[], bool]) -> Iterator[dict[str, Any]]:
            model = getattr(backend, "model", None)
            if model is None or not hasattr(model, "net"):
                raise ChatError(f"model {entry.name!r} has no local weights to embed with")
            for i, x in enumerate(inputs):
                if cancel():
                    return
                try:
                    ids = model.tokenize(x, add_special=True) if isinstance(x, str) else [int(t) for t in x]
                    for t in ids:
                        model.tokenizer.check_id(t)
                except TokenizerError as err:
                    raise ChatError(f"input[{i}]: {err}") from None
                if len(ids) > model.n_ctx:
                    raise ChatError(f"input[{i}] has {len(ids)} tokens; the context holds {model.n_ctx}")
                vec = model.net.pooled_hidden(np.asarray(ids, dtype=np.int32))
                yield {"type": "embedding", "index": i, "vector": vec, "tokens": len(ids)}
            yield {"type": "done"}

        dims = b.get("dimensions")
        j = run_job(entry.name, job)
        data = []
        used = 0
        try:
            for ev in j.iter_events(REQUEST_TIMEOUT_S):
                if ev["type"] == "error":
                    raise ChatError(ev["message"])
                if ev["type"] == "embedding":
                    vec = ev["vector"]
                    if dims is not None and dims != vec.shape[0]:
                        raise ApiError(f"dimensions: this model's embeddings have {vec.shape[0]} dimensions, "
                                       f"got {dims!r}", param="dimensions")
                    used += ev["tokens"]
                    emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode() if fmt == "base64"
                                else [float(v) for v in vec])
                    data.append({"object": "embedding", "index": ev["index"], "embedding": emb})
                if ev["type"] == "done":
                    break
        finally:
            j.cancel()
        return jsonify({"object": "list", "data": data, "model": entry.name,
                        "usage": {"prompt_tokens": used, "total_tokens": used}})

    def _local_model(b: dict[str, Any]) -> Any:
        entry = _entry(b)
        w = state.manager.worker(entry.name)
        deadline = time.monotonic() + 120
        while w.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        if w.state != "ready" or not hasattr(w.backend, "model"):
            raise BadRequest(f"model {entry.name!r} is not available: {w.load_error or w.state}")
        return w.backend.model

    @app.post("/tokenize")
    def tokenize() -> Response:
        b = body({"model", "content", "add_special", "parse_special", "with_pieces"}, "/tokenize")
        content = b.get("content")
        if not isinstance(content, str):
            raise BadRequest("content must be a string")
        model = _local_model(b)
        ids = model.tokenize(content, add_special=bool(b.get("add_special", False)),
                             parse_special=bool(b.get("parse_special", True)))
        if b.get("with_pieces"):
            return jsonify({"tokens": [{"id": i, "piece": model.token_text(i)} for i in ids]})
        return jsonify({"tokens": ids})

    @app.post("/detokenize")
    def detokenize() -> Response:
        b = body({"model", "tokens"}, "/detokenize")
        tokens = b.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise BadRequest("tokens must be a list of integers")
        model = _local_model(b)
        try:
            return jsonify({"content": model.detokenize(tokens)})
        except TokenizerError as err:
            raise BadRequest(str(err)) from None

    @app.errorhandler(ChatError)
    def chat_error(err: ChatError) -> Response:
        return _error(str(err), 400)


class _BusyError(RuntimeError):
    pass


def _finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop",
            "tool_calls": "tool_calls"}.get(reason or "stop", "stop")


def _respond(out: "_ChatOutput | _CompletionOutput", r: Request,
             events: Iterator[tuple[int, dict[str, Any]]]) -> Response:
    return _sse(out.chunks(events)) if r.stream else jsonify(out.response(events))


def _sse(chunks: Iterator[dict[str, Any]]) -> Response:
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


class _Usage:
    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0

    def add(self, ev: dict[str, Any]) -> None:
        st = ev.get("stats", {})
        self.prompt = int(st.get("prompt_tokens", 0))
        self.completion += int(st.get("generated_tokens", 0))

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion}


def _collect(events: Iterator[tuple[int, dict[str, Any]]], n: int, prompt: str,
             entry: Callable[[dict[str, Any]], dict[str, Any]]
             ) -> tuple[list[str], list[str], list[list[dict[str, Any]]], _Usage]:
    """Whole answers from events: (texts, finish reasons, logprob entries, usage)."""
    texts = [""] * n
    finish = ["stop"] * n
    entries: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    usage = _Usage()
    for idx, ev in events:
        if ev["type"] == "prompt":  # echo: the prompt and its tokens come first
            texts[idx] = prompt + texts[idx]
            entries[idx] = list(ev["tokens"]) + entries[idx]
        elif ev["type"] == "token":
            texts[idx] += ev["text"]
            if "logprob" in ev:
                entries[idx].append(entry(ev))
        elif ev["type"] == "done":
            finish[idx] = _finish(ev["finish_reason"])
            usage.add(ev)
    return texts, finish, entries, usage


class _ChatOutput:
    """Chat events as one ``chat.completion`` or as ``chat.completion.chunk`` deltas."""

    def __init__(self, cid: str, created: int, model: str, r: Request) -> None:
        self.cid = cid
        self.created = created
        self.model = model
        self.r = r
        self.markers = syntax_markers() if r.render_tools else []
        self.names = {_tool_name(t) for t in r.tools or []}

    def _calls(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if not self.r.render_tools:
            return text, []
        content, calls = parse_tool_calls(text, self.names, self.markers)
        out = _openai_calls(calls, self.r.parallel)
        return (content, out) if out else (text, [])

    def response(self, events: Iterator[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        n = self.r.n
        texts, finish, lps, usage = _collect(events, n, "", self._entry)
        choices = []
        for i in range(n):
            content, calls = self._calls(texts[i])
            msg: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
            if calls:
                msg["tool_calls"] = calls
                finish[i] = "tool_calls"
            choices.append({"index": i, "message": msg, "finish_reason": finish[i],
                            "logprobs": {"content": lps[i]} if self.r.want_logprobs else None})
        return {"id": self.cid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": usage.as_dict()}

    def _entry(self, ev: dict[str, Any]) -> dict[str, Any]:
        e = _logprob_entry(ev)
        e["top_logprobs"] = e["top_logprobs"][: self.r.top]
        return e

    def _chunk(self, idx: int, delta: dict[str, Any], fr: str | None,
               logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
                             "model": self.model, "choices": [{"index": idx, "delta": delta, "finish_reason": fr,
                                                               "logprobs": {"content": logprobs}
                                                               if logprobs is not None else None}]}
        if self.r.include_usage:
            c["usage"] = None
        return c

    def chunks(self, events: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        n = self.r.n
        started = [False] * n
        texts = [""] * n
        sent = [0] * n
        pending: list[list[dict[str, Any]]] = [[] for _ in range(n)]  # logprobs of text not sent yet
        usage = _Usage()
        for idx, ev in events:
            if not started[idx]:
                started[idx] = True
                yield self._chunk(idx, {"role": "assistant", "content": ""}, None)
            if ev["type"] == "token":
                texts[idx] += ev["text"]
                if self.r.want_logprobs and "logprob" in ev:
                    pending[idx].append(self._entry(ev))
                # Text that may still become a tool call is held back until it is decided.
                end = visible_end(texts[idx], self.markers) if self.r.render_tools else len(texts[idx])
                if end > sent[idx]:
                    piece = texts[idx][sent[idx]:end]
                    sent[idx] = end
                    yield self._chunk(idx, {"content": piece}, None, self._take(pending, idx))
            elif ev["type"] == "done":
                usage.add(ev)
                fr = _finish(ev["finish_reason"])
                _content, calls = self._calls(texts[idx])
                if calls:
                    for k, c in enumerate(calls):
                        yield self._chunk(idx, {"tool_calls": [{"index": k, "id": c["id"], "type": "function",
                                                                "function": {"name": c["function"]["name"],
                                                                             "arguments": ""}}]}, None)
                        yield self._chunk(idx, {"tool_calls": [{"index": k, "function": {
                            "arguments": c["function"]["arguments"]}}]}, None)
                    fr = "tool_calls"
                elif sent[idx] < len(texts[idx]):
                    yield self._chunk(idx, {"content": texts[idx][sent[idx]:]}, None, self._take(pending, idx))
                yield self._chunk(idx, {}, fr, self._take(pending, idx) if pending[idx] else None)
        if self.r.include_usage:
            yield {"id": self.cid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                   "choices": [], "usage": usage.as_dict()}

    def _take(self, pending: list[list[dict[str, Any]]], idx: int) -> list[dict[str, Any]] | None:
        if not self.r.want_logprobs:
            return None
        out = pending[idx]
        pending[idx] = []
        return out


class _CompletionOutput:
    """Completion events as one ``text_completion`` or as streamed chunks (legacy logprobs)."""

    def __init__(self, cid: str, created: int, model: str, r: Request, prompt: str) -> None:
        self.cid = cid
        self.created = created
        self.model = model
        self.r = r
        self.prompt = prompt

    def _logprobs(self, entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
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

    def _body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.cid, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices}

    def response(self, events: Iterator[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        n = self.r.n
        texts, finish, entries, usage = _collect(events, n, self.prompt, _logprob_entry)
        out = self._body([{"index": i, "text": texts[i], "finish_reason": finish[i],
                           "logprobs": self._logprobs(entries[i], 0) if self.r.want_logprobs else None}
                          for i in range(n)])
        out["usage"] = usage.as_dict()
        return out

    def chunks(self, events: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        usage = _Usage()
        offsets = [0] * self.r.n
        for idx, ev in events:
            lp = None
            if ev["type"] == "prompt":
                text, fr = self.prompt, None
                if self.r.want_logprobs:
                    lp = self._logprobs(ev["tokens"], 0)
            elif ev["type"] == "token":
                text, fr = ev.get("text", ""), None
                if self.r.want_logprobs and "logprob" in ev:
                    lp = self._logprobs([_logprob_entry(ev)], offsets[idx])
            else:
                usage.add(ev)
                text, fr = ev.get("text", ""), _finish(ev.get("finish_reason"))
            offsets[idx] += len(text)
            if text or fr or lp:
                c = self._body([{"index": idx, "text": text, "finish_reason": fr, "logprobs": lp}])
                if self.r.include_usage:
                    c["usage"] = None
                yield c
        if self.r.include_usage:
            c = self._body([])
            c["usage"] = usage.as_dict()
            yield c
