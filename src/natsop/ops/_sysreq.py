"""System-account requests shared by the server and account operations (private).

Every server answers a `$SYS.REQ.SERVER.PING.<X>` request once, wrapping its answer as
`{"server": {...}, "data": {...}}` (STATSZ uses `"statsz"` for the data). The helpers
here scatter such a request, gather the replies within the caller's bounds and name
the server each reply came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import ConfigError
from natsop.registry import Params
from natsop.wire.jsapi import TimedReply, gather, gather_timed

__all__ = [
    "IDLE_S",
    "GatherParams",
    "ServerRef",
    "TimedReply",
    "active_servers",
    "connected_server",
    "gather_replies",
    "go_duration_s",
    "is_no_system_account",
    "server_ref",
    "timed_gather",
]

# After the first reply, stop once no other server has answered for this long (as natscli does).
IDLE_S = 0.3
# A server id is an nkey: 'N' and 55 more base32 characters.
SERVER_ID = re.compile(r"^N[A-Z2-7]{55}$")


class GatherParams(Params):
    """How long to collect the servers' replies."""

    expected: int | None = Field(
        default=None, ge=1, le=10_000,
        description="Number of servers expected to answer: stop as soon as that many did "
        "(default: stop when no more answer for a moment)",
    )
    timeout_s: float = Field(default=2.0, ge=0.05, le=30.0, description="Wait at most this long for the replies")


class ServerRef(BaseModel):
    """Which server answered."""

    model_config = ConfigDict(extra="forbid")

    name: str
    id: str | None = None
    cluster: str | None = Field(default=None, description="Cluster name; empty for a server outside a cluster")
    domain: str | None = Field(default=None, description="JetStream domain, if the server has one")
    version: str | None = None


def server_ref(reply: dict[str, Any]) -> ServerRef:
    """The `server` block of a system reply."""
    srv = reply.get("server") or {}
    return ServerRef(
        name=str(srv.get("name") or srv.get("id") or "?"),
        id=srv.get("id") or None,
        cluster=srv.get("cluster") or None,
        domain=srv.get("domain") or None,
        version=srv.get("ver") or None,
    )


def is_no_system_account(exc: BaseException) -> bool:
    return isinstance(exc, ConfigError) and exc.code == "no_system_account"


def connected_server(nc: NATS) -> dict[str, Any]:
    """The INFO the server sent this connection (what every client may know)."""
    info = getattr(nc, "_server_info", None)
    return dict(info) if isinstance(info, dict) else {}


async def gather_replies(nc: NATS, subject: str, body: dict[str, Any] | None, params: GatherParams,
                         ) -> list[dict[str, Any]]:
    """Scatter-gather within the caller's `timeout_s` and `expected`."""
    return await gather(nc, subject, body, timeout=params.timeout_s, expect=params.expected,
                        idle=min(IDLE_S, params.timeout_s))


def active_servers(reply: dict[str, Any]) -> int:
    """How many servers a STATSZ reply says the deployment has (0 when it does not say)."""
    return int((reply.get("statsz") or {}).get("active_servers") or 0)


async def timed_gather(nc: NATS, subject: str, body: dict[str, Any] | None, params: GatherParams,
                       *, learn_expected: Callable[[dict[str, Any]], int] | None = None) -> list[TimedReply]:
    """`jsapi.gather_timed` with the gathering bounds a system tool's parameters give."""
    return await gather_timed(nc, subject, body, timeout=params.timeout_s, expect=params.expected,
                              idle=min(IDLE_S, params.timeout_s), learn_expected=learn_expected)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
          "d": 86400.0, "y": 365 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h|d|y)")


def go_duration_s(text: Any) -> float | None:
    """Seconds in a Go duration string as the server writes them ("560µs", "1.5ms", "1h2m3s")."""
    if not isinstance(text, str) or not text:
        return None
    pos = 0
    total = 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None
