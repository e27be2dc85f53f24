"""Durations written the way people write them in config files: `45s`, `30m`, `2h`, `1h30m`."""

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(d|h|m|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse `1d`, `2h`, `30m`, `45s` or a combination such as `1h30m`; raise ValueError."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError("empty duration")
    position = 0
    seconds = 0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(cleaned):
        raise ValueError(f"{text!r} is not a duration such as 45s, 30m, 2h or 1h30m")
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a duration compactly, largest unit first (`1h30m`)."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
