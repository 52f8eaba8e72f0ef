"""A model entry served by a remote OpenAI-compatible server: a second instance of this
assistant on another loopback port, plus misbehaving servers for the error cases."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.config import load_registry
from conftest import NEUTRAL_CWD
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
             # The form OpenAI's client, vLLM and llama-server document: ending in /v1.
             f'[models.remote-v1]\nbackend = "openai"\nbase_url = "{upstream.url}/v1/"\nmodel = "smollm2"\n'
             f'timeout = 20\n[models.remote-v1.sampling]\ntemperature = 0.0\n',
             f'[models.down]\nbackend = "openai"\nbase_url = "http://127.0.0.1:{_free_port()}"\ntimeout = 2\n']
    for mode, srv in bad.items():
        lines.append(f'[models.{mode}]\nbackend = "openai"\nbase_url = "http://127.0.0.1:{srv.server_port}"\n'
                     f'timeout = 1\napi_key_env = "REMOTE_TEST_KEY"\n')
    cfg.write_text("\n".join(lines))
    local = LiveServer({"DB_PATH": str(d / "local.sqlite"), "REGISTRY": load_registry(str(cfg)),
                        "DEFAULT_MODEL": "remote"})
    local.config_path = str(cfg)  # for the command-line tests
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


@pytest.mark.parametrize("model", ["remote", "remote-v1"])
def test_chat_through_remote_backend(servers, model):
    upstream, local = servers
    events = _chat(local, model, "What is the capital of Japan?")
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert "Tokyo" in "".join(e["text"] for e in events if e["type"] == "token")
    cid = next(e for e in events if e["type"] == "conversation")["conversation"]["id"]
    conv = local.state.store.messages(cid)
    assert conv[-1]["status"] == "complete" and "Tokyo" in conv[-1]["content"]


def test_stop_closes_the_remote_request(servers):
    upstream, local = servers
    events = _chat(local, "remote", "Write a very long story about a dragon.", stop_after=3)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "cancelled"
    # The upstream notices the closed connection at its next write, cancels the job and frees
    # its slot (polled: on a loaded machine that write can come a few seconds later).
    w = upstream.state.manager.workers["smollm2"]
    job = w.current
    deadline = time.monotonic() + 15
    while w.current is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w.current is None
    assert job is None or job.cancelled  # stopped, not run to its 200 tokens


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


def _cli(local, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "assistant", "--config", local.config_path, *args],
                          capture_output=True, text=True, input=stdin, timeout=300, cwd=NEUTRAL_CWD)


@pytest.mark.parametrize("model", ["remote", "remote-v1"])
def test_run_and_chat_commands_answer_through_a_remote_entry(servers, model):
    upstream, local = servers
    run = _cli(local, "run", "-m", model, "-p", "What is the capital of Japan?", "-n", "20")
    assert run.returncode == 0 and "Tokyo" in run.stdout, run.stderr
    out = _cli(local, "run", "-m", model, "-p", "What is the capital of Japan?", "-n", "20", "--json")
    res = json.loads(out.stdout)
    assert "Tokyo" in res["text"] and res["backend"] == "openai" and res["generated_tokens"] > 0
    assert 0 < res["first_token_s"] <= res["total_s"]
    chat = _cli(local, "chat", "-m", model, stdin="What is the capital of Japan?\n/quit\n")
    assert chat.returncode == 0 and "Tokyo" in chat.stdout, chat.stderr


def test_bench_on_a_remote_entry_reports_first_token_and_speed(servers):
    upstream, local = servers
    out = _cli(local, "bench", "-m", "remote-v1", "--prompt", "32", "--gen", "16", "--reps", "2", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["backend"] == "openai" and res["reps"] == 2
    assert 0 < res["first_token_s"] < 60 and res["decode_tps"] > 0
    lo, hi = res["first_token_spread"]
    assert lo <= res["first_token_s"] <= hi


@pytest.mark.parametrize("cmd", [["info", "-m", "remote"], ["perplexity", "-m", "remote", __file__],
                                 ["tokenize", "remote", "hi"]])
def test_commands_that_need_a_file_say_so_for_remote_entries(servers, cmd):
    upstream, local = servers
    out = _cli(local, *cmd)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("Error: model 'remote' is served remotely"), out.stderr


def test_unreachable_remote_is_one_line_in_run(servers):
    upstream, local = servers
    out = _cli(local, "run", "-m", "down", "-p", "hi")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("Error: cannot reach http://127.0.0.1:"), out.stderr
