"""Read-only by construction: `--read-only` and NATSOP_READ_ONLY=1 leave only read-only tools
in MCP and the CLI, and calling every one of them writes nothing to the server.

Two witnesses: a snapshot of the account (streams, their state, durable consumers and their
delivery state) before and after; and spies subscribed to `>` in the application and the
system account, which see every message a client publishes. Each request must be a read:
JetStream API info/list/get calls, system `$SYS.REQ` monitoring requests, and the ephemeral
consumers some reads use (created, read and deleted within the call).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natsop import EmbeddedServer, Toolkit
from natsop.faces.cli import build_cli
from natsop.registry import operations
from tests.conftest import env_for
from tests.harness import NAMES, STREAM, clean_env, cli_args, mcp_stdio, minimal_args, run_cli, snapshot

READ_API = re.compile(r"^\$JS\.API\.(INFO|STREAM\.(INFO|LIST|NAMES)(\..+)?|STREAM\.MSG\.GET\..+|DIRECT\.GET\..+"
                      r"|CONSUMER\.(INFO|LIST|NAMES)\..+)$")
READ_SYS = re.compile(r"^\$SYS\.REQ\.(USER\.([^.]+\.)?INFO|SERVER\.PING(\.[A-Z]+)?|SERVER\.[^.]+\.[A-Z]+Z"
                      r"|ACCOUNT\.[^.]+\.([A-Z]+Z|INFO|CONNS)|ACCOUNT\.PING\.[A-Z]+)$")
EPHEMERAL_USE = re.compile(r"^\$JS\.API\.CONSUMER\.(MSG\.NEXT|DELETE|INFO)\.[^.]+\.([^.]+)$")


@dataclass
class Spy:
    """Everything clients publish in one account, judged as read or write."""

    nc: NATS
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)

    async def on_msg(self, msg: Msg) -> None:
        self.seen.append((msg.subject, msg.reply, msg.data))

    def ephemeral(self) -> set[str]:
        """Consumers created during the watch (their names come from the server's advisories)."""
        prefix = "$JS.EVENT.ADVISORY.CONSUMER.CREATED."
        return {subject.rsplit(".", 1)[1] for subject, _r, _d in self.seen if subject.startswith(prefix)}

    def writes(self, ephemeral: set[str]) -> list[str]:
        bad: list[str] = []
        for subject, reply, data in self.seen:
            if subject.startswith(("_INBOX.", "_R_.", "$JS.EVENT.", "$SYS.")) and not subject.startswith("$SYS.REQ."):
                continue  # replies (also the server's mapped ones), advisories and server events
            if reply.startswith(("$JS.ACK.", "$JS.FC.")):
                continue  # a message the server delivers to a consumer
            if READ_API.match(subject) or READ_SYS.match(subject):
                continue
            if subject.startswith("$JS.API.CONSUMER.CREATE."):
                config = json.loads(data).get("config", {})
                if not config.get("durable_name") and config.get("mem_storage"):
                    continue  # an ephemeral, in-memory read cursor
            use = EPHEMERAL_USE.match(subject)
            if use and use.group(2) in ephemeral:
                continue
            if subject.startswith("$JS.ACK.") and subject.split(".")[3] in ephemeral:
                continue
            bad.append(f"{subject} {data[:120]!r}")
        return bad


async def _spy(url: str, user: str, password: str) -> Spy:
    nc = await nats.connect(url, user=user, password=password, name="spy")
    spy = Spy(nc)
    await nc.subscribe(">", cb=spy.on_msg)
    await nc.flush()
    return spy


@pytest.fixture(scope="module")
def ro_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("ro-store")) as srv:
        yield srv


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ro-files")


@pytest.fixture(scope="module")
def ro_env(ro_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return clean_env(tmp_path_factory.mktemp("ro-config"), **env_for(ro_server, Path("/nonexistent")))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def seeded(ro_server: EmbeddedServer, files_dir: Path) -> AsyncIterator[EmbeddedServer]:
    """A stream with messages and a durable consumer half-way, a KV bucket, an object, a backup."""
    async with Toolkit.for_server(ro_server, files_dir=files_dir) as tk:
        await tk.call("stream_add", stream=STREAM, subjects=["hard.>"])
        for i in range(6):
            await tk.call("publish", subject=f"hard.{'one' if i % 2 else 'two'}", payload=f"m{i}", jetstream=True)
        await tk.call("consumer_add", stream=STREAM, consumer=NAMES["consumer"], ack_policy="explicit")
        await tk.call("consumer_next", stream=STREAM, consumer=NAMES["consumer"], count=2, ack=True,
                      timeout_s=1)
        await tk.call("kv_add", bucket=NAMES["bucket"], history=5)
        await tk.call("kv_put", bucket=NAMES["bucket"], key=NAMES["key"], value="v1")
        await tk.call("kv_put", bucket=NAMES["bucket"], key=NAMES["key"], value="v2")
        await tk.call("object_add", bucket=NAMES["bucket"])
        await tk.call("object_put", bucket=NAMES["bucket"], name=NAMES["name"], data="object body")
        await tk.call("stream_backup", stream=STREAM, directory=NAMES["directory"])
    yield ro_server


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out |= _walk(cmd, (*path, name))
        elif cmd is not None:
            out.add((*path, name))
    return out


READ_TOOLS = {op.tool for op in operations(read_only=True)}
WRITE_TOOLS = {op.tool for op in operations()} - READ_TOOLS


def test_the_registry_split_is_what_the_faces_offer() -> None:
    assert READ_TOOLS and WRITE_TOOLS
    assert all(op.read_only and not op.destructive for op in operations(read_only=True))
    commands = _walk(build_cli(read_only=True))
    offered = {op.tool for op in operations() if op.cli in commands}
    assert offered == READ_TOOLS
    assert all(path[0] in ("serve", "skill") for path in commands - {op.cli for op in operations()})


async def test_spies_catch_a_write(seeded: EmbeddedServer) -> None:
    """The witness works: a real write is flagged."""
    spy = await _spy(seeded.url, seeded.app.user, seeded.app.password)
    try:
        async with Toolkit.for_server(seeded) as tk:
            await tk.call("stream_info", stream=STREAM)
            await tk.call("kv_put", bucket=NAMES["bucket"], key="spied", value="x")
            await tk.call("kv_del", bucket=NAMES["bucket"], key="spied")
        await spy.nc.flush()
    finally:
        await spy.nc.close()
    flagged = spy.writes(spy.ephemeral())
    assert any(w.startswith("$KV.hard.spied") for w in flagged), flagged
    assert not any(w.startswith("$JS.API.STREAM.INFO") for w in flagged)


async def test_read_only_mcp_and_cli_offer_only_reads_and_write_nothing(seeded: EmbeddedServer, ro_env: dict[str, str],
                                                                        files_dir: Path) -> None:
    before = await _snapshot(seeded)
    app_spy = await _spy(seeded.url, seeded.app.user, seeded.app.password)
    sys_spy = await _spy(seeded.url, seeded.system.user, seeded.system.password)
    answered: dict[str, bool] = {}
    try:
        # MCP with --read-only: exactly the read-only tools, each marked so, each called.
        async with mcp_stdio(ro_env, "--read-only", "--files-dir", str(files_dir), "serve") as client:
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == READ_TOOLS
            assert all(t.annotations and t.annotations.read_only_hint and not t.annotations.destructive_hint
                       for t in tools)
            for op in operations(read_only=True):
                result = await client.call_tool(op.tool, minimal_args(op))
                answered[op.tool] = not result.is_error
            for tool in sorted(WRITE_TOOLS):
                op = next(o for o in operations() if o.tool == tool)
                refused = await client.call_tool(tool, minimal_args(op, confirm="x") if op.destructive
                                                 else minimal_args(op))
                assert refused.is_error and "[unknown_tool]" in getattr(refused.content[0], "text", ""), tool
            # The live views behind resources are reads too.
            resources = await client.read_resource("nats://streams")
            assert resources.contents
        # MCP with the environment variable alone.
        async with mcp_stdio(ro_env | {"NATSOP_READ_ONLY": "1"}, "--files-dir", str(files_dir), "serve") as client:
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            add = next(o for o in operations() if o.tool == "stream_add")
            refused = await client.call_tool("stream_add", minimal_args(add, stream="RO_REFUSED"))
            assert refused.is_error

        # The CLI with NATSOP_READ_ONLY=1: only read commands, each run.
        env = ro_env | {"NATSOP_READ_ONLY": "1"}
        for op in operations(read_only=True):
            result = await asyncio.to_thread(run_cli, env, "--json", *cli_args(op, minimal_args(op)),
                                             files_dir=files_dir, read_only=None)
            assert result.exit_code in (0, 1), (op.tool, result.output)
            assert "Traceback" not in result.output
        for op in operations():
            if op.tool in WRITE_TOOLS:
                refused_cli = await asyncio.to_thread(run_cli, env, *cli_args(op, minimal_args(op)), "--force"
                                                      if op.destructive else "--help", files_dir=files_dir,
                                                      read_only=None)
                assert refused_cli.exit_code == 2 and "No such command" in refused_cli.output, op.tool
        # --read-only given as an argument to an in-process CLI (sys.argv does not have it).
        add = next(o for o in operations() if o.tool == "stream_add")
        flagged = await asyncio.to_thread(run_cli, ro_env, "--read-only", *cli_args(add, minimal_args(add,
                                          stream="RO_REFUSED_TOO")), files_dir=files_dir, read_only=None)
        assert flagged.exit_code != 0
        for spy in (app_spy, sys_spy):
            await spy.nc.flush()
    finally:
        await app_spy.nc.close()
        await sys_spy.nc.close()
    ephemeral = app_spy.ephemeral() | sys_spy.ephemeral()
    assert app_spy.writes(ephemeral) == [] and sys_spy.writes(ephemeral) == []
    assert await _snapshot(seeded) == before
    # The reads did real work (not only errors): the main objects answered.
    failed = {t for t, ok in answered.items() if not ok}
    assert failed <= {"counter_get"}, failed  # HARD is no counter stream


async def _snapshot(srv: EmbeddedServer) -> dict[str, Any]:
    nc = await nats.connect(srv.url, user=srv.app.user, password=srv.app.password)
    try:
        return await snapshot(nc)
    finally:
        await nc.close()
