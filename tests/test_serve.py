"""`natsop serve` as an MCP client starts it: on a bare machine, on the embedded server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

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


def _embedded_pids(env: dict[str, str]) -> list[int]:
    from tests.test_embedded import server_pids

    return server_pids(Path(env["NATSOP_DATA_DIR"]))


async def _terminated(args: list[str], env: dict[str, str], sig: int, *, stdin: Any = asyncio.subprocess.PIPE,
                      stdout: Any = asyncio.subprocess.PIPE) -> tuple[int, bytes]:
    """Start natsop with `args`, wait until its embedded server runs, send `sig`; the exit code and stderr."""
    import sys

    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "natsop", *args, env=env, stdin=stdin,
                                                stdout=stdout, stderr=asyncio.subprocess.PIPE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not _embedded_pids(env):
        assert proc.returncode is None, await proc.stderr.read() if proc.stderr else b""
        assert loop.time() < deadline, "the embedded server did not start"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # past start-up, into serving
    proc.send_signal(sig)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode is not None
    return proc.returncode, err


@pytest.mark.parametrize(("args", "sig", "stdio"), [
    (["serve"], "SIGTERM", "pipes"),  # as an MCP client starts it
    (["serve"], "SIGHUP", "pipes"),
    (["serve"], "SIGTERM", "terminal in, null out"),  # started by hand, output thrown away
    (["serve", "--http", "--port", "0"], "SIGTERM", "pipes"),
    (["serve", "--http", "--port", "0"], "SIGHUP", "pipes"),
])
async def test_signals_stop_serve_and_its_embedded_server(tmp_path: Path, args: list[str], sig: str,
                                                          stdio: str) -> None:
    import pty
    import signal

    env = bare_env(tmp_path)
    if stdio == "pipes":
        code, err = await _terminated(args, env, getattr(signal, sig))
    else:
        controller, terminal = pty.openpty()
        try:
            code, err = await _terminated(args, env, getattr(signal, sig), stdin=terminal,
                                          stdout=asyncio.subprocess.DEVNULL)
        finally:
            os.close(terminal)
            os.close(controller)
    assert code == 0, err
    assert b"Traceback" not in err, err
    assert _embedded_pids(env) == [], f"{args} left its nats-server running after {sig}"
    # The next natsop starts its own server on the same data: there is no stale owner to join.
    async with mcp_client(env) as client:
        assert not (await client.call_tool("stream_list", {})).is_error


async def test_sigterm_stops_a_long_cli_command_and_its_embedded_server(tmp_path: Path) -> None:
    import signal

    env = bare_env(tmp_path)
    code, err = await _terminated(["sub", "quiet.>", "--timeout-s", "60"], env, signal.SIGTERM)
    assert _embedded_pids(env) == []
    assert b"Traceback" not in err, err
    assert code == 1 and b"[terminated]" in err, err


async def test_serve_started_under_nohup_keeps_ignoring_sighup(tmp_path: Path) -> None:
    import signal
    import sys

    env = bare_env(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "natsop", "serve", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # what nohup does
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not _embedded_pids(env):
            assert loop.time() < deadline and proc.returncode is None
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1)
        assert proc.returncode is None and _embedded_pids(env), "SIGHUP stopped a natsop started under nohup"
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0 and _embedded_pids(env) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_at_a_confirmation_prompt_stops_at_once_and_changes_nothing(tmp_path: Path) -> None:
    import pty
    import signal
    import sys

    env = bare_env(tmp_path)
    async with mcp_client(env) as client:
        assert not (await client.call_tool("stream_add", {"stream": "KEEP"})).is_error
    controller, terminal = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "natsop", "stream", "rm", "KEEP", env=env,
                                                    stdin=terminal, stdout=terminal, stderr=terminal)
        try:
            loop = asyncio.get_running_loop()
            shown = b""
            deadline = loop.time() + 30
            while b"Really do this?" not in shown:
                assert loop.time() < deadline, shown
                ready = await loop.run_in_executor(None, _read_some, controller)
                shown += ready
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
            while chunk := await loop.run_in_executor(None, _read_some, controller):
                shown += chunk
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 1 and b"[terminated]" in shown and b"Traceback" not in shown, shown
    assert _embedded_pids(env) == []
    async with mcp_client(env) as client:
        assert not (await client.call_tool("stream_info", {"stream": "KEEP"})).is_error


def _read_some(fd: int) -> bytes:
    """What a pty has to read within a moment (b"" when nothing, or when the other side is gone)."""
    import select

    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
