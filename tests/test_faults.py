"""Faults natsop must survive: the server restarting under it, cluster nodes dying, servers that
never answer, and destructive calls without (or with a wrong) confirmation.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import nats
import pytest
import pytest_asyncio
from mcp import Client
from mcp_types import CallToolResult

from natsop import EmbeddedCluster, EmbeddedServer, Toolkit
from natsop.errors import NatsopError
from natsop.registry import operations
from natsop.settings import Settings, Target
from tests.conftest import env_for
from tests.harness import (
    NAMES,
    STREAM,
    clean_env,
    cli_args,
    mcp_stdio,
    minimal_args,
    run_cli,
    seed_world,
    snapshot,
)
from tests.httpserve import Served, serve_http


def _text(result: CallToolResult) -> str:
    return getattr(result.content[0], "text", "") if result.content else ""


async def _until(call: Callable[[], Awaitable[CallToolResult]], *, within_s: float = 20) -> CallToolResult:
    """Call until it succeeds (the event awaited is the server coming back), failing after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        result = await call()
        if not result.is_error or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def _timed(call: Awaitable[CallToolResult]) -> tuple[CallToolResult, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


# -- the server restarts while natsop serves


async def test_server_restart_while_serving(tmp_path: Path) -> None:
    srv = EmbeddedServer(store_dir=tmp_path / "store")
    await srv.start()
    try:
        env = clean_env(tmp_path / "config", **env_for(srv, tmp_path / "config"))
        with serve_http(env, tmp_path) as http:
            async with mcp_stdio(env) as client:
                await _restart_cycle(srv, client, http)
    finally:
        await srv.stop()


async def _restart_cycle(srv: EmbeddedServer, client: Client, http: Served) -> None:
    made = await client.call_tool("stream_add", {"stream": "RESTART", "subjects": ["restart.>"]})
    assert not made.is_error, made.content
    sent = await client.call_tool("publish", {"subject": "restart.a", "payload": "before", "jetstream": True})
    assert not sent.is_error, sent.content
    assert httpx2.get(f"{http.url}/healthz", timeout=5).status_code == 200

    srv.kill()
    # The first call may still find the socket open: its request is in flight when the connection drops,
    # and fails then, not at its 5 s timeout. After that natsop knows, and fails at once.
    first, took = await _timed(client.call_tool("stream_info", {"stream": "RESTART"}))
    assert first.is_error and took < 2.0, (took, _text(first))
    assert "[not_connected]" in _text(first), _text(first)
    for tool, args in (("stream_info", {"stream": "RESTART"}), ("stream_list", {}), ("account_info", {}),
                       ("publish", {"subject": "restart.b", "payload": "during", "jetstream": True})):
        result, took = await _timed(client.call_tool(tool, args))
        assert result.is_error, tool
        assert took < 1.0, (tool, took)
        assert "[not_connected]" in _text(result) and "reconnecting" in _text(result), _text(result)
        assert "Traceback" not in _text(result)
    health = httpx2.get(f"{http.url}/healthz", timeout=10)
    assert health.status_code == 503 and health.json() == {"status": "degraded", "nats": False}

    await srv.restart()
    back = await _until(lambda: client.call_tool("stream_info", {"stream": "RESTART"}))
    assert not back.is_error, _text(back)
    assert back.structured_content is not None and back.structured_content["state"]["messages"] == 1
    after = await client.call_tool("publish", {"subject": "restart.c", "payload": "after", "jetstream": True})
    assert not after.is_error, _text(after)
    assert httpx2.get(f"{http.url}/healthz", timeout=5).json() == {"status": "ok", "nats": True}


async def test_calls_in_flight_fail_when_the_connection_drops(tmp_path: Path) -> None:
    """Calls waiting on the server when it dies end at once with not_connected, not at their timeouts:
    a request nobody answers yet (10 s timeout), a system scatter-gather waiting for servers that do not
    exist (10 s), and a JetStream API call sent in the same instant. Calls after the restart work."""
    srv = EmbeddedServer(store_dir=tmp_path / "store")
    await srv.start()
    try:
        async with Toolkit.for_server(srv) as tk:
            await tk.call("stream_add", stream="INFLIGHT", subjects=["inflight.>"])
            silent = await nats.connect(srv.url, user=srv.app.user, password=srv.app.password)

            async def never_answer(_msg: Any) -> None:
                return None

            await silent.subscribe("slow.service", cb=never_answer)
            await silent.flush()
            calls = [asyncio.create_task(tk.call("request", subject="slow.service", timeout_s=10)),
                     asyncio.create_task(tk.call("server_list", expected=5, timeout_s=10))]
            await asyncio.sleep(0.3)  # both are waiting on the server now
            started = time.monotonic()
            srv.kill()
            calls.append(asyncio.create_task(tk.call("stream_info", stream="INFLIGHT")))
            results = await asyncio.gather(*calls, return_exceptions=True)
            took = time.monotonic() - started
            await silent.close()
            assert took < 2.0, (took, results)
            for err in results:
                assert isinstance(err, NatsopError) and err.code == "not_connected", err
                assert "reconnecting" in err.message
            # Started while the connection is down: refused at once.
            again_started = time.monotonic()
            with pytest.raises(NatsopError) as down:
                await tk.call("stream_info", stream="INFLIGHT")
            assert down.value.code == "not_connected" and time.monotonic() - again_started < 0.5
            await srv.restart()
            deadline = time.monotonic() + 20
            while True:
                try:
                    info: Any = await tk.call("stream_info", stream="INFLIGHT")
                    break
                except NatsopError:
                    assert time.monotonic() < deadline, "natsop did not reconnect"
                    await asyncio.sleep(0.1)
            assert info.config["name"] == "INFLIGHT"
            listed: Any = await tk.call("server_list", expected=1, timeout_s=5)
            assert listed.total == 1
    finally:
        await srv.stop()


# -- a 3-node cluster losing nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    c = EmbeddedCluster(3, store_root=tmp_path_factory.mktemp("fault-cluster"))
    c.start_sync()
    try:
        yield c
    finally:
        c.stop_sync()


async def _node(client: Client) -> str:
    result = await _until(lambda: client.call_tool("account_tls", {}))
    assert result.structured_content is not None, _text(result)
    return str(result.structured_content["server_name"])


async def _r3_works(client: Client, payload: str, expected_messages: int) -> None:
    sent = await _until(lambda: client.call_tool("publish", {"subject": "r3.x", "payload": payload,
                                                              "jetstream": True, "timeout_s": 2}))
    assert not sent.is_error, _text(sent)
    info = await _until(lambda: client.call_tool("stream_info", {"stream": "R3"}))
    assert info.structured_content is not None and info.structured_content["state"]["messages"] == expected_messages
    first = await client.call_tool("stream_get", {"stream": "R3", "seq": 1})
    assert first.structured_content is not None and first.structured_content["message"]["payload"]["data"] == "m0"


async def test_cluster_node_loss_and_reconnect(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    names = [s.server_name for s in cluster.servers]
    env_all = clean_env(tmp_path / "config", **env_for(cluster, tmp_path / "config"))
    async with mcp_stdio(env_all) as a:
        made = await a.call_tool("stream_add", {"stream": "R3", "subjects": ["r3.>"], "replicas": 3})
        assert not made.is_error, _text(made)
        await _r3_works(a, "m0", 1)
        node_a = await _node(a)
        # A second natsop knows one URL only; it learns the others from the server.
        b_index = next(i for i, n in enumerate(names) if n != node_a)
        env_one = env_all | {"NATS_URL": cluster.servers[b_index].url}
        async with mcp_stdio(env_one) as b:
            assert await _node(b) == names[b_index]
            # 1. The node A is connected to dies: B, elsewhere, goes on reading and writing R3 at once
            #    (the stream elects a new leader if it must), and A reconnects to another node by itself.
            a_index = names.index(node_a)
            cluster.kill_node(a_index)
            await _r3_works(b, "m1", 2)
            _, took = await _timed(a.call_tool("stream_list", {}))
            assert took < 6.5
            assert await _node(a) != node_a
            await _r3_works(a, "m2", 3)
            await cluster.restart_node(a_index)
            # 2. B's only configured server dies: B reconnects to a server it discovered.
            cluster.kill_node(b_index)
            assert await _node(b) != names[b_index]
            await _r3_works(b, "m3", 4)
            await _r3_works(a, "m4", 5)


# -- servers that never answer


async def _silent_server(*, send_info: bool) -> asyncio.Server:
    writers: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if send_info:
            info = {"server_id": "SILENT", "version": "2.15.1", "proto": 1, "max_payload": 1048576, "headers": True}
            writer.write(f"INFO {json.dumps(info)}\r\n".encode())
            await writer.drain()
        await reader.read()  # read and never answer, until the client leaves
        writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0)


async def test_an_unresponsive_server_fails_the_call_in_time(tmp_path: Path) -> None:
    """A server that accepts and never speaks, and one that sends INFO and then never answers:
    the Python face and the CLI both give up with a clear error well within the tool's time limit."""
    mute = await _silent_server(send_info=False)
    half = await _silent_server(send_info=True)
    urls = [f"nats://127.0.0.1:{srv.sockets[0].getsockname()[1]}" for srv in (mute, half)]

    async def python_face(url: str) -> tuple[NatsopError, float]:
        async with Toolkit(Settings(default=Target(name="default", servers=(url,), source="test"))) as tk:
            started = time.monotonic()
            with pytest.raises(NatsopError) as caught:
                await tk.call("stream_list")
            return caught.value, time.monotonic() - started

    def cli_face(url: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "natsop", "stream", "ls"], env=clean_env(tmp_path, NATS_URL=url),
                              capture_output=True, timeout=60)

    try:
        results = await asyncio.gather(*(python_face(u) for u in urls),
                                       *(asyncio.to_thread(cli_face, u) for u in urls))
    finally:
        for srv in (mute, half):
            srv.close()
            await srv.wait_closed()
    limit = next(op for op in operations() if op.tool == "stream_list").timeout_s
    for err, took in results[:2]:
        assert took < min(10, limit), took
        assert err.code == "connect_timeout", err
        assert "did not complete the NATS handshake" in err.message
    for proc in results[2:]:
        assert proc.returncode == 1 and b"[connect_timeout]" in proc.stderr, proc.stderr
        assert b"Traceback" not in proc.stderr


async def test_jetstream_requests_nobody_answers_end_at_their_timeout(server: EmbeddedServer) -> None:
    """An API prefix where something listens but never replies: every call ends with a timeout error."""
    sink = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    async def swallow(_msg: Any) -> None:
        return None

    await sink.subscribe("blackhole.API.>", cb=swallow)
    await sink.flush()
    target = Target(name="default", servers=(server.url,), source="test", user=server.app.user,
                    password=server.app.password, jetstream_api_prefix="blackhole.API")
    try:
        async with Toolkit(Settings(default=target)) as tk:
            started = time.monotonic()
            quick = await asyncio.gather(tk.call("account_info", timeout_s=0.3), return_exceptions=True)
            assert time.monotonic() - started < 2
            slow_started = time.monotonic()
            slow = await asyncio.gather(tk.call("stream_info", stream="ANY"), tk.call("stream_list"),
                                        tk.call("kv_ls"), tk.call("consumer_list", stream="ANY"),
                                        return_exceptions=True)
            slow_took = time.monotonic() - slow_started
    finally:
        await sink.close()
    for err in [*quick, *slow]:
        assert isinstance(err, NatsopError), err
        assert err.code == "timeout" and "did not answer in time" in err.message, err
    assert slow_took < 10, slow_took  # each tool's own bound (30 s) is far away


# -- destructive operations


ACCOUNT_BACKUP = "backups/account"
# stream_update is destructive only when the change removes messages: make it one that does.
OVERRIDES: dict[str, dict[str, Any]] = {"account_restore": {"directory": ACCOUNT_BACKUP},
                                        "stream_update": {"max_msgs": 1}}
DESTRUCTIVE = [op for op in operations() if op.destructive]


@pytest.fixture(scope="module")
def d_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("destructive-store")) as srv:
        yield srv


@pytest.fixture(scope="module")
def d_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("destructive-files")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def d_world(d_server: EmbeddedServer, d_files: Path) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(d_server, files_dir=d_files) as tk:
        await seed_world(tk, [NAMES["subject"]] * 4)
        await tk.call("account_backup", directory=ACCOUNT_BACKUP, streams=[STREAM])
        yield tk


def _args(tool: str, **extra: Any) -> dict[str, Any]:
    op = next(o for o in DESTRUCTIVE if o.tool == tool)
    return minimal_args(op, **OVERRIDES.get(tool, {}), **extra)


async def _state(srv: EmbeddedServer) -> dict[str, Any]:
    nc = await nats.connect(srv.url, user=srv.app.user, password=srv.app.password)
    try:
        return await snapshot(nc)
    finally:
        await nc.close()


def test_every_destructive_tool_takes_a_confirmation() -> None:
    assert DESTRUCTIVE
    for op in DESTRUCTIVE:
        assert "confirm" in op.params.model_fields, op.tool
        assert op.params.model_fields["confirm"].default is None, op.tool


@pytest.mark.parametrize("tool", [op.tool for op in DESTRUCTIVE])
async def test_destructive_tools_do_nothing_unconfirmed(tool: str, d_world: Toolkit, d_server: EmbeddedServer) -> None:
    before = await _state(d_server)
    dry: Any = await d_world.call(tool, **_args(tool))
    assert dry.done is False and dry.confirmation_required is True, dry
    assert dry.confirm_with and dry.action
    expected = dry.confirm_with
    for wrong in (expected + "x", "x" + expected, expected.lower() if expected != expected.lower() else expected.upper(),
                  " " + expected, "yes", "y", "true", "*", ">", "1"):
        with pytest.raises(NatsopError) as refused:
            await d_world.call(tool, **_args(tool, confirm=wrong))
        assert refused.value.code == "confirmation_mismatch", (tool, wrong, refused.value)
        assert expected in refused.value.hint
    assert await _state(d_server) == before


async def test_destructive_tools_refuse_through_mcp_and_cli(d_world: Toolkit, d_server: EmbeddedServer,
                                                            d_files: Path, tmp_path: Path) -> None:
    before = await _state(d_server)
    env = clean_env(tmp_path / "config", **env_for(d_server, tmp_path / "config"))
    async with mcp_stdio(env, "--files-dir", str(d_files), "serve") as client:
        for op in DESTRUCTIVE:
            dry = await client.call_tool(op.tool, _args(op.tool))
            assert not dry.is_error and dry.structured_content is not None, (op.tool, _text(dry))
            assert dry.structured_content["done"] is False
            wrong = await client.call_tool(op.tool, _args(op.tool, confirm=dry.structured_content["confirm_with"] + "!"))
            assert wrong.is_error and "[confirmation_mismatch]" in _text(wrong), op.tool
    for op in DESTRUCTIVE:
        # No terminal and no --force: the CLI shows what it would do and refuses.
        result = await asyncio.to_thread(run_cli, env, *cli_args(op, _args(op.tool)), files_dir=d_files)
        assert result.exit_code == 1 and "[confirmation_required]" in result.stderr, (op.tool, result.output)
    assert await _state(d_server) == before


async def test_the_snapshot_sees_a_confirmed_destructive_call(d_server: EmbeddedServer, d_files: Path) -> None:
    """The witness works: with the right confirmation the same call does change the server."""
    async with Toolkit.for_server(d_server, files_dir=d_files) as tk:
        await tk.call("stream_add", stream="WITNESS", subjects=["witness.>"])
        await tk.call("publish", subject="witness.a", payload="x", jetstream=True)
        before = await _state(d_server)
        done: Any = await tk.call("stream_purge", stream="WITNESS", confirm="WITNESS")
        assert done.done is True
        assert await _state(d_server) != before
        await tk.call("stream_delete", stream="WITNESS", confirm="WITNESS")


def test_the_cli_against_nothing_says_connection_refused(tmp_path: Path) -> None:
    """Nothing listens there: a clear error at once, no traceback."""
    env = clean_env(tmp_path, NATS_URL="nats://127.0.0.1:1")
    proc = subprocess.run([sys.executable, "-m", "natsop", "stream", "ls"], env=env, capture_output=True,
                          timeout=30)
    assert proc.returncode == 1
    assert b"[not_connected]" in proc.stderr and b"connection refused" in proc.stderr
    assert b"Traceback" not in proc.stderr


async def test_a_stalled_server_answering_late_leaves_the_connection_working(tmp_path: Path) -> None:
    """A flush that times out while the server is stalled gets its PONG late, after it gave up.

    nats-py would fail on that late answer and stop reading, while still reporting itself
    connected: every later call timed out for minutes. The next call must work at once.
    """
    import os
    import signal

    async with EmbeddedServer(store_dir=tmp_path / "store") as srv, Toolkit.for_server(srv) as tk:
        await tk.call("stream_add", stream="STALL")
        assert srv.pid is not None
        for _ in range(3):  # until a publish has timed out against the stalled server (the first nearly always)
            os.kill(srv.pid, signal.SIGSTOP)
            _until_stopped(srv.pid)
            try:
                await tk.call("publish", subject="stall.core", payload="x", jetstream=False, timeout_s=1)
            except NatsopError:
                timed_out = True
            else:
                timed_out = False
            finally:
                os.kill(srv.pid, signal.SIGCONT)
            if timed_out:
                break
            await asyncio.sleep(0.5)
        assert timed_out, "no publish timed out while the server was stopped"
        await asyncio.sleep(0.5)  # the late PONG arrives
        started = time.monotonic()
        info: Any = await tk.call("stream_info", stream="STALL")
        assert info.config["name"] == "STALL"
        sent: Any = await tk.call("publish", subject="stall.core", payload="y", jetstream=False, timeout_s=2)
        assert sent.count == 1
        assert time.monotonic() - started < 3


def _until_stopped(pid: int) -> None:
    """Wait until every thread of `pid` is stopped (state T in /proc), for at most 5 s."""
    from pathlib import Path

    deadline = time.monotonic() + 5
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            states.append(stat[stat.rindex(")") + 2])
        if states and all(state in "tT" for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not stop: {states}"
        time.sleep(0.01)
