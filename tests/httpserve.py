"""`natsop serve --http` as a subprocess on a free port, and a real MCP HTTP client for it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.harness import stop_process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc shows them) listening on `port`."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                out.add(address)
    return out


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve_http(env: dict[str, str], tmp_path: Path, *args: str, global_args: tuple[str, ...] = (),
               wait: bool = True) -> Iterator[Served]:
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "natsop", *global_args, "serve", "--http", "--port", str(port),
                                 *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    served = Served(proc, port, log)
    try:
        if wait:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx2.get(f"{served.url}/healthz", timeout=1).status_code in (200, 503):
                        break
                except httpx2.HTTPError:
                    time.sleep(0.05)
            assert proc.poll() is None, served.stderr
        yield served
    finally:
        stop_process(proc)


@asynccontextmanager
async def http_client(url: str, token: str | None = None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=30) as client:
        yield client
