"""The ``openai`` backend: chat through a remote OpenAI-compatible server.

A models.toml entry with ``backend = "openai"``, ``base_url`` and ``model`` (and optionally
``api_key_env``, the *name* of an environment variable holding the key) streams from
llama.cpp's llama-server, vLLM, Ollama or another assistant. Keys are read from the
environment at request time and never stored or logged.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

from assistant.errors import ChatError
from assistant.hookspecs import hookimpl

# A remote answer may take at most this many times the entry's `timeout` in total, so a
# server that drips a byte now and then cannot hold a request forever.
TOTAL_TIMEOUT_FACTOR = 4


def _count(usage: dict[str, Any], key: str) -> int:
    """A token count from the server's ``usage``; 0 when absent or not a count."""
    v = usage.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


class OpenAIBackend:
    kind = "openai"

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.name = entry.name
        self.base = entry.base_url.rstrip("/")
        # "http://host:port/v1" (how OpenAI's client, vLLM and llama-server write it) and
        # "http://host:port" both mean the same server.
        self.api = self.base if self.base.endswith("/v1") else self.base + "/v1"
        self.n_ctx = entry.context_length

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.entry.api_key_env:
            key = os.environ.get(self.entry.api_key_env, "")
            if not key:
                raise ChatError(f"model {self.name!r}: the environment variable {self.entry.api_key_env} is not set")
            h["Authorization"] = f"Bearer {key}"
        return h

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
              settings: Any) -> dict[str, Any]:
        s = settings.sampling
        body: dict[str, Any] = {"model": self.entry.remote_model or self.name, "messages": messages, "stream": True,
                                "max_tokens": settings.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
                                "stream_options": {"include_usage": True}}
        if s.seed >= 0:
            body["seed"] = s.seed
        if settings.stop:
            body["stop"] = settings.stop
        if tools:
            body["tools"] = tools
        if getattr(settings, "json_schema", None) is not None:  # the upstream server enforces it
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer",
                                                                              "schema": settings.json_schema}}
        return body

    def _open(self, body: dict[str, Any], timeout: float) -> Any:
        req = urllib.request.Request(self.api + "/chat/completions", data=json.dumps(body).encode(),
                                     headers=self._headers(), method="POST")
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            detail = err.read(2000).decode("utf-8", "replace")
            if err.code == 401:
                raise ChatError(f"{self.base} refused the API key (401)") from None
            raise ChatError(f"{self.base} answered {err.code}: {detail[:300]}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ChatError(f"cannot reach {self.base}: {getattr(err, 'reason', err)}") from None

    def _chunks(self, resp: Any, cancel: Callable[[], bool] | None, timeout: float,
                deadline: float) -> Iterator[dict[str, Any] | None]:
        """The stream's JSON chunks up to ``[DONE]``; None (then nothing) once ``cancel`` says so."""
        for raw in resp:
            if cancel is not None and cancel():
                yield None
                return
            if time.monotonic() > deadline:
                raise ChatError(f"{self.base} is answering too slowly; gave up after "
                                f"{timeout * TOTAL_TIMEOUT_FACTOR:g} s")
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                obj = json.loads(data)
            except json.JSONDecodeError:
                raise ChatError(f"{self.base} sent a malformed stream") from None
            if "error" in obj:
                raise ChatError(f"{self.base}: {obj['error'].get('message', obj['error'])}")
            yield obj

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, settings: Any,
               cancel: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
        timeout = float(getattr(self.entry, "timeout", 60))
        deadline = time.monotonic() + timeout * TOTAL_TIMEOUT_FACTOR
        resp = self._open(self._body(messages, tools, settings), timeout)
        finish = "stop"
        generated = 0
        usage: dict[str, Any] = {}  # the server's own token counts, when it sends them
        try:
            for obj in self._chunks(resp, cancel, timeout, deadline):
                if obj is None:
                    finish = "cancelled"  # closing the response below closes the remote request
                    break
                if isinstance(obj.get("usage"), dict):
                    usage = obj["usage"]
                for ch in obj.get("choices", []):
                    text = (ch.get("delta") or {}).get("content") or ""
                    if text:
                        generated += 1
                        yield {"type": "token", "text": text}
                    if ch.get("finish_reason"):
                        finish = ch["finish_reason"]
        except (TimeoutError, OSError) as err:
            raise ChatError(f"{self.base} stopped answering ({err})") from None
        finally:
            resp.close()
        yield {"type": "done", "finish_reason": finish,
               "stats": {"prompt_tokens": float(_count(usage, "prompt_tokens")),
                         "generated_tokens": float(_count(usage, "completion_tokens") or generated), "prefill_s": 0.0,
                         "decode_s": 0.0, "n_ctx": float(self.n_ctx)}}

    def complete(self, prompt: str, settings: Any, cancel: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
        yield from self.stream([{"role": "user", "content": prompt}], None, settings, cancel)


@hookimpl
def register_backends(register):
    register("openai", OpenAIBackend)
