"""Websocket clients that stop reading or stop answering pings lose their generation slot.

The backend here is a fake that streams until it is cancelled, so the only way its slot is
ever freed is the server noticing the dead client and cancelling the job.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time

import pytest

from assistant.config import load_registry
from server_util import LiveServer, ws_connect


# Bigger than what a loopback socket takes in one send() once it is writable again (a third
# of a send buffer that autotunes up to 4 MB), so the server's sends only ever fit in part.
HUGE = 3 * 1024 * 1024


class EndlessBackend:
    """Streams ``size``-character tokens every ``pause`` seconds until cancelled."""

    def __init__(self, entry, size: int, pause: float) -> None:
        self.entry = entry
        self.name = entry.name
        self.size = size
        self.pause = pause
        self.running = threading.Event()

    def stream(self, messages, tools, settings, cancel):
        self.running.set()
        n = 0
        while not (cancel and cancel()):
            n += 1
            yield {"type": "token", "text": "x" * self.size}
            time.sleep(self.pause)
        yield {"type": "done", "finish_reason": "cancelled", "stats": {"prompt_tokens": 1, "generated_tokens": n}}


def _start_server(d, **timeouts) -> LiveServer:
    cfg = d / "models.toml"
    cfg.write_text('default = "trickle"\n[models.trickle]\nbackend = "endless-small"\n'
                   '[models.firehose]\nbackend = "endless-big"\n[models.flood]\nbackend = "endless-huge"\n')
    backends = {}

    def factory(size, pause):
        def make(entry):
            backends[entry.name] = EndlessBackend(entry, size, pause)
            return backends[entry.name]
        return make

    srv = LiveServer({"DB_PATH": str(d / "db.sqlite"), "REGISTRY": load_registry(str(cfg)), **timeouts,
                      "BACKEND_FACTORIES": {"endless-small": factory(4, 0.05),
                                            "endless-big": factory(64 * 1024, 0.01),
                                            "endless-huge": factory(HUGE, 0.1)}})
    srv.wait_ready()
    srv.backends = backends
    return srv


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Impatient: a client is dropped after two missed pings or a send stuck for 1 s."""
    srv = _start_server(tmp_path_factory.mktemp("stuck"), WS_PING_INTERVAL=0.5, WS_SEND_TIMEOUT=1.0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """The default ping interval and send timeout."""
    srv = _start_server(tmp_path_factory.mktemp("patient"))
    yield srv
    srv.stop()


def _frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _raw_client(port: int) -> socket.socket:
    """A websocket client written by hand, so it can misbehave: tiny receive buffer."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "handshake refused"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _slot_is_free(srv: LiveServer, model: str) -> bool:
    w = srv.state.manager.workers.get(model)
    return w is not None and w.current is None and w.queue_length() == 0


def _wait_free(srv: LiveServer, model: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if _slot_is_free(srv, model):
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"the slot of {model!r} was still busy after {timeout} s")


def _start_chat(srv: LiveServer, model: str) -> socket.socket:
    s = _raw_client(srv.port)
    s.sendall(_frame(0x1, json.dumps({"type": "send", "model": model, "content": "go"}).encode()))
    deadline = time.monotonic() + 30
    while model not in srv.backends or not srv.backends[model].running.is_set():
        assert time.monotonic() < deadline, "the generation never started"
        time.sleep(0.05)
    return s


def test_client_that_never_answers_pings_is_dropped(live):
    """Reads nothing and sends nothing: disconnected after two ping intervals."""
    s = _start_chat(live, "trickle")
    try:
        assert not _slot_is_free(live, "trickle")
        _wait_free(live, "trickle", 15)
    finally:
        s.close()


def test_client_that_never_reads_is_dropped(live):
    """Answers pings (blindly) but never reads: the server's sends time out."""
    s = _start_chat(live, "firehose")
    stop = threading.Event()

    def pong_forever():
        while not stop.is_set():
            try:
                s.sendall(_frame(0xA, b""))
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=pong_forever, daemon=True)
    t.start()
    try:
        assert not _slot_is_free(live, "firehose")
        _wait_free(live, "firehose", 20)
    finally:
        stop.set()
        s.close()


def test_server_still_serves_after_stuck_clients(live):
    ws = ws_connect(f"ws://127.0.0.1:{live.port}/ws")
    try:
        assert json.loads(ws.receive(timeout=30))["type"] == "hello"
        ws.send(json.dumps({"type": "send", "model": "trickle", "content": "hi"}))
        got = []
        while len(got) < 5:
            ev = json.loads(ws.receive(timeout=30))
            if ev["type"] == "token":
                got.append(ev["text"])
        ws.send(json.dumps({"type": "stop"}))
    finally:
        ws.close()
    _wait_free(live, "trickle", 15)


def _read_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 65536))  # a few KB at a time (SO_RCVBUF is 4096)
        assert chunk, "the server closed the connection"
        buf += chunk
    return bytes(buf)


def _read_frame(s: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = _read_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read_exact(s, 8))[0]
    return b0 & 0x0F, _read_exact(s, n)


def test_slow_reader_gets_whole_frames(patient):
    """A client that reads slower than the server writes gets every big frame intact: a send
    that only fits in part must never drop the rest of the frame (that corrupts the stream)."""
    s = _start_chat(patient, "flood")
    try:
        tokens = 0
        while tokens < 6:
            opcode, payload = _read_frame(s)
            if opcode != 0x1:
                assert opcode in (0x9, 0xA), f"unexpected opcode {opcode:#x}"
                if opcode == 0x9:
                    s.sendall(_frame(0xA, payload))
                continue
            ev = json.loads(payload)
            if ev["type"] == "token":
                assert ev["text"] == "x" * HUGE
                tokens += 1
        s.sendall(_frame(0x1, json.dumps({"type": "stop"}).encode()))
    finally:
        s.close()
    _wait_free(patient, "flood", 15)
