"""What people and scripts see: plain-text golden output, and --json equal to MCP's structured result."""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

from tests.conftest import CliFn, cli_json, mcp_client

TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def _read_terminal(primary: int) -> list[bytes]:
    """Everything written to a pseudo-terminal until the process on it ends."""
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    return chunks


def normalise(text: str, uniq: str) -> str:
    text = TIME.sub("<time>", text.replace(uniq, "<S>"))
    text = re.sub(r'"_nats\.(ver|level|req\.level)":"[^"]*"', r'"_nats.\1":"…"', text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def test_stream_state_golden(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>").exit_code == 0
    for i in range(3):
        assert cli("pub", f"{uniq}.x", f"hello {i}").exit_code == 0
    out = cli("stream", "state", uniq)
    assert out.exit_code == 0
    assert normalise(out.output, uniq) == "\n".join([
        "name  <S>",
        "",
        "State",
        "messages        3",
        "bytes           " + out.output.split("bytes", 1)[1].split()[0] + " B",
        "first seq       1",
        "first ts        <time>",
        "last seq        3",
        "last ts         <time>",
        "num subjects    1",
        "consumer count  0",
    ])


def test_destructive_dry_run_golden(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    out = cli("stream", "rm", uniq)
    assert out.exit_code == 1
    text = normalise(out.output, uniq)
    assert text.splitlines()[:4] == [
        "done                   no",
        "confirmation required  yes",
        "confirm with           <S>",
        "action                 delete stream <S> with 0 messages and 0 consumers",
    ]
    assert text.endswith("natsop: error [confirmation_required]: not confirmed: delete stream <S> with 0 messages "
                         "and 0 consumers\nhint: Run it again with --force (-f) to carry it out.")


def test_no_color_and_no_ansi_when_piped(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    out = cli("stream", "info", uniq, env={"NO_COLOR": "1"})
    assert "\x1b[" not in out.output


async def test_json_equals_the_mcp_structured_result(server_env: dict[str, str], uniq: str, cli: CliFn) -> None:
    # The CLI runs its own event loop, so here it runs in a worker thread.
    def run(*argv: str) -> Any:
        return asyncio.to_thread(cli, *argv)

    assert (await run("stream", "add", uniq, "--subjects", f"{uniq}.>", "--description", "same")).exit_code == 0
    assert (await run("pub", f"{uniq}.a", "one")).exit_code == 0
    calls: list[tuple[str, dict[str, Any], list[str]]] = [
        ("stream_info", {"stream": uniq}, ["stream", "info", uniq]),
        ("stream_state", {"stream": uniq}, ["stream", "state", uniq]),
        ("stream_view", {"stream": uniq}, ["stream", "view", uniq]),
        ("stream_get", {"stream": uniq, "seq": 1}, ["stream", "get", uniq, "1"]),
        ("audit_rules", {}, ["audit-rules"]),
    ]
    async with mcp_client(server_env) as client:
        for tool, args, argv in calls:
            via_mcp = await client.call_tool(tool, args)
            assert not via_mcp.is_error, (tool, via_mcp.content)
            via_cli = await run("--json", *argv)
            assert via_cli.exit_code == 0, via_cli.output
            assert cli_json(via_cli) == json.loads(json.dumps(via_mcp.structured_content)), tool


def test_progress_bar_on_a_terminal(server_env: dict[str, str], tmp_path: Any) -> None:
    """Long transfers draw a progress bar when stderr is a terminal (and only then)."""
    import os
    import pty
    import subprocess
    import sys

    data = tmp_path / "blob.bin"
    data.write_bytes(os.urandom(48 * 1024 * 1024))
    env = {**os.environ, **server_env, "COLUMNS": "120"}
    bucket = f"progress{os.getpid()}"
    base = [sys.executable, "-m", "natsop", "--files-dir", str(tmp_path)]
    assert subprocess.run([*base, "object", "add", bucket], env=env, capture_output=True).returncode == 0
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([*base, "object", "put", bucket, "blob.bin"], env=env, stdin=secondary,
                                stdout=secondary, stderr=secondary, close_fds=True)
        os.close(secondary)
        chunks = _read_terminal(primary)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(primary)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "MB/s" in screen and "blob.bin" in screen
    piped = subprocess.run([*base, "object", "put", bucket, "blob.bin", "--name", "again"], env=env,
                           capture_output=True, text=True)
    assert piped.returncode == 0 and "MB/s" not in piped.stderr + piped.stdout


def test_waiting_status_helpers() -> None:
    from natsop.faces.cli.progress import shows_activity, time_limit, waiting_text
    from natsop.registry import get

    watch, ls, req = get("kv_watch"), get("kv_ls"), get("request")
    assert time_limit(watch, {}) == 5  # the parameter's default
    assert time_limit(watch, {"timeout_s": 30.0}) == 30
    assert time_limit(ls, {}) == ls.timeout_s  # no timeout_s parameter: the operation's own bound
    assert waiting_text(watch, 3.2, 30) == "natsop kv watch: 3s of at most 30s"
    assert waiting_text(req, 0.6, 2.5) == "natsop req: 1s of at most 2.5s"
    assert shows_activity(stderr_tty=True, as_json=False)
    assert not shows_activity(stderr_tty=True, as_json=True)
    assert not shows_activity(stderr_tty=False, as_json=False)


def test_nothing_extra_when_not_on_a_terminal(cli: CliFn, uniq: str) -> None:
    out = cli("sub", f"{uniq}.quiet", "--timeout-s", "0.8")
    assert out.exit_code == 0
    assert out.stderr == "" and "of at most" not in out.stdout


def test_waiting_status_on_a_terminal(server_env: dict[str, str], tmp_path: Any) -> None:
    """A command that waits shows a transient status on stderr (a terminal), never on stdout."""
    import os
    import pty
    import subprocess
    import sys

    env = {**os.environ, **server_env, "COLUMNS": "120"}
    subject = f"quiet{os.getpid()}.nothing"

    def run(*argv: str) -> tuple[str, str]:
        primary, secondary = pty.openpty()
        try:
            with subprocess.Popen([sys.executable, "-m", "natsop", *argv], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=secondary, close_fds=True) as proc:
                os.close(secondary)
                chunks = _read_terminal(primary)
                stdout = proc.communicate(timeout=60)[0].decode()
                assert proc.returncode == 0, stdout
        finally:
            os.close(primary)
        return b"".join(chunks).decode("utf-8", "replace"), stdout

    screen, stdout = run("sub", subject, "--timeout-s", "1.6")
    assert "natsop sub: 1s of at most 1.6s" in screen
    assert "\x1b[2K" in screen  # and it was erased
    assert "of at most" not in stdout and "stopped by" in stdout
    screen, stdout = run("--json", "sub", subject, "--timeout-s", "1")
    assert screen == "" and json.loads(stdout)["stopped_by"] == "timeout"
