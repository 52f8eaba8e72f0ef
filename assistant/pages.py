"""The page and what it loads first: ``/`` and ``/static/...`` (web/), the models, tools and
settings it offers (``/api/models``, ``/api/tools``, ``/api/settings-schema``), and ``/health``."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, jsonify, send_from_directory

from .http import settings_schema
from .state import app_state

bp = Blueprint("pages", __name__)


def web_dir() -> str:
    return str(resources.files("assistant.web"))


@bp.get("/")
def index() -> Response:
    return send_from_directory(web_dir(), "index.html")


@bp.get("/static/<path:name>")
def static_file(name: str) -> Response:
    return send_from_directory(web_dir(), name)


@bp.get("/health")
def health() -> Response:
    """200 once the default model is loaded (loading it if nobody asked yet), else 503."""
    state = app_state()
    manager = state.manager
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


@bp.get("/api/models")
def api_models() -> Response:
    state = app_state()
    out = []
    for name, e in state.registry.models.items():
        out.append({"name": name, "description": e.description, "downloaded": e.downloaded,
                    "default": name == state.default_model, "backend": e.backend,
                    "state": state.manager.state(name), "prompt_format": e.prompt_format,
                    "context_length": e.context_length, "max_tokens": e.max_tokens,
                    "system_prompt": e.system_prompt, "sampling": e.sampling.as_dict(),
                    "tools": e.tools})
    return jsonify({"models": out, "errors": state.registry.errors, "default": state.default_model})


@bp.get("/api/tools")
def api_tools() -> Response:
    return jsonify({"tools": [t.schema() for t in app_state().tools.values()]})


@bp.get("/api/settings-schema")
def api_settings_schema() -> Response:
    """The sampling fields (core/sampling.py's SAMPLING_FIELDS) and max_tokens, for the settings panel."""
    return jsonify(settings_schema())
