"""Helpers shared by the operation modules (private: not operations themselves)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from natsop.registry import Params

__all__ = ["PageParams", "duration_ns", "ns_to_s", "parse_time"]

DEFAULT_PAGE = 50
MAX_PAGE = 1000


class PageParams(Params):
    """A page of a listing: `offset` is the cursor the previous page returned as `next_offset`."""

    offset: int = Field(default=0, ge=0, le=10**12, description="Where to start (next_offset of the previous page)")
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"At most this many (max {MAX_PAGE})")


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
