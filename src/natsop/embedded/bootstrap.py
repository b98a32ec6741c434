"""Opening a context for a face: the configured NATS, or the embedded server when none is.

With nothing configured, natsop uses one embedded nats-server per user data directory
(`NATSOP_DATA_DIR`, default the platform's user data dir + `/server`). The first natsop
process to need it starts it; others on the same machine attach to the running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from natsop.settings import embedded_settings, load_settings
from natsop.wire.context import Context

if TYPE_CHECKING:
    from natsop.embedded.server import ServerLease

__all__ = ["ConnectOptions", "Terminated", "Termination", "data_dir", "open_context", "termination"]


@dataclass(frozen=True)
class ConnectOptions:
    """Options a face passes through (the CLI's global flags)."""

    context: str | None = None
    server: str | None = None
    creds: str | None = None
    nkey: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    embedded: bool = False


log = logging.getLogger("natsop.embedded.bootstrap")


def data_dir() -> Path:
    """Where the embedded server keeps its store, config and credentials."""
    env = os.environ.get("NATSOP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("natsop", appauthor=False)) / "server"


@asynccontextmanager
async def open_context(opts: ConnectOptions, *, files_dir: str | os.PathLike[str] | None = None,
                       confine_files: bool = True) -> AsyncIterator[Context]:
    settings = None
    if not opts.embedded:
        settings = load_settings(
            context=opts.context, server=opts.server, creds=opts.creds, nkey=opts.nkey, user=opts.user,
            password=opts.password, token=opts.token, tls_cert=opts.tls_cert, tls_key=opts.tls_key,
            tls_ca=opts.tls_ca,
        )
    leases: list[ServerLease] = []
    standby: asyncio.Task[None] | None = None
    if settings is None:
        from natsop.embedded.server import acquire_shared

        lease = await acquire_shared(data_dir())
        leases.append(lease)
        settings = embedded_settings((lease.url,), (lease.app.user, lease.app.password),
                                     (lease.system.user, lease.system.password))
        if not lease.owner:
            standby = asyncio.create_task(_stand_by(leases))
    ctx = Context(settings, files_dir=files_dir, confine_files=confine_files)
    try:
        yield ctx
    finally:
        if standby is not None:
            standby.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await standby
        await ctx.close()
        for lease in leases:
            await lease.release()


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived while natsop was blocked outside the event loop (a prompt)."""


class Termination:
    """SIGTERM or SIGHUP, turned into an orderly stop of whatever `when_asked` names.

    A process manager or a closing terminal ends natsop with SIGTERM or SIGHUP; their default
    action kills it on the spot, leaving the embedded nats-server it started running (and its
    data directory locked) with nobody to stop it. Instead, the stop given to `when_asked` runs
    on the event loop (at once if a signal came before), and natsop winds down through its
    `finally` blocks: the context closes and the lease stops its server. Code that blocks the
    event loop (a confirmation prompt) runs inside `blocking()`, where a signal raises
    `Terminated` on the spot instead, since the loop could not run the stop.
    """

    def __init__(self) -> None:
        self.requested = False
        self._stop: Callable[[], object] | None = None
        self._blocked = False

    def when_asked(self, stop: Callable[[], object]) -> None:
        self._stop = stop
        if self.requested:
            stop()

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        self._blocked = True
        try:
            if self.requested:
                raise Terminated()
            yield
        finally:
            self._blocked = False

    def _signalled(self) -> None:
        self.requested = True
        if self._stop is not None:
            self._stop()


@contextlib.contextmanager
def termination() -> Iterator[Termination]:
    """Handle SIGTERM and SIGHUP within this block (main thread, POSIX; elsewhere it does nothing).

    Python-level handlers, so that a library that installs its own for a while (uvicorn does,
    for SIGTERM) restores them afterwards; they hand the stop to the event loop. A signal the
    process was started ignoring (`nohup` ignores SIGHUP) stays ignored.
    """
    term = Termination()
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield term
        return
    loop = asyncio.get_running_loop()

    def handler(_signum: int, _frame: object) -> None:
        if term._blocked:
            term.requested = True
            raise Terminated()
        loop.call_soon_threadsafe(term._signalled)

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(sig)
        if current is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, handler)
    try:
        yield term
    finally:
        for sig, old in previous.items():
            # None: a handler not installed from Python; the default is the closest Python can restore.
            signal.signal(sig, signal.SIG_DFL if old is None else old)


async def _stand_by(leases: list[ServerLease]) -> None:
    """Joined another natsop's embedded server: when that natsop exits, keep the server going here."""
    from natsop.embedded.server import take_over_when_gone

    lease = leases[0]
    while not lease.owner:
        lease = await take_over_when_gone(lease)
        leases.append(lease)  # a joined lease releases nothing; an owned one stops its server at exit
        if lease.url != leases[0].url:
            log.warning("the embedded server restarted on %s (its old port was taken); restart natsop to reconnect",
                        lease.url)
            return
