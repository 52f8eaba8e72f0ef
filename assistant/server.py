"""The web server: :func:`create_app` builds the shared state (:mod:`assistant.state`) and
attaches the blueprints: the page (:mod:`assistant.pages`), the conversation API
(:mod:`assistant.api_conversations`), the chat websocket (:mod:`assistant.chat_socket`) and
the OpenAI-compatible API (:mod:`assistant.openai_api`).

Safety checks run in a ``before_request`` hook, so a refused client never reaches a view
(and never gets a websocket upgrade): the Host header must name this machine (DNS
rebinding), state-changing requests and the websocket must come from the served origin,
cross-site fetches are refused, and when an API key is configured every request but
``/health`` must present it.
"""

from __future__ import annotations

import hmac
import os
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request

from . import api_conversations, chat_socket, openai_api, pages
from .chat import plugin_backends
from .config import Registry, load_registry
from .errors import ChatError
from .http import MAX_BODY_BYTES, MAX_WS_MESSAGE_BYTES, ApiError, BadRequest, error_response
from .state import EXTENSION, AppState, app_state
from .store import open_store
from .worker import Busy, ModelManager

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
OPEN_PATHS = ("/", "/health")  # reachable without the API key (and /static/...)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


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
    app.extensions[EXTENSION] = _state(cfg)
    app.before_request(guard)
    app.teardown_request(close_db)
    app.after_request(security_headers)
    _register_errors(app)
    for bp in (pages.bp, api_conversations.bp, chat_socket.bp, openai_api.bp):
        app.register_blueprint(bp)
    return app


def _state(cfg: dict[str, Any]) -> AppState:
    """The state the routes share, from create_app's ``config``."""
    registry: Registry = cfg.get("REGISTRY") or load_registry(cfg.get("CONFIG_PATH"))
    factories: dict[str, Any] = {**plugin_backends(), **(cfg.get("BACKEND_FACTORIES") or {})}
    manager = ModelManager(registry, int(cfg.get("QUEUE_CAP", 8)), factories)
    host = str(cfg.get("HOST", "127.0.0.1"))
    allowed = set(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::"):
        allowed.add(host if ":" not in host or host.startswith("[") else f"[{host}]")
    api_key = str(cfg.get("API_KEY") or os.environ.get("ASSISTANT_API_KEY", ""))
    return AppState(registry, open_store(cfg.get("DB_PATH")), manager, str(cfg.get("DEFAULT_MODEL") or registry.default),
                    api_key, allowed, float(cfg.get("WS_SEND_TIMEOUT", 30)))


def guard() -> Response | None:
    """Refuse a foreign Host, a foreign Origin or cross-site fetch that changes state (or opens
    the websocket), and a missing API key, before any view runs."""
    state = app_state()
    host_header = request.host or ""
    hostname = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    if hostname.lower() not in state.allowed_hosts:
        return error_response(f"host {host_header!r} is not allowed", 403, "forbidden")
    origin = request.headers.get("Origin")
    changes = request.method in STATE_CHANGING or request.headers.get("Upgrade", "").lower() == "websocket"
    if origin is not None and changes and not same_origin(
            origin, request.scheme, request.environ.get("SERVER_PORT", ""), state.allowed_hosts):
        return error_response(f"origin {origin!r} is not allowed", 403, "forbidden")
    if request.headers.get("Sec-Fetch-Site") == "cross-site" and changes:
        return error_response("cross-site requests are not allowed", 403, "forbidden")
    if state.api_key and request.path not in OPEN_PATHS and not request.path.startswith("/static/"):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
            or request.args.get("api_key", "")
        if not hmac.compare_digest(given.encode(), state.api_key.encode()):
            return error_response("a valid API key is required (Authorization: Bearer KEY)", 401,
                                  "authentication_error")
    return None


def same_origin(origin: str, scheme: str, server_port: str, allowed_hosts: set[str]) -> bool:
    """Whether ``origin`` is this server: our scheme, a loopback/bound host name, our port."""
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


def busy(err: Busy) -> Response:
    resp = error_response(str(err), 503, "server_busy")
    resp.headers["Retry-After"] = "2"
    return resp


def close_db(_exc: BaseException | None) -> None:
    # Each request runs on a fresh thread with its own SQLite connection: close it here, or a
    # long-running server keeps memory per request (docs/performance.md, "Server").
    app_state().store.close()


def security_headers(resp: Response) -> Response:
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Content-Security-Policy", CSP)
    return resp


def _register_errors(app: Flask) -> None:
    """Every error a client can cause answers in OpenAI's error shape, never a traceback."""
    app.register_error_handler(BadRequest, lambda err: error_response(str(err), 400))
    app.register_error_handler(ChatError, lambda err: error_response(str(err), 400))
    app.register_error_handler(ApiError, lambda err: error_response(str(err), err.status, param=err.param,
                                                                    code=err.code))
    app.register_error_handler(Busy, busy)
    app.register_error_handler(413, lambda _err: error_response(
        f"request body larger than {MAX_BODY_BYTES} bytes", 413))
    app.register_error_handler(404, lambda _err: error_response(f"no route {request.path}", 404, "not_found"))
    app.register_error_handler(405, lambda _err: error_response(
        f"{request.method} is not allowed on {request.path}", 405))
    app.register_error_handler(500, lambda _err: error_response("internal server error", 500, "server_error"))
