"""`natsop serve` as an MCP client starts it: on a bare machine, on the embedded server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.conftest import mcp_client


def bare_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no NATS configured at all, and a private data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    env["NATSOP_DATA_DIR"] = str(tmp_path / "data")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


async def test_serve_with_nothing_configured_uses_the_embedded_server(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    async with mcp_client(env) as first:
        names = {t.name for t in (await first.list_tools()).tools}
        assert {"stream_info", "stream_list", "publish", "server_info"} <= names
        made = await first.call_tool("stream_add", {"stream": "EVENTS", "subjects": ["events.>"]})
        assert not made.is_error, made.content
        # A second natsop on the same machine attaches to the same server and store.
        async with mcp_client(env) as second:
            seen = await second.call_tool("stream_info", {"stream": "EVENTS"})
            assert not seen.is_error, seen.content
        # System-scope tools work with no configuration.
        servers = await first.call_tool("server_list", {})
        assert not servers.is_error, servers.content
    # The data survives a restart of natsop.
    async with mcp_client(env) as again:
        kept = await again.call_tool("stream_info", {"stream": "EVENTS"})
        assert not kept.is_error, kept.content
    data = Path(env["NATSOP_DATA_DIR"])
    creds = [p for p in data.iterdir() if "cred" in p.name]
    assert creds and all(p.stat().st_mode & 0o077 == 0 for p in creds)


async def test_a_joined_natsop_takes_over_when_the_owner_exits(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    ready, leave = asyncio.Event(), asyncio.Event()

    async def owner() -> None:
        # Its own task, so that it can exit while the other client stays.
        async with mcp_client(env) as client:
            made = await client.call_tool("stream_add", {"stream": "KEEP", "subjects": ["keep.>"]})
            assert not made.is_error, made.content
            ready.set()
            await leave.wait()

    first = asyncio.create_task(owner())
    await asyncio.wait_for(ready.wait(), 30)
    async with mcp_client(env) as joined:
        assert not (await joined.call_tool("stream_info", {"stream": "KEEP"})).is_error
        leave.set()
        await first  # the owner exits and stops its server
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            again = await joined.call_tool("stream_info", {"stream": "KEEP"})
            if not again.is_error:
                break
            text = getattr(again.content[0], "text", "")
            # Until the take-over, calls fail fast and say why.
            assert "[not_connected]" in text or "[timeout]" in text, text
            assert asyncio.get_running_loop().time() < deadline, "no take-over"
            await asyncio.sleep(0.3)
        assert again.structured_content is not None and again.structured_content["name"] == "KEEP"
