"""The server end to end on SmolLM2: page, websocket protocol, conversation API, OpenAI API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from server_util import LiveServer, ws_connect as ws_connect_url, ws_until

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def live(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("srv")
    srv = LiveServer({"DB_PATH": str(d / "db.sqlite"), "QUEUE_CAP": 3})
    srv.wait_ready()
    yield srv
    srv.stop()


def http(live, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(live.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw[:1] == b"{" else raw.decode())


def ws_connect(live):
    return ws_connect_url(f"ws://127.0.0.1:{live.port}/ws")


def test_page_and_static_files(live):
    status, html = http(live, "GET", "/")
    assert status == 200 and "<title>assistant</title>" in html and "http" not in html.split("<body>")[0].replace("http-equiv", "")
    for f in ("app.js", "markdown.js", "style.css"):
        assert http(live, "GET", "/static/" + f)[0] == 200


def test_websocket_chat_streams_and_persists(live):
    ws = ws_connect(live)
    try:
        assert json.loads(ws.receive(timeout=30))["type"] == "hello"
        ws.send(json.dumps({"type": "send", "content": "What is the capital of Japan?",
                            "sampling": {"temperature": 0}}))
        events = ws_until(ws, "done")
    finally:
        ws.close()
    kinds = [e["type"] for e in events]
    assert kinds[0] == "conversation" and "user_message" in kinds and "start" in kinds
    tokens = [e["text"] for e in events if e["type"] == "token"]
    assert len(tokens) > 2 and "Tokyo" in "".join(tokens)
    stats = next(e for e in events if e["type"] == "stats")
    assert stats["generated_tokens"] > 0 and stats["n_ctx"] > 0
    cid = next(e for e in events if e["type"] == "conversation")["conversation"]["id"]
    status, conv = http(live, "GET", f"/api/conversations/{cid}")
    assert status == 200
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["status"] == "complete" and "Tokyo" in conv["messages"][1]["content"]


def test_websocket_stop_and_malformed_messages(live):
    ws = ws_connect(live)
    try:
        ws.receive(timeout=30)
        ws.send("this is not json")
        assert json.loads(ws.receive(timeout=30))["type"] == "error"
        ws.send(json.dumps({"type": "launch-missiles"}))
        assert "unknown message type" in json.loads(ws.receive(timeout=30))["message"]
        ws.send(json.dumps({"type": "send", "content": "Write a very long story about dragons.",
                            "max_tokens": 400, "sampling": {"temperature": 0.8, "seed": 1}}))
        n_tokens = 0
        while True:
            ev = json.loads(ws.receive(timeout=60))
            if ev["type"] == "token":
                n_tokens += 1
                if n_tokens == 5:
                    ws.send(json.dumps({"type": "stop"}))
            if ev["type"] == "done":
                break
        assert ev["finish_reason"] == "cancelled" and n_tokens < 12
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.receive(timeout=30))["type"] == "pong"  # the connection lives on
    finally:
        ws.close()


def test_slash_command_over_websocket(live):
    ws = ws_connect(live)
    try:
        ws.receive(timeout=30)
        ws.send(json.dumps({"type": "send", "content": "/calc 2*(3+4)"}))
        events = ws_until(ws, "done")
    finally:
        ws.close()
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["ok"] and result["content"] == "14"


def test_conversation_api(live):
    status, conv = http(live, "POST", "/api/conversations", {"title": "Hello"})
    assert status == 200
    cid = conv["id"]
    assert http(live, "PATCH", f"/api/conversations/{cid}", {"title": "Renamed"})[1]["title"] == "Renamed"
    assert any(c["id"] == cid for c in http(live, "GET", "/api/conversations?q=Renamed")[1]["conversations"])
    status, md = http(live, "GET", f"/api/conversations/{cid}/export?format=md")
    assert status == 200 and md.startswith("# Renamed")
    assert http(live, "DELETE", f"/api/conversations/{cid}")[1]["deleted"] is True
    assert http(live, "GET", f"/api/conversations/{cid}")[0] == 404


def test_models_tokenize_detokenize_health(live):
    assert http(live, "GET", "/health")[0] == 200
    status, models = http(live, "GET", "/v1/models")
    assert status == 200 and "smollm2" in [m["id"] for m in models["data"]]
    status, tok = http(live, "POST", "/tokenize", {"content": "Hello world"})
    assert tok == {"tokens": [19556, 905]}
    assert http(live, "POST", "/detokenize", {"tokens": [19556, 905]})[1] == {"content": "Hello world"}
    status, err = http(live, "POST", "/detokenize", {"tokens": [10**9]})
    assert status == 400 and "out of range" in err["error"]["message"]


@pytest.mark.parametrize("body, fragment", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": "x"}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, "max_tokens"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 50}, "n must be"),
])
def test_bad_api_requests_get_400_in_openai_shape(live, body, fragment):
    status, err = http(live, "POST", "/v1/chat/completions", body)
    assert status == 400 and fragment in err["error"]["message"] and err["error"]["type"] == "invalid_request_error"


def test_openai_client_streaming_and_not(live):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    r = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=30,
                                       messages=[{"role": "user", "content": "What is the capital of Japan?"}])
    assert "Tokyo" in r.choices[0].message.content and r.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="smollm2", temperature=0, max_tokens=30, stream=True,
                                                 messages=[{"role": "user", "content": "What is the capital of Japan?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    comp = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert "Paris" in comp.choices[0].text
    multi = client.chat.completions.create(model="smollm2", n=2, max_tokens=8, seed=3,
                                           messages=[{"role": "user", "content": "Say a word."}])
    assert len(multi.choices) == 2
