"""OpenAI-compatible HTTP API (and llama-server's /tokenize, /detokenize).

``/v1/chat/completions`` and ``/v1/completions`` run through the same model workers and
queues as the chat page; ``stream: true`` answers with server-sent events. Tool schemas
from the client are rendered into the prompt (when the model's template supports tools)
and tool calls the model writes come back as ``tool_calls``; the client runs them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flask import Flask, Response, jsonify, request, stream_with_context

from .chat import ChatError, ChatSettings, merged_sampling
from .core.sampling import SamplingSettings
from .core.tokenizer import TokenizerError
from .tools import parse_tool_calls
from .worker import Busy

if TYPE_CHECKING:
    from .server import AppState

REQUEST_TIMEOUT_S = 600.0


def register_openai_routes(app: Flask, state: "AppState") -> None:
    from .server import MAX_N, MAX_TOKENS_LIMIT, BadRequest, _int, _messages, _openai_error, _sampling_overrides, _stop_list

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    def settings_from(b: dict[str, Any], entry: Any) -> ChatSettings:
        try:
            sampling = merged_sampling(entry, _sampling_overrides(b))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        max_tokens = _int(b, "max_completion_tokens" if "max_completion_tokens" in b else "max_tokens",
                          entry.max_tokens, 1, MAX_TOKENS_LIMIT)
        top = 0
        if b.get("logprobs"):
            top = _int(b, "top_logprobs", 1, 0, 20) or 1
        return ChatSettings(max_tokens=max_tokens, sampling=sampling, stop=_stop_list(b.get("stop")),
                            logprobs=top, context_policy="error")

    def run_job(model: str, fn: Callable[[Any, Callable[[], bool]], Iterator[dict[str, Any]]]) -> Any:
        try:
            return state.manager.submit(model, fn)
        except Busy as err:
            raise _BusyError(str(err)) from None

    @app.errorhandler(_BusyError)
    def busy(err: "_BusyError") -> Response:
        resp = _openai_error(str(err), 503, "server_busy")
        resp.headers["Retry-After"] = "2"
        return resp

    @app.get("/v1/models")
    def models() -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "assistant"}
                for name in state.registry.models]
        return jsonify({"object": "list", "data": data})

    def _gen_events(b: dict[str, Any], entry: Any, settings: ChatSettings, messages: list[dict[str, Any]] | None,
                    prompt: str | None, n: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Run ``n`` generations in the model's worker; yield (choice index, event)."""
        tools = b.get("tools") if isinstance(b.get("tools"), list) else None
        seed = settings.sampling.seed

        def job(backend: Any, cancel: Callable[[], bool]) -> Iterator[dict[str, Any]]:
            if n > 1 and messages is not None and hasattr(backend, "stream_parallel"):
                # n alternatives decoded as one batch, at close to the cost of one.
                yield from backend.stream_parallel(messages, tools, settings, n, cancel)
                return
            for i in range(n):
                s = settings
                if n > 1:
                    d = s.sampling.as_dict()
                    d["seed"] = (seed + i) if seed >= 0 else -1
                    s = ChatSettings(max_tokens=s.max_tokens, sampling=SamplingSettings(**d), stop=s.stop,
                                     logprobs=s.logprobs, context_policy=s.context_policy)
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
                if ev["type"] in ("token", "done"):
                    yield int(ev.get("index", 0)), ev
        finally:
            j.cancel()

    def _entry(b: dict[str, Any]) -> Any:
        model = b.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest("model must be a string")
        # Clients often send a name of their own ("gpt-4o"): serve it with the default model.
        return state.entry(model if model in state.registry.models else None)

    @app.post("/v1/chat/completions")
    def chat_completions() -> Response:
        b = body()
        entry = _entry(b)
        messages = _messages(b.get("messages"))
        settings = settings_from(b, entry)
        n = _int(b, "n", 1, 1, MAX_N)
        if b.get("tools") is not None and not isinstance(b.get("tools"), list):
            raise BadRequest("tools must be a list")
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        events = _gen_events(b, entry, settings, messages, None, n)
        if b.get("stream"):
            return _sse(_chat_chunks(events, cid, created, entry.name, n, bool(b.get("tools"))))
        return _chat_response(events, cid, created, entry.name, n, bool(b.get("tools")), settings.logprobs > 0)

    @app.post("/v1/completions")
    def completions() -> Response:
        b = body()
        entry = _entry(b)
        prompt = b.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        settings = settings_from(b, entry)
        n = _int(b, "n", 1, 1, MAX_N)
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        events = _gen_events(b, entry, settings, None, prompt, n)
        if b.get("stream"):
            def chunks() -> Iterator[dict[str, Any]]:
                for idx, ev in events:
                    text = ev.get("text", "") if ev["type"] == "token" else ""
                    fr = ev.get("finish_reason") if ev["type"] == "done" else None
                    if ev["type"] == "done" and ev.get("text"):
                        text = ev["text"]
                    if text or fr:
                        yield {"id": cid, "object": "text_completion", "created": created, "model": entry.name,
                               "choices": [{"index": idx, "text": text, "finish_reason": _finish(fr) if fr else None,
                                            "logprobs": None}]}
            return _sse(chunks())
        texts = [""] * n
        finish = ["stop"] * n
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for idx, ev in events:
            if ev["type"] == "token":
                texts[idx] += ev["text"]
            else:
                finish[idx] = _finish(ev["finish_reason"])
                st = ev.get("stats", {})
                usage["prompt_tokens"] = int(st.get("prompt_tokens", 0))
                usage["completion_tokens"] += int(st.get("generated_tokens", 0))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return jsonify({"id": cid, "object": "text_completion", "created": created, "model": entry.name,
                        "choices": [{"index": i, "text": texts[i], "finish_reason": finish[i], "logprobs": None}
                                    for i in range(n)], "usage": usage})

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
        b = body()
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
        b = body()
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
        return _openai_error(str(err), 400)


class _BusyError(RuntimeError):
    pass


def _finish(reason: str | None) -> str:
    return {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop",
            "tool_calls": "tool_calls"}.get(reason or "stop", "stop")


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


def _tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    calls = [c for c in parse_tool_calls(text) if not c.error]
    if not calls:
        return text, []
    content = text[: text.find("<tool_call>")].strip()
    return content, [{"id": "call_" + uuid.uuid4().hex[:16], "type": "function",
                      "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                     for c in calls]


def _chat_response(events: Iterator[tuple[int, dict[str, Any]]], cid: str, created: int, model: str, n: int,
                   tools: bool, want_logprobs: bool) -> Response:
    texts = [""] * n
    finish = ["stop"] * n
    lps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for idx, ev in events:
        if ev["type"] == "token":
            texts[idx] += ev["text"]
            if want_logprobs and "logprob" in ev:
                lps[idx].append({"token": ev["text"], "logprob": ev["logprob"],
                                 "top_logprobs": [{"token_id": t, "logprob": lp} for t, lp in ev.get("top_logprobs", [])]})
        else:
            finish[idx] = _finish(ev["finish_reason"])
            st = ev.get("stats", {})
            usage["prompt_tokens"] = int(st.get("prompt_tokens", 0))
            usage["completion_tokens"] += int(st.get("generated_tokens", 0))
    choices = []
    for i in range(n):
        content, calls = _tool_calls(texts[i]) if tools else (texts[i], [])
        msg: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            msg["tool_calls"] = calls
            finish[i] = "tool_calls"
        choices.append({"index": i, "message": msg, "finish_reason": finish[i],
                        "logprobs": {"content": lps[i]} if want_logprobs else None})
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return jsonify({"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": choices, "usage": usage})


def _chat_chunks(events: Iterator[tuple[int, dict[str, Any]]], cid: str, created: int, model: str, n: int,
                 tools: bool) -> Iterator[dict[str, Any]]:
    def chunk(idx: int, delta: dict[str, Any], fr: str | None) -> dict[str, Any]:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": idx, "delta": delta, "finish_reason": fr, "logprobs": None}]}

    started = [False] * n
    texts = [""] * n
    sent = [0] * n
    for idx, ev in events:
        if not started[idx]:
            started[idx] = True
            yield chunk(idx, {"role": "assistant", "content": ""}, None)
        if ev["type"] == "token":
            texts[idx] += ev["text"]
            if tools and "<tool_call>" in texts[idx]:
                continue  # held back: returned as tool_calls at the end
            piece = texts[idx][sent[idx]:]
            sent[idx] = len(texts[idx])
            if piece:
                yield chunk(idx, {"content": piece}, None)
        else:
            fr = _finish(ev["finish_reason"])
            if tools:
                _content, calls = _tool_calls(texts[idx])
                if calls:
                    yield chunk(idx, {"tool_calls": [dict(c, index=k) for k, c in enumerate(calls)]}, None)
                    fr = "tool_calls"
            yield chunk(idx, {}, fr)
