"""Run the real app on a loopback port in a background thread."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import simple_websocket
from werkzeug.serving import make_server


class WsClient(simple_websocket.Client):
    """simple_websocket's client, minus a race in its handshake.

    The library's handshake decodes only the first event of what it reads: a frame the server
    sent right after accepting (our ``hello``) that arrived in the same read as the 101
    response stays undecoded until more bytes come in, typically the server's next ping 25 s
    later. Tests saw that as a 25 s stall whenever the two landed in one TCP read.
    """

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()  # decode whatever came in with the 101 response


def ws_connect(url: str, **kwargs) -> WsClient:
    """Open a websocket to `url` (``ws://...``) with the race-free client."""
    return WsClient.connect(url, **kwargs)


class LiveServer:
    def __init__(self, config: dict) -> None:
        from assistant.server import create_app

        self.app = create_app(config)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def state(self):
        return self.app.extensions["assistant"]

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        self.server.shutdown()
        self.state.manager.shutdown()


def ws_received(ws, timeout: float):
    """The frames a websocket receives, decoded, for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = ws.receive(timeout=1)
        if raw is not None:
            yield json.loads(raw)


def ws_until(ws, kind: str, timeout: float = 120) -> list[dict]:
    """The frames up to the first of type ``kind`` (``done`` also stops at an ``error``)."""
    events = []
    for ev in ws_received(ws, timeout):
        events.append(ev)
        if ev["type"] == kind or (kind == "done" and ev["type"] == "error"):
            return events
    raise TimeoutError(f"no {kind} event; got {events}")
