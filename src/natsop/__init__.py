"""natsop: a NATS operator's toolkit — an MCP server named `nats`, a CLI, and an embedded nats-server.

The public API is what `__all__` lists; everything else is private to the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Conflict",
    "EmbeddedCluster",
    "EmbeddedServer",
    "NatsopError",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Toolkit",
    "Unavailable",
    "Unsupported",
    "UserError",
    "__version__",
]

from natsop.errors import (
    ConfigError,
    Conflict,
    NatsopError,
    NotFound,
    PermissionDenied,
    ServerError,
    Unavailable,
    Unsupported,
    UserError,
)

if TYPE_CHECKING:
    from natsop.api import Toolkit
    from natsop.embedded.server import EmbeddedCluster, EmbeddedServer


def __getattr__(name: str) -> Any:
    # Lazy, so that `import natsop` stays cheap for the CLI's start-up.
    if name in ("EmbeddedServer", "EmbeddedCluster"):
        from natsop.embedded import server as embedded

        return getattr(embedded, name)
    if name == "Toolkit":
        from natsop.api import Toolkit

        return Toolkit
    raise AttributeError(f"module 'natsop' has no attribute {name!r}")
