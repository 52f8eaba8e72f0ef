"""A model entry served by a remote OpenAI-compatible server: a second instance of this
assistant on another loopback port, plus misbehaving servers for the error cases."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.config import load_registry
from server_util import LiveServer, ws_connect

pytestmark = pytest.mark.real_model


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Misbehaving(BaseHTTPRequestHandler):
    mode = "drip"

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.mode == "401":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "bad key"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if self.mode == "garbage":
            self.wfile.write(b"data: {not json\n\n")
            return
        try:
            for _ in range(200):  # a slow drip that never finishes
                self.wfile.write(b'data: {"choices": [{"delta": {"content": "."}}]}\n\n')
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass


@pytest.fixture(scope="module")
def servers(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("remote")
    upstream = LiveServer({"DB_PATH": str(d / "up.sqlite")})
    upstream.wait_ready()
    bad = {}
    for mode in ("drip", "401", "garbage"):
        handler = type(f"H{mode}", (Misbehaving,), {"mode": mode})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        bad[mode] = srv
    cfg = d / "models.toml"
    lines = [f'[models.remote]\nbackend = "openai"\nbase_url = "{upstream.url}"\nmodel = "smollm2"\ntimeout = 20\n'
             f'[models.remote.sampling]\ntemperature = 0.0\n',
             f'[models.down]\nbackend = "openai"\nbase_url = "http://127.0.0.1:{_free_port()}"\ntimeout = 2\n']
    for mode, srv in bad.items():
        lines.append(f'[models.{mode}]\nbackend = "openai"\nbase_url = "http://127.0.0.1:{srv.server_port}"\n'
                     f'timeout = 1\napi_key_env = "REMOTE_TEST_KEY"\n')
    cfg.write_text("\n".join(lines))
    local = LiveServer({"DB_PATH": str(d / "local.sqlite"), "REGISTRY": load_registry(str(cfg)),
                        "DEFAULT_MODEL": "remote"})
    yield upstream, local
    local.stop()
    upstream.stop()
    for srv in bad.values():
        srv.shutdown()


def _chat(local, model, content, stop_after=None, timeout=60):
    ws = ws_connect(f"ws://127.0.0.1:{local.port}/ws")
    events = []
    try:
        ws.receive(timeout=30)
        ws.send(json.dumps({"type": "send", "model": model, "content": content, "max_tokens": 200}))
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            raw = ws.receive(timeout=1)
            if raw is None:
                continue
            ev = json.loads(raw)
            events.append(ev)
            if ev["type"] == "token":
                n += 1
                if stop_after and n == stop_after:
                    ws.send(json.dumps({"type": "stop"}))
            if ev["type"] in ("done", "error"):
                break
    finally:
        ws.close()
    return events


def test_chat_through_remote_backend(servers, monkeypatch):
    upstream, local = servers
    events = _chat(local, "remote", "What is the capital of Japan?")
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert "Tokyo" in "".join(e["text"] for e in events if e["type"] == "token")
    cid = next(e for e in events if e["type"] == "conversation")["conversation"]["id"]
    conv = local.state.store.messages(cid)
    assert conv[-1]["status"] == "complete" and "Tokyo" in conv[-1]["content"]


def test_stop_closes_the_remote_request(servers):
    upstream, local = servers
    events = _chat(local, "remote", "Write a very long story about a dragon.", stop_after=3)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "cancelled"
    time.sleep(1.0)
    w = upstream.state.manager.workers["smollm2"]
    assert w.current is None  # the upstream noticed the closed connection and freed its slot


def test_openai_api_through_remote_backend(servers):
    openai = pytest.importorskip("openai")
    upstream, local = servers
    client = openai.OpenAI(base_url=local.url + "/v1", api_key="x")
    r = client.chat.completions.create(model="remote", messages=[{"role": "user", "content": "What is the capital of Japan?"}],
                                       max_tokens=20, temperature=0)
    assert "Tokyo" in r.choices[0].message.content


@pytest.mark.parametrize("model, fragment, limit", [
    ("down", "cannot reach", 5), ("401", "REMOTE_TEST_KEY", 5), ("garbage", "malformed", 5), ("drip", "too slowly", 10)])
def test_remote_errors_are_clear_and_bounded(servers, monkeypatch, model, fragment, limit):
    upstream, local = servers
    if model == "401":
        monkeypatch.delenv("REMOTE_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("REMOTE_TEST_KEY", "k")
    t0 = time.monotonic()
    events = _chat(local, model, "hello", timeout=30)
    assert events[-1]["type"] == "error" and fragment in events[-1]["message"], events[-1]
    assert time.monotonic() - t0 < limit
    # Nothing half-saved: the answer row is marked error, never complete.
    cid = next(e for e in events if e["type"] == "conversation")["conversation"]["id"]
    statuses = [m["status"] for m in local.state.store.messages(cid) if m["role"] == "assistant"]
    assert "complete" not in statuses


def test_401_from_remote(servers, monkeypatch):
    upstream, local = servers
    monkeypatch.setenv("REMOTE_TEST_KEY", "wrong")
    events = _chat(local, "401", "hello", timeout=30)
    assert events[-1]["type"] == "error" and "401" in events[-1]["message"]
