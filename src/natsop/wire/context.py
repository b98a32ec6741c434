"""What an operation is handed: connections, API helpers and local policy.

`Context` is the only thing operations know about the outside world. The MCP server,
the CLI and Python programs each build one; tests build one on an embedded server.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.client import Client as NATS

from natsop.errors import UserError
from natsop.settings import Settings
from natsop.wire.connection import Connections
from natsop.wire.jsapi import JsApi

__all__ = ["Context", "ProgressFn"]

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


class Context:
    """Connections per account, JetStream API access, the files directory and progress reporting.

    `confine_files` keeps every local path inside `files_dir`: right for an assistant (MCP),
    which must not touch arbitrary files. The CLI turns it off unless `--files-dir` is given,
    so a person's `/backups/S` works as it does with natscli.
    """

    def __init__(self, settings: Settings, *, files_dir: str | os.PathLike[str] | None = None,
                 progress: ProgressFn | None = None, connections: Connections | None = None,
                 read_only: bool = False, confine_files: bool = True) -> None:
        self.settings = settings
        self.connections = connections or Connections(settings)
        self.files_dir = Path(files_dir) if files_dir is not None else Path.cwd()
        self.confine_files = confine_files
        self.progress = progress
        #: Set by a face serving read-only (`--read-only`, NATSOP_READ_ONLY): only read-only tools are
        #: offered, and a read-only tool refuses the few arguments that would make it act (`require_writable`).
        self.read_only = read_only

    def with_progress(self, progress: ProgressFn | None) -> Context:
        """The same connections with another progress callback (one per request)."""
        return Context(self.settings, files_dir=self.files_dir, progress=progress, connections=self.connections,
                       read_only=self.read_only, confine_files=self.confine_files)

    def require_writable(self, what: str, *, hint: str = "") -> None:
        """Refuse `what` (an argument that acts on the deployment) when natsop is read-only."""
        if self.read_only:
            raise UserError(f"{what}: natsop is read-only", code="read_only",
                            hint=hint or "Run natsop without --read-only / NATSOP_READ_ONLY to do this.")

    async def nc(self, account_name: str | None = None) -> NATS:
        nc, _ = await self.connections.get(account_name)
        return nc

    async def js(self, account_name: str | None = None) -> JsApi:
        nc, target = await self.connections.get(account_name)
        return JsApi(nc, target.api_prefix)

    async def system(self, account_name: str | None = None) -> NATS:
        """The connection of the system account of the deployment `account_name` reaches.

        A clear error (`no_system_account`) when none is configured for that deployment:
        never another deployment's system account.
        """
        nc, _ = await self.connections.system(account_name)
        return nc

    async def direct(self, account_name: str | None, url: str) -> NATS:
        """A connection of its own to the one server at `url` (the caller closes it)."""
        return await self.connections.open_direct(account_name, url, name="natsop rtt")

    async def report(self, done: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress is not None:
            await self.progress(done, total, message)

    def local_path(self, path: str, *, must_exist: bool = False) -> Path:
        """Resolve a caller's path from the files directory; when confined, refuse anything that escapes it."""
        if not path or "\x00" in path:
            raise UserError("path is empty or invalid", code="invalid_path")
        base = self.files_dir.resolve()
        candidate = Path(path)
        full = (candidate if candidate.is_absolute() else base / candidate).resolve()
        if self.confine_files and full != base and base not in full.parents:
            raise UserError(
                f"path {path!r} is outside the files directory",
                code="path_outside_files_dir",
                hint=f"Use a path inside {base} (relative paths are taken from there); "
                     "the files directory is set with --files-dir.",
            )
        if must_exist and not full.exists():
            where = " in the files directory" if self.confine_files else ""
            raise UserError(f"{path!r} does not exist{where}", code="file_not_found")
        return full

    async def close(self) -> None:
        await self.connections.close()
