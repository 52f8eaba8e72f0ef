"""The server's layers without a real model: the settings schema, the event type's frames, the
import direction, and the websocket protocol over a scripted backend."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from assistant.core.sampling import SAMPLING_FIELDS
from assistant.events import ws_frames
from assistant.http import MAX_TOKENS_LIMIT, sampling_overrides
from assistant.openai_request import CHAT_KEYS, COMPLETION_KEYS
from conftest import NEUTRAL_CWD
from scripted_backend import CONFIG, scripted_server
from server_util import ws_connect, ws_until


@pytest.fixture()
def client(tmp_path):
    from assistant.server import create_app

    return create_app({"DB_PATH": str(tmp_path / "db.sqlite")}).test_client()


def test_settings_schema_lists_every_sampling_field(client):
    r = client.get("/api/settings-schema", headers={"Host": "localhost"})
    assert r.status_code == 200
    schema = r.get_json()
    assert [f["name"] for f in schema["sampling"]] == [f.name for f in SAMPLING_FIELDS]
    for got, f in zip(schema["sampling"], SAMPLING_FIELDS):
        assert (got["kind"], got["default"], got["lo"], got["hi"], got["help"]) == (f.kind, f.default, f.lo, f.hi, f.help)
    assert schema["max_tokens"]["lo"] == 1 and schema["max_tokens"]["hi"] == MAX_TOKENS_LIMIT


def test_requests_take_every_sampling_field():
    body = {f.name: f.default for f in SAMPLING_FIELDS} | {"model": "x", "messages": []}
    assert sampling_overrides(body) == {f.name: f.default for f in SAMPLING_FIELDS}
    assert sampling_overrides({"sampling": {"top_k": 3}, "temperature": None}) == {"top_k": 3}
    for f in SAMPLING_FIELDS:
        assert f.name in CHAT_KEYS and f.name in COMPLETION_KEYS


def test_an_event_becomes_the_protocols_frames():
    token = {"type": "token", "text": "Hi", "id": 17, "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
    assert ws_frames(token) == [{"type": "token", "text": "Hi"}]
    done = {"type": "done", "finish_reason": "stop", "stats": {"prompt_tokens": 3.0, "generated_tokens": 2.0},
            "content": "Hi", "new_messages": [], "message_id": 4}
    assert ws_frames(done) == [{"type": "stats", "prompt_tokens": 3.0, "generated_tokens": 2.0},
                               {"type": "done", "finish_reason": "stop", "message_id": 4}]
    assert ws_frames({"type": "done", "finish_reason": "cancelled", "stats": {}}) == [
        {"type": "done", "finish_reason": "cancelled"}]
    assert ws_frames({"type": "error", "message": "boom"}) == [{"type": "error", "message": "boom"}]


def test_importing_the_server_does_not_import_the_cli():
    code = "import sys, assistant.server; print(sorted(m for m in sys.modules if m.startswith('assistant.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=NEUTRAL_CWD, check=True)
    loaded = json.loads(out.stdout.replace("'", '"'))
    assert "assistant.server" in loaded and "assistant.cli" not in loaded and "assistant.bench" not in loaded


def test_websocket_answer_is_streamed_saved_and_shown_to_other_tabs(tmp_path):
    srv = scripted_server(tmp_path)
    try:
        ws = ws_connect(f"ws://127.0.0.1:{srv.port}/ws")
        other = ws_connect(f"ws://127.0.0.1:{srv.port}/ws")
        assert json.loads(ws.receive(timeout=5)) == {"type": "hello", "default_model": "scripted"}
        ws.send(json.dumps({"type": "send", "conversation_id": None, "content": "!echo hello there",
                            "sampling": {"temperature": 0.5, "repeat_last_n": 8}, "max_tokens": 64}))
        frames = ws_until(ws, "done", 30)
        kinds = [f["type"] for f in frames]
        assert kinds[:3] == ["conversation", "user_message", "start"] and kinds[-2:] == ["stats", "done"]
        assert "".join(f["text"] for f in frames if f["type"] == "token") == "hello there"
        assert all(set(f) == {"type", "text"} for f in frames if f["type"] == "token")
        done = frames[-1]
        assert done == {"type": "done", "finish_reason": "stop", "message_id": frames[2]["message_id"]}
        cid = frames[0]["conversation"]["id"]
        conv = srv.state.store.get_conversation(cid)
        assert conv["settings"]["sampling"]["repeat_last_n"] == 8 and conv["settings"]["max_tokens"] == 64
        answer = srv.state.store.messages(cid)[-1]
        assert (answer["content"], answer["status"], answer["completion_tokens"]) == ("hello there", "complete", 3)
        seen = [json.loads(other.receive(timeout=5)) for _ in range(2)]
        assert {"type": "changed", "conversation_id": cid} in seen
        ws.send(json.dumps({"type": "edit", "conversation_id": cid, "message_id": "x", "content": "y"}))
        assert json.loads(ws.receive(timeout=5))["message"].startswith("edit needs conversation_id")
        ws.close()
        other.close()
    finally:
        srv.stop()


def test_each_server_keeps_the_notes_its_chats_write(tmp_path):
    """Two servers in one process: notes written through A's chat (the model's tool call and
    /note) land in A's database only; B and the data directory's database have none."""
    from assistant.store import Store, default_db_path

    config = CONFIG + '\n[models.noter]\nbackend = "scripted"\ntools = ["notes"]\n'
    a = scripted_server(tmp_path / "a", config)
    b = scripted_server(tmp_path / "b", config)
    try:
        ws = ws_connect(f"ws://127.0.0.1:{a.port}/ws")
        call = '{"name": "notes", "arguments": {"action": "add", "text": "buy oat milk"}}'
        ws.send(json.dumps({"type": "send", "conversation_id": None, "model": "noter", "content": "!call " + call}))
        frames = ws_until(ws, "done", 30)
        result = next(f for f in frames if f["type"] == "tool_result")
        assert (result["ok"], result["content"]) == (True, "saved note 1: buy oat milk")
        ws.send(json.dumps({"type": "send", "conversation_id": None, "content": "/note add call mum"}))
        assert ws_until(ws, "done", 30)[-2]["content"] == "saved note 2: call mum"
        ws.close()
        assert Store(tmp_path / "a" / "db.sqlite").list_notes() == [(1, "buy oat milk"), (2, "call mum")]
        assert Store(tmp_path / "b" / "db.sqlite").list_notes() == []
        assert not default_db_path().exists()
        ws = ws_connect(f"ws://127.0.0.1:{b.port}/ws")
        ws.send(json.dumps({"type": "send", "conversation_id": None, "content": "/note list"}))
        assert ws_until(ws, "done", 30)[-2]["content"] == "no notes"
        ws.close()
    finally:
        a.stop()
        b.stop()


def test_api_names_a_model_or_gets_404(client):
    # "" is no model's name: 404 like any unknown name (not the default), and the answer names
    # the models there are without models.toml's own errors (local paths).
    for model in ("", "gpt-5"):
        r = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404, model
        err = r.get_json()["error"]
        assert err["code"] == "model_not_found" and f"the model {model!r} does not exist; available: " in err["message"]


def test_websocket_takes_a_models_aliases(tmp_path):
    """A send may name a model by an alias models.toml gives it, as the OpenAI API takes it;
    an unknown name gets an error frame naming the models and aliases there are."""
    config = CONFIG.replace("[models.scripted-b]\n", '[models.scripted-b]\naliases = ["gpt-4o-mini"]\n')
    srv = scripted_server(tmp_path, config)
    try:
        ws = ws_connect(f"ws://127.0.0.1:{srv.port}/ws")
        assert json.loads(ws.receive(timeout=5))["type"] == "hello"
        ws.send(json.dumps({"type": "send", "conversation_id": None, "model": "gpt-4o-mini", "content": "!echo hi"}))
        frames = ws_until(ws, "done", 30)
        start = next(f for f in frames if f["type"] == "start")
        assert start["model"] == "scripted-b" and frames[-1]["finish_reason"] == "stop"
        assert srv.state.store.get_conversation(frames[0]["conversation"]["id"])["model"] == "scripted-b"
        ws.send(json.dumps({"type": "send", "conversation_id": None, "model": "gpt-5", "content": "hi"}))
        error = ws_until(ws, "error", 30)[-1]["message"]
        assert error.startswith("the model 'gpt-5' does not exist; available: ") and "scripted-b" in error
        assert error.endswith("(aliases: gpt-4o-mini)")
        ws.close()
    finally:
        srv.stop()
