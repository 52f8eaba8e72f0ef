"""OpenAI-compatible HTTP API (and llama-server's /tokenize, /detokenize), as a blueprint.

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` run through the same
model workers and queues as the chat page; ``stream: true`` answers with server-sent
events. Tool schemas from the client are rendered into the prompt (when the model's
template supports tools) and the calls the model writes, tagged or as bare or fenced JSON
(:mod:`assistant.toolcalls`), come back as ``tool_calls``; the client runs them.
``response_format`` and ``tool_choice: required`` are enforced while sampling
(:mod:`assistant.core.json_constraint`). Requests are validated in
:mod:`assistant.openai_request`, answers shaped in :mod:`assistant.openai_output`.
"""

from __future__ import annotations

import dataclasses

import base64
import time
from typing import Any, Callable, Iterator

import numpy as np
from flask import Blueprint, Response, jsonify

from .chat import ChatSettings, Message
from .config import ModelEntry
from .core.tokenizer import TokenizerError
from .errors import ChatError
from .events import Event
from .http import ApiError, BadRequest, UnknownModel, json_body, messages_field
from .openai_output import ChatOutput, Choices, CompletionOutput, respond
from .openai_request import CHAT_KEYS, COMPLETION_KEYS, EMBEDDING_KEYS, Request
from .state import app_state
from .worker import Job, JobFn

bp = Blueprint("openai", __name__)
REQUEST_TIMEOUT_S = 600.0
MODEL_LOAD_WAIT_S = 120.0
MAX_EMBEDDING_INPUTS = 256
GENERATED = ("token", "done", "prompt")


def _entry(b: dict[str, Any]) -> ModelEntry:
    """The model a request names (default: the server's), by name or alias; 404 if unknown."""
    model = b.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    try:
        return app_state().entry(model)
    except UnknownModel as err:
        if model is None:
            raise  # the server's default is broken: not the client's model to find
        raise ApiError(str(err), 404, "model_not_found", "model") from None


def _submit(entry: ModelEntry, fn: JobFn) -> Job:
    """Queue ``fn`` on the model's worker (a full queue raises Busy: a 503)."""
    return app_state().manager.submit(entry.name, fn)


def _events(job: Job, kinds: tuple[str, ...]) -> Iterator[Event]:
    """The job's events of ``kinds``; its error becomes a ChatError, and leaving cancels it."""
    try:
        for ev in job.iter_events(REQUEST_TIMEOUT_S):
            if ev["type"] == "error":
                raise ChatError(ev.get("message", "the model failed"))
            if ev["type"] in kinds:
                yield ev
    finally:
        job.cancel()


class GenerateJob:
    """``r.n`` generations in the model's worker; each event carries its choice's ``index``."""

    def __init__(self, r: Request, messages: list[Message] | None, prompt: str) -> None:
        self.r = r
        self.messages = messages
        self.prompt = prompt

    def __call__(self, backend: Any, cancel: Callable[[], bool]) -> Iterator[Event]:
        n, tools = self.r.n, self.r.render_tools
        if n > 1 and self.messages is not None and hasattr(backend, "stream_parallel"):
            # n alternatives decoded as one batch, at close to the cost of one.
            yield from backend.stream_parallel(self.messages, tools, self.r.settings, n, cancel)
            return
        for i in range(n):
            s = self._settings(i)
            stream = backend.stream(self.messages, tools, s, cancel) if self.messages is not None \
                else backend.complete(self.prompt, s, cancel)
            for ev in stream:
                ev["index"] = i
                yield ev

    def _settings(self, i: int) -> ChatSettings:
        """Choice ``i``'s settings: a seed of its own, so the ``n`` answers differ but repeat."""
        s = self.r.settings
        if self.r.n == 1:
            return s
        return dataclasses.replace(s, sampling=s.sampling.for_choice(i))  # every other field kept, tools included


def _generate(entry: ModelEntry, r: Request, messages: list[Message] | None, prompt: str) -> Choices:
    job = _submit(entry, GenerateJob(r, messages, prompt))
    return Choices((int(ev.get("index", 0)), ev) for ev in _events(job, GENERATED))


@bp.get("/v1/models")
def models() -> Response:
    data = []
    for name, e in app_state().registry.models.items():
        for mid in [name, *e.aliases]:
            data.append({"id": mid, "object": "model", "created": 0, "owned_by": "assistant"})
    return jsonify({"object": "list", "data": data})


@bp.post("/v1/chat/completions")
def chat_completions() -> Response:
    b = json_body(CHAT_KEYS, "/v1/chat/completions")
    entry = _entry(b)
    messages = messages_field(b.get("messages"))
    r = Request(b, entry, chat=True)
    out = ChatOutput(entry.name, int(time.time()), r)
    return respond(out, _generate(entry, r, messages, ""))


@bp.post("/v1/completions")
def completions() -> Response:
    b = json_body(COMPLETION_KEYS, "/v1/completions")
    entry = _entry(b)
    prompt = b.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    r = Request(b, entry, chat=False)
    out = CompletionOutput(entry.name, int(time.time()), r, prompt)
    return respond(out, _generate(entry, r, None, prompt))


def _embedding_inputs(inputs: Any) -> list[Any]:
    """``input`` as a list of strings or token-id lists."""
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(isinstance(t, int) for t in inputs)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_EMBEDDING_INPUTS or not all(
            isinstance(x, str) and x or isinstance(x, list) and x and all(
                isinstance(t, int) and not isinstance(t, bool) for t in x) for x in inputs):
        raise ApiError(f"input must be a non-empty string, a list of token ids, or a list of up to "
                       f"{MAX_EMBEDDING_INPUTS} of either", param="input")
    return inputs


class EmbedJob:
    """Each input's pooled hidden state, in the model's worker."""

    def __init__(self, name: str, inputs: list[Any]) -> None:
        self.name = name
        self.inputs = inputs

    def __call__(self, backend: Any, cancel: Callable[[], bool]) -> Iterator[Event]:
        model = getattr(backend, "model", None)
        if model is None or not hasattr(model, "net"):
            raise ChatError(f"model {self.name!r} has no local weights to embed with")
        for i, x in enumerate(self.inputs):
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
            yield {"type": "embedding", "index": i, "vector": model.net.pooled_hidden(np.asarray(ids, dtype=np.int32)),
                   "tokens": len(ids)}
        yield {"type": "done"}


@bp.post("/v1/embeddings")
def embeddings() -> Response:
    b = json_body(EMBEDDING_KEYS, "/v1/embeddings")
    entry = _entry(b)
    inputs = _embedding_inputs(b.get("input"))
    fmt = b.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError("encoding_format must be float or base64", param="encoding_format")
    dims = b.get("dimensions")
    data = []
    used = 0
    for ev in _events(_submit(entry, EmbedJob(entry.name, inputs)), ("embedding", "done")):
        if ev["type"] == "done":
            break
        vec = ev["vector"]
        if dims is not None and dims != vec.shape[0]:
            raise ApiError(f"dimensions: this model's embeddings have {vec.shape[0]} dimensions, "
                           f"got {dims!r}", param="dimensions")
        used += ev["tokens"]
        emb: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode() if fmt == "base64"
                    else [float(v) for v in vec])
        data.append({"object": "embedding", "index": ev["index"], "embedding": emb})
    return jsonify({"object": "list", "data": data, "model": entry.name,
                    "usage": {"prompt_tokens": used, "total_tokens": used}})


def _local_model(b: dict[str, Any]) -> Any:
    """The loaded local model a request names (waiting for it to load)."""
    entry = _entry(b)
    w = app_state().manager.worker(entry.name)
    deadline = time.monotonic() + MODEL_LOAD_WAIT_S
    while w.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    if w.state != "ready" or not hasattr(w.backend, "model"):
        raise BadRequest(f"model {entry.name!r} is not available: {w.load_error or w.state}")
    return w.backend.model


@bp.post("/tokenize")
def tokenize() -> Response:
    b = json_body({"model", "content", "add_special", "parse_special", "with_pieces"}, "/tokenize")
    content = b.get("content")
    if not isinstance(content, str):
        raise BadRequest("content must be a string")
    model = _local_model(b)
    ids = model.tokenize(content, add_special=bool(b.get("add_special", False)),
                         parse_special=bool(b.get("parse_special", True)))
    if b.get("with_pieces"):
        return jsonify({"tokens": [{"id": i, "piece": model.token_text(i)} for i in ids]})
    return jsonify({"tokens": ids})


@bp.post("/detokenize")
def detokenize() -> Response:
    b = json_body({"model", "tokens"}, "/detokenize")
    tokens = b.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise BadRequest("tokens must be a list of integers")
    model = _local_model(b)
    try:
        return jsonify({"content": model.detokenize(tokens)})
    except TokenizerError as err:
        raise BadRequest(str(err)) from None
