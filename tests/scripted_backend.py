"""A backend that answers from a script instead of a model, for browser tests and the page
render benchmark: the page sees real websocket traffic from the real server, and the answers
are known in advance.

The last user message chooses the answer:
- ``!echo TEXT``: TEXT, in pieces of 4 characters
- ``!stream N RATE``: N tokens of mixed markdown (paragraphs, lists, code, a table), RATE per second
- ``!slow``: a token every 50 ms until stopped (or 2,000 tokens)
- ``!call JSON``: the tool call ``<tool_call>JSON</tool_call>``; once the tool answered, ``Done: RESULT``
- anything else: ``Answer K to: MESSAGE (temperature T)``, K counting this backend's answers
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from server_util import LiveServer

MARKDOWN_SECTION = (
    "## Section {i}\n\nHere is a paragraph with **bold**, *italic*, `inline code` and a "
    "[link](https://example.org/{i}). It goes on for a while so that lines wrap.\n\n"
    "- first point\n- second point with `code`\n  - nested point\n\n"
    "```python\ndef f{i}(x):\n    return x * {i}  # a comment\n```\n\n"
    "| name | value |\n|---|---|\n| a | {i} |\n| b | {j} |\n\n"
)


def markdown_tokens(n: int) -> list[str]:
    """``n`` tokens (pieces of about 4 characters, like a BPE tokenizer's) of mixed markdown."""
    out: list[str] = []
    for i in itertools.count():
        text = MARKDOWN_SECTION.format(i=i, j=i * 7)
        out += [text[k:k + 4] for k in range(0, len(text), 4)]
        if len(out) >= n:
            return out[:n]
    return out


def chunks(text: str, size: int = 4) -> list[str]:
    return [text[k:k + size] for k in range(0, len(text), size)] or [""]


class ScriptedBackend:
    kind = "scripted"
    answers = itertools.count(1)

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.name = entry.name
        self.n_ctx = entry.context_length

    def stream(self, messages: list[dict[str, Any]], tools: Any, settings: Any,
               cancel: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        delay = 0.0
        if last.startswith("!echo "):
            pieces = chunks(last[6:])
        elif last.startswith("!stream"):
            parts = last.split()
            pieces = markdown_tokens(int(parts[1]))
            delay = 1.0 / float(parts[2])
        elif last.startswith("!slow"):
            pieces = ["word "] * 2000
            delay = 0.05
        elif last.startswith("!call "):
            answered = messages[-1]["role"] == "tool"
            pieces = chunks(f"Done: {messages[-1]['content']}" if answered else f"<tool_call>{last[6:]}</tool_call>")
        else:
            k = next(self.answers)
            pieces = chunks(f"Answer {k} to: {last} (temperature {settings.sampling.temperature:g})")
        finish = "stop"
        start = time.monotonic()
        for i, p in enumerate(pieces):
            if cancel is not None and cancel():
                finish = "cancelled"
                break
            if delay:
                time.sleep(max(0.0, start + i * delay - time.monotonic()))
            yield {"type": "token", "text": p}
        yield {"type": "done", "finish_reason": finish,
               "stats": {"prompt_tokens": 1.0, "generated_tokens": float(len(pieces)), "prefill_s": 0.001,
                         "decode_s": 0.001 * len(pieces), "n_ctx": float(self.n_ctx)}}

    def complete(self, prompt: str, settings: Any, cancel: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
        yield from self.stream([{"role": "user", "content": prompt}], None, settings, cancel)


CONFIG = """
default = "scripted"

[models.scripted]
description = "answers from a script (tests)"
backend = "scripted"
context_length = 4096
max_tokens = 4096
system_prompt = ""

[models.scripted.sampling]
temperature = 0.3
top_p = 0.8

[models.scripted-b]
description = "a second scripted model with other defaults"
backend = "scripted"
context_length = 4096
max_tokens = 256

[models.scripted-b.sampling]
temperature = 0.9
top_p = 0.95
"""


def scripted_server(tmp: Path, config: str = CONFIG) -> LiveServer:
    """A live server on loopback whose default model is the scripted backend (``config``: the
    models.toml to use instead of CONFIG)."""
    from assistant.config import load_registry

    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "models.toml"
    cfg.write_text(config)
    registry = load_registry(str(cfg))
    srv = LiveServer({"DB_PATH": str(tmp / "db.sqlite"), "REGISTRY": registry,
                      "BACKEND_FACTORIES": {"scripted": ScriptedBackend}})
    srv.wait_ready()
    return srv
