"""JetStream's field formats shared by every layer: nanosecond durations, RFC 3339 times, versions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["duration_ns", "ns_to_s", "parse_time", "parse_version"]


def ns_to_s(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def duration_ns(seconds: float | None) -> int:
    return round((seconds or 0) * 1e9)


def parse_time(value: Any) -> datetime | None:
    """Parse the server's RFC 3339 timestamps (nanosecond precision is cut to microseconds)."""
    if not value or not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        frac = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(frac):]
        text = f"{head}.{frac[:6]}{tz}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_version(text: str | None) -> tuple[int, int, int]:
    """'2.12.3' / 'v2.11.0-beta' -> (2, 12, 3); unknown -> (0, 0, 0)."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)
