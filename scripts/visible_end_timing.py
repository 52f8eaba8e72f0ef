"""Time visible_end over a streamed 20,000-character answer fed 2 characters per token:
the full rescan per token against the incremental VisibleEnd (when this checkout has it)."""

from __future__ import annotations

import time

from assistant import toolcalls

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
    text = answer()
    full, a = timed(lambda t: toolcalls.visible_end(t), text)
    print(f"full rescan per token: {full:.3f} s for {len(text)} characters in {len(text) // 2} tokens")
    if hasattr(toolcalls, "VisibleEnd"):
        inc, b = timed(toolcalls.VisibleEnd().update, text)
        assert a == b
        print(f"incremental:           {inc:.3f} s ({full / inc:.0f}x faster)")


if __name__ == "__main__":
    main()
