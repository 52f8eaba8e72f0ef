"""Network exposure: Host allow-list, Origin and Sec-Fetch-Site checks, API keys, limits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import simple_websocket

from conftest import NEUTRAL_CWD
from server_util import LiveServer, ws_connect


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from assistant.server import create_app

    d = tmp_path_factory.mktemp("guards")
    return create_app({"DB_PATH": str(d / "db.sqlite")})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.mark.parametrize("host", ["evil.example", "attacker.com:8765", "127.0.0.2", "localhost.evil.com"])
def test_foreign_host_header_is_refused(client, host):
    r = client.get("/api/conversations", headers={"Host": host})
    assert r.status_code == 403


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1:8765", "[::1]:8765", "localhost"])
def test_loopback_hosts_are_allowed(client, host):
    assert client.get("/api/conversations", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:9999", "https://localhost"])
def test_foreign_origin_cannot_change_state(client, origin):
    r = client.post("/api/conversations", json={"title": "x"},
                    headers={"Host": "localhost", "Origin": origin})
    assert r.status_code == 403
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                    headers={"Host": "localhost", "Origin": origin})
    assert r.status_code == 403


def test_same_origin_and_no_origin_are_allowed(client):
    assert client.post("/api/conversations", json={"title": "x"},
                       headers={"Host": "localhost", "Origin": "http://localhost"}).status_code == 200
    assert client.post("/api/conversations", json={"title": "y"}, headers={"Host": "localhost"}).status_code == 200


def test_cross_site_fetch_is_refused(client):
    r = client.post("/api/conversations", json={"title": "x"},
                    headers={"Host": "localhost", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403


def test_no_wildcard_cors(client):
    r = client.get("/v1/models", headers={"Host": "localhost", "Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_page_has_a_strict_csp(client):
    r = client.get("/", headers={"Host": "localhost"})
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_body_size_limit(client):
    r = client.post("/v1/chat/completions", data=b"{" + b" " * (2 << 20) + b"}",
                    headers={"Host": "localhost", "Content-Type": "application/json"})
    assert r.status_code == 413


def test_non_json_body_is_400(client):
    r = client.post("/v1/chat/completions", data=b"not json", headers={"Host": "localhost", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "invalid_request_error"


def test_api_key_required_when_configured(tmp_path):
    from assistant.server import create_app

    app = create_app({"DB_PATH": str(tmp_path / "db.sqlite"), "API_KEY": "s3cret"})
    c = app.test_client()
    assert c.get("/v1/models", headers={"Host": "localhost"}).status_code == 401
    assert c.get("/v1/models", headers={"Host": "localhost", "Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/models", headers={"Host": "localhost", "Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/health", headers={"Host": "localhost"}).status_code in (200, 503)


def test_serve_refuses_public_bind_without_key():
    out = subprocess.run([sys.executable, "-m", "assistant", "serve", "--host", "0.0.0.0", "--port", "0"], cwd=NEUTRAL_CWD,
                         capture_output=True, text=True, timeout=60, env={**__import__("os").environ,
                                                                          "ASSISTANT_API_KEY": ""})
    assert out.returncode != 0 and "api-key" in out.stderr


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = LiveServer({"DB_PATH": str(tmp_path_factory.mktemp("ws") / "db.sqlite")})
    yield srv
    srv.stop()


def test_websocket_with_foreign_origin_never_upgrades(live):
    for origin in ("http://evil.example", "null"):
        with pytest.raises(simple_websocket.ConnectionError) as err:
            ws_connect(f"ws://127.0.0.1:{live.port}/ws", headers={"Origin": origin})
        assert err.value.status_code == 403


def test_websocket_same_origin_upgrades_and_oversized_messages_close(live):
    ws = ws_connect(f"ws://127.0.0.1:{live.port}/ws",
                                         headers={"Origin": f"http://127.0.0.1:{live.port}"})
    try:
        assert json.loads(ws.receive(timeout=30))["type"] == "hello"
        closed = False
        try:
            ws.send(json.dumps({"type": "send", "content": "x" * 300_000}))  # over the 256 KiB frame limit
            reply = ws.receive(timeout=30)
            closed = reply is None and not ws.connected
        except simple_websocket.ConnectionClosed:
            closed = True
        assert closed, "a message over the size limit must close the connection"
        assert ws.close_reason == 1009  # "message too big"
    finally:
        if ws.connected:
            ws.close()


def test_long_content_and_bad_fields_get_error_messages(live):
    ws = ws_connect(f"ws://127.0.0.1:{live.port}/ws")
    ws.receive(timeout=30)
    for msg, fragment in [({"type": "send", "content": "x" * 150_000}, "limited to 100000"),
                          ({"type": "send", "content": ""}, "non-empty"),
                          ({"type": "send", "content": "hi", "max_tokens": 10**7}, "max_tokens"),
                          ({"type": "send", "content": "hi", "sampling": {"temperature": "hot"}}, "temperature"),
                          ({"type": "send", "content": "hi", "conversation_id": 5}, "conversation_id"),
                          ([1, 2, 3], "JSON object")]:
        ws.send(json.dumps(msg))
        ev = json.loads(ws.receive(timeout=30))
        assert ev["type"] == "error" and fragment in ev["message"], (msg, ev)
    ws.send(json.dumps({"type": "ping"}))
    assert json.loads(ws.receive(timeout=30))["type"] == "pong"
    ws.close()
