"""Connections: one nats-py connection per account, opened lazily and reused.

A connection reconnects by itself; while it is reconnecting, calls fail fast with
`Unavailable` instead of waiting for a buffer to drain.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS

from natsop.errors import ConfigError, Unavailable, from_nats, scrub
from natsop.settings import Settings, Target

__all__ = ["Connections"]

log = logging.getLogger("natsop.connection")


def _tls_context(t: Target) -> ssl.SSLContext | None:
    if not (t.tls_ca or t.tls_cert or any(s.startswith("tls://") for s in t.servers)):
        return None
    try:
        ctx = ssl.create_default_context(cafile=t.tls_ca) if t.tls_ca else ssl.create_default_context()
        if t.tls_cert:
            ctx.load_cert_chain(t.tls_cert, t.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS files for {t.name!r}: {type(exc).__name__}",
                          code="bad_tls_files", hint="Check the cert, key and CA paths and their permissions.") from None
    return ctx


def connect_options(t: Target) -> dict[str, Any]:
    """nats-py keyword arguments for a target (they hold secrets: never log them)."""
    opts: dict[str, Any] = {
        "servers": list(t.servers),
        "name": "natsop",
        "connect_timeout": 3,
        "reconnect_time_wait": 0.5,
        # Fail the first connection fast (two tries per server); reconnect forever once connected.
        "max_reconnect_attempts": 1,
        "allow_reconnect": True,
    }
    if t.user:
        opts["user"] = t.user
        opts["password"] = t.password or ""
    if t.token:
        opts["token"] = t.token
    if t.creds:
        opts["user_credentials"] = t.creds
    if t.nkey:
        opts["nkeys_seed"] = t.nkey
    tls = _tls_context(t)
    if tls is not None:
        opts["tls"] = tls
        opts["tls_handshake_first"] = t.tls_first
    if t.inbox_prefix:
        opts["inbox_prefix"] = t.inbox_prefix
    return opts


class Connections:
    """The open connections, keyed by account name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conns: dict[str, NATS] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, account_name: str | None = None) -> tuple[NATS, Target]:
        target = self.settings.target(account_name)
        return await self._connect(target), target

    async def system(self) -> tuple[NATS, Target]:
        target = self.settings.system_target()
        return await self._connect(target), target

    async def _connect(self, target: Target) -> NATS:
        nc = self._conns.get(target.name)
        if nc is not None and not nc.is_closed:
            if nc.is_reconnecting or not nc.is_connected:
                raise Unavailable(f"the connection to {target.describe()} is down; natsop is reconnecting",
                                  code="not_connected", hint="Retry shortly; the server may be restarting.")
            return nc
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:
            nc = self._conns.get(target.name)
            if nc is not None and not nc.is_closed:
                return nc

            async def on_error(exc: Exception) -> None:
                level = logging.DEBUG if isinstance(exc, OSError) else logging.WARNING
                log.log(level, "NATS connection %s: %s", target.name, scrub(str(exc)) or type(exc).__name__)

            try:
                nc = await nats.connect(**connect_options(target), error_cb=on_error)
            except Exception as exc:
                err = from_nats(exc, context=f"connecting to {target.describe()}")
                if "authorization" in str(exc).lower():
                    err.hint = "Check the credentials of this account (user/password, token, nkey or creds file)."
                raise err from None
            nc.options["max_reconnect_attempts"] = -1
            self._conns[target.name] = nc
            return nc

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for nc in conns.values():
            try:
                await nc.drain()
            except Exception:
                try:
                    await nc.close()
                except Exception as exc:  # closing must never hide the caller's error
                    log.debug("close failed: %s", type(exc).__name__)
