"""The embedded nats-server: one server, a loopback cluster, and the per-user shared server.

`EmbeddedServer` and `EmbeddedCluster` are public (also as `natsop.EmbeddedServer`).
"""

from natsop.embedded.server import EmbeddedCluster, EmbeddedServer

__all__ = ["EmbeddedCluster", "EmbeddedServer"]
