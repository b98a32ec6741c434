"""Object Store tools: every operation through the Python, MCP and CLI faces, the ADR-20
wire layout, interoperability with nats-py's own object store, and a large object
streamed with bounded memory."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import api as js_api

from natsop import EmbeddedServer, Toolkit
from natsop.errors import NatsopError
from tests.conftest import CliFn, cli_json, mcp_client

MiB = 1024 * 1024


@pytest_asyncio.fixture(loop_scope="session")
async def raw(server: EmbeddedServer) -> AsyncIterator[NATS]:
    """A plain nats-py connection to the APP account, for interop and wire checks."""
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        yield nc
    finally:
        await nc.close()


async def _call(toolkit: Toolkit, tool: str, **kwargs: Any) -> Any:
    return await toolkit.call(tool, **kwargs)


async def _fails(toolkit: Toolkit, tool: str, code: str, **kwargs: Any) -> NatsopError:
    with pytest.raises(NatsopError) as info:
        await toolkit.call(tool, **kwargs)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


async def _api(nc: NATS, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b"", timeout=5)
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _chunk_count(nc: NATS, bucket: str, nuid: str) -> int:
    info = await _api(nc, f"STREAM.INFO.OBJ_{bucket}", {"subjects_filter": f"$O.{bucket}.C.{nuid}"})
    return sum((info["state"].get("subjects") or {}).values())


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return "SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode()


# ---------------------------------------------------------------------------------------------
# Buckets


async def test_add_creates_the_adr20_stream_and_is_idempotent(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    made = await _call(toolkit, "object_add", bucket=uniq, description="test files", ttl_s=3600, max_bytes=10 * MiB,
                       metadata={"owner": "tests"})
    assert made.bucket.bucket == uniq and made.bucket.stream == f"OBJ_{uniq}"
    assert made.bucket.objects == 0 and made.bucket.ttl_s == 3600 and made.bucket.metadata == {"owner": "tests"}
    cfg = (await _api(raw, f"STREAM.INFO.OBJ_{uniq}"))["config"]
    assert cfg["subjects"] == [f"$O.{uniq}.C.>", f"$O.{uniq}.M.>"]
    assert cfg["discard"] == "new" and cfg["allow_rollup_hdrs"] is True and cfg["allow_direct"] is True
    assert cfg["max_age"] == 3600 * 10**9 and cfg["max_bytes"] == 10 * MiB and cfg["compression"] == "s2"
    again = await _call(toolkit, "object_add", bucket=uniq, description="test files", ttl_s=3600,
                        max_bytes=10 * MiB, metadata={"owner": "tests"})
    assert again.bucket.created == made.bucket.created
    await _fails(toolkit, "object_add", "bucket_exists", bucket=uniq, replicas=1, max_bytes=5 * MiB)
    await _fails(toolkit, "object_add", "invalid_bucket", bucket="has.dot")
    await _fails(toolkit, "object_info", "bucket_not_found", bucket=f"{uniq}_missing")


async def test_ls_lists_buckets_a_page_at_a_time(toolkit: Toolkit, uniq: str) -> None:
    for i in range(3):
        await _call(toolkit, "object_add", bucket=f"{uniq}{i}")
    listed = await _call(toolkit, "object_ls", limit=1000)
    names = [b.bucket for b in listed.buckets]
    assert {f"{uniq}{i}" for i in range(3)} <= set(names)
    assert listed.total == len(names) and listed.truncated is False
    seen: list[str] = []
    cursor = None
    while True:
        page = await _call(toolkit, "object_ls", limit=2, cursor=cursor)
        assert len(page.buckets) <= 2
        seen.extend(b.bucket for b in page.buckets)
        if not page.truncated:
            break
        cursor = page.next_cursor
    assert seen == names


async def test_delete_bucket_needs_confirmation(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    await _call(toolkit, "object_put", bucket=uniq, name="a", data="x")
    dry = await _call(toolkit, "object_delete_bucket", bucket=uniq)
    assert dry.done is False and dry.confirm_with == uniq and dry.objects == 1
    await _fails(toolkit, "object_delete_bucket", "confirmation_mismatch", bucket=uniq, confirm="other")
    done = await _call(toolkit, "object_delete_bucket", bucket=uniq, confirm=uniq)
    assert done.done is True
    await _fails(toolkit, "object_info", "bucket_not_found", bucket=uniq)


# ---------------------------------------------------------------------------------------------
# Objects


async def test_inline_put_get_info_with_headers_and_metadata(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    put = await _call(toolkit, "object_put", bucket=uniq, name="greeting.txt", data="héllo wörld",
                      description="a greeting", headers={"Content-Type": ["text/plain"]},
                      metadata={"lang": "en"})
    body = "héllo wörld".encode()
    assert put.object.size == len(body) and put.object.chunks == 1 and put.replaced is False
    assert put.object.digest == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    assert put.object.modified and put.object.modified.startswith("20")
    got = await _call(toolkit, "object_get", bucket=uniq, name="greeting.txt")
    assert got.payload.encoding == "utf-8" and got.payload.data == "héllo wörld" and got.digest_verified
    info = (await _call(toolkit, "object_info", bucket=uniq, name="greeting.txt")).object
    assert info.description == "a greeting" and info.headers == {"Content-Type": ["text/plain"]}
    assert info.metadata == {"lang": "en"} and info.modified == put.object.modified
    binary = bytes(range(256)) * 10
    await _call(toolkit, "object_put", bucket=uniq, name="blob", data=base64.b64encode(binary).decode(),
                data_encoding="base64", chunk_size=1024)
    got = await _call(toolkit, "object_get", bucket=uniq, name="blob")
    assert got.object.chunks == 3 and got.payload.encoding == "base64"
    assert base64.b64decode(got.payload.data) == binary
    empty = await _call(toolkit, "object_put", bucket=uniq, name="empty", data="")
    assert empty.object.size == 0 and empty.object.chunks == 0
    assert empty.object.digest == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"").digest()).decode()
    got = await _call(toolkit, "object_get", bucket=uniq, name="empty")
    assert got.payload.data == "" and got.size == 0 and got.digest_verified
    bucket = (await _call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.objects == 3 and bucket.size > len(binary)


async def test_file_round_trip_overwrite_and_path_escapes(toolkit: Toolkit, raw: NATS, uniq: str,
                                                          tmp_path: Path) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    size = 3 * MiB + 12345
    digest = _write_random(tmp_path / "src.bin", size)
    reports: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, _message: str | None) -> None:
        reports.append((done, total))

    toolkit.context.progress = progress
    put = await _call(toolkit, "object_put", bucket=uniq, file="src.bin", chunk_size=64 * 1024)
    assert put.object.name == "src.bin" and put.object.size == size and put.object.digest == digest
    assert put.object.chunks == math.ceil(size / (64 * 1024))
    assert reports and reports[-1] == (size, size)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    reports.clear()
    got = await _call(toolkit, "object_get", bucket=uniq, name="src.bin", file="sub/dir/out.bin")
    assert got.size == size and got.digest_verified and Path(got.file) == tmp_path / "sub/dir/out.bin"
    assert (tmp_path / "sub/dir/out.bin").read_bytes() == (tmp_path / "src.bin").read_bytes()
    assert reports[-1] == (size, size)
    toolkit.context.progress = None
    # An existing file is kept unless overwrite is set.
    (tmp_path / "keep.bin").write_bytes(b"mine")
    await _fails(toolkit, "object_get", "file_exists", bucket=uniq, name="src.bin", file="keep.bin")
    assert (tmp_path / "keep.bin").read_bytes() == b"mine"
    await _call(toolkit, "object_get", bucket=uniq, name="src.bin", file="keep.bin", overwrite=True)
    assert (tmp_path / "keep.bin").stat().st_size == size
    # Nothing outside the files directory, in either direction.
    outside = tmp_path.parent / f"{uniq}-outside.bin"
    outside.write_bytes(b"secret")
    try:
        await _fails(toolkit, "object_put", "path_outside_files_dir", bucket=uniq, file=f"../{outside.name}")
        await _fails(toolkit, "object_put", "path_outside_files_dir", bucket=uniq, file=str(outside))
        await _fails(toolkit, "object_get", "path_outside_files_dir", bucket=uniq, name="src.bin",
                     file=f"../{uniq}-new.bin")
        assert not (tmp_path.parent / f"{uniq}-new.bin").exists()
    finally:
        outside.unlink()
    await _fails(toolkit, "object_put", "file_not_found", bucket=uniq, file="nope.bin")
    await _fails(toolkit, "object_put", "not_a_file", bucket=uniq, file="sub")
    leftovers = [p.name for p in tmp_path.rglob("*.part")]
    assert leftovers == []


async def test_replacing_an_object_purges_the_old_chunks(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    first = await _call(toolkit, "object_put", bucket=uniq, name="doc", data="v1" * 2000, chunk_size=1024)
    assert await _chunk_count(raw, uniq, first.object.nuid) == 4
    second = await _call(toolkit, "object_put", bucket=uniq, name="doc", data="version two")
    assert second.replaced is True and second.object.nuid != first.object.nuid
    assert await _chunk_count(raw, uniq, first.object.nuid) == 0
    assert await _chunk_count(raw, uniq, second.object.nuid) == 1
    got = await _call(toolkit, "object_get", bucket=uniq, name="doc")
    assert got.payload.data == "version two"


async def test_delete_hides_the_object_and_purges_its_data(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    put = await _call(toolkit, "object_put", bucket=uniq, name="old.log", data="x" * 5000, chunk_size=1024)
    await _call(toolkit, "object_put", bucket=uniq, name="new.log", data="y")
    dry = await _call(toolkit, "object_del", bucket=uniq, name="old.log")
    assert dry.done is False and dry.confirm_with == f"{uniq}/old.log" and dry.size == 5000
    await _fails(toolkit, "object_del", "confirmation_mismatch", bucket=uniq, name="old.log", confirm=uniq)
    assert (await _call(toolkit, "object_get", bucket=uniq, name="old.log", max_inline_bytes=8000)).size == 5000
    done = await _call(toolkit, "object_del", bucket=uniq, name="old.log", confirm=f"{uniq}/old.log")
    assert done.done is True
    assert await _chunk_count(raw, uniq, put.object.nuid) == 0
    err = await _fails(toolkit, "object_get", "object_deleted", bucket=uniq, name="old.log")
    assert "deleted" in err.message
    await _fails(toolkit, "object_info", "object_deleted", bucket=uniq, name="old.log")
    marker = (await _call(toolkit, "object_info", bucket=uniq, name="old.log", show_deleted=True)).object
    assert marker.deleted is True and marker.size == 0 and marker.chunks == 0 and marker.digest is None
    await _fails(toolkit, "object_del", "object_deleted", bucket=uniq, name="old.log")
    visible = await _call(toolkit, "object_ls", bucket=uniq)
    assert [o.name for o in visible.objects] == ["new.log"]
    everything = await _call(toolkit, "object_ls", bucket=uniq, show_deleted=True)
    assert sorted((o.name, o.deleted) for o in everything.objects) == [("new.log", False), ("old.log", True)]
    await _fails(toolkit, "object_get", "object_not_found", bucket=uniq, name="never.log")


async def test_object_listing_pages_by_cursor(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    for i in range(9):
        await _call(toolkit, "object_put", bucket=uniq, name=f"obj-{i}", data=str(i))
    for i in (2, 5):
        await _call(toolkit, "object_del", bucket=uniq, name=f"obj-{i}", confirm=f"{uniq}/obj-{i}")
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await _call(toolkit, "object_ls", bucket=uniq, limit=3, cursor=cursor)
        pages += 1
        assert len(page.objects) <= 3
        names.extend(o.name for o in page.objects)
        if not page.truncated:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor
    assert sorted(names) == sorted(f"obj-{i}" for i in range(9) if i not in (2, 5))
    assert pages == 3
    await _fails(toolkit, "object_ls", "invalid_cursor", bucket=uniq, cursor="abc")


async def test_sealed_bucket_refuses_writes(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    await _call(toolkit, "object_put", bucket=uniq, name="final", data="frozen")
    dry = await _call(toolkit, "object_seal", bucket=uniq)
    assert dry.done is False and dry.confirm_with == uniq and "permanently" in dry.action
    await _call(toolkit, "object_put", bucket=uniq, name="still-open", data="ok")
    sealed = await _call(toolkit, "object_seal", bucket=uniq, confirm=uniq)
    assert sealed.done is True and sealed.sealed is True
    assert (await _call(toolkit, "object_info", bucket=uniq)).bucket_info.sealed is True
    err = await _fails(toolkit, "object_put", "bucket_sealed", bucket=uniq, name="late", data="no")
    assert "sealed" in err.message
    await _fails(toolkit, "object_del", "bucket_sealed", bucket=uniq, name="final", confirm=f"{uniq}/final")
    await _fails(toolkit, "object_link", "bucket_sealed", bucket=uniq, name="ln", target_bucket=uniq,
                 target_name="final")
    assert (await _call(toolkit, "object_get", bucket=uniq, name="final")).payload.data == "frozen"
    again = await _call(toolkit, "object_seal", bucket=uniq)
    assert again.done is True and "already" in again.action


async def test_full_bucket_is_a_clear_error_and_leaves_no_chunks(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq, max_bytes=64 * 1024)
    err = await _fails(toolkit, "object_put", "bucket_full", bucket=uniq, name="big",
                       data=base64.b64encode(os.urandom(200 * 1024)).decode(), data_encoding="base64",
                       chunk_size=8 * 1024)
    assert "max_bytes" in err.hint
    await _fails(toolkit, "object_get", "object_not_found", bucket=uniq, name="big")
    state = (await _api(raw, f"STREAM.INFO.OBJ_{uniq}"))["state"]
    assert state["messages"] == 0


async def test_bad_input_is_refused_before_anything_is_sent(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    await _fails(toolkit, "object_put", "invalid_argument", bucket=uniq, name="x")
    await _fails(toolkit, "object_put", "invalid_argument", bucket=uniq, name="x", data="a", file="f")
    await _fails(toolkit, "object_put", "invalid_argument", bucket=uniq, data="a")
    await _fails(toolkit, "object_put", "invalid_base64", bucket=uniq, name="x", data="@@@", data_encoding="base64")
    await _fails(toolkit, "object_put", "inline_too_large", bucket=uniq, name="x", data="a" * (MiB + 1))
    await _fails(toolkit, "object_put", "invalid_arguments", bucket=uniq, name="x", data="a", chunk_size=100)
    await _fails(toolkit, "object_put", "invalid_arguments", bucket=uniq, name="x", data="a", chunk_size=16 * MiB)
    # The server's max_payload (1 MiB by default) bounds a chunk too.
    await _fails(toolkit, "object_put", "chunk_too_large", bucket=uniq, name="x", data="a", chunk_size=2 * MiB)
    await _fails(toolkit, "object_put", "invalid_bucket", bucket="bad bucket", name="x", data="a")
    await _fails(toolkit, "object_put", "bucket_not_found", bucket=f"{uniq}_none", name="x", data="a")
    await _fails(toolkit, "object_get", "invalid_arguments", bucket=uniq, name="")
    await _fails(toolkit, "object_watch", "invalid_arguments", bucket=uniq, timeout_s=301)
    await _fails(toolkit, "object_watch", "invalid_arguments", bucket=uniq, max_entries=10001)
    await _fails(toolkit, "object_get", "invalid_arguments", bucket=uniq, name="x", max_inline_bytes=MiB + 1)
    assert (await _call(toolkit, "object_ls", bucket=uniq)).objects == []


async def test_inline_get_of_a_large_object_points_to_file(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    await _call(toolkit, "object_put", bucket=uniq, name="big", data="z" * (100 * 1024))
    err = await _fails(toolkit, "object_get", "object_too_large_inline", bucket=uniq, name="big")
    assert "file=" in err.hint
    got = await _call(toolkit, "object_get", bucket=uniq, name="big", max_inline_bytes=MiB)
    assert got.payload.size == 100 * 1024 and not got.payload.truncated


async def test_digest_mismatch_is_an_error_and_leaves_no_file(toolkit: Toolkit, raw: NATS, uniq: str,
                                                              tmp_path: Path) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    put = await _call(toolkit, "object_put", bucket=uniq, name="doc", data="original data")
    # Rewrite the metadata record with the digest of other data, as a faulty client would.
    record = {"name": "doc", "bucket": uniq, "nuid": put.object.nuid, "size": put.object.size, "chunks": 1,
              "mtime": "0001-01-01T00:00:00Z", "options": {"max_chunk_size": 131072},
              "digest": "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"other").digest()).decode()}
    subject = f"$O.{uniq}.M.{base64.urlsafe_b64encode(b'doc').decode()}"
    await raw.request(subject, json.dumps(record).encode(), headers={"Nats-Rollup": "sub"}, timeout=5)
    err = await _fails(toolkit, "object_get", "digest_mismatch", bucket=uniq, name="doc", file="doc.txt")
    assert "digest" in err.message
    assert not (tmp_path / "doc.txt").exists() and list(tmp_path.glob("*.part")) == []
    await _fails(toolkit, "object_get", "digest_mismatch", bucket=uniq, name="doc")


# ---------------------------------------------------------------------------------------------
# Links, watch


async def test_links_are_described_and_followed(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    other = f"{uniq}_o"
    await _call(toolkit, "object_add", bucket=uniq)
    await _call(toolkit, "object_add", bucket=other)
    await _call(toolkit, "object_put", bucket=other, name="target.txt", data="the target")
    made = await _call(toolkit, "object_link", bucket=uniq, name="alias", target_bucket=other,
                       target_name="target.txt")
    assert made.object.link.bucket == other and made.object.link.name == "target.txt" and made.object.size == 0
    info = (await _call(toolkit, "object_info", bucket=uniq, name="alias")).object
    assert info.link.model_dump() == {"bucket": other, "name": "target.txt"}
    got = await _call(toolkit, "object_get", bucket=uniq, name="alias")
    assert got.payload.data == "the target" and got.link_from == f"{uniq}/alias"
    assert got.object.bucket == other and got.object.name == "target.txt"
    # nats-py follows natsop's link the same way.
    store = await raw.jetstream().object_store(uniq)
    assert (await store.get("alias")).data == b"the target"
    await _call(toolkit, "object_link", bucket=uniq, name="whole", target_bucket=other)
    await _fails(toolkit, "object_get", "link_to_bucket", bucket=uniq, name="whole")
    listed = {o.name: o.link for o in (await _call(toolkit, "object_ls", bucket=uniq)).objects}
    assert listed == {"alias": f"{other}/target.txt", "whole": f"{other}/"}
    await _call(toolkit, "object_put", bucket=uniq, name="plain", data="p")
    await _fails(toolkit, "object_link", "object_exists", bucket=uniq, name="plain", target_bucket=other,
                 target_name="target.txt")
    await _fails(toolkit, "object_link", "link_to_link", bucket=other, name="l2", target_bucket=uniq,
                 target_name="alias")
    await _fails(toolkit, "object_link", "object_not_found", bucket=uniq, name="l3", target_bucket=other,
                 target_name="missing")
    await _call(toolkit, "object_del", bucket=other, name="target.txt", confirm=f"{other}/target.txt")
    await _fails(toolkit, "object_get", "object_deleted", bucket=uniq, name="alias")


async def test_watch_on_a_silent_bucket_returns_at_its_time_limit(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    started = time.monotonic()
    watched = await _call(toolkit, "object_watch", bucket=uniq, timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert watched.changes == [] and watched.stopped_by == "time"
    assert 0.5 <= elapsed < 3
    # The watch's consumer is gone afterwards.
    assert (await _api(raw, f"STREAM.INFO.OBJ_{uniq}"))["state"]["consumer_count"] == 0


async def test_watch_sees_puts_and_deletes_and_stops_at_its_count(toolkit: Toolkit, raw: NATS,
                                                                  uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    await _call(toolkit, "object_put", bucket=uniq, name="before", data="1")
    current = await _call(toolkit, "object_watch", bucket=uniq, include_current=True, timeout_s=10, max_entries=1)
    assert [c.name for c in current.changes] == ["before"] and current.stopped_by == "count"
    watch = asyncio.create_task(toolkit.call("object_watch", bucket=uniq, timeout_s=20, max_entries=3))
    # Wait until the watch's consumer exists, then make the changes it should see.
    while (await _api(raw, f"STREAM.INFO.OBJ_{uniq}"))["state"]["consumer_count"] == 0:
        assert not watch.done(), watch
        await asyncio.sleep(0.01)
    await _call(toolkit, "object_put", bucket=uniq, name="a", data="aaa")
    await _call(toolkit, "object_put", bucket=uniq, name="b", data="bb")
    await _call(toolkit, "object_del", bucket=uniq, name="a", confirm=f"{uniq}/a")
    result: Any = await asyncio.wait_for(watch, 15)
    assert result.stopped_by == "count"
    assert [(c.name, c.size, c.deleted) for c in result.changes] == [("a", 3, False), ("b", 2, False), ("a", 0, True)]
    assert all(c.modified and c.modified.endswith("Z") for c in result.changes)


async def test_watch_of_a_big_bucket_fetches_about_what_it_returns(toolkit: Toolkit, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    for i in range(300):
        await _call(toolkit, "object_put", bucket=uniq, name=f"o{i:03d}", data="x")
    nc = await toolkit.context.nc()
    await nc.flush()
    before = nc.stats["in_msgs"]
    some = await _call(toolkit, "object_watch", bucket=uniq, include_current=True, max_entries=5, timeout_s=10)
    await nc.flush()  # anything the server pushed has arrived by now
    assert [c.name for c in some.changes] == [f"o{i:03d}" for i in range(5)]
    assert some.stopped_by == "count" and some.current_done is False
    # Five records and a few API replies, not the 300 records a push consumer sends.
    assert nc.stats["in_msgs"] - before < 20
    every = await _call(toolkit, "object_watch", bucket=uniq, include_current=True, max_entries=1000, timeout_s=0.5)
    assert len(every.changes) == 300 and every.stopped_by == "time" and every.current_done is True


# ---------------------------------------------------------------------------------------------
# Interoperability and wire format


async def test_natspy_objects_are_read_by_natsop(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    store = await raw.jetstream().object_store(uniq)
    data = os.urandom(300 * 1024 + 7)
    await store.put("from-python", data, meta=js_api.ObjectMeta(
        name="from-python", description="written by nats-py", headers={"X-Origin": ["nats-py"]}))
    got = await _call(toolkit, "object_get", bucket=uniq, name="from-python", max_inline_bytes=MiB)
    assert base64.b64decode(got.payload.data) == data and got.digest_verified
    assert got.object.chunks == 3 and got.object.description == "written by nats-py"
    assert got.object.headers == {"X-Origin": ["nats-py"]} and got.object.modified
    await store.delete("from-python")
    await _fails(toolkit, "object_get", "object_deleted", bucket=uniq, name="from-python")


async def test_natsop_objects_are_read_by_natspy(toolkit: Toolkit, raw: NATS, uniq: str, tmp_path: Path) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    size = MiB + 99
    digest = _write_random(tmp_path / "data.bin", size)
    await _call(toolkit, "object_put", bucket=uniq, file="data.bin", name="from natsop/ü", metadata={"k": "v"})
    store = await raw.jetstream().object_store(uniq)
    info = await store.get_info("from natsop/ü")
    assert info.size == size and info.digest == digest and info.chunks == 9 and info.nuid
    result = await store.get("from natsop/ü")  # nats-py checks the digest itself
    assert result.data == (tmp_path / "data.bin").read_bytes()
    listed = await store.list()
    assert [i.name for i in listed] == ["from natsop/ü"]


async def test_wire_layout_follows_adr20(toolkit: Toolkit, raw: NATS, uniq: str) -> None:
    await _call(toolkit, "object_add", bucket=uniq)
    name = "report.pdf"  # 10 bytes: its base64 ends in '==' padding
    body = os.urandom(5000)
    put = await _call(toolkit, "object_put", bucket=uniq, name=name, data=base64.b64encode(body).decode(),
                      data_encoding="base64", chunk_size=2048, description="d", headers={"H": ["1", "2"]},
                      metadata={"m": "x"})
    encoded = base64.urlsafe_b64encode(name.encode()).decode()
    assert encoded.endswith("==")
    resp = await _api(raw, f"STREAM.MSG.GET.OBJ_{uniq}", {"last_by_subj": f"$O.{uniq}.M.{encoded}"})
    message = resp["message"]
    assert message["subject"] == f"$O.{uniq}.M.{encoded}"
    headers = base64.b64decode(message["hdrs"]).decode()
    assert "Nats-Rollup: sub\r\n" in headers
    record = json.loads(base64.b64decode(message["data"]))
    assert list(record) == ["name", "description", "headers", "metadata", "options", "bucket", "nuid", "size",
                            "mtime", "chunks", "digest"]
    assert record["name"] == name and record["bucket"] == uniq and record["size"] == 5000
    assert record["chunks"] == 3 and record["options"] == {"max_chunk_size": 2048}
    assert record["headers"] == {"H": ["1", "2"]} and record["metadata"] == {"m": "x"}
    assert record["description"] == "d" and record["mtime"] == "0001-01-01T00:00:00Z"
    assert record["digest"] == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
    assert "deleted" not in record and record["nuid"] == put.object.nuid
    # The chunks: three messages on $O.<bucket>.C.<nuid>, in order, 2048 + 2048 + 904 bytes.
    chunks: list[bytes] = []
    seq = 0
    for _ in range(3):
        got = await _api(raw, f"STREAM.MSG.GET.OBJ_{uniq}",
                         {"seq": seq + 1, "next_by_subj": f"$O.{uniq}.C.{record['nuid']}"})
        seq = got["message"]["seq"]
        chunks.append(base64.b64decode(got["message"]["data"]))
    assert [len(c) for c in chunks] == [2048, 2048, 904] and b"".join(chunks) == body
    # A delete leaves a marker with deleted=true and no chunks.
    await _call(toolkit, "object_del", bucket=uniq, name=name, confirm=f"{uniq}/{name}")
    resp = await _api(raw, f"STREAM.MSG.GET.OBJ_{uniq}", {"last_by_subj": f"$O.{uniq}.M.{encoded}"})
    marker = json.loads(base64.b64decode(resp["message"]["data"]))
    assert marker["deleted"] is True and marker["size"] == 0 and marker["chunks"] == 0 and "digest" not in marker
    assert await _chunk_count(raw, uniq, record["nuid"]) == 0
    assert (await _api(raw, f"STREAM.INFO.OBJ_{uniq}", {"subjects_filter": f"$O.{uniq}.M.>"}))["state"][
        "subjects"] == {f"$O.{uniq}.M.{encoded}": 1}


# ---------------------------------------------------------------------------------------------
# A large object, with memory bounded


_CHILD = r"""
import asyncio, json, sys
from natsop.api import Toolkit

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

async def main():
    files, bucket = sys.argv[1], sys.argv[2]
    async with Toolkit.from_env(files_dir=files) as tk:
        await tk.call("object_info", bucket=bucket)
        baseline = status("VmRSS")
        put = await tk.call("object_put", bucket=bucket, file="big.bin")
        got = await tk.call("object_get", bucket=bucket, name="big.bin", file="copy.bin")
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "digest": put.object.digest,
                      "chunks": put.object.chunks, "size": got.size, "verified": got.digest_verified}))

asyncio.run(main())
"""


async def test_large_object_round_trip_keeps_memory_bounded(toolkit: Toolkit, server_env: dict[str, str],
                                                            uniq: str, tmp_path: Path) -> None:
    size = 200 * MiB
    await _call(toolkit, "object_add", bucket=uniq, compression=False)
    digest = _write_random(tmp_path / "big.bin", size)
    env = {**os.environ, **server_env}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(tmp_path), uniq, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, err.decode()[-3000:]
        report = json.loads(out)
        assert report["digest"] == digest and report["size"] == size and report["verified"] is True
        assert report["chunks"] == size // (128 * 1024)
        copy = hashlib.sha256()
        with (tmp_path / "copy.bin").open("rb") as f:
            while block := f.read(4 * MiB):
                copy.update(block)
        assert "SHA-256=" + base64.urlsafe_b64encode(copy.digest()).decode() == digest
        # The whole object would be 200 MiB; the process's peak stays far below that.
        grown = report["peak"] - report["baseline"]
        assert report["peak"] < 150 * MiB, report
        assert grown < 64 * MiB, report
    finally:
        await _call(toolkit, "object_delete_bucket", bucket=uniq, confirm=uniq)
        for leftover in ("big.bin", "copy.bin"):
            (tmp_path / leftover).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The MCP face


async def test_every_object_tool_through_mcp(server_env: dict[str, str], uniq: str, tmp_path: Path) -> None:
    (tmp_path / "upload.bin").write_bytes(os.urandom(3 * MiB))
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, _message: str | None) -> None:
        progress.append((done, total))

    async with mcp_client(server_env, cwd=tmp_path) as c:
        async def ok(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            res = await c.call_tool(tool, args)
            assert not res.is_error, (tool, res.content)
            assert res.structured_content is not None
            return res.structured_content

        async def err(tool: str, args: dict[str, Any]) -> str:
            res = await c.call_tool(tool, args)
            assert res.is_error, (tool, res.structured_content)
            return str(getattr(res.content[0], "text", ""))

        assert (await ok("object_add", {"bucket": uniq}))["bucket"]["stream"] == f"OBJ_{uniq}"
        put = await ok("object_put", {"bucket": uniq, "name": "note", "data": "hi there"})
        assert put["object"]["size"] == 8
        res = await c.call_tool("object_put", {"bucket": uniq, "file": "upload.bin"}, progress_callback=on_progress)
        assert not res.is_error and res.structured_content is not None
        assert res.structured_content["object"]["size"] == 3 * MiB
        assert progress and progress[-1] == (3 * MiB, 3 * MiB)
        assert (await ok("object_get", {"bucket": uniq, "name": "note"}))["payload"]["data"] == "hi there"
        fetched = await ok("object_get", {"bucket": uniq, "name": "upload.bin", "file": "download.bin"})
        assert fetched["digest_verified"] is True
        assert (tmp_path / "download.bin").read_bytes() == (tmp_path / "upload.bin").read_bytes()
        assert "file_exists" in await err("object_get", {"bucket": uniq, "name": "note", "file": "download.bin"})
        assert "path_outside_files_dir" in await err("object_get", {"bucket": uniq, "name": "note",
                                                                    "file": "../escape.bin"})
        assert "object_too_large_inline" in await err("object_get", {"bucket": uniq, "name": "upload.bin"})
        info = await ok("object_info", {"bucket": uniq, "name": "upload.bin"})
        assert info["object"]["chunks"] == 24
        assert (await ok("object_info", {"bucket": uniq}))["bucket_info"]["objects"] == 2
        names = [o["name"] for o in (await ok("object_ls", {"bucket": uniq}))["objects"]]
        assert sorted(names) == ["note", "upload.bin"]
        assert uniq in [b["bucket"] for b in (await ok("object_ls", {"limit": 1000}))["buckets"]]
        assert (await ok("object_link", {"bucket": uniq, "name": "ln", "target_bucket": uniq,
                                         "target_name": "note"}))["object"]["link"]["name"] == "note"
        watched = await ok("object_watch", {"bucket": uniq, "timeout_s": 0.2, "include_current": True,
                                            "max_entries": 10})
        assert sorted(ch["name"] for ch in watched["changes"]) == ["ln", "note", "upload.bin"]
        dry = await ok("object_del", {"bucket": uniq, "name": "note"})
        assert dry["done"] is False and dry["confirm_with"] == f"{uniq}/note"
        assert (await ok("object_del", {"bucket": uniq, "name": "note", "confirm": f"{uniq}/note"}))["done"]
        assert "object_deleted" in await err("object_get", {"bucket": uniq, "name": "note"})
        assert (await ok("object_seal", {"bucket": uniq}))["confirm_with"] == uniq
        assert (await ok("object_seal", {"bucket": uniq, "confirm": uniq}))["sealed"] is True
        assert "bucket_sealed" in await err("object_put", {"bucket": uniq, "name": "x", "data": "y"})
        assert (await ok("object_delete_bucket", {"bucket": uniq}))["done"] is False
        assert (await ok("object_delete_bucket", {"bucket": uniq, "confirm": uniq}))["done"] is True
        assert "bucket_not_found" in await err("object_info", {"bucket": uniq})


# ---------------------------------------------------------------------------------------------
# The CLI face


def test_every_object_command_through_the_cli(cli: CliFn, uniq: str, tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(os.urandom(300 * 1024))
    made = cli("--json", "object", "add", uniq, "--description", "from the cli", "--no-compression")
    assert made.exit_code == 0, made.output
    assert cli_json(made)["bucket"]["compression"] == "none"
    put = cli("--json", "object", "put", uniq, "photo.jpg", "--metadata", "k=v", "--headers", "Content-Type:image/jpeg")
    assert put.exit_code == 0, put.output
    assert cli_json(put)["object"]["name"] == "photo.jpg" and cli_json(put)["object"]["chunks"] == 3
    inline = cli("--json", "object", "put", uniq, "--name", "note.txt", "--data", "hello cli")
    assert inline.exit_code == 0, inline.output
    got = cli("object", "get", uniq, "photo.jpg", "--file", "copy.jpg")
    assert got.exit_code == 0, got.output
    assert (tmp_path / "copy.jpg").read_bytes() == (tmp_path / "photo.jpg").read_bytes()
    refused = cli("object", "get", uniq, "photo.jpg", "--file", "copy.jpg")
    assert refused.exit_code != 0 and "file_exists" in refused.output
    assert cli("object", "get", uniq, "photo.jpg", "--file", "copy.jpg", "--overwrite").exit_code == 0
    text = cli("object", "get", uniq, "note.txt")
    assert text.exit_code == 0 and "hello cli" in text.output
    info = cli("object", "info", uniq, "photo.jpg")
    assert info.exit_code == 0 and "SHA-256=" in info.output and "image/jpeg" in info.output
    bucket = cli_json(cli("--json", "object", "info", uniq))
    assert bucket["bucket_info"]["objects"] == 2 and bucket["bucket_info"]["description"] == "from the cli"
    listing = cli("object", "ls", uniq)
    assert listing.exit_code == 0 and "photo.jpg" in listing.output and "note.txt" in listing.output
    assert uniq in cli("object", "list").output
    linked = cli("--json", "object", "link", uniq, "alias", uniq, "note.txt")
    assert linked.exit_code == 0 and cli_json(linked)["object"]["link"]["name"] == "note.txt"
    watched = cli_json(cli("--json", "object", "watch", uniq, "--timeout-s", "0.2"))
    assert watched["stopped_by"] == "time" and watched["changes"] == []
    no_force = cli("object", "del", uniq, "note.txt")
    assert no_force.exit_code != 0 and "confirmation_required" in no_force.output
    assert cli("object", "rm", uniq, "note.txt", "--force").exit_code == 0
    gone = cli("object", "get", uniq, "note.txt")
    assert gone.exit_code != 0 and "object_deleted" in gone.output
    escaped = cli("object", "put", uniq, "../outside.bin")
    assert escaped.exit_code != 0 and "path_outside_files_dir" in escaped.output
    assert cli("object", "seal", uniq, "-f").exit_code == 0
    sealed = cli("object", "put", uniq, "--name", "late", "--data", "x")
    assert sealed.exit_code != 0 and "bucket_sealed" in sealed.output
    assert cli("object", "del-bucket", uniq).exit_code != 0
    assert cli("object", "rm-bucket", uniq, "--force").exit_code == 0
    assert cli("object", "info", uniq).exit_code != 0


def test_cli_without_files_dir_takes_any_path(cli: CliFn, uniq: str,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """A person at the CLI names files anywhere, as with natscli; --files-dir confines them again."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert Path.cwd() not in elsewhere.parents
    (elsewhere / "in.bin").write_bytes(b"from anywhere")
    assert cli("object", "add", uniq).exit_code == 0
    put = cli("--json", "object", "put", uniq, str(elsewhere / "in.bin"), "--name", "x", files_dir=False)
    assert put.exit_code == 0, put.output
    got = cli("object", "get", uniq, "x", "--file", str(elsewhere / "out.bin"), files_dir=False)
    assert got.exit_code == 0, got.output
    assert (elsewhere / "out.bin").read_bytes() == b"from anywhere"
    confined = cli("object", "get", uniq, "x", "--file", str(elsewhere / "again.bin"))
    assert confined.exit_code != 0 and "path_outside_files_dir" in confined.output
    assert "--files-dir" in confined.output and not (elsewhere / "again.bin").exists()
    assert cli("object", "rm-bucket", uniq, "--force").exit_code == 0
