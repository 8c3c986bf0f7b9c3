"""Durations as people write them in config files and chat: ``30s``, ``15m``, ``2h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"2h"``, ``"1h30m"``, ``"7d"`` or a number of seconds.

    Raises ValueError with a message that says what is allowed. Zero and negative durations
    are rejected: nothing in clawops means "every 0 seconds".
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '15m', '2h' or '1h30m'")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    else:
        text = value.strip().lower().replace(" ", "")
        pos, result = 0, timedelta()
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            result += int(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(
                f"{value!r} is not a duration; write it like '30s', '15m', '2h', '1h30m' or '7d'"
            )
    if result <= timedelta():
        raise ValueError("a duration must be positive")
    return result


def format_duration(value: timedelta) -> str:
    """The short form of a duration, e.g. ``1h30m``; the inverse of parse_duration."""
    total = int(value.total_seconds())
    if total == 0:
        return f"{int(value.total_seconds() * 1000)}ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
