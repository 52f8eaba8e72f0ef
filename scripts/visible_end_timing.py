"""Time visible_end over streamed 20,000-character answers fed 2 characters per token: the
old full rescan per token (tests/visible_end_reference.py) against the incremental VisibleEnd."""

from __future__ import annotations

import os
import sys
import time

from assistant import toolcalls

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from visible_end_reference import full_scan  # noqa: E402

PARAGRAPH = ("The rainbow appears when sunlight is refracted, reflected and dispersed in droplets; "
             "each colour leaves at its own angle, so the arc is ordered red to violet.\n\n")
CODE = "```python\ndef area(r):\n    return {'pi': 3.14159 * r * r}\n\n[x * x for x in range(3)]\n```\n\n"
SOURCES = "Sources:\n[1] Wikipedia, Rainbow\n[2] Minnaert, Light and Colour\n\n"


def answer(n: int = 20_000) -> str:
    parts, size = [], 0
    while size < n:
        for p in (PARAGRAPH, PARAGRAPH, CODE, SOURCES):
            parts.append(p)
            size += len(p)
    return "".join(parts)[:n]


def timed(step: object, text: str) -> tuple[float, int]:
    start = time.perf_counter()
    last = 0
    for i in range(2, len(text) + 2, 2):
        last = step(text[:i])  # type: ignore[operator]
    return time.perf_counter() - start, last


def main() -> None:
    n = 20_000
    # A model stuck on newlines or spaces is common: runs of blanks must not be walked per token.
    for label, text in (("prose, code, sources", answer(n)), ("newlines", "Hi." + "\n" * (n - 3)),
                        ("spaces", "Hi." + " " * (n - 3))):
        full, a = timed(full_scan, text)
        inc, b = timed(toolcalls.VisibleEnd().update, text)
        assert a == b
        print(f"{label}: full rescan per token {full:.3f} s, incremental {inc:.3f} s "
              f"({full / inc:.0f}x faster), {len(text)} characters in {len(text) // 2} tokens")


if __name__ == "__main__":
    main()
