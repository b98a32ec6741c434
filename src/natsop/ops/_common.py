"""Helpers shared by the operation modules (private: not operations themselves)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from natsop.formats import parse_version
from natsop.registry import Params

__all__ = ["PageParams", "require_server"]

DEFAULT_PAGE = 50
MAX_PAGE = 1000


class PageParams(Params):
    """A page of a listing: `offset` is the cursor the previous page returned as `next_offset`."""

    offset: int = Field(default=0, ge=0, le=10**12, description="Where to start (next_offset of the previous page)")
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"At most this many (max {MAX_PAGE})")


async def require_server(ctx: Any, account_name: str | None, minimum: tuple[int, int, int], feature: str) -> None:
    """Refuse plainly when the connected server is older than `minimum` for `feature`."""
    from natsop.errors import Unsupported
    from natsop.wire.connection import server_version

    nc = await ctx.nc(account_name)
    version = server_version(nc)
    if parse_version(version) < minimum:
        need = ".".join(str(p) for p in minimum)
        raise Unsupported(f"{feature} needs nats-server {need} or newer; this server is {version or 'unknown'}",
                          code="server_too_old", hint=f"Upgrade the server to {need}+ to use {feature}.")
