"""Key-Value through the three faces (Python, MCP, CLI) on the real embedded server,
and interoperability with nats-py's own KV client in both directions."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
import pytest
import pytest_asyncio
from nats.js.kv import KeyValue

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError, NotFound, Unsupported, UserError
from natsop.ops import kv as kv_ops
from natsop.ops.kv import (
    KvAddResult,
    KvCompactResult,
    KvDeleteBucketResult,
    KvGetResult,
    KvHistoryResult,
    KvInfoResult,
    KvLsResult,
    KvPurgeResult,
    KvWatchResult,
    KvWriteResult,
)
from tests.conftest import CliFn, cli_json, mcp_client

KV_TOOLS = {"kv_add", "kv_info", "kv_ls", "kv_get", "kv_put", "kv_create", "kv_update", "kv_del", "kv_purge",
            "kv_history", "kv_watch", "kv_compact", "kv_delete_bucket"}


async def _stream_config(tk: Toolkit, bucket: str) -> dict[str, Any]:
    info = await tk.call("stream_info", stream=f"KV_{bucket}")
    config: dict[str, Any] = info.model_dump()["config"]
    return config


async def _put(tk: Toolkit, bucket: str, key: str, value: str) -> int:
    result = await tk.call("kv_put", bucket=bucket, key=key, value=value)
    assert isinstance(result, KvWriteResult)
    return result.revision


async def _get(tk: Toolkit, bucket: str, key: str, **kwargs: Any) -> KvGetResult:
    result = await tk.call("kv_get", bucket=bucket, key=key, **kwargs)
    assert isinstance(result, KvGetResult)
    return result


async def _error(call: Any) -> NatsopError:
    with pytest.raises(NatsopError) as info:
        await call
    return info.value


# ------------------------------------------------------------------------------------------- buckets


async def test_add_builds_the_adr8_stream(toolkit: Toolkit, uniq: str) -> None:
    made = await toolkit.call("kv_add", bucket=uniq, history=5, description="todos projection")
    assert isinstance(made, KvAddResult)
    assert made.stream == f"KV_{uniq}" and made.history == 5 and made.compression is True
    assert made.ttl_s == 0 and made.max_bytes == -1 and made.values == 0
    assert any("max_bytes" in n for n in made.notes), made.notes

    cfg = await _stream_config(toolkit, uniq)
    assert cfg["subjects"] == [f"$KV.{uniq}.>"]
    assert cfg["max_msgs_per_subject"] == 5
    assert cfg["discard"] == "new"
    assert cfg["allow_rollup_hdrs"] is True and cfg["deny_delete"] is True and cfg["allow_direct"] is True
    assert cfg["compression"] == "s2"
    assert cfg["duplicate_window"] == 120 * 10**9 and cfg["max_age"] == 0
    assert cfg["max_msgs"] == -1 and cfg["max_consumers"] == -1

    # The same settings again change nothing; other settings are a conflict.
    again = await toolkit.call("kv_add", bucket=uniq, history=5, description="todos projection")
    assert isinstance(again, KvAddResult) and again.created == made.created
    clash = await _error(toolkit.call("kv_add", bucket=uniq, history=2))
    assert isinstance(clash, Conflict) and clash.code == "bucket_exists"


async def test_add_ttl_limits_and_size_guard(toolkit: Toolkit, uniq: str) -> None:
    made = await toolkit.call("kv_add", bucket=uniq, ttl_s=30, max_bytes=1 << 20, max_value_size=1024,
                              compression=False, storage="memory")
    assert isinstance(made, KvAddResult)
    assert made.notes == []  # a size guard was given
    assert made.ttl_s == 30 and made.max_bytes == 1 << 20 and made.max_value_size == 1024
    cfg = await _stream_config(toolkit, uniq)
    # Duplicate window = min(TTL, 2 minutes).
    assert cfg["max_age"] == 30 * 10**9 and cfg["duplicate_window"] == 30 * 10**9
    assert cfg.get("compression", "none") == "none" and cfg["storage"] == "memory"

    big = await _error(toolkit.call("kv_put", bucket=uniq, key="k", value="x" * 2048))
    assert "maximum" in big.message.lower() or "size" in big.message.lower()

    unlimited = await toolkit.call("kv_add", bucket=f"{uniq}_u", max_bytes=-1)
    assert isinstance(unlimited, KvAddResult) and unlimited.notes == []
    zero = await _error(toolkit.call("kv_add", bucket=f"{uniq}_z", max_bytes=0))
    assert isinstance(zero, UserError)
    for bad in ({"history": 0}, {"history": 65}, {"replicas": 6}, {"ttl_s": -1}):
        err = await _error(toolkit.call("kv_add", bucket=f"{uniq}_z", **bad))
        assert err.code == "invalid_arguments", bad


async def test_info_and_missing_bucket(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=3)
    await _put(toolkit, uniq, "a", "1")
    await _put(toolkit, uniq, "a", "2")
    await _put(toolkit, uniq, "b", "3")
    info = await toolkit.call("kv_info", bucket=uniq)
    assert isinstance(info, KvInfoResult)
    assert (info.values, info.keys, info.history, info.last_revision) == (3, 2, 3, 3)
    assert info.backing_store == "JetStream" and info.bytes > 0

    for call in (toolkit.call("kv_info", bucket=f"{uniq}_nope"),
                 toolkit.call("kv_get", bucket=f"{uniq}_nope", key="a"),
                 toolkit.call("kv_put", bucket=f"{uniq}_nope", key="a", value="x")):
        err = await _error(call)
        assert isinstance(err, NotFound) and err.code == "bucket_not_found", err


async def test_delete_bucket_needs_confirmation(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq)
    await _put(toolkit, uniq, "a", "1")
    dry = await toolkit.call("kv_delete_bucket", bucket=uniq)
    assert isinstance(dry, KvDeleteBucketResult)
    assert dry.done is False and dry.confirmation_required and dry.confirm_with == uniq
    assert dry.keys == 1 and dry.values == 1
    assert (await _get(toolkit, uniq, "a")).value.data == "1"
    wrong = await _error(toolkit.call("kv_delete_bucket", bucket=uniq, confirm="other"))
    assert wrong.code == "confirmation_mismatch"
    done = await toolkit.call("kv_delete_bucket", bucket=uniq, confirm=uniq)
    assert isinstance(done, KvDeleteBucketResult) and done.done
    gone = await _error(toolkit.call("kv_info", bucket=uniq))
    assert gone.code == "bucket_not_found"


async def test_mirror_sources_and_republish(toolkit: Toolkit, uniq: str) -> None:
    origin, mirror, aggregate = f"{uniq}_o", f"{uniq}_m", f"{uniq}_a"
    await toolkit.call("kv_add", bucket=origin, history=2,
                       republish={"dest": f"repub.{uniq}.>", "headers_only": True})
    nc = await toolkit.context.nc()
    sub = await nc.subscribe(f"repub.{uniq}.>")
    try:
        await _put(toolkit, origin, "color", "blue")
        repub = await sub.next_msg(timeout=5)
        assert repub.subject == f"repub.{uniq}.$KV.{origin}.color" and repub.data == b""
    finally:
        await sub.unsubscribe()

    m = await toolkit.call("kv_add", bucket=mirror, mirror=origin)
    a = await toolkit.call("kv_add", bucket=aggregate, sources=[origin])
    assert isinstance(m, KvAddResult) and m.mirror == origin
    assert isinstance(a, KvAddResult) and a.sources == [origin]
    cfg = await _stream_config(toolkit, aggregate)
    assert cfg["sources"][0]["subject_transforms"] == [{"src": f"$KV.{origin}.>", "dest": f"$KV.{aggregate}.>"}]

    async def eventually(bucket: str) -> KvGetResult:
        deadline = time.monotonic() + 10
        while True:
            try:
                return await _get(toolkit, bucket, "color")
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)  # replication is asynchronous; nothing to await on

    assert (await eventually(mirror)).value.data == "blue"
    assert (await eventually(aggregate)).value.data == "blue"
    both = await _error(toolkit.call("kv_add", bucket=f"{uniq}_x", mirror=origin, sources=[origin]))
    assert isinstance(both, UserError)


# ------------------------------------------------------------------------------------------- keys


async def test_put_get_and_compare_and_set(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=5)
    r1 = await _put(toolkit, uniq, "cfg.color", "blue")
    got = await _get(toolkit, uniq, "cfg.color")
    assert (got.revision, got.operation, got.value.data, got.delta) == (r1, "PUT", "blue", 0)
    assert got.created is not None

    updated = await toolkit.call("kv_update", bucket=uniq, key="cfg.color", value="green", revision=r1)
    assert isinstance(updated, KvWriteResult) and updated.revision > r1 and updated.previous_revision == r1
    stale = await _error(toolkit.call("kv_update", bucket=uniq, key="cfg.color", value="red", revision=r1))
    assert isinstance(stale, Conflict) and stale.code == "stale_revision"
    assert stale.details["current_revision"] == updated.revision
    assert f"revision {updated.revision}" in stale.message
    never = await _error(toolkit.call("kv_update", bucket=uniq, key="cfg.none", value="x", revision=1))
    assert isinstance(never, Conflict) and never.details["current_revision"] is None

    # An older revision is still readable; a revision of another key is not this key's.
    old = await _get(toolkit, uniq, "cfg.color", revision=r1)
    assert old.value.data == "blue" and old.delta is None
    other = await _put(toolkit, uniq, "cfg.size", "L")
    wrong = await _error(toolkit.call("kv_get", bucket=uniq, key="cfg.color", revision=other))
    assert wrong.code == "revision_not_found"
    missing = await _error(toolkit.call("kv_get", bucket=uniq, key="cfg.nothing"))
    assert missing.code == "key_not_found"

    # Binary values go in and come out as base64; long values are cut with their size.
    raw = bytes(range(256))
    await toolkit.call("kv_put", bucket=uniq, key="bin", value=base64.b64encode(raw).decode(),
                       value_encoding="base64")
    binary = await _get(toolkit, uniq, "bin")
    assert binary.value.encoding == "base64" and base64.b64decode(binary.value.data) == raw
    await _put(toolkit, uniq, "long", "x" * 5000)
    cut = await _get(toolkit, uniq, "long", max_payload_bytes=10)
    assert cut.value.truncated and cut.value.size == 5000 and cut.value.data == "x" * 10
    bad64 = await _error(toolkit.call("kv_put", bucket=uniq, key="b", value="***", value_encoding="base64"))
    assert bad64.code == "invalid_base64"


async def test_create_only_when_absent_or_deleted(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=10)
    first = await toolkit.call("kv_create", bucket=uniq, key="lock", value="me")
    assert isinstance(first, KvWriteResult)
    taken = await _error(toolkit.call("kv_create", bucket=uniq, key="lock", value="you"))
    assert isinstance(taken, Conflict) and taken.code == "key_exists"
    assert taken.details["current_revision"] == first.revision and f"revision {first.revision}" in taken.message

    deleted = await toolkit.call("kv_del", bucket=uniq, key="lock")
    assert isinstance(deleted, KvWriteResult) and deleted.operation == "DEL"
    assert deleted.previous_revision == first.revision
    gone = await _error(toolkit.call("kv_get", bucket=uniq, key="lock"))
    assert isinstance(gone, NotFound) and gone.code == "key_deleted" and "kv_history" in gone.hint
    again = await toolkit.call("kv_create", bucket=uniq, key="lock", value="you")
    assert isinstance(again, KvWriteResult) and again.previous_revision == deleted.revision
    assert (await _get(toolkit, uniq, "lock")).value.data == "you"

    await toolkit.call("kv_purge", bucket=uniq, key="lock", confirm="lock")
    after_purge = await toolkit.call("kv_create", bucket=uniq, key="lock", value="them")
    assert isinstance(after_purge, KvWriteResult)
    assert (await _get(toolkit, uniq, "lock")).value.data == "them"


async def test_del_keeps_history_and_checks_revision(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=5)
    r1 = await _put(toolkit, uniq, "k", "v1")
    r2 = await _put(toolkit, uniq, "k", "v2")
    stale = await _error(toolkit.call("kv_del", bucket=uniq, key="k", revision=r1))
    assert isinstance(stale, Conflict) and stale.details["current_revision"] == r2
    marker = await toolkit.call("kv_del", bucket=uniq, key="k", revision=r2)
    assert isinstance(marker, KvWriteResult)
    hist = await toolkit.call("kv_history", bucket=uniq, key="k")
    assert isinstance(hist, KvHistoryResult)
    assert [(e.operation, e.value.data if e.value else None) for e in hist.entries] == [
        ("PUT", "v1"), ("PUT", "v2"), ("DEL", None)]
    info = await toolkit.call("kv_info", bucket=uniq)
    assert isinstance(info, KvInfoResult) and info.values == 3  # the bucket and the history stay


async def test_purge_needs_confirmation_and_leaves_a_marker(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=5)
    for i in range(3):
        await _put(toolkit, uniq, "k", f"v{i}")
    dry = await toolkit.call("kv_purge", bucket=uniq, key="k")
    assert isinstance(dry, KvPurgeResult)
    assert dry.done is False and dry.would_remove == 3 and dry.confirm_with == "k"
    assert (await _get(toolkit, uniq, "k")).value.data == "v2"
    done = await toolkit.call("kv_purge", bucket=uniq, key="k", confirm="k")
    assert isinstance(done, KvPurgeResult) and done.done and done.revision
    hist = await toolkit.call("kv_history", bucket=uniq, key="k")
    assert isinstance(hist, KvHistoryResult)
    assert [(e.operation, e.revision) for e in hist.entries] == [("PURGE", done.revision)]
    ttl = await _error(toolkit.call("kv_purge", bucket=uniq, key="k", marker_ttl_s=5, confirm="k"))
    assert isinstance(ttl, Unsupported)


async def test_history_pages_by_revision(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=10)
    revisions = []
    for i in range(5):
        revisions.append(await _put(toolkit, uniq, "k", f"v{i}"))
        await _put(toolkit, uniq, "other", f"o{i}")  # interleaved: pages must skip other keys
    seen: list[tuple[int, str, int | None]] = []
    cursor = 0
    pages = 0
    while True:
        page = await toolkit.call("kv_history", bucket=uniq, key="k", from_revision=cursor, limit=2)
        assert isinstance(page, KvHistoryResult) and page.total == 5
        pages += 1
        seen += [(e.revision, e.value.data if e.value else "", e.delta) for e in page.entries]
        if not page.truncated:
            assert page.next_revision is None
            break
        assert page.next_revision is not None
        cursor = page.next_revision
    assert pages == 3
    assert seen == [(r, f"v{i}", 4 - i) for i, r in enumerate(revisions)]
    missing = await _error(toolkit.call("kv_history", bucket=uniq, key="never"))
    assert missing.code == "key_not_found"


async def test_history_page_of_large_values_is_bounded_in_bytes(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=12)
    for i in range(12):
        await _put(toolkit, uniq, "big", chr(ord("a") + i) * 1_000_000)
    first = await toolkit.call("kv_history", bucket=uniq, key="big", max_payload_bytes=8)
    assert isinstance(first, KvHistoryResult)
    # The server stops a page at about 8 MB of values; the cursor carries on from there.
    assert first.truncated and 1 <= len(first.entries) < 12 and first.next_revision is not None
    assert all(e.value is not None and e.value.size == 1_000_000 and e.value.truncated for e in first.entries)
    rest = await toolkit.call("kv_history", bucket=uniq, key="big", from_revision=first.next_revision)
    assert isinstance(rest, KvHistoryResult) and not rest.truncated
    assert len(first.entries) + len(rest.entries) == 12
    assert rest.entries[-1].delta == 0 and rest.entries[-1].value is not None
    assert rest.entries[-1].value.data == "l" * 1024


async def test_ls_buckets_and_keys_with_wildcards(toolkit: Toolkit, uniq: str) -> None:
    names = [f"{uniq}_{i}" for i in range(3)]
    for name in names:
        await toolkit.call("kv_add", bucket=name)
    found: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await toolkit.call("kv_ls", offset=offset, limit=2)
        assert isinstance(page, KvLsResult) and page.buckets is not None and len(page.buckets) <= 2
        found += [b.bucket for b in page.buckets]
        offset = page.next_offset
    assert set(names) <= set(found) and len(found) == len(set(found))

    b = names[0]
    for key in ("user.1", "user.2", "user.2.avatar", "team.1", "userx"):
        await _put(toolkit, b, key, "v")
    await toolkit.call("kv_del", bucket=b, key="user.1")

    async def keys(**kwargs: Any) -> KvLsResult:
        result = await toolkit.call("kv_ls", bucket=b, **kwargs)
        assert isinstance(result, KvLsResult) and result.keys is not None
        return result

    every = await keys()
    assert sorted(every.keys or []) == ["team.1", "user.2", "user.2.avatar", "userx"]
    assert every.deleted_skipped == 1 and every.total == 5 and not every.truncated
    assert sorted((await keys(filter="user.*")).keys or []) == ["user.2"]
    assert sorted((await keys(filter="user.>")).keys or []) == ["user.2", "user.2.avatar"]
    assert (await keys(filter="nobody.>")).keys == []

    listed: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page = await keys(offset=cursor, limit=2)
        assert len(page.keys or []) <= 2
        listed += page.keys or []
        cursor = page.next_offset
    assert sorted(listed) == sorted(every.keys or [])

    substring = await _error(toolkit.call("kv_ls", bucket=b, filter="user*"))
    assert substring.code == "invalid_key"
    no_bucket = await _error(toolkit.call("kv_ls", filter="user.>"))
    assert isinstance(no_bucket, UserError)


@pytest.mark.parametrize(("args", "code"), [
    ({"bucket": "has.dot", "key": "k"}, "invalid_bucket"),
    ({"bucket": "has space", "key": "k"}, "invalid_bucket"),
    ({"bucket": "B", "key": "a..b"}, "invalid_key"),
    ({"bucket": "B", "key": ".a"}, "invalid_key"),
    ({"bucket": "B", "key": "a."}, "invalid_key"),
    ({"bucket": "B", "key": "a*"}, "invalid_key"),
    ({"bucket": "B", "key": "a b"}, "invalid_key"),
    ({"bucket": "B", "key": "_kv.internal"}, "invalid_key"),
])
async def test_names_are_refused_before_sending(toolkit: Toolkit, args: dict[str, str], code: str) -> None:
    # The bucket "B" does not exist: reaching the server would answer bucket_not_found instead.
    for tool in ("kv_get", "kv_history", "kv_del"):
        err = await _error(toolkit.call(tool, **args))
        assert err.code == code, (tool, err)
    err = await _error(toolkit.call("kv_put", value="v", **args))
    assert err.code == code


# ------------------------------------------------------------------------------------------- watch


async def _consumers(tk: Toolkit, bucket: str) -> int:
    info = await tk.call("stream_info", stream=f"KV_{bucket}")
    return int(info.model_dump()["state"]["consumer_count"])


async def test_watch_on_a_silent_bucket_returns_at_its_time_limit(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq)
    await _put(toolkit, uniq, "old", "v")  # not an update: the watch starts after it
    started = time.monotonic()
    result = await toolkit.call("kv_watch", bucket=uniq, timeout_s=0.6)
    elapsed = time.monotonic() - started
    assert isinstance(result, KvWatchResult)
    assert result.stopped_by == "timeout" and result.entries == [] and result.count == 0
    assert 0.6 <= elapsed < 1.6, elapsed
    assert await _consumers(toolkit, uniq) == 0  # the watch cleaned up after itself


async def test_watch_sees_updates_and_stops_at_its_count(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=5)
    watch = asyncio.create_task(toolkit.call("kv_watch", bucket=uniq, filter="cfg.>", timeout_s=20, max_entries=2))
    # Wait for the watch's consumer to exist, then write.
    deadline = time.monotonic() + 10
    while await _consumers(toolkit, uniq) == 0:
        assert time.monotonic() < deadline and not watch.done()
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await _put(toolkit, uniq, "skip", "not watched")
    await _put(toolkit, uniq, "cfg.a", "1")
    await toolkit.call("kv_del", bucket=uniq, key="cfg.a")
    result = await asyncio.wait_for(watch, 10)
    assert isinstance(result, KvWatchResult)
    assert result.stopped_by == "max_entries" and time.monotonic() - started < 5
    assert [(e.key, e.operation, e.value.data if e.value else None) for e in result.entries] == [
        ("cfg.a", "PUT", "1"), ("cfg.a", "DEL", None)]
    assert await _consumers(toolkit, uniq) == 0


async def test_watch_initial_values_history_and_options(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=5)
    for i in range(3):
        await _put(toolkit, uniq, "a", f"a{i}")
    await _put(toolkit, uniq, "b", "b0")
    await toolkit.call("kv_del", bucket=uniq, key="b")

    initial = await toolkit.call("kv_watch", bucket=uniq, initial_values=True, timeout_s=2)
    assert isinstance(initial, KvWatchResult) and initial.initial_values_done is True
    assert [(e.key, e.operation) for e in initial.entries] == [("a", "PUT"), ("b", "DEL")]
    assert initial.entries[0].value is not None and initial.entries[0].value.data == "a2"

    history = await toolkit.call("kv_watch", bucket=uniq, include_history=True, ignore_deletes=True,
                                 meta_only=True, timeout_s=2)
    assert isinstance(history, KvWatchResult)
    assert [(e.key, e.value) for e in history.entries] == [("a", None)] * 3 + [("b", None)]

    early = await toolkit.call("kv_watch", bucket=uniq, include_history=True, max_entries=2, timeout_s=30)
    assert isinstance(early, KvWatchResult)
    assert early.stopped_by == "max_entries" and early.count == 2 and early.elapsed_s < 5
    assert early.initial_values_done is False

    for bad in ({"timeout_s": 301}, {"timeout_s": 0}, {"max_entries": 10_001}, {"max_entries": 0}):
        err = await _error(toolkit.call("kv_watch", bucket=uniq, **bad))
        assert err.code == "invalid_arguments", bad


# ------------------------------------------------------------------------------------------- compact


async def test_compact_dry_run_then_confirm(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=10)
    for i in range(3):
        await _put(toolkit, uniq, "gone", f"g{i}")
    await toolkit.call("kv_del", bucket=uniq, key="gone")
    await _put(toolkit, uniq, "purged", "p")
    await toolkit.call("kv_purge", bucket=uniq, key="purged", confirm="purged")
    await _put(toolkit, uniq, "live", "l1")
    await _put(toolkit, uniq, "live", "l2")

    dry = await toolkit.call("kv_compact", bucket=uniq)
    assert isinstance(dry, KvCompactResult)
    assert dry.done is False and dry.confirm_with == uniq and dry.deleted_keys == 2
    by_key = {i.key: i for i in dry.items}
    assert set(by_key) == {"gone", "purged"}
    # Fresh markers stay (watchers must still see them); only the history before them goes.
    assert by_key["gone"].keep_marker and by_key["gone"].entries == 4 and by_key["gone"].removed == 3
    assert by_key["purged"].entries == 1 and by_key["purged"].removed == 0
    assert dry.would_remove == 3
    assert (await toolkit.call("kv_info", bucket=uniq)).model_dump()["values"] == 7  # nothing changed

    done = await toolkit.call("kv_compact", bucket=uniq, confirm=uniq)
    assert isinstance(done, KvCompactResult) and done.done
    assert done.keys_compacted == 1 and done.messages_removed == 3
    hist = await toolkit.call("kv_history", bucket=uniq, key="gone")
    assert isinstance(hist, KvHistoryResult) and [e.operation for e in hist.entries] == ["DEL"]

    # With no age threshold the markers go too; live keys are untouched.
    everything = await toolkit.call("kv_compact", bucket=uniq, delete_markers_older_than_s=0, confirm=uniq)
    assert isinstance(everything, KvCompactResult)
    assert everything.keys_compacted == 2 and everything.messages_removed == 2
    assert not any(i.keep_marker for i in everything.items)
    listed = await toolkit.call("kv_ls", bucket=uniq)
    assert isinstance(listed, KvLsResult) and listed.keys == ["live"] and listed.total == 1
    assert (await _get(toolkit, uniq, "live")).value.data == "l2"


@pytest.mark.parametrize("older_than_s", [1800, 0], ids=["keep-marker", "drop-marker"])
async def test_compact_spares_a_value_put_after_the_listing(
        toolkit: Toolkit, uniq: str, monkeypatch: pytest.MonkeyPatch, older_than_s: float) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=10)
    await _put(toolkit, uniq, "k", "old")
    await toolkit.call("kv_del", bucket=uniq, key="k")

    listed = kv_ops._deleted_keys

    async def list_then_race(*args: Any) -> Any:
        markers = await listed(*args)
        await _put(toolkit, uniq, "k", "new")  # lands between the listing and the purge
        return markers

    monkeypatch.setattr(kv_ops, "_deleted_keys", list_then_race)
    done = await toolkit.call("kv_compact", bucket=uniq, delete_markers_older_than_s=older_than_s, confirm=uniq)
    assert isinstance(done, KvCompactResult) and done.done
    assert (await _get(toolkit, uniq, "k")).value.data == "new"
    hist = await toolkit.call("kv_history", bucket=uniq, key="k")
    assert isinstance(hist, KvHistoryResult)
    assert [e.operation for e in hist.entries] == (["DEL", "PUT"] if older_than_s else ["PUT"])


# ------------------------------------------------------------------------------------------- per-key TTL


async def test_create_with_a_per_key_ttl(toolkit: Toolkit, uniq: str) -> None:
    plain = f"{uniq}_plain"
    await toolkit.call("kv_add", bucket=plain)
    refused = await _error(toolkit.call("kv_create", bucket=plain, key="k", value="v", ttl_s=1))
    assert isinstance(refused, Unsupported) and refused.code == "per_key_ttl_disabled"

    made = await toolkit.call("kv_add", bucket=uniq, limit_marker_ttl_s=5)
    assert isinstance(made, KvAddResult) and made.per_key_ttl and made.limit_marker_ttl_s == 5
    cfg = await _stream_config(toolkit, uniq)
    assert cfg["allow_msg_ttl"] is True and cfg["subject_delete_marker_ttl"] == 5 * 10**9
    await toolkit.call("kv_create", bucket=uniq, key="session", value="s", ttl_s=1)
    await _put(toolkit, uniq, "stays", "v")
    got = await _get(toolkit, uniq, "session")
    assert got.ttl == "1s" and got.value.data == "s"
    deadline = time.monotonic() + 15
    while True:
        try:
            await _get(toolkit, uniq, "session")
        except NotFound as gone:
            assert gone.code in ("key_not_found", "key_deleted")
            break
        assert time.monotonic() < deadline, "the key never expired"
        await asyncio.sleep(0.1)  # expiry is the server's timer; there is no event to await
    assert (await _get(toolkit, uniq, "stays")).value.data == "v"
    # An expired key may be created again.
    again = await toolkit.call("kv_create", bucket=uniq, key="session", value="s2")
    assert isinstance(again, KvWriteResult)


# ------------------------------------------------------------------------------------------- interop


@pytest_asyncio.fixture(loop_scope="session")
async def natspy(server: EmbeddedServer) -> AsyncIterator[Any]:
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def test_natsop_reads_what_nats_py_writes(toolkit: Toolkit, natspy: Any, uniq: str) -> None:
    # nats-py creates buckets without Direct Get by default: natsop must fall back to STREAM.MSG.GET.
    kv: KeyValue = await natspy.create_key_value(bucket=uniq, history=5)
    r1 = await kv.put("user.1", b"ann")
    r2 = await kv.update("user.1", b"bob", last=r1)
    await kv.put("user.2", b"cid")
    await kv.delete("user.2")
    await kv.put("team.x", b"t")
    await kv.purge("team.x")

    info = await toolkit.call("kv_info", bucket=uniq)
    assert isinstance(info, KvInfoResult) and info.history == 5 and info.allow_direct is False
    got = await _get(toolkit, uniq, "user.1")
    assert (got.revision, got.value.data) == (r2, "bob")
    assert (await _get(toolkit, uniq, "user.1", revision=r1)).value.data == "ann"
    deleted = await _error(toolkit.call("kv_get", bucket=uniq, key="user.2"))
    assert deleted.code == "key_deleted"
    purged = await _error(toolkit.call("kv_get", bucket=uniq, key="team.x"))
    assert purged.code == "key_deleted" and purged.details["operation"] == "PURGE"
    hist = await toolkit.call("kv_history", bucket=uniq, key="user.1", limit=1)
    assert isinstance(hist, KvHistoryResult) and hist.truncated and hist.entries[0].delta == 1
    rest = await toolkit.call("kv_history", bucket=uniq, key="user.1", from_revision=hist.next_revision)
    assert isinstance(rest, KvHistoryResult) and [e.delta for e in rest.entries] == [0]
    listed = await toolkit.call("kv_ls", bucket=uniq)
    assert isinstance(listed, KvLsResult) and listed.keys == ["user.1"] and listed.deleted_skipped == 2

    # natsop's create over nats-py's delete, and CAS against nats-py's revision.
    created = await toolkit.call("kv_create", bucket=uniq, key="user.2", value="dee")
    assert isinstance(created, KvWriteResult)
    stale = await _error(toolkit.call("kv_update", bucket=uniq, key="user.1", value="x", revision=r1))
    assert stale.details["current_revision"] == r2
    entry = await kv.get("user.2")
    assert entry.value == b"dee" and entry.revision == created.revision


async def test_nats_py_reads_what_natsop_writes(toolkit: Toolkit, natspy: Any, uniq: str) -> None:
    await toolkit.call("kv_add", bucket=uniq, history=4, ttl_s=3600)
    r1 = await _put(toolkit, uniq, "a.b", "one")
    updated = await toolkit.call("kv_update", bucket=uniq, key="a.b", value="two", revision=r1)
    assert isinstance(updated, KvWriteResult)
    await _put(toolkit, uniq, "gone", "x")
    await toolkit.call("kv_del", bucket=uniq, key="gone")
    await _put(toolkit, uniq, "wiped", "y")
    await toolkit.call("kv_purge", bucket=uniq, key="wiped", confirm="wiped")

    kv: KeyValue = await natspy.key_value(uniq)
    status = await kv.status()
    assert status.history == 4 and status.ttl == 3600
    entry = await kv.get("a.b")
    assert entry.value == b"two" and entry.revision == updated.revision
    assert (await kv.get("a.b", revision=r1)).value == b"one"
    for key in ("gone", "wiped"):
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(key)
    assert await kv.keys() == ["a.b"]
    hist = await kv.history("gone")
    assert [(e.operation, e.value) for e in hist] == [(None, b"x"), ("DEL", b"")]
    purged = await kv.history("wiped")
    assert [e.operation for e in purged] == ["PURGE"]

    # The raw stored markers carry exactly ADR-8's headers.
    raw_purge = await natspy.get_msg(f"KV_{uniq}", subject=f"$KV.{uniq}.wiped")
    assert raw_purge.headers["KV-Operation"] == "PURGE" and raw_purge.headers["Nats-Rollup"] == "sub"
    raw_del = await natspy.get_msg(f"KV_{uniq}", subject=f"$KV.{uniq}.gone")
    assert raw_del.headers["KV-Operation"] == "DEL" and raw_del.data in (b"", None)

    # nats-py's create succeeds over natsop's delete, and is refused over a live key.
    assert await kv.create("gone", b"back") > 0
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.create("a.b", b"no")


# ------------------------------------------------------------------------------------------- MCP


async def test_every_tool_through_mcp(server_env: dict[str, str], uniq: str) -> None:
    async def ok(c: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await c.call_tool(tool, {"bucket": uniq, **args})
        assert not result.is_error, (tool, result.content)
        assert result.structured_content is not None
        data: dict[str, Any] = result.structured_content
        return data

    async def fails(c: Any, tool: str, args: dict[str, Any], code: str) -> None:
        result = await c.call_tool(tool, args)
        assert result.is_error, (tool, args)
        assert f"[{code}]" in getattr(result.content[0], "text", ""), result.content

    async with mcp_client(server_env) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        made = await ok(c, "kv_add", {"history": 3, "max_bytes": 1 << 20})
        assert made["history"] == 3 and made["notes"] == []
        put = await ok(c, "kv_put", {"key": "k", "value": "v1"})
        got = await ok(c, "kv_get", {"key": "k"})
        assert got["value"]["data"] == "v1" and got["revision"] == put["revision"]
        upd = await ok(c, "kv_update", {"key": "k", "value": "v2", "revision": put["revision"]})
        await fails(c, "kv_update", {"bucket": uniq, "key": "k", "value": "v3", "revision": put["revision"]},
                    "stale_revision")
        await ok(c, "kv_create", {"key": "new", "value": "n"})
        await fails(c, "kv_create", {"bucket": uniq, "key": "new", "value": "n"}, "key_exists")
        deleted = await ok(c, "kv_del", {"key": "new"})
        assert deleted["operation"] == "DEL"
        hist = await ok(c, "kv_history", {"key": "k"})
        assert [e["revision"] for e in hist["entries"]] == [put["revision"], upd["revision"]]
        keys = await ok(c, "kv_ls", {})
        assert keys["keys"] == ["k"]
        buckets = (await c.call_tool("kv_ls", {"limit": 1000})).structured_content
        assert buckets is not None and uniq in [b["bucket"] for b in buckets["buckets"]]
        watched = await ok(c, "kv_watch", {"timeout_s": 0.3, "initial_values": True})
        assert watched["stopped_by"] == "timeout" and [e["key"] for e in watched["entries"]] == ["k", "new"]
        info = await ok(c, "kv_info", {})
        assert info["values"] == 4
        dry = await ok(c, "kv_purge", {"key": "k"})
        assert dry["done"] is False and dry["would_remove"] == 2
        assert (await ok(c, "kv_purge", {"key": "k", "confirm": "k"}))["done"] is True
        compact = await ok(c, "kv_compact", {})
        assert compact["done"] is False and compact["deleted_keys"] == 2
        await fails(c, "kv_get", {"bucket": "bad.name", "key": "k"}, "invalid_bucket")
        await fails(c, "kv_get", {"bucket": uniq, "key": "new"}, "key_deleted")
        await fails(c, "kv_watch", {"bucket": uniq, "timeout_s": 1000}, "invalid_arguments")
        assert (await ok(c, "kv_delete_bucket", {"confirm": uniq}))["done"] is True
        await fails(c, "kv_info", {"bucket": uniq}, "bucket_not_found")

    assert set(tools) >= KV_TOOLS
    for name in ("kv_get", "kv_info", "kv_ls", "kv_history", "kv_watch"):
        ann = tools[name].annotations
        assert ann is not None and ann.read_only_hint is True, name
    for name in ("kv_purge", "kv_compact", "kv_delete_bucket"):
        ann = tools[name].annotations
        assert ann is not None and ann.destructive_hint is True, name
    for name in ("kv_put", "kv_del", "kv_create", "kv_update"):
        ann = tools[name].annotations
        assert ann is not None and not ann.read_only_hint and not ann.destructive_hint, name
    add = tools["kv_add"].annotations
    assert add is not None and add.idempotent_hint is True


# ------------------------------------------------------------------------------------------- CLI


def test_every_verb_through_the_cli(cli: CliFn, uniq: str) -> None:
    made = cli("--json", "kv", "add", uniq, "--history", "3", "--description", "cli bucket")
    assert made.exit_code == 0, made.output
    assert cli_json(made)["history"] == 3
    assert cli("--json", "kv", "new", uniq, "--history", "3", "--description", "cli bucket").exit_code == 0
    status = cli("--json", "kv", "status", uniq)
    assert cli_json(status)["description"] == "cli bucket"

    put = cli_json(cli("--json", "kv", "put", uniq, "cfg.color", "blue"))
    assert put["revision"] == 1
    text = cli("kv", "get", uniq, "cfg.color")
    assert text.exit_code == 0 and "blue" in text.output
    assert cli_json(cli("--json", "kv", "get", uniq, "cfg.color"))["value"]["data"] == "blue"
    updated = cli("--json", "kv", "update", uniq, "cfg.color", "green", "1")
    assert updated.exit_code == 0 and cli_json(updated)["revision"] == 2
    stale = cli("--json", "kv", "update", uniq, "cfg.color", "red", "1")
    assert stale.exit_code == 1 and cli_json(stale)["error"]["code"] == "stale_revision"
    assert cli("--json", "kv", "create", uniq, "cfg.size", "L").exit_code == 0
    exists = cli("kv", "create", uniq, "cfg.size", "XL")
    assert exists.exit_code == 1 and "key_exists" in exists.output
    encoded = base64.b64encode(b"\xff\xfe").decode()
    assert cli("kv", "put", uniq, "bin", encoded, "--value-encoding", "base64").exit_code == 0
    assert cli_json(cli("--json", "kv", "get", uniq, "bin"))["value"]["encoding"] == "base64"
    assert cli("--json", "kv", "del", uniq, "bin").exit_code == 0

    hist = cli_json(cli("--json", "kv", "history", uniq, "cfg.color"))
    assert [e["value"]["data"] for e in hist["entries"]] == ["blue", "green"]
    keys = cli_json(cli("--json", "kv", "ls", uniq, "--filter", "cfg.*"))
    assert sorted(keys["keys"]) == ["cfg.color", "cfg.size"]
    assert uniq in cli("kv", "ls", "--limit", "1000").output
    watched = cli_json(cli("--json", "kv", "watch", uniq, "cfg.>", "--timeout-s", "0.3", "--initial-values"))
    assert watched["stopped_by"] == "timeout" and len(watched["entries"]) == 2

    refused = cli("kv", "purge", uniq, "cfg.size")
    assert refused.exit_code == 1 and "--force" in refused.output
    assert cli("--json", "kv", "get", uniq, "cfg.size").exit_code == 0
    purged = cli("--json", "kv", "purge", uniq, "cfg.size", "--force")
    assert purged.exit_code == 0 and cli_json(purged)["done"] is True
    compact = cli("--json", "kv", "compact", uniq, "--force", "--delete-markers-older-than-s", "0")
    assert compact.exit_code == 0 and cli_json(compact)["keys_compacted"] == 2

    bad = cli("--json", "kv", "get", "bad.bucket", "k")
    assert bad.exit_code == 1 and cli_json(bad)["error"]["code"] == "invalid_bucket"
    assert cli("kv", "rm", uniq).exit_code == 1  # no terminal, no --force: nothing happens
    assert cli("--json", "kv", "info", uniq).exit_code == 0
    removed = cli("--json", "kv", "rm", uniq, "--force")
    assert removed.exit_code == 0 and cli_json(removed)["done"] is True
    assert cli_json(cli("--json", "kv", "info", uniq))["error"]["code"] == "bucket_not_found"
