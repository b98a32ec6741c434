"""Consumers through the three faces: Python (toolkit), MCP and the CLI, on the real embedded server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError, NotFound, UserError
from natsop.ops.consumer import (
    ConsumerDeleteResult,
    ConsumerInfoResult,
    ConsumerListResult,
    ConsumerNextResult,
    ConsumerPauseResult,
    ConsumerReportResult,
    ConsumerWriteResult,
    parse_ack_subject,
)
from tests.conftest import CliFn, cli_json, mcp_client
from tests.harness import unanswered


async def _stream(tk: Toolkit, name: str, messages: int = 0, subject: str = "a") -> None:
    await tk.call("stream_add", stream=name, subjects=[f"{name}.>"])
    await _publish(tk, name, messages, subject)


async def _publish(tk: Toolkit, name: str, count: int, subject: str = "a", **kwargs: Any) -> None:
    nc = await tk.context.nc()
    for i in range(count):
        # A request: JetStream's acknowledgement means the message is stored.
        ack = await nc.request(f"{name}.{subject}", f"m{i}".encode(), timeout=5, **kwargs)
        assert b'"seq"' in ack.data


async def _add(tk: Toolkit, **kwargs: Any) -> ConsumerWriteResult:
    result = await tk.call("consumer_add", **kwargs)
    assert isinstance(result, ConsumerWriteResult)
    return result


async def _info(tk: Toolkit, stream: str, consumer: str) -> ConsumerInfoResult:
    result = await tk.call("consumer_info", stream=stream, consumer=consumer)
    assert isinstance(result, ConsumerInfoResult)
    return result


async def _next(tk: Toolkit, stream: str, consumer: str, **kwargs: Any) -> ConsumerNextResult:
    result = await tk.call("consumer_next", stream=stream, consumer=consumer, **kwargs)
    assert isinstance(result, ConsumerNextResult)
    return result


# ------------------------------------------------------------------------------------------- add and edit


async def test_add_defaults_and_idempotence(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    made = await _add(toolkit, stream=uniq, consumer="proc", filter_subject=f"{uniq}.>")
    assert made.outcome == "created"
    assert made.kind == "pull"
    assert made.config["durable_name"] == "proc"
    assert made.config["ack_policy"] == "explicit"
    assert made.config["deliver_policy"] == "all"
    assert "deliver_subject" not in made.config
    assert made.warnings == []
    again = await _add(toolkit, stream=uniq, consumer="proc", filter_subject=f"{uniq}.>")
    assert again.outcome == "unchanged"
    assert again.created == made.created
    # A changed configuration through add is an update of the same consumer.
    changed = await _add(toolkit, stream=uniq, consumer="proc", filter_subject=f"{uniq}.>", ack_wait_s=5,
                         description="orders projection")
    assert changed.outcome == "updated"
    assert changed.created == made.created
    info = await _info(toolkit, uniq, "proc")
    assert info.config["ack_wait"] == 5_000_000_000
    assert info.config["description"] == "orders projection"
    listed = await toolkit.call("consumer_list", stream=uniq)
    assert isinstance(listed, ConsumerListResult) and listed.total == 1


async def test_add_options_reach_the_server(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=3)
    made = await _add(toolkit, stream=uniq, consumer="late", opt_start_seq=2, max_deliver=5, backoff_s=[1, 2],
                      max_ack_pending=50, metadata={"owner": "billing"}, sample_freq=10, headers_only=True,
                      replay_policy="instant", inactive_threshold_s=3600)
    cfg = made.config
    assert cfg["deliver_policy"] == "by_start_sequence" and cfg["opt_start_seq"] == 2
    assert cfg["backoff"] == [1_000_000_000, 2_000_000_000]
    assert cfg["max_deliver"] == 5 and cfg["max_ack_pending"] == 50
    assert cfg["metadata"]["owner"] == "billing"
    assert cfg["sample_freq"] == "10%"
    assert cfg["headers_only"] is True
    assert made.state.num_pending == 2
    eph = await _add(toolkit, stream=uniq, consumer="brief", durable=False, inactive_threshold_s=60)
    assert "durable_name" not in eph.config and eph.config["name"] == "brief"
    push = await _add(toolkit, stream=uniq, consumer="pusher", deliver_subject=f"deliver.{uniq}",
                      idle_heartbeat_s=5, flow_control=True)
    assert push.kind == "push" and push.config["deliver_subject"] == f"deliver.{uniq}"
    start = datetime.now(UTC) - timedelta(hours=1)
    by_time = await _add(toolkit, stream=uniq, consumer="bytime", opt_start_time=start.isoformat())
    assert by_time.config["deliver_policy"] == "by_start_time"
    assert by_time.state.num_pending == 3


async def test_ack_none_is_allowed_with_a_warning(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    risky = await _add(toolkit, stream=uniq, consumer="fire_and_forget", ack_policy="none")
    assert risky.config["ack_policy"] == "none"
    assert len(risky.warnings) == 1
    assert "AckExplicit. Always." in risky.warnings[0]
    safe = await _add(toolkit, stream=uniq, consumer="safe", ack_policy="all")
    assert safe.warnings == []


async def test_more_than_300_filters_warns(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    many = await _add(toolkit, stream=uniq, consumer="many",
                      filter_subjects=[f"{uniq}.{i}" for i in range(301)])
    assert len(many.config["filter_subjects"]) == 301
    assert any("301 filter subjects" in w and "anti-pattern" in w for w in many.warnings)
    enough = await _add(toolkit, stream=uniq, consumer="enough",
                        filter_subjects=[f"{uniq}.{i}" for i in range(300)])
    assert enough.warnings == []


@pytest.mark.parametrize(("args", "needle"), [
    ({"filter_subject": "a.b", "filter_subjects": ["a.c"]}, "not both"),
    ({"deliver_policy": "by_start_sequence"}, "opt_start_seq"),
    ({"deliver_policy": "new", "opt_start_seq": 3}, "opt_start_seq"),
    ({"deliver_policy": "by_start_time"}, "opt_start_time"),
    ({"opt_start_time": "2024-01-01T00:00:00"}, "time zone"),
    ({"opt_start_time": "yesterday"}, "RFC 3339"),
    ({"flow_control": True}, "push consumers"),
    ({"deliver_subject": "out.x", "max_waiting": 5}, "pull consumers"),
    ({"priority_groups": ["g1"]}, "priority_policy"),
    ({"consumer": "bad.name"}, "contains"),
    ({"filter_subject": "a..b"}, "empty token"),
])
async def test_bad_add_arguments_are_refused_before_sending(toolkit: Toolkit, args: dict[str, Any],
                                                            needle: str) -> None:
    # The stream does not exist: every one of these must fail on its arguments, not on the server.
    call = {"stream": "NO_SUCH_STREAM_FOR_BAD_ARGS", "consumer": "c", **args}
    with pytest.raises(UserError) as caught:
        await toolkit.call("consumer_add", **call)
    assert needle in str(caught.value)


async def test_edit_changes_only_what_is_given(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    await _add(toolkit, stream=uniq, consumer="c", description="keep me", ack_wait_s=10,
               filter_subject=f"{uniq}.a")
    edited = await toolkit.call("consumer_edit", stream=uniq, consumer="c", max_deliver=7)
    assert isinstance(edited, ConsumerWriteResult)
    assert edited.outcome == "updated"
    assert edited.config["max_deliver"] == 7
    assert edited.config["description"] == "keep me"
    assert edited.config["ack_wait"] == 10_000_000_000
    assert edited.config["filter_subject"] == f"{uniq}.a"
    # Switching to several filters replaces the single one.
    multi = await toolkit.call("consumer_edit", stream=uniq, consumer="c",
                               filter_subjects=[f"{uniq}.a", f"{uniq}.b"])
    assert isinstance(multi, ConsumerWriteResult)
    assert multi.config["filter_subjects"] == [f"{uniq}.a", f"{uniq}.b"]
    assert not multi.config.get("filter_subject")
    same = await toolkit.call("consumer_edit", stream=uniq, consumer="c", max_deliver=7)
    assert isinstance(same, ConsumerWriteResult) and same.outcome == "unchanged"
    # The server refuses changes it does not allow; that is an error with its words, not a crash.
    with pytest.raises(Conflict) as refused:
        await toolkit.call("consumer_edit", stream=uniq, consumer="c", deliver_policy="new")
    assert refused.value.code == "consumer_setting_fixed"
    assert "deliver policy" in refused.value.message.lower()
    with pytest.raises(NatsopError) as overlap:
        await toolkit.call("consumer_edit", stream=uniq, consumer="c", filter_subjects=[f"{uniq}.a", f"{uniq}.>"])
    assert "overlap" in overlap.value.message
    with pytest.raises(NotFound) as missing:
        await toolkit.call("consumer_edit", stream=uniq, consumer="nobody", max_deliver=3)
    assert missing.value.code == "consumer_not_found"


# ------------------------------------------------------------------------------------------- list and report


async def test_list_is_sorted_paged_and_shows_lag(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=4)
    for name in ("charlie", "alpha", "bravo"):
        await _add(toolkit, stream=uniq, consumer=name)
    await _next(toolkit, uniq, "bravo", count=1)
    first = await toolkit.call("consumer_list", stream=uniq, limit=2)
    assert isinstance(first, ConsumerListResult)
    assert [c.name for c in first.consumers] == ["alpha", "bravo"]
    assert first.total == 3 and first.truncated and first.next_offset == 2
    bravo = first.consumers[1]
    assert (bravo.num_pending, bravo.num_ack_pending, bravo.delivered, bravo.ack_floor) == (3, 1, 1, 0)
    assert bravo.last_active is not None
    assert first.consumers[0].num_pending == 4 and first.consumers[0].last_active is None
    rest = await toolkit.call("consumer_list", stream=uniq, offset=2, limit=2)
    assert isinstance(rest, ConsumerListResult)
    assert [c.name for c in rest.consumers] == ["charlie"]
    assert not rest.truncated and rest.next_offset is None
    with pytest.raises(NotFound) as missing:
        await toolkit.call("consumer_list", stream=f"{uniq}_none")
    assert missing.value.code == "stream_not_found"


async def test_report_ranks_by_pending(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=4, subject="a")
    await _publish(toolkit, uniq, 2, subject="b")
    await _add(toolkit, stream=uniq, consumer="caught_up")
    await _add(toolkit, stream=uniq, consumer="only_b", filter_subject=f"{uniq}.b")
    await _add(toolkit, stream=uniq, consumer="behind")
    await _add(toolkit, stream=uniq, consumer="half")
    await _next(toolkit, uniq, "caught_up", count=6, ack=True)
    await _next(toolkit, uniq, "half", count=3, ack=True)
    report = await toolkit.call("consumer_report", stream=uniq)
    assert isinstance(report, ConsumerReportResult)
    assert report.last_seq == 6 and report.messages == 6
    assert [(c.name, c.num_pending) for c in report.consumers] == [
        ("behind", 6), ("half", 3), ("only_b", 2), ("caught_up", 0)]
    assert report.consumers[2].filter == f"{uniq}.b"
    assert report.complete and report.scanned == 4 and report.total == 4
    page = await toolkit.call("consumer_report", stream=uniq, offset=1, limit=2)
    assert isinstance(page, ConsumerReportResult)
    assert [c.name for c in page.consumers] == ["half", "only_b"]
    assert page.truncated and page.next_offset == 3
    capped = await toolkit.call("consumer_report", stream=uniq, scan_limit=2)
    assert isinstance(capped, ConsumerReportResult)
    assert not capped.complete and capped.scanned == 2 and capped.total == 4


# ------------------------------------------------------------------------------------------- next


async def test_next_peeks_by_default_and_messages_come_back(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=2)
    await _add(toolkit, stream=uniq, consumer="peek", ack_wait_s=1)
    peek = await _next(toolkit, uniq, "peek", count=5, timeout_s=0.5)
    assert [m.stream_seq for m in peek.messages] == [1, 2]
    assert [m.pending for m in peek.messages] == [1, 0]
    assert all(m.delivered == 1 and not m.acked for m in peek.messages)
    assert peek.messages[0].payload.data == "m0" and peek.messages[0].subject == f"{uniq}.a"
    assert peek.acknowledged is False
    assert peek.note is not None and "ack_wait (1s)" in peek.note
    assert peek.ended.startswith("no more messages")
    info = await _info(toolkit, uniq, "peek")
    assert info.state.num_ack_pending == 2 and info.state.ack_floor.stream_seq == 0
    # Nothing was acknowledged, so after ack_wait the server delivers them again.
    again = await _next(toolkit, uniq, "peek", count=2, timeout_s=10)
    assert [m.stream_seq for m in again.messages] == [1, 2]
    assert all(m.delivered == 2 for m in again.messages)
    assert again.ended == "count reached"
    assert (await _info(toolkit, uniq, "peek")).state.num_redelivered == 2


async def test_next_with_ack_advances_the_ack_floor(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=5)
    await _add(toolkit, stream=uniq, consumer="worker")
    got = await _next(toolkit, uniq, "worker", count=3, ack=True)
    assert [m.stream_seq for m in got.messages] == [1, 2, 3]
    assert [m.consumer_seq for m in got.messages] == [1, 2, 3]
    assert got.acknowledged and all(m.acked for m in got.messages)
    assert got.note is None
    info = await _info(toolkit, uniq, "worker")
    assert info.state.ack_floor.stream_seq == 3
    assert info.state.num_ack_pending == 0 and info.state.num_pending == 2
    rest = await _next(toolkit, uniq, "worker", count=10, no_wait=True, ack=True)
    assert [m.stream_seq for m in rest.messages] == [4, 5]
    assert rest.ended.startswith("no more messages")
    empty = await _next(toolkit, uniq, "worker", no_wait=True)
    assert empty.messages == [] and empty.acknowledged is False
    assert empty.ended.startswith("no more messages")


async def test_next_shows_headers_and_bounds_payloads(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    nc = await toolkit.context.nc()
    await nc.request(f"{uniq}.big", b"x" * 1000, headers={"Trace": "t-1"}, timeout=5)
    await nc.request(f"{uniq}.bin", b"\xff\xfe\x00", timeout=5)
    await toolkit.call("publish", subject=f"{uniq}.repeated", headers={"Tag": ["a", "b"]})
    await _add(toolkit, stream=uniq, consumer="c")
    got = await _next(toolkit, uniq, "c", count=3, max_payload_bytes=10, ack=True)
    big, binary, repeated = got.messages
    assert big.headers == {"Trace": ["t-1"]}
    assert repeated.headers == {"Tag": ["a", "b"]}  # every value of a repeated header
    assert big.payload.truncated and big.payload.size == 1000 and big.payload.data == "x" * 10
    assert binary.payload.encoding == "base64"
    assert big.time is not None and big.time.endswith("Z")


async def test_next_refuses_push_consumers_and_unknown_ones(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=1)
    await _add(toolkit, stream=uniq, consumer="pusher", deliver_subject=f"deliver.{uniq}")
    with pytest.raises(UserError) as push:
        await _next(toolkit, uniq, "pusher")
    assert push.value.code == "push_consumer"
    with pytest.raises(NotFound) as missing:
        await _next(toolkit, uniq, "ghost")
    assert missing.value.code == "consumer_not_found"


def test_ack_subject_forms() -> None:
    v1 = parse_ack_subject("$JS.ACK.ORDERS.proc.2.41.17.1700000000000000000.5")
    assert v1 is not None
    assert (v1.stream, v1.consumer, v1.delivered, v1.stream_seq, v1.consumer_seq, v1.pending) == (
        "ORDERS", "proc", 2, 41, 17, 5)
    assert v1.domain is None
    v2 = parse_ack_subject("$JS.ACK.hub.ACCHASH.ORDERS.proc.1.42.18.1700000000000000000.0.rnd")
    assert v2 is not None
    assert (v2.domain, v2.stream, v2.stream_seq, v2.consumer_seq, v2.pending) == ("hub", "ORDERS", 42, 18, 0)
    no_domain = parse_ack_subject("$JS.ACK._.ACCHASH.S.c.1.1.1.1.0.rnd")
    assert no_domain is not None and no_domain.domain is None
    assert parse_ack_subject("_INBOX.abc") is None
    assert parse_ack_subject("$JS.ACK.S.c.x.1.1.1.0") is None


# ------------------------------------------------------------------------------------------- pause and delete


async def test_pause_and_resume_show_in_info(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=1)
    await _add(toolkit, stream=uniq, consumer="c")
    paused = await toolkit.call("consumer_pause", stream=uniq, consumer="c", for_s=120)
    assert isinstance(paused, ConsumerPauseResult)
    assert paused.paused and paused.pause_until is not None
    assert paused.pause_remaining_s is not None and 100 < paused.pause_remaining_s <= 120
    info = await _info(toolkit, uniq, "c")
    assert info.state.paused and info.state.pause_remaining_s is not None and info.state.pause_remaining_s > 0
    # A paused consumer delivers nothing.
    held = await _next(toolkit, uniq, "c", timeout_s=0.3)
    assert held.messages == [] and held.note is not None and "paused" in held.note
    resumed = await toolkit.call("consumer_resume", stream=uniq, consumer="c")
    assert isinstance(resumed, ConsumerPauseResult)
    assert not resumed.paused and resumed.pause_remaining_s is None
    after = await _info(toolkit, uniq, "c")
    assert not after.state.paused and after.state.pause_remaining_s is None
    assert len((await _next(toolkit, uniq, "c", timeout_s=5)).messages) == 1
    until = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    later = await toolkit.call("consumer_pause", stream=uniq, consumer="c", until=until.isoformat())
    assert isinstance(later, ConsumerPauseResult) and later.paused
    assert later.pause_until is not None and later.pause_until.startswith(until.strftime("%Y-%m-%dT%H:%M:%S"))


@pytest.mark.parametrize("args", [
    {},
    {"for_s": 10, "until": "2099-01-01T00:00:00Z"},
    {"until": "2001-01-01T00:00:00Z"},
    {"for_s": 0},
])
async def test_pause_needs_one_future_end(toolkit: Toolkit, args: dict[str, Any]) -> None:
    with pytest.raises(UserError):
        await toolkit.call("consumer_pause", stream="S_NOT_THERE", consumer="c", **args)


async def test_delete_needs_confirmation_and_says_what_is_lost(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=3)
    await _add(toolkit, stream=uniq, consumer="doomed")
    await _next(toolkit, uniq, "doomed", count=1)
    dry = await toolkit.call("consumer_delete", stream=uniq, consumer="doomed")
    assert isinstance(dry, ConsumerDeleteResult)
    assert not dry.done and dry.confirmation_required and dry.confirm_with == "doomed"
    assert (dry.num_pending, dry.num_ack_pending) == (2, 1)
    assert "2 messages not yet delivered" in dry.action
    with pytest.raises(UserError) as wrong:
        await toolkit.call("consumer_delete", stream=uniq, consumer="doomed", confirm=uniq)
    assert wrong.value.code == "confirmation_mismatch"
    assert (await _info(toolkit, uniq, "doomed")).name == "doomed"
    done = await toolkit.call("consumer_delete", stream=uniq, consumer="doomed", confirm="doomed")
    assert isinstance(done, ConsumerDeleteResult) and done.done
    with pytest.raises(NotFound):
        await _info(toolkit, uniq, "doomed")
    # The messages stay in the stream.
    state = await toolkit.call("stream_state", stream=uniq)
    assert state.model_dump()["state"]["messages"] == 3


# ------------------------------------------------------------------------------------------- MCP


async def test_every_tool_through_mcp(server_env: dict[str, str], toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, messages=3)

    async def ok(c: Any, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await c.call_tool(tool, {"stream": uniq, **args})
        assert not result.is_error, (tool, result.content)
        assert result.structured_content is not None
        data: dict[str, Any] = result.structured_content
        return data

    async with mcp_client(server_env) as c:
        risky = await ok(c, "consumer_add", {"consumer": "risky", "ack_policy": "none"})
        assert risky["outcome"] == "created" and "AckExplicit" in risky["warnings"][0]
        made = await ok(c, "consumer_add", {"consumer": "m"})
        assert made["outcome"] == "created" and made["warnings"] == []
        made = await ok(c, "consumer_add", {"consumer": "m", "ack_wait_s": 2})
        assert made["outcome"] == "updated" and made["config"]["ack_wait"] == 2_000_000_000
        # The server's refusal to change a fixed setting is an error result with its words.
        fixed = await c.call_tool("consumer_add", {"stream": uniq, "consumer": "m", "ack_policy": "none"})
        assert fixed.is_error and "[consumer_setting_fixed]" in getattr(fixed.content[0], "text", "")
        edited = await ok(c, "consumer_edit", {"consumer": "m", "description": "via mcp"})
        assert edited["config"]["description"] == "via mcp"
        info = await ok(c, "consumer_info", {"consumer": "m"})
        assert info["state"]["num_pending"] == 3 and info["kind"] == "pull"
        listed = await ok(c, "consumer_list", {})
        assert [x["name"] for x in listed["consumers"]] == ["m", "risky"]
        got = await ok(c, "consumer_next", {"consumer": "m", "count": 2})
        assert [x["stream_seq"] for x in got["messages"]] == [1, 2]
        assert got["acknowledged"] is False and "peek" in got["note"]
        acked = await ok(c, "consumer_next", {"consumer": "m", "count": 1, "ack": True})
        assert acked["acknowledged"] is True
        report = await ok(c, "consumer_report", {})
        assert [x["name"] for x in report["consumers"]] == ["risky", "m"] and report["last_seq"] == 3
        paused = await ok(c, "consumer_pause", {"consumer": "m", "for_s": 60})
        assert paused["paused"] is True and paused["pause_remaining_s"] > 0
        resumed = await ok(c, "consumer_resume", {"consumer": "m"})
        assert resumed["paused"] is False
        dry = await ok(c, "consumer_delete", {"consumer": "m"})
        assert dry["done"] is False and dry["confirm_with"] == "m"
        gone = await ok(c, "consumer_delete", {"consumer": "m", "confirm": "m"})
        assert gone["done"] is True
        missing = await c.call_tool("consumer_info", {"stream": uniq, "consumer": "m"})
        assert missing.is_error
        assert "[consumer_not_found]" in getattr(missing.content[0], "text", "")
        bad = await c.call_tool("consumer_next", {"stream": uniq, "consumer": "m", "count": 5000})
        assert bad.is_error and "[invalid_arguments]" in getattr(bad.content[0], "text", "")
        tools = {t.name: t for t in (await c.list_tools()).tools}
    next_ann = tools["consumer_next"].annotations
    assert next_ann is not None and next_ann.read_only_hint is False and next_ann.idempotent_hint is False
    add_ann = tools["consumer_add"].annotations
    assert add_ann is not None and add_ann.idempotent_hint is True
    delete_ann = tools["consumer_delete"].annotations
    assert delete_ann is not None and delete_ann.destructive_hint is True


# ------------------------------------------------------------------------------------------- CLI


def _publish_sync(server: EmbeddedServer, subject: str, count: int) -> None:
    async def go() -> None:
        nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
        try:
            for i in range(count):
                await nc.request(subject, f"c{i}".encode(), timeout=5)
        finally:
            await nc.close()

    asyncio.run(go())


def test_every_verb_through_the_cli(cli: CliFn, server: EmbeddedServer, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>").exit_code == 0
    _publish_sync(server, f"{uniq}.x", 3)
    made = cli("--json", "consumer", "add", uniq, "work", "--filter-subject", f"{uniq}.>", "--ack-wait-s", "20")
    assert made.exit_code == 0, made.output
    assert cli_json(made)["config"]["ack_wait"] == 20_000_000_000
    alias = cli("--json", "consumer", "create", uniq, "risky", "--ack-policy", "none")
    assert alias.exit_code == 0 and "AckExplicit" in cli_json(alias)["warnings"][0]
    table = cli("consumer", "ls", uniq)
    assert table.exit_code == 0 and "work" in table.output and "risky" in table.output
    assert cli_json(cli("--json", "consumer", "list", uniq))["total"] == 2
    edited = cli("--json", "consumer", "edit", uniq, "work", "--metadata", "team=billing")
    assert edited.exit_code == 0 and cli_json(edited)["config"]["metadata"]["team"] == "billing"
    got = cli("--json", "consumer", "next", uniq, "work", "--count", "2", "--ack")
    assert got.exit_code == 0, got.output
    assert [m["stream_seq"] for m in cli_json(got)["messages"]] == [1, 2]
    info = cli("--json", "consumer", "info", uniq, "work")
    assert cli_json(info)["state"]["ack_floor"]["stream_seq"] == 2
    assert "work" in cli("consumer", "info", uniq, "work").output
    report = cli_json(cli("--json", "consumer", "report", uniq))
    assert [c["name"] for c in report["consumers"]] == ["risky", "work"]
    paused = cli("--json", "consumer", "pause", uniq, "work", "--for-s", "30")
    assert paused.exit_code == 0 and cli_json(paused)["paused"] is True
    resumed = cli("--json", "consumer", "resume", uniq, "work")
    assert resumed.exit_code == 0 and cli_json(resumed)["paused"] is False
    # Without a terminal a destructive verb refuses unless forced.
    refused = cli("consumer", "rm", uniq, "work")
    assert refused.exit_code == 1
    assert cli("--json", "consumer", "info", uniq, "work").exit_code == 0
    removed = cli("--json", "consumer", "rm", uniq, "work", "--force")
    assert removed.exit_code == 0 and cli_json(removed)["done"] is True
    missing = cli("--json", "consumer", "info", uniq, "work")
    assert missing.exit_code == 1
    assert json.loads(missing.output)["error"]["code"] == "consumer_not_found"
    text = cli("consumer", "info", uniq, "work")
    assert text.exit_code == 1


@pytest.mark.parametrize("tool", ["consumer_next", "kv_watch"])
async def test_a_pull_nobody_answers_yet_is_sent_again(toolkit: Toolkit, uniq: str, tool: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    nc = await toolkit.context.nc()
    if tool == "consumer_next":
        await toolkit.call("stream_add", stream=uniq)
        await toolkit.call("publish", subject=uniq, payload="hello")
        await toolkit.call("consumer_add", stream=uniq, consumer="c")
        sent = unanswered(nc, monkeypatch, ".CONSUMER.MSG.NEXT.", range(1, 3))
        got: Any = await toolkit.call("consumer_next", stream=uniq, consumer="c", timeout_s=3)
        assert [m.payload.data for m in got.messages] == ["hello"], got
    else:
        await toolkit.call("kv_add", bucket=uniq)
        await toolkit.call("kv_put", bucket=uniq, key="k", value="v1")
        sent = unanswered(nc, monkeypatch, ".CONSUMER.MSG.NEXT.", range(1, 3))
        watched: Any = await toolkit.call("kv_watch", bucket=uniq, initial_values=True, max_entries=1)
        assert [e.value.data for e in watched.entries] == ["v1"], watched
    assert len(sent) == 3  # two unanswered, then the one that was served
    # Beyond the retries a pull that nobody serves still fails (or ends) rather than waiting forever.
    monkeypatch.undo()
    sent = unanswered(nc, monkeypatch, ".CONSUMER.MSG.NEXT.", range(1, 11))
    if tool == "consumer_next":
        ended: Any = await toolkit.call("consumer_next", stream=uniq, consumer="c", timeout_s=3)
        assert ended.messages == [] and "503" in ended.ended
    else:
        with pytest.raises(NatsopError) as failed:
            await toolkit.call("kv_watch", bucket=uniq, initial_values=True, max_entries=1)
        assert failed.value.code == "consumer_interrupted"
    assert len(sent) == 3
