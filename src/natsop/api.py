"""The Python face: every operation as an awaitable call.

    async with Toolkit.for_server(server) as nats_ops:
        info = await nats_ops.call("stream_info", stream="ORDERS")

Results are the same models the MCP tools return as structured content.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from natsop.errors import ConfigError
from natsop.registry import get
from natsop.settings import Settings, embedded_settings, load_settings
from natsop.wire.context import Context

if TYPE_CHECKING:
    from natsop.embedded.server import EmbeddedCluster, EmbeddedServer

__all__ = ["Toolkit", "settings_for_server"]


def settings_for_server(server: EmbeddedServer | EmbeddedCluster) -> Settings:
    """Settings for an embedded server or cluster: its APP account by default, SYS as `system`."""
    urls = tuple(getattr(server, "urls", None) or [server.url])
    return embedded_settings(urls, (server.app.user, server.app.password),
                             (server.system.user, server.system.password))


class Toolkit:
    """natsop's operations over one set of connections."""

    def __init__(self, settings: Settings, *, files_dir: str | os.PathLike[str] | None = None) -> None:
        self.context = Context(settings, files_dir=files_dir)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Toolkit:
        """Settings from natscli's environment variables and contexts (see `natsop.settings`)."""
        files_dir = kwargs.pop("files_dir", None)
        settings = load_settings(**kwargs)
        if settings is None:
            raise ConfigError("no NATS is configured", code="no_target",
                              hint="Set NATS_URL or NATS_CONTEXT, or use Toolkit.for_server(EmbeddedServer()).")
        return cls(settings, files_dir=files_dir)

    @classmethod
    def for_server(cls, server: EmbeddedServer | EmbeddedCluster,
                   *, files_dir: str | os.PathLike[str] | None = None) -> Toolkit:
        return cls(settings_for_server(server), files_dir=files_dir)

    async def call(self, tool: str, /, **arguments: Any) -> BaseModel:
        """Run the operation registered as `tool` with keyword arguments; raises NatsopError on failure."""
        from natsop.runner import run_operation

        return await run_operation(self.context, get(tool), arguments)

    async def close(self) -> None:
        await self.context.close()

    async def __aenter__(self) -> Toolkit:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
