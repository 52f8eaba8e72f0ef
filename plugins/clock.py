"""Clock tool: the current date and time, optionally in an IANA time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from assistant.hookspecs import hookimpl
from assistant.tools import ToolError


def clock(timezone: str = "") -> str:
    """The current date and time.

    timezone: an IANA time zone such as Europe/Paris (default: this computer's)
    """
    if timezone:
        if len(timezone) > 64 or "\x00" in timezone or ".." in timezone:
            raise ToolError(f"{timezone!r} is not a time zone name")
        try:
            now = datetime.now(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {timezone!r}; use a name like Europe/Paris") from None
    else:
        now = datetime.now().astimezone()
    return now.strftime("%A %d %B %Y, %H:%M:%S %Z (UTC%z)")


@hookimpl
def register_tools(register):
    register(clock)
