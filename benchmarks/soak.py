"""Soak test: mixed chat traffic against a server on loopback, RSS and latency every minute.

    python benchmarks/soak.py [--minutes 30] [--model smollm2]

Starts `assistant serve` on a free loopback port with a temporary data directory, then runs
two clients for the given time: websocket chats of 2 to 10 turns (some stopped midway), OpenAI API requests
(streaming and not), conversation listing and search. Every minute it prints the server's
RSS and the median/max latency of the last minute, and at the end a linear fit of RSS over
time (a growth trend shows up as a positive slope). Bounded in time and loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_util import ws_connect  # noqa: E402  (simple_websocket minus its handshake race)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict[str, float]:
    """The process's resident memory in MB: total, anonymous (heap, stacks, arrays) and file-backed.

    File-backed pages are mostly the mmapped GGUF's token embedding, faulted in once after the
    weights are prepared (before that was done, rows became resident as new token ids first
    appeared, and this part grew, ever slower, up to the embedding's size).
    """
    out = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in out:
                out[key] = int(line.split()[1]) / 1024
    return out


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Resident MB per mapping kind: each file by name, plus [heap], [stack] and anonymous regions."""
    out: dict[str, float] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's header line
                name = head[5] if len(head) > 5 else "[anonymous]"
            elif head[0] == "Rss:":
                out[name] = out.get(name, 0.0) + int(head[1]) / 1024
    return out


def trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))


def post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def client(base: str, port: int, stop_at: float, lat: list[float], lock: threading.Lock, seed: int) -> None:
    rng = random.Random(seed)
    cid = None
    turns_left = 0  # a user keeps a conversation for a few turns, then starts a new one
    while time.monotonic() < stop_at:
        kind = rng.choice(["ws", "ws", "api", "api_stream", "list"])
        t0 = time.monotonic()
        try:
            if kind == "ws":
                ws = ws_connect(f"ws://127.0.0.1:{port}/ws")
                ws.receive(timeout=10)
                ws.send(json.dumps({"type": "send", "conversation_id": cid, "max_tokens": rng.choice([16, 48, 96]),
                                    "content": rng.choice(["Tell me a joke.", "What is 2+2?", "Name a color.",
                                                           "Write a haiku about rain."])}))
                stop_after = rng.choice([0, 0, 5])
                n = 0
                while True:
                    ev = json.loads(ws.receive(timeout=120))
                    if ev["type"] == "conversation":
                        cid = ev["conversation"]["id"]
                        turns_left = rng.randint(2, 10)
                    if ev["type"] == "token":
                        n += 1
                        if stop_after and n == stop_after:
                            ws.send(json.dumps({"type": "stop"}))
                    if ev["type"] in ("done", "error"):
                        break
                ws.close()
                turns_left -= 1
                if turns_left <= 0:
                    cid = None
            elif kind == "api":
                post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 24})
            elif kind == "api_stream":
                post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to five."}],
                                                     "max_tokens": 24, "stream": True})
            else:
                urllib.request.urlopen(base + "/api/conversations?q=joke", timeout=30).read()
        except Exception as err:  # noqa: BLE001 - a soak test records and goes on
            print(f"  client error: {type(err).__name__}: {err}", flush=True)
        with lock:
            lat.append(time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prewarm", action="store_true",
                    help="first fill the model's whole context once, so the KV cache's lazily mapped pages "
                         "are all resident and any later RSS growth is not cache warm-up")
    args = ap.parse_args()
    port = free_port()
    data = tempfile.mkdtemp(prefix="assistant-soak-")
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "-m", args.model, "--port", str(port)], cwd=data,
                            env=dict(os.environ, ASSISTANT_DATA_DIR=data), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        if args.prewarm:
            info = json.loads(urllib.request.urlopen(base + "/api/models", timeout=30).read())
            n_ctx = next(m["context_length"] for m in info["models"] if m["name"] == args.model)
            # " hello" is one token in these vocabularies: a message that nearly fills the context.
            post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hello " * (n_ctx - 64)}],
                                                 "max_tokens": 8})
            print(f"prewarmed: one request filling the {n_ctx}-token context; RSS {rss_mb(proc.pid)['VmRSS']:.1f} MB", flush=True)
        start = time.monotonic()
        stop_at = start + args.minutes * 60
        lat: list[float] = []
        lock = threading.Lock()
        threads = [threading.Thread(target=client, args=(base, port, stop_at, lat, lock, i), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        samples: list[tuple[float, dict[str, float]]] = []
        print(f"{'minute':>6}{'rss MB':>9}{'anon MB':>9}{'file MB':>9}{'requests':>10}{'median s':>10}{'max s':>8}",
              flush=True)
        minute = 0
        maps_before: dict[str, float] = {}
        while time.monotonic() < stop_at:
            time.sleep(min(60.0, max(0.0, stop_at - time.monotonic())))
            minute += 1
            with lock:
                window, lat[:] = list(lat), []
            r = rss_mb(proc.pid)
            samples.append((time.monotonic() - start, r))
            if minute == 1:
                maps_before = rss_by_mapping(proc.pid)
            med = statistics.median(window) if window else 0.0
            print(f"{minute:>6}{r['VmRSS']:>9.1f}{r['RssAnon']:>9.1f}{r['RssFile']:>9.1f}{len(window):>10}{med:>10.2f}"
                  f"{(max(window) if window else 0):>8.2f}", flush=True)
        for t in threads:
            t.join(150)
        # The worker hands free heap memory back when its queue has been empty for a while:
        # what is still resident after that is what the server really holds.
        time.sleep(15)
        idle = rss_mb(proc.pid)
        print(f"after 15 s idle: RSS {idle['VmRSS']:.1f} MB, anonymous {idle['RssAnon']:.1f}, "
              f"file-backed {idle['RssFile']:.1f}")
        if len(samples) >= 3:
            for key, label in (("VmRSS", "RSS"), ("RssAnon", "anonymous RSS"), ("RssFile", "file-backed RSS")):
                print(f"{label} trend after warm-up: {trend([(t / 60, r[key]) for t, r in samples[1:]]):+.3f} MB/minute")
            half = samples[len(samples) // 2:]
            print(f"anonymous RSS trend, second half: {trend([(t / 60, r['RssAnon']) for t, r in half]):+.3f} MB/minute")
            grown = sorted(((v - maps_before.get(k, 0.0), k) for k, v in rss_by_mapping(proc.pid).items()), reverse=True)
            print("largest RSS growth from minute 1 to idle, by mapping:")
            for mb, name in grown[:5]:
                print(f"  {mb:+8.2f} MB  {name}")
        ok = urllib.request.urlopen(base + "/health", timeout=5).status == 200
        print(f"server healthy at the end: {ok}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
