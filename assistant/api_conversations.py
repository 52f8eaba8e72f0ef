"""The conversation API the page uses: list, search, create, rename, branch, delete, export,
import (``/api/conversations``, ``/api/import``). Every change is announced to the other tabs."""

from __future__ import annotations

import json
from typing import Callable, TypeVar

from flask import Blueprint, Response, jsonify, request

from .http import BadRequest, error_response, json_body
from .state import app_state
from .store import Store, StoreError

bp = Blueprint("conversations", __name__)
EDITABLE = ("title", "model", "system_prompt", "settings")
T = TypeVar("T")


@bp.get("/api/conversations")
def list_conversations() -> Response:
    store = app_state().store
    q = request.args.get("q", "")
    return jsonify({"conversations": store.search(q) if q else store.list_conversations()})


@bp.post("/api/conversations")
def new_conversation() -> Response:
    b = json_body()
    title = b.get("title", "New chat")
    if not isinstance(title, str):
        raise BadRequest("title must be a string")
    conv = app_state().store.create_conversation(title=title, model=str(b.get("model", "")),
                                                 system_prompt=str(b.get("system_prompt", "")))
    return jsonify(conv)


@bp.get("/api/conversations/<cid>")
def get_conversation(cid: str) -> Response:
    store = app_state().store
    try:
        conv = store.get_conversation(cid)
        conv["messages"] = store.messages(cid)
    except StoreError as err:
        return error_response(str(err), 404, "not_found")
    return jsonify(conv)


def _change(cid: str, change: Callable[[Store], T]) -> T:
    """Make a change to conversation ``cid`` (a StoreError is a 400) and tell the other tabs."""
    state = app_state()
    try:
        out = change(state.store)
    except StoreError as err:
        raise BadRequest(str(err)) from None
    state.changed(cid)
    return out


@bp.patch("/api/conversations/<cid>")
def patch_conversation(cid: str) -> Response:
    b = json_body()
    return jsonify(_change(cid, lambda store: store.update_conversation(cid, **{k: b[k] for k in EDITABLE if k in b})))


@bp.post("/api/conversations/<cid>/select")
def select_branch(cid: str) -> Response:
    """Make the branch through ``message_id`` active; returns the conversation."""
    mid = json_body().get("message_id")
    if isinstance(mid, bool) or not isinstance(mid, int):
        raise BadRequest("message_id must be an integer")
    _change(cid, lambda store: store.select(cid, mid))
    return get_conversation(cid)


@bp.delete("/api/conversations/<cid>")
def delete_conversation(cid: str) -> Response:
    state = app_state()
    deleted = state.store.delete_conversation(cid)
    state.changed(cid, deleted=True)
    return jsonify({"deleted": deleted})


@bp.get("/api/conversations/<cid>/export")
def export_conversation(cid: str) -> Response:
    store = app_state().store
    ext = "md" if request.args.get("format", "json") == "md" else "json"
    try:
        if ext == "md":
            resp = Response(store.export_markdown(cid), mimetype="text/markdown")
        else:
            resp = Response(json.dumps(store.export_json(cid), ensure_ascii=False, indent=1),
                            mimetype="application/json")
    except StoreError as err:
        return error_response(str(err), 404, "not_found")
    resp.headers["Content-Disposition"] = f"attachment; filename=conversation-{cid[:8]}.{ext}"
    return resp


@bp.post("/api/import")
def import_conversation() -> Response:
    state = app_state()
    try:
        conv = state.store.import_json(json_body())
    except StoreError as err:
        raise BadRequest(str(err)) from None
    state.changed(conv["id"])
    return jsonify(conv)
