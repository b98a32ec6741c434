"""Shared fixtures: one real embedded nats-server for the session, and the three faces over it.

- `server`: an EmbeddedServer (APP account with JetStream, SYS as system account).
- `cluster`: an EmbeddedCluster of three nodes, shared by the tests that do not break it.
- `toolkit`: the Python face (`await toolkit.call("stream_info", stream=...)`).
- `cli`: the CLI face in-process (`cli("stream", "ls", "--json")` -> click Result).
- `mcp_client(env)`: the MCP face, a real MCP client talking to `natsop serve` over stdio.
- `uniq`: a name unique to the test, so tests sharing the server never collide.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner, Result
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from natsop import EmbeddedCluster, EmbeddedServer, Toolkit
from natsop.faces.cli import build_cli


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("nats-store")) as srv:
        yield srv


@pytest.fixture(scope="session")
def cluster() -> Iterator[EmbeddedCluster]:
    """A real 3-node cluster shared by the tests that only read or add to it (fault tests start their own)."""
    c = EmbeddedCluster(3)
    c.start_sync()
    try:
        yield c
    finally:
        c.stop_sync()


def env_for(server: Any, config_home: Path) -> dict[str, str]:
    """Environment that points natsop at `server` (APP by default, SYS as the system account)."""
    urls = getattr(server, "urls", None) or [server.url]
    return {
        "NATS_URL": ",".join(urls),
        "NATS_USER": server.app.user,
        "NATS_PASSWORD": server.app.password,
        "NATSOP_SYSTEM_USER": server.system.user,
        "NATSOP_SYSTEM_PASSWORD": server.system.password,
        # No natscli contexts from the machine running the tests.
        "XDG_CONFIG_HOME": str(config_home),
        "NATS_CONTEXT": "",
    }


@pytest.fixture(scope="session")
def server_env(server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return env_for(server, tmp_path_factory.mktemp("config-home"))


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> str:
    """A stream/bucket-safe name unique to this test."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:40]
    return f"T_{base}_{uuid.uuid4().hex[:6]}"


@pytest_asyncio.fixture(loop_scope="session")
async def toolkit(server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(server, files_dir=tmp_path) as tk:
        yield tk


CliFn = Callable[..., Result]


@pytest.fixture
def cli(server_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliFn:
    """Run the CLI in-process: cli("stream", "info", "X") -> click Result (exit_code, output).

    Files go to `--files-dir <tmp_path>`; `files_dir=False` leaves the option out, as a person would.
    """
    for k, v in server_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NATS_CONTEXT", raising=False)

    def run(*args: str, input: str | None = None, read_only: bool = False, env: dict[str, str] | None = None,
            files_dir: bool = True) -> Result:
        app = build_cli(read_only=read_only)
        runner = CliRunner()
        given = ["--files-dir", str(tmp_path)] if files_dir else []
        return runner.invoke(app, [*given, *args], input=input, env=env, catch_exceptions=False)

    return run


def cli_json(result: Result) -> Any:
    """The JSON a `--json` command printed."""
    return json.loads(result.output)


@asynccontextmanager
async def mcp_client(env: dict[str, str], *args: str, cwd: str | os.PathLike[str] | None = None) -> AsyncIterator[Client]:
    """A real MCP client over stdio to `python -m natsop <args>` (default `serve`) with `env`.

    Global options go before or after `serve`: mcp_client(env, "serve", "--read-only").
    """
    argv = ["-m", "natsop", *(args or ("serve",))]
    params = StdioServerParameters(command=sys.executable, args=argv, env=env, cwd=cwd)
    async with Client(params, read_timeout_seconds=60) as client:
        yield client
