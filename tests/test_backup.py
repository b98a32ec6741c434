"""Backups and restores that lose nothing: stream, account, KV and Object Store round trips,
damaged backups, confirmation, and the MCP and CLI faces.

Round trips restore into a second, fresh server and compare every message (sequence,
subject, headers, payload and timestamp) and the consumers' ack floors.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.js.errors as jse
import pytest
import pytest_asyncio

from natsop import EmbeddedServer, Toolkit
from natsop.errors import NatsopError
from natsop.ops.backup import (
    AccountBackupResult,
    AccountRestoreResult,
    BackupVerifyResult,
    StreamBackupResult,
)
from natsop.ops.backup import StreamRestoreResult as Restored
from natsop.wire.s2 import S2Reader
from tests.backup_support import api, connect, digest, fill, make_stream, stream_state
from tests.conftest import CliFn, cli_json, mcp_client


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A second server that starts empty: restores land here."""
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("fresh-store")) as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(fresh_server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Toolkit]:
    """The Python face on the fresh server, sharing the test's files directory with `toolkit`."""
    async with Toolkit.for_server(fresh_server, files_dir=tmp_path) as tk:
        yield tk


# ---------------------------------------------------------------------------------------------
# The big round trip


async def test_round_trip_of_100k_messages_into_a_fresh_server(
        server: EmbeddedServer, fresh_server: EmbeddedServer, toolkit: Toolkit, fresh: Toolkit,
        uniq: str, tmp_path: Path) -> None:
    async with connect(server) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 100_000, big_every=5000)
        # Gaps: the first message, every 997th, and the last (a trailing gap must survive too).
        for seq in [1, *range(997, 100_000, 997), 100_000]:
            resp = await api(nc, f"STREAM.MSG.DELETE.{uniq}", {"seq": seq})
            assert resp.get("success"), resp
        # A durable consumer that acknowledged 500 messages and holds 10 more unacknowledged.
        js = nc.jetstream()
        psub = await js.pull_subscribe(f"{uniq}.>", durable="C", stream=uniq)
        for m in await psub.fetch(500, timeout=10):
            await m.ack_sync()
        assert len(await psub.fetch(10, timeout=10)) == 10
        await psub.unsubscribe()
        source_consumer = await api(nc, f"CONSUMER.INFO.{uniq}.C")
        assert source_consumer["ack_floor"]["consumer_seq"] == 500
        source = await digest(nc, uniq)
    assert len(source) == 100_000 - 102

    backup = await toolkit.call("stream_backup", stream=uniq, directory="big")
    assert isinstance(backup, StreamBackupResult)
    assert backup.messages == len(source) and backup.consumers == 1
    assert backup.first_seq == 2 and backup.last_seq == 100_000
    assert json.loads((tmp_path / "big" / "backup.json").read_text())["config"]["name"] == uniq
    assert not list((tmp_path / "big").glob("*.partial"))

    checked = await toolkit.call("backup_verify", directory="big")
    assert isinstance(checked, BackupVerifyResult)
    assert checked.ok, checked.backups[0].problems
    one = checked.backups[0]
    assert (one.format, one.complete, one.messages, one.consumers) == ("NATSARC1", True, len(source), ["C"])
    assert (one.first_seq, one.last_seq, one.subjects) == (2, 99_999, 65)

    restored = await fresh.call("stream_restore", directory="big")
    assert isinstance(restored, Restored)
    assert restored.done and not restored.replaced and not restored.confirmation_required
    assert restored.verified, restored.differences
    assert restored.state is not None and restored.state.last_seq == 100_000

    async with connect(fresh_server) as nc2:
        assert await digest(nc2, uniq) == source
        consumer = await api(nc2, f"CONSUMER.INFO.{uniq}.C")
    floor = {k: consumer["ack_floor"].get(k) for k in ("consumer_seq", "stream_seq")}
    assert floor == {k: source_consumer["ack_floor"][k] for k in ("consumer_seq", "stream_seq")}
    assert consumer["config"]["durable_name"] == "C"


# ---------------------------------------------------------------------------------------------
# KV and Object Store


async def test_kv_bucket_round_trip_restores_values_revisions_and_deletes(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str) -> None:
    async with connect(server) as nc:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=uniq, history=5, direct=True)
        for i in range(4):
            await kv.put("colour", f"v{i}".encode())
        await kv.put("gone", b"soon deleted")
        await kv.delete("gone")
        await kv.put("purged", b"x")
        await kv.purge("purged")
        for i in range(50):
            await kv.put(f"k.{i}", os.urandom(i))

        # Every message of the bucket's stream: values, revisions (sequences), delete and purge markers.
        # (nats-py's kv.history() is itself flaky: its watcher sometimes ends before the first entry.)
        before = await digest(nc, f"KV_{uniq}")
        assert len(before) == 4 + 2 + 1 + 50  # the purge rolled up the purged key's value
        backup = await toolkit.call("stream_backup", stream=f"KV_{uniq}", directory="kv")
        assert isinstance(backup, StreamBackupResult)

        # Change the bucket after the backup; the restore (replacing it) must bring the old contents back.
        await kv.put("colour", b"changed later")
        await kv.put("new-key", b"not in the backup")
        dry = await toolkit.call("stream_restore", directory="kv")
        assert isinstance(dry, Restored)
        assert dry.confirmation_required and not dry.done and dry.confirm_with == f"KV_{uniq}"
        assert (await kv.get("colour")).value == b"changed later"  # nothing happened yet

        done = await toolkit.call("stream_restore", directory="kv", confirm=f"KV_{uniq}")
        assert isinstance(done, Restored)
        assert done.done and done.replaced and done.verified, done.differences

        kv = await js.key_value(uniq)
        assert await digest(nc, f"KV_{uniq}") == before
        entry = await kv.get("colour")
        assert (entry.value, entry.revision) == (b"v3", 4)
        with pytest.raises((jse.KeyDeletedError, jse.KeyNotFoundError)):
            await kv.get("gone")
        with pytest.raises(jse.KeyNotFoundError):
            await kv.get("new-key")
        await js.delete_key_value(uniq)


async def test_object_store_round_trip_keeps_multi_chunk_objects_and_digests(
        server: EmbeddedServer, fresh_server: EmbeddedServer, toolkit: Toolkit, fresh: Toolkit,
        uniq: str) -> None:
    data = os.urandom(700 * 1024 + 17)  # six 128 KiB chunks
    async with connect(server) as nc:
        obs = await nc.jetstream().create_object_store(bucket=uniq)
        info = await obs.put("big.bin", data)
        assert info.chunks is not None and info.chunks > 1
        await obs.put("small.txt", b"hello")
        await obs.delete("small.txt")
        backup = await toolkit.call("stream_backup", stream=f"OBJ_{uniq}", directory="obj")
        assert isinstance(backup, StreamBackupResult)
    restored = await fresh.call("stream_restore", directory="obj")
    assert isinstance(restored, Restored)
    assert restored.verified, restored.differences
    async with connect(fresh_server) as nc2:
        obs2 = await nc2.jetstream().object_store(uniq)
        got = await obs2.get("big.bin")
        assert got.data == data
        assert got.info.digest == info.digest and got.info.chunks == info.chunks
        with pytest.raises((jse.ObjectDeletedError, jse.ObjectNotFoundError)):
            await obs2.get("small.txt")


# ---------------------------------------------------------------------------------------------
# Accounts


async def test_account_backup_and_restore_of_several_streams(
        server: EmbeddedServer, fresh_server: EmbeddedServer, toolkit: Toolkit, fresh: Toolkit,
        uniq: str, tmp_path: Path) -> None:
    names = [f"{uniq}_A", f"{uniq}_B", f"{uniq}_M"]
    async with connect(server) as nc:
        await make_stream(nc, names[0])
        await make_stream(nc, names[1])
        await make_stream(nc, names[2], storage="memory")
        for i, name in enumerate(names):
            await fill(nc, name, 200 * (i + 1), seed=i)
        sources = {n: await digest(nc, n) for n in names}

    backup = await toolkit.call("account_backup", directory="acct", streams=names)
    assert isinstance(backup, AccountBackupResult)
    assert [s.stream for s in backup.streams] == sorted(names)
    by_name = {s.stream: s for s in backup.streams}
    # nats-server 2.15 snapshots memory streams too; older servers would have it reported as skipped.
    assert all(s.status == "ok" for s in backup.streams), backup.streams
    assert by_name[names[2]].storage == "memory"
    assert [by_name[n].messages for n in names] == [200, 400, 600]
    assert sorted(p.name for p in (tmp_path / "acct").iterdir()) == sorted(names)

    verify = await toolkit.call("backup_verify", directory="acct")
    assert isinstance(verify, BackupVerifyResult)
    assert verify.ok and verify.total == 3

    first = await fresh.call("account_restore", directory="acct")
    assert isinstance(first, AccountRestoreResult)
    assert first.done and first.restored == 3 and first.existing == []
    assert all(s.verified for s in first.streams), first.streams

    # Again: now they exist, so it is refused until confirmed with the exact token.
    async with connect(fresh_server) as nc2:
        await nc2.jetstream().publish(f"{names[0]}.extra", b"after the restore")
        again = await fresh.call("account_restore", directory="acct")
        assert isinstance(again, AccountRestoreResult)
        assert again.confirmation_required and not again.done
        assert again.existing == sorted(names)
        assert again.confirm_with == "replace " + ",".join(sorted(names))
        with pytest.raises(NatsopError) as wrong:
            await fresh.call("account_restore", directory="acct", confirm="replace 3 streams")
        assert wrong.value.code == "confirmation_mismatch"
        assert (await stream_state(nc2, names[0]) or {}).get("messages") == 201

        done = await fresh.call("account_restore", directory="acct", confirm=again.confirm_with)
        assert isinstance(done, AccountRestoreResult)
        assert done.done and done.restored == 3 and done.failed == 0
        for name in names:
            assert await digest(nc2, name) == sources[name]
        for name in names:
            await api(nc2, f"STREAM.DELETE.{name}")


async def test_stream_restore_refuses_an_existing_stream_until_confirmed(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str) -> None:
    async with connect(server) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 50)
        await toolkit.call("stream_backup", stream=uniq, directory="s")
        await fill(nc, uniq, 25, seed=9)
        dry = await toolkit.call("stream_restore", directory="s")
        assert isinstance(dry, Restored)
        assert dry.confirmation_required and dry.existing_messages == 75 and dry.backup_messages == 50
        assert "delete the existing stream" in dry.action
        with pytest.raises(NatsopError) as wrong:
            await toolkit.call("stream_restore", directory="s", confirm="yes")
        assert wrong.value.code == "confirmation_mismatch"
        assert (await stream_state(nc, uniq) or {})["messages"] == 75
        done = await toolkit.call("stream_restore", directory="s", confirm=uniq)
        assert isinstance(done, Restored)
        assert done.replaced and done.verified and done.state is not None and done.state.messages == 50
        await api(nc, f"STREAM.DELETE.{uniq}")


async def test_restore_overrides_and_existing_backup_protection(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    async with connect(server) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 10)
        await toolkit.call("stream_backup", stream=uniq, directory="o")
        with pytest.raises(NatsopError) as exists:
            await toolkit.call("stream_backup", stream=uniq, directory="o")
        assert exists.value.code == "backup_exists"
        again = await toolkit.call("stream_backup", stream=uniq, directory="o", overwrite=True, no_consumers=True)
        assert isinstance(again, StreamBackupResult)

        cfg = json.loads((tmp_path / "o" / "backup.json").read_text())["config"]
        cfg["description"] = "restored with another configuration"
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        await api(nc, f"STREAM.DELETE.{uniq}")
        done = await toolkit.call("stream_restore", directory="o", config_file="cfg.json", replicas=1)
        assert isinstance(done, Restored) and done.verified
        info = await api(nc, f"STREAM.INFO.{uniq}")
        assert info["config"]["description"] == "restored with another configuration"

        cfg["name"] = "OTHER"
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(NatsopError) as renamed:
            await toolkit.call("stream_restore", directory="o", config_file="cfg.json", confirm=uniq)
        assert renamed.value.code == "invalid_config_file"
        await api(nc, f"STREAM.DELETE.{uniq}")


# ---------------------------------------------------------------------------------------------
# Damaged backups


def _frame_offsets(data: bytes) -> list[int]:
    pos, out = 0, []
    while pos < len(data):
        out.append(pos)
        pos += 4 + int.from_bytes(data[pos + 1:pos + 4], "little")
    return out


async def _damaged_backups(server: EmbeddedServer, toolkit: Toolkit, name: str, tmp_path: Path) -> bytes:
    async with connect(server) as nc:
        await make_stream(nc, name)
        await fill(nc, name, 3000, big_every=3)  # ~16 MB: several S2 blocks
        await toolkit.call("stream_backup", stream=name, directory="good")
        await api(nc, f"STREAM.DELETE.{name}")
    good = tmp_path / "good"
    data = (good / "stream.tar.s2").read_bytes()
    frames = _frame_offsets(data)
    assert len(frames) > 4
    variants = {
        "cut_mid_frame": data[:len(data) - 1000],
        "cut_at_frame": data[:frames[len(frames) // 2]],
        "corrupted": bytearray(data),
    }
    corrupt = variants["corrupted"]
    assert isinstance(corrupt, bytearray)
    corrupt[frames[2] + 5000] ^= 0x55
    for label, blob in variants.items():
        d = tmp_path / label
        d.mkdir()
        (d / "backup.json").write_bytes((good / "backup.json").read_bytes())
        (d / "stream.tar.s2").write_bytes(bytes(blob))
    return data


async def test_damaged_backups_are_reported_and_leave_no_stream_behind(
        server: EmbeddedServer, toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    await _damaged_backups(server, toolkit, uniq, tmp_path)
    expected = {
        "cut_mid_frame": ("truncated", "backup_truncated"),
        "cut_at_frame": ("truncated", "backup_truncated"),
        "corrupted": ("checksum mismatch", "backup_corrupt"),
    }
    async with connect(server) as nc:
        for label, (problem, code) in expected.items():
            checked = await toolkit.call("backup_verify", directory=label)
            assert isinstance(checked, BackupVerifyResult)
            assert not checked.ok, label
            assert any(problem in p for p in checked.backups[0].problems), (label, checked.backups[0].problems)

            # By default the archive is read first: refused before the server sees anything.
            with pytest.raises(NatsopError) as refused:
                await toolkit.call("stream_restore", directory=label)
            assert refused.value.code == code, (label, refused.value.message)
            assert await stream_state(nc, uniq) is None, label

            if label == "cut_mid_frame":
                continue  # the cheap frame walk catches it whatever check_archive says
            # Sent anyway, the server fails it part-way (2.15 keeps what it stored): natsop removes the rest.
            with pytest.raises(NatsopError) as failed:
                await toolkit.call("stream_restore", directory=label, check_archive=False)
            assert "restore of" in failed.value.message, failed.value.message
            if label == "cut_at_frame":
                # The server stored the messages before the cut and kept them: natsop removed that stream.
                assert "partly restored stream" in failed.value.message and "was removed" in failed.value.message
                assert failed.value.details["partial_stream_removed"] is True
            else:
                assert "no stream was left behind" in failed.value.message or "was removed" in failed.value.message
            assert await stream_state(nc, uniq) is None, label

        # A damaged backup never replaces a good stream, even when confirmed.
        done = await toolkit.call("stream_restore", directory="good")
        assert isinstance(done, Restored) and done.verified
        with pytest.raises(NatsopError) as kept:
            await toolkit.call("stream_restore", directory="corrupted", confirm=uniq)
        assert kept.value.code == "backup_corrupt" and "nothing was changed" in kept.value.message
        assert (await stream_state(nc, uniq) or {}).get("messages") == 3000
        await api(nc, f"STREAM.DELETE.{uniq}")


async def test_incomplete_and_foreign_directories_give_clear_errors(toolkit: Toolkit, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NatsopError) as none:
        await toolkit.call("stream_restore", directory="empty")
    assert none.value.code == "not_a_backup"

    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "stream.tar.s2.partial").write_bytes(b"\xff\x06\x00\x00S2sTwO")
    with pytest.raises(NatsopError) as partial:
        await toolkit.call("stream_restore", directory="partial")
    assert partial.value.code == "backup_incomplete"

    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "backup.json").write_text("{not json")
    (tmp_path / "badjson" / "stream.tar.s2").write_bytes(b"\xff\x06\x00\x00S2sTwO")
    with pytest.raises(NatsopError) as bad:
        await toolkit.call("stream_restore", directory="badjson")
    assert bad.value.code == "backup_corrupt"
    checked = await toolkit.call("backup_verify", directory="badjson")
    assert isinstance(checked, BackupVerifyResult) and not checked.ok

    for path in ("../outside", "/etc"):
        with pytest.raises(NatsopError) as outside:
            await toolkit.call("stream_backup", stream="X", directory=path)
        assert outside.value.code == "path_outside_files_dir"
        with pytest.raises(NatsopError) as outside_r:
            await toolkit.call("stream_restore", directory=path)
        assert outside_r.value.code in ("path_outside_files_dir", "file_not_found")


async def test_backup_of_a_missing_stream_writes_nothing(toolkit: Toolkit, uniq: str, tmp_path: Path) -> None:
    with pytest.raises(NatsopError) as missing:
        await toolkit.call("stream_backup", stream=uniq, directory="nothing")
    assert missing.value.code == "stream_not_found"
    assert not (tmp_path / "nothing").exists()


def test_s2_block_decoder_handles_overlapping_copies_and_repeats() -> None:
    """S2's one extension to Snappy blocks: a copy with offset 0 repeats the previous offset."""
    from natsop.wire.s2 import decode_block

    # A hand-made block: literal "abcd", copy offset 4 length 8 (overlapping), S2 repeat of length 5.
    block = bytes([17]) + bytes([3 << 2]) + b"abcd" + bytes([0x01 | (4 << 2), 4]) + bytes([0x01 | (1 << 2), 0])
    assert decode_block(block) == b"abcd" + b"abcdabcd" + b"abcda"
    with pytest.raises(ValueError):
        decode_block(bytes([9]) + bytes([0x01 | (1 << 2), 0]))  # a repeat before any copy


# ---------------------------------------------------------------------------------------------
# Faces


async def test_mcp_backup_verify_restore_with_progress(
        server: EmbeddedServer, server_env: dict[str, str], uniq: str, tmp_path: Path) -> None:
    async with connect(server) as nc:
        await make_stream(nc, uniq)
        await fill(nc, uniq, 1500, big_every=2)
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async with mcp_client(server_env, "--files-dir", str(tmp_path), "serve") as c:
        made = await c.call_tool("stream_backup", {"stream": uniq, "directory": "m", "chunk_size": 65536},
                                 progress_callback=on_progress)
        assert not made.is_error, made.content
        assert made.structured_content is not None and made.structured_content["chunks"] > 10
        checked = await c.call_tool("backup_verify", {"directory": "m"})
        assert not checked.is_error and checked.structured_content is not None
        assert checked.structured_content["ok"] is True
        dry = await c.call_tool("stream_restore", {"directory": "m"})
        assert dry.structured_content is not None and dry.structured_content["confirmation_required"] is True
        done = await c.call_tool("stream_restore", {"directory": "m", "confirm": uniq})
        assert not done.is_error and done.structured_content is not None
        assert done.structured_content["verified"] is True and done.structured_content["replaced"] is True
        outside = await c.call_tool("stream_backup", {"stream": uniq, "directory": "/tmp/elsewhere"})
        assert outside.is_error
        assert "outside the files directory" in str(outside.content)
        acct = await c.call_tool("account_backup", {"directory": "acct", "streams": [uniq]})
        assert not acct.is_error and acct.structured_content is not None, acct.content
        assert acct.structured_content["backed_up"] == 1
        assert acct.structured_content["streams"][0]["messages"] == 1500
        assert (tmp_path / "acct" / uniq / "stream.tar.s2").is_file()
        asked = await c.call_tool("account_restore", {"directory": "acct"})
        assert asked.structured_content is not None and asked.structured_content["confirmation_required"] is True
        assert asked.structured_content["existing"] == [uniq]
        restored = await c.call_tool("account_restore", {"directory": "acct",
                                                         "confirm": asked.structured_content["confirm_with"]})
        assert not restored.is_error and restored.structured_content is not None, restored.content
        assert restored.structured_content["done"] is True and restored.structured_content["restored"] == 1
        assert restored.structured_content["streams"][0]["verified"] is True
    assert reports and max(done for done, _, _ in reports) <= made.structured_content["bytes"]
    assert any(m and "backing up" in m for _, _, m in reports)
    async with connect(server) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")


def test_cli_backup_verify_and_restore(cli: CliFn, uniq: str, tmp_path: Path, server: EmbeddedServer) -> None:
    async def setup() -> None:
        async with connect(server) as nc:
            await make_stream(nc, uniq)
            await fill(nc, uniq, 300)

    asyncio.run(setup())
    made = cli("--json", "stream", "backup", uniq, "c")
    assert made.exit_code == 0, made.output
    assert cli_json(made)["messages"] == 300
    assert (tmp_path / "c" / "stream.tar.s2").is_file()

    table = cli("backup", "verify", "c")
    assert table.exit_code == 0, table.output
    assert "NATSARC1" in table.output

    refused = cli("--json", "stream", "restore", "c")
    assert refused.exit_code == 1
    assert "confirmation_required" in refused.output
    forced = cli("--json", "stream", "restore", "c", "--force")
    assert forced.exit_code == 0, forced.output
    assert cli_json(forced)["verified"] is True

    acct = cli("--json", "account", "backup", "a", "--streams", uniq)
    assert acct.exit_code == 0, acct.output
    assert cli_json(acct)["backed_up"] == 1
    bad = cli("--json", "stream", "restore", "../x")
    assert bad.exit_code == 1 and "path_outside_files_dir" in bad.output
    removed = cli("stream", "rm", uniq, "--force")
    assert removed.exit_code == 0, removed.output


def test_cli_backup_to_an_absolute_path_outside_the_cwd(cli: CliFn, uniq: str, server: EmbeddedServer,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    async def setup() -> None:
        async with connect(server) as nc:
            await make_stream(nc, uniq)
            await fill(nc, uniq, 20)

    asyncio.run(setup())
    target = tmp_path_factory.mktemp("backups") / uniq
    assert Path.cwd() not in target.parents
    made = cli("--json", "stream", "backup", uniq, str(target), files_dir=False)
    assert made.exit_code == 0, made.output
    assert cli_json(made)["messages"] == 20 and (target / "stream.tar.s2").is_file()
    verified = cli("--json", "backup", "verify", str(target), files_dir=False)
    assert verified.exit_code == 0, verified.output
    assert cli("stream", "rm", uniq, "--force").exit_code == 0


def test_s2_reader_reads_byte_by_byte(tmp_path: Path) -> None:
    raw = bytes([0xFF, 6, 0, 0]) + b"S2sTwO"
    body = b"hello world"
    from natsop.wire.s2 import _masked, crc32c

    frame = _masked(crc32c(body)).to_bytes(4, "little") + body
    raw += bytes([0x01]) + len(frame).to_bytes(3, "little") + frame
    (tmp_path / "x.s2").write_bytes(raw)
    with (tmp_path / "x.s2").open("rb") as f:
        reader = S2Reader(f)
        got = b"".join(iter(lambda: reader.read(1), b""))
    assert got == body


def _s2_stream(data: bytes) -> bytes:
    """An S2 stream of `data`: compressed frames (all literals) and uncompressed frames in turn."""
    from natsop.wire.s2 import _masked, crc32c

    out = bytearray(b"\xff\x06\x00\x00S2sTwO")
    for i, start in enumerate(range(0, len(data), 65536)):
        piece = data[start:start + 65536]
        crc = _masked(crc32c(piece)).to_bytes(4, "little")
        if i % 2 == 0:
            n = len(piece)
            size = bytearray()
            while True:  # varint of the decoded length
                size.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
                n >>= 7
                if not n:
                    break
            body = crc + bytes(size) + bytes([61 << 2]) + (len(piece) - 1).to_bytes(2, "little") + piece
            out += b"\x00" + len(body).to_bytes(3, "little") + body
        else:
            body = crc + piece
            out += b"\x01" + len(body).to_bytes(3, "little") + body
    return bytes(out)


async def test_backup_verify_reads_the_tar_archives_of_older_servers(toolkit: Toolkit, tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, size in (("meta.inf", 200), ("meta.sum", 8), ("msgs/1.blk", 150_000), ("msgs/index.db", 300),
                           ("obs/C/meta.inf", 120), ("obs/C/o.dat", 40)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
    d = tmp_path / "legacy"
    d.mkdir()
    (d / "backup.json").write_text(json.dumps({"config": {"name": "OLD"}, "state": {"messages": 3}}))
    (d / "stream.tar.s2").write_bytes(_s2_stream(buf.getvalue()))
    checked = await toolkit.call("backup_verify", directory="legacy")
    assert isinstance(checked, BackupVerifyResult)
    one = checked.backups[0]
    assert checked.ok, one.problems
    assert (one.format, one.complete, one.consumers) == ("tar", True, ["C"])
    assert one.entry_names[:3] == ["meta.inf", "meta.sum", "msgs/1.blk"]

    damaged = bytearray(_s2_stream(buf.getvalue()))
    damaged[-100] ^= 0x01
    (d / "stream.tar.s2").write_bytes(bytes(damaged))
    bad = await toolkit.call("backup_verify", directory="legacy")
    assert isinstance(bad, BackupVerifyResult)
    assert not bad.ok and any("checksum mismatch" in p for p in bad.backups[0].problems)


def test_crc32c_fallback_matches_the_standard_check_value() -> None:
    from natsop.wire.s2 import _crc32c_py, crc32c

    assert _crc32c_py(b"123456789") == crc32c(b"123456789") == 0xE3069283
    for n in (0, 1, 3, 63, 64, 65, 1000, 70_001):
        data = os.urandom(n)
        assert _crc32c_py(data) == crc32c(data), n
