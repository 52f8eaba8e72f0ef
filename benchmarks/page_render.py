"""Main-thread time the chat page spends per streamed token, in Chromium.

Starts the real server with the scripted backend from tests/scripted_backend.py (no model),
opens the page in Debian's chromium (playwright), sends ``!stream N RATE`` and samples
Chromium's TaskDuration in thread CPU time (all main-thread work: script, style, layout,
paint) against the
number of characters the page has received. Reports ms per token over the first and the last
10% of the stream (the last up to the final sample taken while it streamed), then the time to
render one answer of 4,000 backticks (script and layout).

    .venv/bin/python benchmarks/page_render.py [--tokens 4000] [--rate 100] [--backticks 4000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scripted_backend import markdown_tokens, scripted_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RECEIVED_JS = "(() => { const a = document.querySelector('.msg.assistant:last-of-type');" \
              " return state.current ? state.current.text.length : (a && !a.classList.contains('streaming') ? -1 : 0); })()"


def per_token(samples: list[tuple[int, float]], lo: int, hi: int) -> float:
    """ms of main-thread time per token between the samples nearest token counts lo and hi."""
    a = min(samples, key=lambda s: abs(s[0] - lo))
    b = min(samples, key=lambda s: abs(s[0] - hi))
    return (b[1] - a[1]) * 1000 / max(1, b[0] - a[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=100.0, help="tokens per second the backend sends")
    ap.add_argument("--backticks", type=int, default=4000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tokens = markdown_tokens(args.tokens)
    ends = []  # characters received when token i is complete
    total = 0
    for t in tokens:
        total += len(t)
        ends.append(total)

    def tokens_at(chars: int) -> int:
        lo, hi = 0, len(ends)
        while lo < hi:
            mid = (lo + hi) // 2
            if ends[mid] <= chars:
                lo = mid + 1
            else:
                hi = mid
        return lo

    srv = scripted_server(Path(tempfile.mkdtemp()))
    out: dict[str, float] = {}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            pg = b.new_page(viewport={"width": 1100, "height": 760})
            pg.goto(srv.url + "/")
            pg.wait_for_selector("#model option", state="attached")
            cdp = pg.context.new_cdp_session(pg)
            # Thread CPU time, not wall time: the figures then hold on a busy machine too.
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})

            def metrics() -> dict[str, float]:
                return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

            def task_s() -> float:
                return metrics()["TaskDuration"]

            before = metrics()
            pg.fill("#input", f"!stream {args.tokens} {args.rate:g}")
            pg.keyboard.press("Enter")
            samples: list[tuple[int, float]] = [(0, task_s())]
            t0 = time.monotonic()
            while True:
                got = pg.evaluate(RECEIVED_JS)
                done = got == -1
                samples.append((args.tokens if done else tokens_at(got), task_s()))
                if done or time.monotonic() - t0 > 600:
                    break
                time.sleep(0.1)
            after = metrics()
            for k in ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration"):
                out[k] = after[k] - before[k]
            out["stream_wall_s"] = time.monotonic() - t0
            out["main_thread_s"] = samples[-1][1] - samples[0][1]
            # The late window ends at the last sample taken while streaming: the one-time work
            # at the end (saving, refreshing the conversation list) is not per-token work.
            tenth = args.tokens // 10
            streaming = [x for x in samples[:-1] if x[0] < args.tokens] or samples
            out["early_ms_per_token"] = per_token(samples, 0, tenth)
            out["late_ms_per_token"] = per_token(streaming, args.tokens - tenth, streaming[-1][0])
            ms = pg.evaluate("""(n) => { const t = performance.now();
                addMessage('assistant', '`'.repeat(n)); document.body.offsetHeight;
                return performance.now() - t; }""", args.backticks)
            out["backticks_render_ms"] = ms
            b.close()
    finally:
        srv.stop()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.tokens} tokens at {args.rate:g}/s: {out['stream_wall_s']:.1f} s wall, "
              f"{out['main_thread_s']:.2f} s main thread")
        print(f"  of which script {out['ScriptDuration']:.2f} s, layout {out['LayoutDuration']:.2f} s, "
              f"style {out['RecalcStyleDuration']:.2f} s")
        print(f"  ms per token, first 10%: {out['early_ms_per_token']:.3f}   last 10%: {out['late_ms_per_token']:.3f}")
        print(f"  one answer of {args.backticks} backticks rendered in {out['backticks_render_ms']:.1f} ms")


if __name__ == "__main__":
    main()
