"""Helpers shared by the operation modules (private: not operations themselves)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from natsop.jsapi import JsApi
from natsop.registry import Params

__all__ = ["PageParams", "duration_ns", "ns_to_s", "parse_time", "parse_version", "require_server", "server_version",
           "subject_counts"]

DEFAULT_PAGE = 50
MAX_PAGE = 1000


class PageParams(Params):
    """A page of a listing: `offset` is the cursor the previous page returned as `next_offset`."""

    offset: int = Field(default=0, ge=0, le=10**12, description="Where to start (next_offset of the previous page)")
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"At most this many (max {MAX_PAGE})")


async def subject_counts(js: JsApi, stream: str, subjects_filter: str) -> dict[str, int]:
    """Messages per subject matching `subjects_filter` (STREAM.INFO's first page of subject details)."""
    info = await js.request(f"STREAM.INFO.{stream}", {"subjects_filter": subjects_filter}, context=f"stream {stream}")
    return {str(k): int(v) for k, v in ((info.get("state") or {}).get("subjects") or {}).items()}


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


def server_version(nc: Any) -> str:
    """The version the connected server announced in its INFO."""
    info = getattr(nc, "_server_info", None) or {}
    return str(info.get("version") or "")


def parse_version(text: str | None) -> tuple[int, int, int]:
    """'2.12.3' / 'v2.11.0-beta' -> (2, 12, 3); unknown -> (0, 0, 0)."""
    import re

    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)


async def require_server(ctx: Any, account_name: str | None, minimum: tuple[int, int, int], feature: str) -> None:
    """Refuse plainly when the connected server is older than `minimum` for `feature`."""
    from natsop.errors import Unsupported

    nc = await ctx.nc(account_name)
    version = server_version(nc)
    if parse_version(version) < minimum:
        need = ".".join(str(p) for p in minimum)
        raise Unsupported(f"{feature} needs nats-server {need} or newer; this server is {version or 'unknown'}",
                          code="server_too_old", hint=f"Upgrade the server to {need}+ to use {feature}.")
