"""natsop's stdio transport (natsop.faces.stdio): event-loop I/O where it can, threads for regular files.

Both keep the JSON-RPC stream on stdout clean: junk printed by handlers or child
processes goes to stderr while serving, and stdout is the wire again afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

SERVER = Path(__file__).with_name("_stdio_server.py")


def _script(*calls: tuple[str, dict[str, Any]]) -> bytes:
    lines: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": types.LATEST_PROTOCOL_VERSION, "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    lines += [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}}
              for i, (name, args) in enumerate(calls, start=1)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _serve(script: bytes, stdout: str, tmp_path: Path, answers: int) -> tuple[dict[int, str], list[Any], str]:
    """Run the test server on `script`, its stdout a pipe or a regular file; stdin stays open until every answer came.

    (At end of input the SDK drops requests still in flight, so input ends only after the answers.)
    Returns the text answers by request id, every line of stdout parsed as JSON, and stderr.
    """
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
        proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE if stdout == "pipe" else out_file, stderr=err_file)
        assert proc.stdin is not None
        try:
            proc.stdin.write(script)
            proc.stdin.flush()
            lines: list[bytes] = []
            deadline = time.monotonic() + 60
            while sum(b'"result"' in line for line in lines) < answers + 1:  # + initialize
                assert time.monotonic() < deadline, f"no answers: {lines!r} {err_path.read_text()}"
                if proc.stdout is not None:
                    lines.append(proc.stdout.readline())
                else:
                    time.sleep(0.05)
                    lines = out_path.read_bytes().splitlines(keepends=True)
            proc.stdin.close()
            rest = proc.stdout.read() if proc.stdout is not None else b""
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode == 0, err_path.read_text()
    wire = b"".join(lines) + rest if stdout == "pipe" else out_path.read_bytes()
    messages = [json.loads(line) for line in wire.decode().splitlines()]  # every line is JSON-RPC
    texts = {m["id"]: m["result"]["content"][0]["text"] for m in messages if m.get("id") and "result" in m}
    return texts, messages, err_path.read_text()


@pytest.mark.parametrize(("stdout", "transport"), [("pipe", "loop/loop"), ("file", "loop/thread")])
def test_junk_on_stdout_goes_to_stderr_and_the_wire_stays_clean(stdout: str, transport: str, tmp_path: Path) -> None:
    big = "x" * 3_000_000  # one 3 MB line
    answers, messages, stderr = _serve(_script(("transport", {}), ("noisy", {}), ("size", {"text": big})),
                                       stdout, tmp_path, answers=3)
    assert answers == {1: transport, 2: "quiet", 3: str(len(big))}
    for junk in ("junk from print", "junk from fd 1", "junk from a child"):
        assert junk in stderr
    # After serving, fd 1 is the wire again: the server's last line arrives on stdout.
    assert messages[-1]["params"]["data"] == "bye"


async def test_a_real_client_over_the_pipe_transport() -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with Client(params, read_timeout_seconds=60) as client:
        assert (await client.call_tool("transport", {})).content[0].text == "loop/loop"  # type: ignore[union-attr]
        for n in (0, 1, 70_000, 1_000_000):  # around the pipe buffer and the write high-water mark
            result = await client.call_tool("size", {"text": "y" * n})
            assert result.content[0].text == str(n)  # type: ignore[union-attr]


def test_a_terminal_on_stdin_is_read_by_a_thread(tmp_path: Path) -> None:
    """A terminal stays off the event loop (it would make stderr non-blocking too); its reads go to a thread."""
    import os
    import pty
    import tty

    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no line editing or echo: the bytes pass as they are
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err_file:
        proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=terminal, stdout=subprocess.PIPE, stderr=err_file)
    os.close(terminal)
    assert proc.stdout is not None
    try:
        os.write(controller, _script(("transport", {}), ("size", {"text": "z" * 100_000})))
        lines = [proc.stdout.readline() for _ in range(3)]  # initialize, then the two calls
        answers = {m["id"]: m["result"]["content"][0]["text"] for m in map(json.loads, lines) if m.get("id")}
        assert answers == {1: "thread/loop", 2: "100000"}, err_path.read_text()
    finally:
        os.close(controller)  # the terminal hangs up: the reader thread ends the input
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
    assert proc.returncode == 0, err_path.read_text()
