"""The web server: the chat page, its websocket, the conversation API and an
OpenAI-compatible HTTP API, all built by :func:`create_app`.

Safety checks run in a ``before_request`` hook, so a refused client never reaches a view
(and never gets a websocket upgrade): the Host header must name this machine (DNS
rebinding), state-changing requests and the websocket must come from the served origin,
cross-site fetches are refused, and when an API key is configured every request but
``/health`` must present it.
"""

from __future__ import annotations

import hmac
import json
import os
import queue
import threading
import time
import uuid
from importlib import resources
from typing import Any, Callable, Iterator

from flask import Flask, Response, abort, g, jsonify, request, send_from_directory
from flask_sock import Sock

from .chat import ChatRunner, ChatSettings, merged_sampling, parse_response_format
from .errors import ChatError
from .config import ModelEntry, Registry, load_registry
from .core.tokenizer import TokenizerError
from .store import Store, StoreError, open_store, set_default_store
from .tools import parse_slash_command, registered_tools, run_tool
from .worker import Busy, ModelManager

MAX_BODY_BYTES = 1 << 20
MAX_WS_MESSAGE_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 100_000
MAX_MESSAGES = 500
MAX_TOKENS_LIMIT = 8192
MAX_N = 8
SAVE_EVERY_S = 1.0
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


class BadRequest(ValueError):
    """A client sent something invalid; becomes a 400 (or a websocket error message)."""


# ----------------------------------------------------------------------------- helpers

def web_dir() -> str:
    return str(resources.files("assistant.web"))


def _openai_error(message: str, status: int, etype: str = "invalid_request_error", param: str | None = None) -> Response:
    resp = jsonify({"error": {"message": message, "type": etype, "param": param, "code": None}})
    resp.status_code = status
    return resp


def _int(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"{key} must be an integer between {lo} and {hi}, got {v!r}")
    return v


def _sampling_overrides(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty",
            "presence_penalty", "seed", "repeat_last_n")
    out = {k: body[k] for k in keys if k in body and body[k] is not None}
    if isinstance(body.get("sampling"), dict):
        out.update(body["sampling"])
    return out


def _stop_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, list) and all(isinstance(s, str) for s in v) and len(v) <= 8:
        return [s for s in v if s]
    raise BadRequest("stop must be a string or a list of at most 8 strings")


def _messages(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not v:
        raise BadRequest("messages must be a non-empty list")
    if len(v) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages per request")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}] needs a role of system, user, assistant or tool")
        content = m.get("content", "")
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
        msg: dict[str, Any] = {"role": m["role"], "content": content}
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls_for_template(m["tool_calls"], i)
        out.append(msg)
    return out


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


def _same_origin(origin: str, scheme: str, server_port: str, allowed_hosts: set[str]) -> bool:
    """Whether ``origin`` is this server: our scheme, a loopback/bound host name, our port."""
    from urllib.parse import urlsplit

    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    names = {h.strip("[]") for h in allowed_hosts}
    return parts.scheme == scheme and host in names and str(port) == str(server_port)


class AppState:
    """What the views share: registry, model workers, store, options."""

    def __init__(self, registry: Registry, store: Store, manager: ModelManager, default_model: str,
                 api_key: str, allowed_hosts: set[str]) -> None:
        self.registry = registry
        self.store = store
        self.manager = manager
        self.default_model = default_model
        self.api_key = api_key
        self.allowed_hosts = allowed_hosts
        self._tools: dict[str, Any] | None = None
        self.sessions: set[WebsocketSession] = set()
        self.sessions_lock = threading.Lock()

    def broadcast(self, event: dict[str, Any], exclude: WebsocketSession | None = None) -> None:
        """Tell every open tab (but ``exclude``) about a change, e.g. another tab's new turn."""
        with self.sessions_lock:
            targets = [s for s in self.sessions if s is not exclude]
        for s in targets:
            s.notices.put(event)

    @property
    def tools(self) -> dict[str, Any]:
        if self._tools is None:
            self._tools = registered_tools()
        return self._tools

    def entry(self, name: str | None) -> ModelEntry:
        try:
            return self.registry.get(name or self.default_model)
        except KeyError as err:
            raise BadRequest(str(err.args[0])) from None


# ----------------------------------------------------------------------------- chat jobs

def chat_job(state: AppState, conv_id: str, entry: ModelEntry, settings: ChatSettings,
             parent: int | None = None) -> Callable[..., Iterator[dict[str, Any]]]:
    """A worker job that answers message ``parent`` (default: the active leaf) with the branch
    that leads to it as history, and saves the answer as its child.

    Saving happens here, in the worker, so a closed tab cannot leave a half-saved answer:
    the row is created ``partial``, rewritten whole about once a second, and marked
    ``complete`` (or stays ``partial`` when stopped, ``error`` on failure) at the end.
    """

    def run(backend: Any, cancel: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        store = state.store
        conv = store.get_conversation(conv_id)
        path = store.messages(conv_id) if parent is None else store.messages(conv_id, leaf=parent)
        history = [m for m in path if m["status"] != "error"]
        messages: list[dict[str, Any]] = []
        system = conv["system_prompt"] or entry.system_prompt
        if system:
            messages.append({"role": "system", "content": system})
        for m in history:
            if m["role"] in ("user", "assistant", "tool") and not (m["role"] == "assistant" and not m["content"]):
                messages.append({"role": m["role"], "content": m["content"]})
        mid = store.add_message(conv_id, "assistant", "", status="partial", model=entry.name,
                                sampling=settings.sampling.as_dict(),
                                parent_id=path[-1]["id"] if path else None)
        yield {"type": "start", "message_id": mid, "model": entry.name}
        text = ""
        last_save = time.monotonic()
        tool_events: list[dict[str, Any]] = []
        status = "partial"
        try:
            for ev in ChatRunner(backend, state.tools).run(messages, settings, cancel):
                if ev["type"] == "token":
                    text += ev["text"]
                    if time.monotonic() - last_save > SAVE_EVERY_S:
                        store.update_message(mid, content=text)
                        last_save = time.monotonic()
                    yield {"type": "token", "text": ev["text"]}
                elif ev["type"] in ("tool_call", "tool_result"):
                    tool_events.append({k: v for k, v in ev.items() if k != "type"} | {"kind": ev["type"]})
                    yield ev
                elif ev["type"] == "done":
                    st = ev.get("stats", {})
                    status = "stopped" if ev["finish_reason"] == "cancelled" else "complete"
                    text = ev.get("content", text) if status == "complete" else text
                    store.update_message(mid, content=text, status=status,
                                         tool_calls=tool_events or None,
                                         prompt_tokens=int(st.get("prompt_tokens", 0)),
                                         completion_tokens=int(st.get("generated_tokens", 0)),
                                         prefill_s=float(st.get("prefill_s", 0.0)),
                                         decode_s=float(st.get("decode_s", 0.0)))
                    yield {"type": "stats", **st}
                    yield {"type": "done", "finish_reason": ev["finish_reason"], "message_id": mid}
                else:
                    yield ev
        except ChatError as err:
            store.update_message(mid, content=text, status="error")
            yield {"type": "error", "message": str(err), "message_id": mid}
        except BaseException:
            store.update_message(mid, content=text, status="partial" if text else "error")
            raise

    return run


# ----------------------------------------------------------------------------- the app

def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app. ``config`` keys: REGISTRY, CONFIG_PATH, DB_PATH, DEFAULT_MODEL,
    API_KEY, HOST, PORT, QUEUE_CAP, BACKEND_FACTORIES, WS_PING_INTERVAL, WS_SEND_TIMEOUT."""
    cfg = dict(config or {})
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # A tab that stops answering pings (closed laptop lid, dead network, a client that never
    # reads) is disconnected after two intervals, which cancels its generation.
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": float(cfg.get("WS_PING_INTERVAL", 25)),
                                         "max_message_size": MAX_WS_MESSAGE_BYTES}
    send_timeout = float(cfg.get("WS_SEND_TIMEOUT", 30))
    registry: Registry = cfg.get("REGISTRY") or load_registry(cfg.get("CONFIG_PATH"))
    set_default_store(cfg.get("DB_PATH"))
    store = open_store()
    from .plugin_manager import get_plugins

    factories: dict[str, Any] = dict(cfg.get("BACKEND_FACTORIES") or {})
    get_plugins().call_safely("register_backends", register=lambda name, f: factories.setdefault(name, f))
    manager = ModelManager(registry, int(cfg.get("QUEUE_CAP", 8)), factories)
    host = str(cfg.get("HOST", "127.0.0.1"))
    allowed = {"localhost", "127.0.0.1", "[::1]", "::1"}
    if host not in ("0.0.0.0", "::"):
        allowed.add(host if ":" not in host or host.startswith("[") else f"[{host}]")
    api_key = str(cfg.get("API_KEY") or os.environ.get("ASSISTANT_API_KEY", ""))
    state = AppState(registry, store, manager, str(cfg.get("DEFAULT_MODEL") or registry.default), api_key, allowed)
    app.extensions["assistant"] = state
    sock = Sock()
    sock.init_app(app)

    # ------------------------------------------------------------------ guards
    @app.before_request
    def guard() -> Response | None:
        host_header = request.host or ""
        hostname = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        if hostname.lower() not in state.allowed_hosts:
            return _openai_error(f"host {host_header!r} is not allowed", 403, "forbidden")
        origin = request.headers.get("Origin")
        is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
        if origin is not None and (request.method in STATE_CHANGING or is_ws):
            if not _same_origin(origin, request.scheme, request.environ.get("SERVER_PORT", ""), state.allowed_hosts):
                return _openai_error(f"origin {origin!r} is not allowed", 403, "forbidden")
        if request.headers.get("Sec-Fetch-Site") == "cross-site" and (request.method in STATE_CHANGING or is_ws):
            return _openai_error("cross-site requests are not allowed", 403, "forbidden")
        if state.api_key and request.path != "/health" and not request.path.startswith("/static/") \
                and request.path != "/":
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
                or request.args.get("api_key", "")
            if not hmac.compare_digest(given.encode(), state.api_key.encode()):
                return _openai_error("a valid API key is required (Authorization: Bearer KEY)", 401,
                                     "authentication_error")
        return None

    @app.teardown_request
    def close_db(_exc: BaseException | None) -> None:
        # Each request runs on a fresh thread with its own SQLite connection; closing it
        # here (instead of leaving it to the dying thread) keeps a long-running server's
        # memory flat: the soak showed ~8 KB kept per conversation-listing request otherwise.
        store.close()

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if resp.mimetype == "text/html":
            resp.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        return resp

    @app.errorhandler(BadRequest)
    def bad_request(err: BadRequest) -> Response:
        return _openai_error(str(err), 400)

    @app.errorhandler(413)
    def too_large(_err: Any) -> Response:
        return _openai_error(f"request body larger than {MAX_BODY_BYTES} bytes", 413)

    @app.errorhandler(404)
    def not_found(_err: Any) -> Response:
        return _openai_error(f"no route {request.path}", 404, "not_found")

    @app.errorhandler(405)
    def not_allowed(_err: Any) -> Response:
        return _openai_error(f"{request.method} is not allowed on {request.path}", 405)

    @app.errorhandler(500)
    def internal(_err: Any) -> Response:
        return _openai_error("internal server error", 500, "server_error")

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    # ------------------------------------------------------------------ page
    @app.get("/")
    def index() -> Response:
        return send_from_directory(web_dir(), "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        return send_from_directory(web_dir(), name)

    @app.get("/health")
    def health() -> Response:
        st = manager.state(state.default_model)
        if st == "unloaded":
            try:
                manager.worker(state.default_model)
            except Exception:
                pass
            st = manager.state(state.default_model)
        code = 200 if st == "ready" else 503
        resp = jsonify({"status": "ok" if code == 200 else st, "model": state.default_model})
        resp.status_code = code
        return resp

    # ------------------------------------------------------------------ app API
    @app.get("/api/models")
    def api_models() -> Response:
        out = []
        for name, e in registry.models.items():
            out.append({"name": name, "description": e.description, "downloaded": e.downloaded,
                        "default": name == state.default_model, "backend": e.backend,
                        "state": manager.state(name), "prompt_format": e.prompt_format,
                        "context_length": e.context_length, "max_tokens": e.max_tokens,
                        "system_prompt": e.system_prompt, "sampling": e.sampling.as_dict(),
                        "tools": e.tools})
        return jsonify({"models": out, "errors": registry.errors, "default": state.default_model})

    @app.get("/api/tools")
    def api_tools() -> Response:
        return jsonify({"tools": [t.schema() for t in state.tools.values()]})

    @app.get("/api/conversations")
    def list_conversations() -> Response:
        q = request.args.get("q", "")
        return jsonify({"conversations": store.search(q) if q else store.list_conversations()})

    @app.post("/api/conversations")
    def new_conversation() -> Response:
        b = body()
        title = b.get("title", "New chat")
        if not isinstance(title, str):
            raise BadRequest("title must be a string")
        conv = store.create_conversation(title=title, model=str(b.get("model", "")),
                                         system_prompt=str(b.get("system_prompt", "")))
        return jsonify(conv)

    @app.get("/api/conversations/<cid>")
    def get_conversation(cid: str) -> Response:
        try:
            conv = store.get_conversation(cid)
            conv["messages"] = store.messages(cid)
        except StoreError as err:
            return _openai_error(str(err), 404, "not_found")
        return jsonify(conv)

    @app.patch("/api/conversations/<cid>")
    def patch_conversation(cid: str) -> Response:
        b = body()
        fields = {k: b[k] for k in ("title", "model", "system_prompt", "settings") if k in b}
        try:
            conv = store.update_conversation(cid, **fields)
        except StoreError as err:
            raise BadRequest(str(err)) from None
        state.broadcast({"type": "changed", "conversation_id": cid})
        return jsonify(conv)

    @app.post("/api/conversations/<cid>/select")
    def select_branch(cid: str) -> Response:
        """Make the branch through ``message_id`` active; returns the conversation."""
        mid = body().get("message_id")
        if isinstance(mid, bool) or not isinstance(mid, int):
            raise BadRequest("message_id must be an integer")
        try:
            store.select(cid, mid)
        except StoreError as err:
            raise BadRequest(str(err)) from None
        state.broadcast({"type": "changed", "conversation_id": cid})
        return get_conversation(cid)

    @app.delete("/api/conversations/<cid>")
    def delete_conversation(cid: str) -> Response:
        deleted = store.delete_conversation(cid)
        state.broadcast({"type": "changed", "conversation_id": cid, "deleted": True})
        return jsonify({"deleted": deleted})

    @app.get("/api/conversations/<cid>/export")
    def export_conversation(cid: str) -> Response:
        fmt = request.args.get("format", "json")
        try:
            if fmt == "md":
                resp = Response(store.export_markdown(cid), mimetype="text/markdown")
            else:
                resp = Response(json.dumps(store.export_json(cid), ensure_ascii=False, indent=1),
                                mimetype="application/json")
        except StoreError as err:
            return _openai_error(str(err), 404, "not_found")
        resp.headers["Content-Disposition"] = f"attachment; filename=conversation-{cid[:8]}.{'md' if fmt == 'md' else 'json'}"
        return resp

    @app.post("/api/import")
    def import_conversation() -> Response:
        try:
            conv = store.import_json(body())
        except StoreError as err:
            raise BadRequest(str(err)) from None
        state.broadcast({"type": "changed", "conversation_id": conv["id"]})
        return jsonify(conv)

    # ------------------------------------------------------------------ websocket
    @sock.route("/ws")
    def ws_chat(ws: Any) -> None:
        # A client that never reads fills the socket buffers; without a timeout our sends (and
        # the ping thread's) would block forever and the generation would hold its slot.
        ws.sock = WholeFrameSocket(ws.sock, send_timeout)
        WebsocketSession(state, ws).serve()

    # ------------------------------------------------------------------ OpenAI API
    from .openai_api import register_openai_routes

    register_openai_routes(app, state)
    return app


class WholeFrameSocket:
    """A websocket's socket whose sends write the whole frame or fail.

    simple_websocket writes each frame with a single ``socket.send``. On a socket with a
    timeout that writes only what fits in the send buffer and returns the count, and the
    library drops the rest: a frame bigger than the free space (a long answer going to a slow
    reader) corrupted the stream. ``sendall`` writes frames whole, within ``timeout`` seconds
    or raising; the lock keeps the chat thread's frames and the ping thread's from
    interleaving. Everything else is the wrapped socket's.
    """

    def __init__(self, sock: Any, timeout: float) -> None:
        sock.settimeout(timeout)
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._send_lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class WebsocketSession:
    """One browser tab: reads JSON commands, relays the current job's events."""

    def __init__(self, state: AppState, ws: Any) -> None:
        self.state = state
        self.ws = ws
        self.job: Any = None
        self.job_conversation: str | None = None
        self.notices: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def send(self, obj: dict[str, Any]) -> None:
        self.ws.send(json.dumps(obj, ensure_ascii=False))

    def serve(self) -> None:
        with self.state.sessions_lock:
            self.state.sessions.add(self)
        try:
            self.send({"type": "hello", "default_model": self.state.default_model})
            while True:
                self._drain()
                while not self.notices.empty():
                    self.send(self.notices.get_nowait())
                # Idle tabs wake four times a second so other tabs' changes arrive promptly.
                raw = self.ws.receive(timeout=0.02 if self.job is not None else 0.25)
                if raw is None:
                    continue
                self._handle_raw(raw)
        except Exception:  # connection closed (ConnectionClosed) or broken: free the slot
            pass
        finally:
            with self.state.sessions_lock:
                self.state.sessions.discard(self)
            if self.job is not None:
                self.job.cancel()

    def _drain(self) -> None:
        job = self.job
        if job is None:
            return
        while True:
            try:
                ev = job.events.get_nowait()
            except Exception:
                return
            if ev is None:
                self.job = None
                self.state.broadcast({"type": "changed", "conversation_id": self.job_conversation}, exclude=self)
                return
            self.send(ev)

    def _handle_raw(self, raw: Any) -> None:
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            msg = json.loads(raw)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise BadRequest("each message must be a JSON object with a \"type\"")
            self._handle(msg)
        except (BadRequest, StoreError, KeyError) as err:
            self.send({"type": "error", "message": str(err.args[0]) if err.args else str(err)})
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.send({"type": "error", "message": "malformed message: expected JSON"})
        except Busy as err:
            self.send({"type": "error", "code": "busy", "message": str(err)})
        except ChatError as err:
            self.send({"type": "error", "message": str(err)})

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        store = self.state.store
        if kind == "ping":
            self.send({"type": "pong"})
            return
        if kind == "stop":
            if self.job is not None:
                self.job.cancel()
            return
        if kind not in ("send", "regenerate", "edit"):
            raise BadRequest(f"unknown message type {kind!r}; expected send, stop, regenerate, edit or ping")
        if self.job is not None:
            raise BadRequest("an answer is still being generated; stop it first")
        cid = msg.get("conversation_id")
        model = msg.get("model") or None
        if model is not None and not isinstance(model, str):
            raise BadRequest("model must be a string")
        entry = self.state.entry(model)
        if cid is not None and not isinstance(cid, str):
            raise BadRequest("conversation_id must be a string")
        settings = self._settings(entry, msg)  # validate everything before storing anything
        if kind == "send":
            content = msg.get("content")
            if not isinstance(content, str) or not content.strip():
                raise BadRequest("content must be a non-empty string")
            if len(content) > MAX_MESSAGE_CHARS:
                raise BadRequest(f"a message is limited to {MAX_MESSAGE_CHARS} characters")
            if cid is None:
                title = content.strip().splitlines()[0][:60]
                system = msg.get("system_prompt")
                conv = store.create_conversation(title=title, model=entry.name,
                                                 system_prompt=system if isinstance(system, str) else "")
                cid = conv["id"]
                self.send({"type": "conversation", "conversation": conv})
            else:
                store.get_conversation(cid)
            if isinstance(msg.get("system_prompt"), str):
                store.update_conversation(cid, system_prompt=msg["system_prompt"])
            slash = parse_slash_command(content.strip(), self.state.tools)
            uid = store.add_message(cid, "user", content)
            self.send({"type": "user_message", "id": uid, "conversation_id": cid})
            if slash is not None:
                tool, args = slash
                self.send({"type": "tool_call", "name": tool.name, "arguments": args, "error": ""})
                res = run_tool(tool, args)
                content_out = res.content if res.ok else f"error: {res.content}"
                mid = store.add_message(cid, "tool", content_out, tool_calls=[{"name": tool.name, "arguments": args}])
                self.send({"type": "tool_result", "name": tool.name, "ok": res.ok, "content": content_out,
                           "message_id": mid})
                self.send({"type": "done", "finish_reason": "tool", "message_id": mid})
                self.state.broadcast({"type": "changed", "conversation_id": cid}, exclude=self)
                return
        elif kind == "regenerate":
            # A new answer beside the old ones (to message_id's question, default the last one).
            if cid is None:
                raise BadRequest("regenerate needs conversation_id")
            msgs = store.messages(cid)
            target = msg.get("message_id")
            if target is not None:
                found = [m for m in store.all_messages(cid) if m["id"] == target and m["role"] == "assistant"]
                if not found or found[0]["parent_id"] is None:
                    raise BadRequest(f"no answer {target!r} to regenerate in this conversation")
                uid = found[0]["parent_id"]
            else:
                last_user = [m["id"] for m in msgs if m["role"] == "user"]
                if not last_user:
                    raise BadRequest("there is no user message to answer")
                uid = last_user[-1]
        else:  # edit: the new text becomes a sibling of the old message, which stays
            mid = msg.get("message_id")
            content = msg.get("content")
            if cid is None or not isinstance(mid, int) or not isinstance(content, str) or not content.strip():
                raise BadRequest("edit needs conversation_id, message_id (int) and content")
            found = [m for m in store.all_messages(cid) if m["id"] == mid and m["role"] == "user"]
            if not found:
                raise BadRequest(f"no user message {mid} in this conversation")
            uid = store.add_message(cid, "user", content, parent_id=found[0]["parent_id"])
            self.send({"type": "user_message", "id": uid, "conversation_id": cid})
        store.update_conversation(cid, model=entry.name, settings={
            "sampling": settings.sampling.as_dict(), "max_tokens": settings.max_tokens, "tools": settings.use_tools})
        self.state.broadcast({"type": "changed", "conversation_id": cid}, exclude=self)
        self.job_conversation = cid
        self.job = self.state.manager.submit(entry.name, chat_job(self.state, cid, entry, settings, parent=uid))

    def _settings(self, entry: ModelEntry, msg: dict[str, Any]) -> ChatSettings:
        try:
            sampling = merged_sampling(entry, _sampling_overrides(msg))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        max_tokens = _int(msg, "max_tokens", entry.max_tokens, 1, MAX_TOKENS_LIMIT)
        use_tools = msg.get("tools", True) is not False
        try:  # "answer as JSON": the same constraint as the API's response_format
            schema = parse_response_format(msg.get("response_format"))
        except ValueError as err:
            raise BadRequest(str(err)) from None
        return ChatSettings(max_tokens=max_tokens, sampling=sampling, use_tools=use_tools, json_schema=schema)
