"""A stream's lifecycle (list, info, state, add, edit, purge, rm) and the account-wide find and report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from natsop import EmbeddedCluster, Toolkit
from natsop.errors import Conflict, NotFound, UserError
from natsop.ops.stream_report import replica_health
from tests.conftest import CliFn, cli_json, mcp_client


async def _publish(toolkit: Toolkit, subject: str, n: int = 1) -> None:
    js = (await toolkit.context.nc()).jetstream()
    for i in range(n):
        await js.publish(subject, f"m{i}".encode())


async def test_add_uses_safe_defaults_and_is_idempotent(toolkit: Toolkit, uniq: str) -> None:
    made: Any = await toolkit.call("stream_add", stream=uniq)
    cfg = made.config
    assert (cfg["subjects"], cfg["storage"], cfg["retention"], cfg["num_replicas"]) == ([uniq], "file", "limits", 1)
    assert cfg["allow_direct"] is True  # as natscli: pages of stream_view are one request
    again: Any = await toolkit.call("stream_add", stream=uniq)
    assert again.name == uniq
    with pytest.raises(Conflict) as clash:
        await toolkit.call("stream_add", stream=uniq, max_msgs=10)
    assert clash.value.code == "stream_name_in_use"
    with pytest.raises(Conflict) as overlap:
        await toolkit.call("stream_add", stream=f"{uniq}_2", subjects=[uniq])
    assert overlap.value.code == "stream_subjects_overlap"
    with pytest.raises(UserError):
        await toolkit.call("stream_add", stream=f"{uniq}_3", sealed=True)


async def test_add_translates_units_and_options(toolkit: Toolkit, uniq: str) -> None:
    made: Any = await toolkit.call(
        "stream_add", stream=uniq, subjects=[f"{uniq}.>"], storage="memory", max_age_s=3600,
        duplicate_window_s=30, max_msgs_per_subject=5, discard="new", deny_delete=True, allow_direct=True,
        description="why", metadata={"owner": "tests"})
    cfg = made.config
    assert cfg["max_age"] == 3600 * 10**9 and cfg["duplicate_window"] == 30 * 10**9
    assert (cfg["storage"], cfg["max_msgs_per_subject"], cfg["discard"]) == ("memory", 5, "new")
    assert cfg["deny_delete"] is True and cfg["allow_direct"] is True and cfg["description"] == "why"
    assert cfg["metadata"]["owner"] == "tests"
    other: Any = await toolkit.call("stream_add", stream=f"{uniq}_2", subjects=[f"{uniq}_2.>"], first_seq=100,
                                    max_consumers=5, allow_direct=False)
    assert (other.config["first_seq"], other.config["max_consumers"], other.config["allow_direct"]) == (100, 5, False)
    assert other.state.first_seq == 100


async def test_update_changes_only_what_is_given(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.a"], max_msgs=100, description="before")
    updated: Any = await toolkit.call("stream_update", stream=uniq, description="after",
                                      subjects=[f"{uniq}.a", f"{uniq}.b"])
    cfg = updated.config
    assert cfg["description"] == "after" and cfg["max_msgs"] == 100
    assert cfg["subjects"] == [f"{uniq}.a", f"{uniq}.b"]
    assert updated.done is True and updated.confirmation_required is False
    # Sealing is irreversible: it needs confirmation like any destructive change.
    dry: Any = await toolkit.call("stream_update", stream=uniq, sealed=True)
    assert (dry.done, dry.confirmation_required, dry.confirm_with) == (False, True, uniq)
    assert "seal" in dry.action and dry.config.get("sealed") is not True
    assert (await toolkit.call("stream_info", stream=uniq)).config.get("sealed") is not True  # type: ignore[attr-defined]
    sealed: Any = await toolkit.call("stream_update", stream=uniq, sealed=True, confirm=uniq)
    assert sealed.done is True and sealed.config["sealed"] is True
    with pytest.raises(NotFound) as missing:
        await toolkit.call("stream_update", stream=f"{uniq}_missing", description="x")
    assert missing.value.code == "stream_not_found"


async def _messages(toolkit: Toolkit, stream: str) -> int:
    state: Any = await toolkit.call("stream_state", stream=stream)
    return int(state.state.messages)


async def test_update_that_removes_messages_needs_confirmation(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    for subject in ("a", "b", "c"):
        await _publish(toolkit, f"{uniq}.{subject}", 2)
    dry: Any = await toolkit.call("stream_update", stream=uniq, max_msgs=1)
    assert (dry.done, dry.confirmation_required, dry.confirm_with) == (False, True, uniq)
    assert (dry.would_remove, dry.would_remove_precision) == (5, "exact")
    assert [(r.setting, r.messages) for r in dry.removals] == [("max_msgs", 5)]
    assert "remove 5 of its 6 messages" in dry.action
    assert dry.config["max_msgs"] == -1 and dry.state.messages == 6  # as the stream is: nothing changed
    with pytest.raises(UserError) as wrong:
        await toolkit.call("stream_update", stream=uniq, max_msgs=1, confirm="yes")
    assert wrong.value.code == "confirmation_mismatch"
    per_subject: Any = await toolkit.call("stream_update", stream=uniq, max_msgs_per_subject=1)
    assert (per_subject.would_remove, per_subject.would_remove_precision) == (3, "exact")
    size: Any = await toolkit.call("stream_state", stream=uniq)
    by_bytes: Any = await toolkit.call("stream_update", stream=uniq, max_bytes=size.state.bytes // 2)
    assert by_bytes.would_remove_precision == "estimate" and by_bytes.would_remove == 3
    assert by_bytes.removals[0].bytes == size.state.bytes - size.state.bytes // 2
    interest: Any = await toolkit.call("stream_update", stream=uniq, retention="interest")
    assert (interest.would_remove, interest.confirmation_required) == (6, True)
    both: Any = await toolkit.call("stream_update", stream=uniq, max_msgs=4, max_msgs_per_subject=1)
    assert (both.would_remove, both.would_remove_precision) == (5, "up_to")  # 2 and 3, which may overlap
    assert await _messages(toolkit, uniq) == 6
    assert (await toolkit.call("stream_info", stream=uniq)).config["max_msgs"] == -1  # type: ignore[attr-defined]
    # Changes that remove nothing need no confirmation, as before.
    for change in ({"description": "roomy"}, {"max_msgs": 6}, {"max_msgs_per_subject": 2}, {"max_bytes": 10**9},
                   {"max_age_s": 3600}):
        same: Any = await toolkit.call("stream_update", stream=uniq, **change)
        assert (same.done, same.confirmation_required, same.would_remove) == (True, False, 0), change
    assert await _messages(toolkit, uniq) == 6
    done: Any = await toolkit.call("stream_update", stream=uniq, max_msgs=1, confirm=uniq)
    assert (done.done, done.config["max_msgs"], done.state.messages) == (True, 1, 1)
    assert await _messages(toolkit, uniq) == 1


async def test_update_with_discard_new_keeps_stored_messages(toolkit: Toolkit, uniq: str) -> None:
    """With discard=new the server refuses new messages at a limit and keeps the ones it has."""
    await toolkit.call("stream_add", stream=uniq, discard="new")
    await _publish(toolkit, uniq, 4)
    updated: Any = await toolkit.call("stream_update", stream=uniq, max_msgs=2, max_bytes=10)
    assert (updated.done, updated.would_remove) == (True, 0)
    assert await _messages(toolkit, uniq) == 4
    # Per subject the server does remove them, whatever the discard policy.
    per_subject: Any = await toolkit.call("stream_update", stream=uniq, max_msgs_per_subject=1)
    assert (per_subject.done, per_subject.would_remove) == (False, 3)


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "consumer"])
async def test_update_max_age_counts_the_messages_it_expires(toolkit: Toolkit, uniq: str, allow_direct: bool) -> None:
    await toolkit.call("stream_add", stream=uniq, allow_direct=allow_direct, duplicate_window_s=1)
    await _publish(toolkit, uniq, 3)
    await asyncio.sleep(2.5)  # the point is their age
    await _publish(toolkit, uniq, 2)
    dry: Any = await toolkit.call("stream_update", stream=uniq, max_age_s=2)
    assert (dry.done, dry.would_remove, dry.would_remove_precision) == (False, 3, "exact")
    assert dry.removals[0].setting == "max_age_s"
    assert dry.state.consumer_count == 0 and (await toolkit.call("consumer_list", stream=uniq)).consumers == []  # type: ignore[attr-defined]
    done: Any = await toolkit.call("stream_update", stream=uniq, max_age_s=2, confirm=uniq)
    assert done.done is True
    assert await _messages(toolkit, uniq) == 2


async def test_info_and_state(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    await _publish(toolkit, f"{uniq}.a", 3)
    info: Any = await toolkit.call("stream_info", stream=uniq)
    assert info.name == uniq and info.state.messages == 3 and info.created
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert (state.state.messages, state.state.first_seq, state.state.last_seq) == (3, 1, 3)
    assert state.state.bytes > 0 and state.state.last_ts
    for tool in ("stream_info", "stream_state"):
        with pytest.raises(NotFound):
            await toolkit.call(tool, stream=f"{uniq}_missing")
        with pytest.raises(UserError) as bad:
            await toolkit.call(tool, stream="bad.name")
        assert bad.value.code == "invalid_name"


async def test_list_pages_with_subject_filter(toolkit: Toolkit, uniq: str) -> None:
    names = [f"{uniq}_{i}" for i in range(3)]
    for name in names:
        await toolkit.call("stream_add", stream=name, subjects=[f"{uniq}.{name}.>"])
    first: Any = await toolkit.call("stream_list", subject=f"{uniq}.>", limit=2)
    assert (first.total, len(first.streams), first.truncated, first.next_offset) == (3, 2, True, 2)
    rest: Any = await toolkit.call("stream_list", subject=f"{uniq}.>", offset=first.next_offset, limit=2)
    assert (len(rest.streams), rest.truncated, rest.next_offset) == (1, False, None)
    assert sorted(s.name for s in first.streams + rest.streams) == names
    beyond: Any = await toolkit.call("stream_list", subject=f"{uniq}.>", offset=10)
    assert (beyond.streams, beyond.truncated) == ([], False)


async def test_purge_confirmation_and_variants(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    await _publish(toolkit, f"{uniq}.a", 6)
    await _publish(toolkit, f"{uniq}.b", 4)
    dry: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.b")
    assert (dry.done, dry.would_remove, dry.confirm_with) == (False, 4, uniq)
    with pytest.raises(UserError) as wrong:
        await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.b", confirm="yes")
    assert wrong.value.code == "confirmation_mismatch"
    by_subject: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.b", confirm=uniq)
    assert (by_subject.done, by_subject.purged) == (True, 4)
    keep: Any = await toolkit.call("stream_purge", stream=uniq, keep=2, confirm=uniq)
    assert keep.purged == 4
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert (state.state.messages, state.state.first_seq) == (2, 5)
    upto: Any = await toolkit.call("stream_purge", stream=uniq, seq=6, confirm=uniq)
    assert upto.purged == 1
    with pytest.raises(UserError):
        await toolkit.call("stream_purge", stream=uniq, seq=7, keep=1)
    everything: Any = await toolkit.call("stream_purge", stream=uniq, confirm=uniq)
    assert everything.purged == 1
    assert (await toolkit.call("stream_state", stream=uniq)).state.messages == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "consumer"])
async def test_purge_dry_run_counts_subject_and_seq_exactly(toolkit: Toolkit, uniq: str, allow_direct: bool) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=allow_direct)
    js = (await toolkit.context.nc()).jetstream()
    for i in range(30):
        await js.publish(f"{uniq}.{i % 3}", b"x")  # .1 holds 2, 5, ..., 29
    dry: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.1", seq=20)
    assert (dry.would_remove, dry.would_remove_precision) == (6, "exact")
    assert "purge 6 messages" in dry.action
    wild: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.>", seq=20)
    assert wild.would_remove == 19
    kept: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.1", keep=3)
    assert kept.would_remove == 7
    nothing: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.9", seq=20)
    assert nothing.would_remove == 0
    assert (await toolkit.call("stream_state", stream=uniq)).state.consumer_count == 0  # type: ignore[attr-defined]
    done: Any = await toolkit.call("stream_purge", stream=uniq, subject=f"{uniq}.1", seq=20, confirm=uniq)
    assert done.purged == 6
    # Without a subject, deleted messages inside the range are not counted.
    for seq in (3, 4):
        await toolkit.call("stream_msg_delete", stream=uniq, seq=seq, confirm=f"{uniq}:{seq}")
    before_ten: Any = await toolkit.call("stream_purge", stream=uniq, seq=10)
    assert before_ten.would_remove == 4  # 1, 6, 7 and 9: 2, 5 and 8 were purged, 3 and 4 deleted
    assert (await toolkit.call("stream_purge", stream=uniq, seq=10, confirm=uniq)).purged == 4  # type: ignore[attr-defined]


async def test_purge_refused_by_deny_purge(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, deny_purge=True)
    await _publish(toolkit, uniq, 2)
    with pytest.raises(Conflict) as dry:
        await toolkit.call("stream_purge", stream=uniq)
    assert dry.value.code == "stream_purge_denied"
    # Confirmed straight away, the server itself refuses; the error is the same.
    with pytest.raises(Conflict) as denied:
        await toolkit.call("stream_purge", stream=uniq, confirm=uniq)
    assert denied.value.code == "stream_purge_denied" and "deny_purge" in denied.value.message
    assert (await toolkit.call("stream_state", stream=uniq)).state.messages == 2  # type: ignore[attr-defined]


async def test_delete_confirmation(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq)
    await _publish(toolkit, uniq, 2)
    dry: Any = await toolkit.call("stream_delete", stream=uniq)
    assert (dry.done, dry.confirmation_required, dry.confirm_with, dry.messages) == (False, True, uniq, 2)
    with pytest.raises(UserError):
        await toolkit.call("stream_delete", stream=uniq, confirm=f"{uniq}x")
    await toolkit.call("stream_info", stream=uniq)
    done: Any = await toolkit.call("stream_delete", stream=uniq, confirm=uniq)
    assert done.done is True
    with pytest.raises(NotFound):
        await toolkit.call("stream_info", stream=uniq)
    with pytest.raises(NotFound):
        await toolkit.call("stream_delete", stream=uniq)


async def test_find_by_criteria(toolkit: Toolkit, uniq: str) -> None:
    big, empty, guarded = f"{uniq}_big", f"{uniq}_empty", f"{uniq}_guarded"
    await toolkit.call("stream_add", stream=big, subjects=[f"{uniq}.big.>"])
    await toolkit.call("stream_add", stream=empty, subjects=[f"{uniq}.empty"], storage="memory")
    await toolkit.call("stream_add", stream=guarded, subjects=[f"{uniq}.guarded"], deny_delete=True)
    await _publish(toolkit, f"{uniq}.big.x", 5)
    await _publish(toolkit, f"{uniq}.guarded", 1)

    async def names(**criteria: Any) -> list[str]:
        res: Any = await toolkit.call("stream_find", **{"name_contains": uniq, **criteria})
        return [s.name for s in res.streams]

    assert await names() == [big, empty, guarded]
    assert await names(empty=True) == [empty]
    assert await names(empty=False) == [big, guarded]
    assert await names(min_messages=2) == [big]
    assert await names(min_bytes=1) == [big, guarded]
    assert await names(storage="memory") == [empty]
    assert await names(deny_delete=True) == [guarded]
    assert await names(max_replicas=1) == [big, empty, guarded]
    assert await names(consumers_below=1) == [big, empty, guarded]
    assert await names(sourced=True) == []
    assert await names(idle_s=3600) == [empty]
    assert await names(created_older_than_s=3600) == []
    assert await names(invert=True, empty=True) == [big, guarded]
    assert await names(subject=f"{uniq}.big.y") == [big]
    assert await names(name_contains=f"{uniq}_EMP") == [empty]
    page: Any = await toolkit.call("stream_find", name_contains=uniq, limit=2)
    assert (page.total, page.truncated, page.next_offset) == (3, True, 2)
    with pytest.raises(UserError) as bad:
        await toolkit.call("stream_find", cluster="(")
    assert bad.value.code == "invalid_regex"


async def test_report_sorts_and_pages(toolkit: Toolkit, uniq: str) -> None:
    sizes = {f"{uniq}_a": 3, f"{uniq}_b": 1, f"{uniq}_c": 2}
    for name, n in sizes.items():
        await toolkit.call("stream_add", stream=name, subjects=[f"{uniq}.{name}"])
        await _publish(toolkit, f"{uniq}.{name}", n)
    await toolkit.call("stream_msg_delete", stream=f"{uniq}_a", seq=2, confirm=f"{uniq}_a:2")

    async def order(**kwargs: Any) -> list[str]:
        res: Any = await toolkit.call("stream_report", subject=f"{uniq}.>", **kwargs)
        return [r.name for r in res.streams]

    assert await order(sort="name") == [f"{uniq}_a", f"{uniq}_b", f"{uniq}_c"]
    assert await order(sort="messages") == [f"{uniq}_b", f"{uniq}_a", f"{uniq}_c"]  # a holds 2 after the delete
    assert await order(sort="messages", reverse=True) == [f"{uniq}_c", f"{uniq}_a", f"{uniq}_b"]
    assert await order(sort="consumers") == [f"{uniq}_a", f"{uniq}_b", f"{uniq}_c"]
    report: Any = await toolkit.call("stream_report", subject=f"{uniq}.>", sort="name", limit=2)
    assert (report.total, report.truncated, report.next_offset, report.unhealthy) == (3, True, 2, 0)
    a = report.streams[0]
    assert (a.messages, a.deleted, a.storage, a.replicas, a.healthy) == (2, 1, "file", 1, True)
    by_bytes: Any = await toolkit.call("stream_report", subject=f"{uniq}.>")
    assert [r.bytes for r in by_bytes.streams] == sorted(r.bytes for r in by_bytes.streams)


async def test_mcp_stream_lifecycle(server_env: dict[str, str], uniq: str) -> None:
    async with mcp_client(server_env) as c:
        made = await c.call_tool("stream_add", {"stream": uniq, "subjects": [f"{uniq}.>"]})
        assert not made.is_error, made.content
        pub = await c.call_tool("publish", {"subject": f"{uniq}.a", "payload": "x", "count": 3})
        assert not pub.is_error
        listed = await c.call_tool("stream_list", {"subject": f"{uniq}.>"})
        assert listed.structured_content is not None and listed.structured_content["total"] == 1
        state = await c.call_tool("stream_state", {"stream": uniq})
        assert state.structured_content is not None and state.structured_content["state"]["messages"] == 3
        edited = await c.call_tool("stream_update", {"stream": uniq, "description": "edited"})
        assert edited.structured_content is not None
        assert edited.structured_content["config"]["description"] == "edited"
        lossy = await c.call_tool("stream_update", {"stream": uniq, "max_msgs": 1})
        assert lossy.structured_content is not None and lossy.structured_content["done"] is False
        assert (lossy.structured_content["would_remove"], lossy.structured_content["confirm_with"]) == (2, uniq)
        update_tool = next(t for t in (await c.list_tools()).tools if t.name == "stream_update")
        assert update_tool.annotations is not None and update_tool.annotations.destructive_hint is True
        found = await c.call_tool("stream_find", {"name_contains": uniq, "min_messages": 3})
        assert found.structured_content is not None
        assert [s["name"] for s in found.structured_content["streams"]] == [uniq]
        report = await c.call_tool("stream_report", {"subject": f"{uniq}.>"})
        assert report.structured_content is not None and report.structured_content["streams"][0]["messages"] == 3
        dry = await c.call_tool("stream_purge", {"stream": uniq})
        assert dry.structured_content is not None and dry.structured_content["would_remove"] == 3
        wrong = await c.call_tool("stream_purge", {"stream": uniq, "confirm": "nope"})
        assert wrong.is_error and "confirmation_mismatch" in getattr(wrong.content[0], "text", "")
        purged = await c.call_tool("stream_purge", {"stream": uniq, "confirm": uniq})
        assert purged.structured_content is not None and purged.structured_content["purged"] == 3
        deleted = await c.call_tool("stream_delete", {"stream": uniq, "confirm": uniq})
        assert deleted.structured_content is not None and deleted.structured_content["done"] is True
        missing = await c.call_tool("stream_state", {"stream": uniq})
        assert missing.is_error and "stream_not_found" in getattr(missing.content[0], "text", "")
        bad = await c.call_tool("stream_add", {"stream": "no spaces please"})
        assert bad.is_error and "invalid_name" in getattr(bad.content[0], "text", "")


def test_cli_stream_lifecycle(cli: CliFn, uniq: str) -> None:
    made = cli("--json", "stream", "add", uniq, "--subjects", f"{uniq}.>", "--max-age-s", "60", "--deny-delete")
    assert made.exit_code == 0, made.output
    assert cli_json(made)["config"]["max_age"] == 60 * 10**9 and cli_json(made)["config"]["deny_delete"] is True
    edited = cli_json(cli("--json", "stream", "edit", uniq, "--description", "via cli"))
    assert edited["config"]["description"] == "via cli" and edited["config"]["max_age"] == 60 * 10**9
    listed = cli("stream", "ls", "--subject", f"{uniq}.>")
    assert listed.exit_code == 0 and uniq in listed.output
    state = cli_json(cli("--json", "stream", "state", uniq))
    assert state["state"]["messages"] == 0
    found = cli_json(cli("--json", "stream", "find", "--name-contains", uniq, "--deny-delete"))
    assert [s["name"] for s in found["streams"]] == [uniq]
    query = cli_json(cli("--json", "stream", "query", "--name-contains", uniq, "--no-deny-delete"))
    assert query["streams"] == []
    report = cli("stream", "report", "--subject", f"{uniq}.>", "--sort", "messages")
    assert report.exit_code == 0 and uniq in report.output
    cli("pub", f"{uniq}.a", "x", "--count", "6")
    unforced = cli("--json", "stream", "edit", uniq, "--max-msgs", "1")
    assert unforced.exit_code == 1 and "--force" in unforced.output and "remove 5 of its 6" in unforced.output
    assert cli_json(cli("--json", "stream", "state", uniq))["state"]["messages"] == 6
    forced = cli("--json", "stream", "edit", uniq, "--max-msgs", "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert cli_json(forced)["done"] is True and cli_json(forced)["config"]["max_msgs"] == 1
    assert cli_json(cli("--json", "stream", "state", uniq))["state"]["messages"] == 1
    refused = cli("stream", "purge", uniq)
    assert refused.exit_code == 1 and "--force" in refused.output
    purged = cli("--json", "stream", "purge", uniq, "-f")
    assert purged.exit_code == 0 and cli_json(purged)["done"] is True
    assert cli("stream", "info", f"{uniq}_missing").exit_code == 1
    assert cli("stream", "add", "bad.name").exit_code == 1
    removed = cli("--json", "stream", "rm", uniq, "--force")
    assert removed.exit_code == 0 and cli_json(removed)["done"] is True
    gone = cli("--json", "stream", "state", uniq)
    assert gone.exit_code == 1 and cli_json(gone)["error"]["code"] == "stream_not_found"


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_tk(cluster: EmbeddedCluster) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(cluster) as toolkit:
        yield toolkit


async def test_report_and_find_on_a_cluster(cluster_tk: Toolkit, uniq: str) -> None:
    r3, r1 = f"{uniq}_r3", f"{uniq}_r1"
    await cluster_tk.call("stream_add", stream=r3, subjects=[f"{uniq}.r3"], replicas=3)
    await cluster_tk.call("stream_add", stream=r1, subjects=[f"{uniq}.r1"], replicas=1)
    await cluster_tk.call("publish", subject=f"{uniq}.r3", payload="x", count=3)
    # Followers report "current" once they have caught up with the leader: Raft has no event to await.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        report: Any = await cluster_tk.call("stream_report", subject=f"{uniq}.>", sort="name")
        rows = {r.name: r for r in report.streams}
        row = rows[r3]
        if (row.healthy and row.messages == 3) or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert (row.replicas, row.messages, row.cluster, row.healthy) == (3, 3, "natsop", True), row
    assert row.leader in {"n1", "n2", "n3"}
    followers = {"n1", "n2", "n3"} - {row.leader}
    assert sorted(row.replica_status) == sorted(f"{n}: current" for n in followers)
    assert rows[r1].healthy and rows[r1].replica_status == [] and report.unhealthy == 0

    async def names(**criteria: Any) -> list[str]:
        res: Any = await cluster_tk.call("stream_find", **{"name_contains": uniq, **criteria})
        return [s.name for s in res.streams]

    assert await names(leader=row.leader) == ([r1, r3] if rows[r1].leader == row.leader else [r3])
    assert await names(max_replicas=1) == [r1]
    assert await names(cluster="^natsop$") == [r1, r3]
    assert await names(cluster="^elsewhere$") == []
    on_followers = sorted([r3] + ([r1] if rows[r1].leader in followers else []))
    assert await names(server_name=f"^({'|'.join(sorted(followers))})$") == on_followers


def test_replica_health_names_each_problem() -> None:
    def info(replicas: int, cluster: dict[str, Any] | None) -> dict[str, Any]:
        return {"config": {"num_replicas": replicas}, **({"cluster": cluster} if cluster is not None else {})}

    assert replica_health(info(1, None)) == (True, [])
    assert replica_health(info(1, {"leader": "n1"})) == (True, [])
    ok = {"leader": "n1", "replicas": [{"name": "n2", "current": True}, {"name": "n3", "current": True}]}
    assert replica_health(info(3, ok)) == (True, ["n2: current", "n3: current"])
    behind = {"leader": "n1", "replicas": [{"name": "n2", "current": False, "lag": 12, "active": 2_500_000_000},
                                           {"name": "n3", "current": True, "offline": True}]}
    assert replica_health(info(3, behind)) == (False, ["n2: not current (12 ops behind, seen 2.5s ago)",
                                                       "n3: offline"])
    leaderless = {"name": "c", "replicas": [{"name": "n2", "current": True}]}
    assert replica_health(info(3, leaderless)) == (False, ["no leader", "n2: current", "1 of 2 followers missing"])
