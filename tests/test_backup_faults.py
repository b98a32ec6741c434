"""Backups and restores that go wrong part-way end with a clear error, never a hang, and leave
nothing behind that claims to be complete: no backup.json for a backup that failed, no stream
for a restore that failed.

Every transfer here runs against a real nats-server. The faults are made in two ways: the
server process is frozen (SIGSTOP) in the middle of a snapshot, or natsop's JetStream API
prefix points at an ApiProxy that forwards to the real server but cuts one part of the
protocol (acknowledgements, upload replies, the final answer), or answers a snapshot the
way a server older than 2.15 answers it for a memory stream.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from natsop import EmbeddedServer, Toolkit
from natsop.errors import NatsopError, ServerError, Unavailable
from natsop.ops.backup import (
    AccountBackupResult,
    BackupVerifyResult,
    StreamBackupResult,
    memory_snapshot_refusal,
)
from natsop.registry import get
from natsop.runner import run_operation
from tests.backup_support import (
    ApiProxy,
    Handler,
    api,
    connect,
    fill,
    make_stream,
    proxied_toolkit,
    stream_state,
)

# Small chunks and a one-chunk window: every chunk waits for its acknowledgement, so a transfer of a
# few hundred KiB takes hundreds of round trips and can be interrupted in the middle.
SLOW = {"chunk_size": 1024, "window_size": 1024}


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def _backup(toolkit: Toolkit, server: EmbeddedServer, name: str, directory: str, count: int = 300) -> None:
    """A stream of `count` random 1000-byte messages (they do not compress), backed up into `directory`."""
    async with connect(server) as nc:
        await make_stream(nc, name)
        for i in range(count):
            await nc.publish(f"{name}.m", os.urandom(1000), headers={"X-I": str(i)})
        await nc.jetstream().publish(f"{name}.m", b"last")
    made = await toolkit.call("stream_backup", stream=name, directory=directory)
    assert isinstance(made, StreamBackupResult) and made.messages == count + 1


# ---------------------------------------------------------------------------------------------
# Snapshot


@pytest.fixture(scope="module")
def freezable() -> Iterator[EmbeddedServer]:
    """A server of its own, since the test stops its process for a while."""
    with EmbeddedServer() as srv:
        yield srv


async def test_a_snapshot_from_a_frozen_server_stalls_and_leaves_no_backup(
        freezable: EmbeddedServer, tmp_path: Path, uniq: str) -> None:
    pid = freezable.pid
    assert pid is not None
    async with connect(freezable) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 300, big_every=1)  # 300 x 16 KiB of random bytes
    frozen_at: list[float] = []

    async def freeze_on_first_chunk(done: float, total: float | None, message: str | None) -> None:
        if not frozen_at:
            os.kill(pid, signal.SIGSTOP)
            frozen_at.append(done)

    async with Toolkit.for_server(freezable, files_dir=tmp_path) as tk:
        started = time.monotonic()
        try:
            with pytest.raises(NatsopError) as stalled:
                await run_operation(tk.context.with_progress(freeze_on_first_chunk), get("stream_backup"),
                                    {"stream": uniq, "directory": "frozen", "stall_timeout_s": 1, **SLOW})
        finally:
            os.kill(pid, signal.SIGCONT)
        took = time.monotonic() - started
        assert frozen_at, "the snapshot never delivered a chunk"
        assert isinstance(stalled.value, Unavailable) and stalled.value.code == "snapshot_stalled"
        assert f"snapshot of {uniq} stalled: no data for 1s" in stalled.value.message
        assert took < 10, took
        # Nothing that could pass for a backup: the directory the backup created is gone.
        assert not (tmp_path / "frozen").exists(), _files(tmp_path / "frozen")

        # The server is back; the same backup now completes and verifies.
        again = await tk.call("stream_backup", stream=uniq, directory="frozen", stall_timeout_s=5)
        assert isinstance(again, StreamBackupResult) and again.messages == 300
        checked = await tk.call("backup_verify", directory="frozen")
        assert isinstance(checked, BackupVerifyResult) and checked.ok, checked.backups[0].problems


async def test_unacknowledged_chunks_end_with_no_flow_response(
        server: EmbeddedServer, tmp_path: Path, uniq: str) -> None:
    """The chunks reach natsop without their ack subjects: the server gives up (408 No Flow Response)."""
    async with connect(server) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 50, big_every=1)
    async with proxied_toolkit(server, tmp_path, uniq) as (tk, proxy):
        async def snapshot_without_acks(msg: Msg) -> None:
            body = json.loads(msg.data)
            client_inbox = body["deliver_subject"]

            async def pass_on_without_reply(chunk: Msg) -> None:
                await proxy.nc.publish(client_inbox, chunk.data, headers=chunk.headers)

            body["deliver_subject"] = proxy.nc.new_inbox()
            await proxy.nc.subscribe(body["deliver_subject"], cb=pass_on_without_reply)
            await proxy.relay(msg, body)

        proxy.on["STREAM.SNAPSHOT"] = snapshot_without_acks
        (tmp_path / "keep").mkdir()
        (tmp_path / "keep" / "unrelated.txt").write_text("mine")
        with pytest.raises(NatsopError) as refused:
            await tk.call("stream_backup", stream=uniq, directory="keep", stall_timeout_s=20, **SLOW)
    err = refused.value
    assert err.code == "snapshot_no_flow_response", (err.code, err.message)
    assert "408 No Flow Response" in err.message and err.hint
    # The directory existed before: it stays, with only what was there.
    assert _files(tmp_path / "keep") == ["unrelated.txt"]
    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")


# ---------------------------------------------------------------------------------------------
# Memory streams on servers that cannot snapshot them (before 2.15)

# What nats-server 2.10-2.14 answers a snapshot request for a memory stream: its memory store has no
# snapshot ("no impl"), wrapped as JSStreamSnapshotErrF.
OLD_SERVER_MEMORY_ANSWER = (b'{"type":"io.nats.jetstream.api.v1.stream_snapshot_response",'
                            b'"error":{"code":500,"err_code":10064,"description":"snapshot failed: no impl"}}')


def test_the_memory_stream_decision() -> None:
    no_impl = ServerError("snapshot of stream M: snapshot failed: no impl", details={"err_code": 10064, "status": 500})
    refusal = memory_snapshot_refusal("M", "memory", no_impl)
    assert refusal is not None and refusal.code == "memory_stream_not_supported"
    assert "before 2.15" in refusal.message and "no impl" in refusal.message and refusal.hint
    # The same answer for a file stream is a real failure, and so is any other failure of a memory stream.
    assert memory_snapshot_refusal("F", "file", no_impl) is None
    other = ServerError("snapshot of stream M: snapshot failed: disk full", details={"err_code": 10064, "status": 500})
    assert memory_snapshot_refusal("M", "memory", other) is None
    timeout = Unavailable("snapshot of stream M: did not answer in time", code="timeout")
    assert memory_snapshot_refusal("M", "memory", timeout) is None


async def test_memory_streams_are_skipped_with_a_reason_where_the_server_cannot_snapshot_them(
        server: EmbeddedServer, tmp_path: Path, uniq: str) -> None:
    file_stream, mem_stream = f"{uniq}_F", f"{uniq}_M"
    async with connect(server) as nc:
        await make_stream(nc, file_stream)
        await make_stream(nc, mem_stream, storage="memory")
        await fill(nc, file_stream, 20)
        await fill(nc, mem_stream, 20)
    async with proxied_toolkit(server, tmp_path, uniq) as (tk, proxy):
        async def answer_like_an_old_server(msg: Msg) -> None:
            if proxy.endpoint(msg) == f"STREAM.SNAPSHOT.{mem_stream}":
                await proxy.nc.publish(msg.reply, OLD_SERVER_MEMORY_ANSWER)
            else:
                await proxy.relay(msg)

        proxy.on["STREAM.SNAPSHOT"] = answer_like_an_old_server
        done = await tk.call("account_backup", directory="acct", streams=[file_stream, mem_stream])
        assert isinstance(done, AccountBackupResult)
        by_name = {s.stream: s for s in done.streams}
        assert (done.backed_up, done.skipped, done.failed) == (1, 1, 0)
        assert by_name[file_stream].status == "ok"
        skipped = by_name[mem_stream]
        assert skipped.status == "skipped" and skipped.storage == "memory"
        assert skipped.reason and "cannot snapshot memory stream" in skipped.reason and "no impl" in skipped.reason
        assert _files(tmp_path / "acct") == [file_stream]

        with pytest.raises(NatsopError) as one:
            await tk.call("stream_backup", stream=mem_stream, directory="mem")
        assert one.value.code == "memory_stream_not_supported"
        assert not (tmp_path / "mem").exists()
    async with connect(server) as nc:
        for name in (file_stream, mem_stream):
            await api(nc, f"STREAM.DELETE.{name}")


# ---------------------------------------------------------------------------------------------
# Restore


def _restore_passing(proxy: ApiProxy, passes: Callable[[bytes], bool]) -> Handler:
    """A STREAM.RESTORE handler that lets through to the server only the uploaded messages `passes` accepts."""
    async def handler(msg: Msg) -> None:
        answer = await proxy.forward(msg)
        real = json.loads(answer.data)["deliver_subject"]

        async def upload(chunk: Msg) -> None:
            if passes(chunk.data):
                reply = await proxy.nc.request(real, chunk.data, timeout=10)
                await proxy.nc.publish(chunk.reply, reply.data, headers=reply.headers)

        inbox = proxy.nc.new_inbox()
        await proxy.nc.subscribe(inbox, cb=upload)
        await proxy.nc.publish(msg.reply, answer.data.replace(real.encode(), inbox.encode()))

    return handler


async def test_a_restore_whose_chunks_go_unanswered_stalls_and_leaves_no_stream(
        server: EmbeddedServer, toolkit: Toolkit, tmp_path: Path, uniq: str) -> None:
    await _backup(toolkit, server, uniq, "b")
    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")
    async with proxied_toolkit(server, tmp_path, uniq) as (tk, proxy):
        passed: list[int] = []

        def first_chunks_only(chunk: bytes) -> bool:
            if len(passed) < 2:  # the server takes these; then it hears nothing more
                passed.append(len(chunk))
                return True
            return False

        proxy.on["STREAM.RESTORE"] = _restore_passing(proxy, first_chunks_only)
        started = time.monotonic()
        with pytest.raises(NatsopError) as stalled:
            await tk.call("stream_restore", directory="b", stall_timeout_s=1)
        took = time.monotonic() - started
    err = stalled.value
    assert err.code == "restore_stalled", (err.code, err.message)
    assert "did not answer a chunk for 1s" in err.message
    assert err.message.endswith(("no stream was left behind", f"the partly restored stream {uniq} was removed"))
    assert took < 20, took
    async with connect(server) as nc:
        assert await stream_state(nc, uniq) is None, err.message


async def test_a_restore_without_a_final_answer_times_out_and_leaves_no_stream(
        server: EmbeddedServer, toolkit: Toolkit, tmp_path: Path, uniq: str) -> None:
    await _backup(toolkit, server, uniq, "b")
    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")
    async with proxied_toolkit(server, tmp_path, uniq) as (tk, proxy):
        # Every chunk arrives; the empty message that ends the upload does not.
        proxy.on["STREAM.RESTORE"] = _restore_passing(proxy, lambda chunk: bool(chunk))
        with pytest.raises(NatsopError) as timed_out:
            await tk.call("stream_restore", directory="b", timeout_s=1)
    err = timed_out.value
    assert err.code == "restore_timeout", (err.code, err.message)
    assert "no answer within 1s after the upload" in err.message and err.hint
    # The server kept what it had stored (2.15 does): natsop removed that stream.
    assert err.message.endswith(f"the partly restored stream {uniq} was removed")
    assert err.details["partial_stream_removed"] is True
    async with connect(server) as nc:
        assert await stream_state(nc, uniq) is None, err.message
