"""Core messaging, events, and the 2.11/2.12 primitives, against the real server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError, NotFound, Unavailable, Unsupported
from natsop.logic.envelope import new_event, publish_event, uuid7
from natsop.models import MAX_PAYLOAD_BYTES
from tests.conftest import CliFn, cli_json, mcp_client
from tests.harness import await_interest


async def raw(server: EmbeddedServer) -> Any:
    return await nats.connect(server.url, user=server.app.user, password=server.app.password)


# --- subscribe / request ------------------------------------------------------------------------

async def test_subscribe_collects_until_count_or_time(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    nc = await raw(server)
    try:
        async def publish_later() -> None:
            await await_interest(server.monitor_url, f"{uniq}.x.0")  # the tool's subscription
            for i in range(5):
                await nc.publish(f"{uniq}.x.{i}", f"m{i}".encode(), headers={"K": str(i)})
            await nc.flush()

        task = asyncio.create_task(publish_later())
        got: Any = await toolkit.call("subscribe", subject=f"{uniq}.>", max_messages=3, timeout_s=10)
        await task
        assert got.stopped_by == "max_messages" and got.count == 3
        assert [m.payload.data for m in got.messages] == ["m0", "m1", "m2"]
        assert got.messages[0].headers == {"K": ["0"]}
        started = time.monotonic()
        silent: Any = await toolkit.call("subscribe", subject=f"{uniq}.silent", timeout_s=0.5)
        assert silent.stopped_by == "timeout" and silent.count == 0
        assert 0.4 <= time.monotonic() - started < 3
    finally:
        await nc.close()


async def test_request_reply_and_no_responders(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    nc = await raw(server)
    try:
        async def echo(msg: Any) -> None:
            await msg.respond(b"re:" + msg.data)

        await nc.subscribe(f"{uniq}.svc", cb=echo)
        await nc.flush()
        answer: Any = await toolkit.call("request", subject=f"{uniq}.svc", payload="hi")
        assert answer.payload.data == "re:hi" and answer.rtt_ms >= 0
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            await toolkit.call("request", subject=f"{uniq}.nobody", timeout_s=5)
        assert err.value.code == "no_responders"
        assert time.monotonic() - started < 2  # fails at once, not at the timeout
    finally:
        await nc.close()


# --- events ----------------------------------------------------------------------------------------

def test_uuid7_is_time_ordered_and_versioned() -> None:
    ids = [uuid7(unix_ms=1_700_000_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(parsed.hex[:12], 16) == 1_700_000_000_000


async def test_event_publish_envelope_headers_and_dedup(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], deny_delete=True, deny_purge=True)
    first: Any = await toolkit.call("event_publish", subject=f"{uniq}.orders.created", type="order.created",
                                    data={"order_id": 7}, tags=["web"], causation_id="cmd-1")
    assert uuid.UUID(first.id).version == 7 and first.seq == 1 and not first.duplicate
    again: Any = await toolkit.call("event_publish", subject=f"{uniq}.orders.created", type="order.created",
                                    data={"order_id": 7}, event_id=first.id)
    assert again.duplicate and again.seq == 1
    got: Any = await toolkit.call("stream_get", stream=uniq, seq=1)
    message = got.message if hasattr(got, "message") else got
    body = json.loads(message.payload.data)
    assert body["id"] == first.id and body["type"] == "order.created" and body["data"] == {"order_id": 7}
    assert body["tags"] == ["web"]
    assert body["metadata"] == {"correlationId": first.id, "causationId": "cmd-1"}
    assert message.headers["Nats-Msg-Id"] == [first.id]
    assert message.headers["Causation-Id"] == ["cmd-1"]
    # The Python API publishes the same envelope.
    nc = await raw(server)
    try:
        ack = await publish_event(nc, f"{uniq}.orders.shipped", new_event("order.shipped", {"order_id": 7}))
        assert ack["seq"] == 2
        # A stream's refusal is an error, not an acknowledgement-shaped dict.
        await toolkit.call("stream_add", stream=f"{uniq}_full", subjects=[f"{uniq}_full.>"], max_msgs=1,
                           discard="new")
        await publish_event(nc, f"{uniq}_full.a", new_event("t", {}))
        with pytest.raises(NatsopError) as refused:
            await publish_event(nc, f"{uniq}_full.b", new_event("t", {}))
        assert "maximum messages" in refused.value.message.lower(), refused.value.message
        with pytest.raises(Unavailable):
            await publish_event(nc, f"{uniq}_nostream.x", new_event("t", {}))
    finally:
        await nc.close()
    with pytest.raises(NatsopError) as err:
        await toolkit.call("event_publish", subject=f"{uniq}_nostream.x", type="t")
    assert "stream" in err.value.message


# --- atomic batches ------------------------------------------------------------------------------

async def test_publish_batch_is_all_or_nothing(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_atomic=True)
    msgs = [{"subject": f"{uniq}.a", "payload": f"p{i}"} for i in range(10)]
    done: Any = await toolkit.call("publish_batch", messages=msgs)
    assert (done.count, done.first_seq, done.last_seq) == (10, 1, 10)
    # A batch whose first message fails its expected-sequence check stores nothing.
    with pytest.raises(Conflict):
        await toolkit.call("publish_batch", messages=msgs, expected_last_seq=3)
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 10
    # The server itself refuses a batch with a gap: nothing of it is stored.
    nc = await raw(server)
    try:
        await nc.request(f"{uniq}.a", b"1", headers={"Nats-Batch-Id": "gap", "Nats-Batch-Sequence": "1"})
        reply = await nc.request(f"{uniq}.a", b"3", headers={"Nats-Batch-Id": "gap", "Nats-Batch-Sequence": "3",
                                                              "Nats-Batch-Commit": "1"})
        assert json.loads(reply.data)["error"]["err_code"] == 10176
    finally:
        await nc.close()
    state = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 10


async def test_publish_batch_needs_allow_atomic(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    with pytest.raises(Unsupported) as err:
        await toolkit.call("publish_batch", messages=[{"subject": f"{uniq}.a"}, {"subject": f"{uniq}.b"}])
    assert "allow_atomic" in err.value.hint


# --- counters ----------------------------------------------------------------------------------------

async def test_counters(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_msg_counter=True, allow_direct=True)
    assert (await toolkit.call("counter_add", subject=f"{uniq}.views.a", increment=5)).value == 5  # type: ignore[attr-defined]
    assert (await toolkit.call("counter_add", subject=f"{uniq}.views.a", increment=-2)).value == 3  # type: ignore[attr-defined]
    await toolkit.call("counter_add", subject=f"{uniq}.views.b", increment=10)
    one: Any = await toolkit.call("counter_get", stream=uniq, subject=f"{uniq}.views.a")
    assert one.value == 3
    total: Any = await toolkit.call("counter_get", stream=uniq, subject=f"{uniq}.views.*")
    assert total.value == 13 and [c.subject for c in total.counters] == [f"{uniq}.views.a", f"{uniq}.views.b"]
    with pytest.raises(NotFound):
        await toolkit.call("counter_get", stream=uniq, subject=f"{uniq}.views.none")


async def test_counter_on_a_plain_stream_is_refused(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    with pytest.raises(NatsopError) as err:
        await toolkit.call("counter_add", subject=f"{uniq}.c", increment=1)
    assert "allow_msg_counter" in err.value.hint
    with pytest.raises(Unsupported):
        await toolkit.call("counter_get", stream=uniq, subject=f"{uniq}.c")


# --- per-message TTL and schedules --------------------------------------------------------------

async def test_message_ttl_expires(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_msg_ttl=True)
    await toolkit.call("publish", subject=f"{uniq}.short", payload="bye", ttl="1s")
    await toolkit.call("publish", subject=f"{uniq}.long", payload="stay")
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = await toolkit.call("stream_state", stream=uniq)
        if state.state.messages == 1:
            break
        await asyncio.sleep(0.2)
    assert state.state.messages == 1


async def test_schedule_delivers_at_the_time(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_msg_schedules=True)
    at = datetime.now(UTC) + timedelta(seconds=2)
    made: Any = await toolkit.call("schedule_add", subject=f"{uniq}.sched.reminder", target=f"{uniq}.out.reminder",
                                   at=at.isoformat(), payload="ping")
    assert made.seq == 1
    deadline = time.monotonic() + 15
    subjects: Any = None
    while time.monotonic() < deadline:
        subjects = await toolkit.call("stream_subjects", stream=uniq)
        if any(s.subject == f"{uniq}.out.reminder" for s in subjects.subjects):
            break
        await asyncio.sleep(0.3)
    assert subjects is not None
    assert any(s.subject == f"{uniq}.out.reminder" for s in subjects.subjects)


async def test_schedule_refused_on_a_stream_without_schedules(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    with pytest.raises(Unsupported) as refused:
        await toolkit.call("schedule_add", subject=f"{uniq}.sched.x", target=f"{uniq}.out.x",
                           at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(), payload="x")
    assert refused.value.code == "message_schedules_disabled"
    assert refused.value.details["err_code"] == 10188
    assert refused.value.hint and "allow_msg_schedules" in refused.value.hint


# --- stream_search -------------------------------------------------------------------------------

async def test_stream_search(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    nc = await raw(server)
    try:
        js = nc.jetstream()
        for i in range(300):
            kind = "paid" if i % 10 == 0 else "new"
            await js.publish(f"{uniq}.orders.{i % 3}", json.dumps({"order": {"id": i, "status": kind}}).encode(),
                             headers={"Tenant": "acme" if i % 2 else "globex"})
    finally:
        await nc.close()
    paid: Any = await toolkit.call("stream_search", stream=uniq, json_field="order.status", json_value="paid",
                                   limit=100)
    assert len(paid.matches) == 30 and paid.stopped_by == "end" and paid.scanned == 300
    narrowed: Any = await toolkit.call("stream_search", stream=uniq, subject=f"{uniq}.orders.0",
                                       header="Tenant", header_value="globex", contains='"paid"')
    ids = [json.loads(m.payload.data)["order"]["id"] for m in narrowed.matches]
    assert ids == list(range(0, 300, 30))  # on .0 (i % 3 == 0), paid (i % 10 == 0), globex (even)
    assert narrowed.scanned == 100  # the server narrowed by subject
    budget: Any = await toolkit.call("stream_search", stream=uniq, contains="paid", max_scan=50)
    assert budget.stopped_by == "max_scan" and budget.scanned == 50 and budget.truncated
    rest: Any = await toolkit.call("stream_search", stream=uniq, contains="paid", start_seq=budget.next_seq, limit=100)
    assert len(budget.matches) + len(rest.matches) == 30


async def test_stream_search_json_values_are_type_strict(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    values = [True, 1, 1.0, False, 0, None, "1", [1, True], [1, 1], {"a": 1}, {"a": True}]
    for i, value in enumerate(values):
        await toolkit.call("publish", subject=f"{uniq}.{i}", payload=json.dumps({"v": value}))

    async def found(value: Any) -> list[int]:
        result: Any = await toolkit.call("stream_search", stream=uniq, json_field="v", json_value=value, limit=50)
        return [m.seq - 1 for m in result.matches]

    assert await found(True) == [0]
    assert await found(1) == [1, 2]  # 1 and 1.0 are the same JSON number
    assert await found(False) == [3]
    assert await found(0) == [4]
    assert await found([1, True]) == [7]
    assert await found({"a": 1}) == [9]


async def test_stream_search_says_when_a_payload_was_searched_only_in_part() -> None:
    needle = b"NEEDLE"
    async with EmbeddedServer(extra_config="max_payload: 2MB") as srv, Toolkit.for_server(srv) as tk:
        await tk.call("stream_add", stream="BIG", subjects=["big.>"])
        nc = await raw(srv)
        try:
            js = nc.jetstream()
            await js.publish("big.head", needle + b"x" * (MAX_PAYLOAD_BYTES + 100))
            await js.publish("big.tail", b"x" * (MAX_PAYLOAD_BYTES + 100) + needle)
            await js.publish("big.small", b"small " + needle)
        finally:
            await nc.close()
        result: Any = await tk.call("stream_search", stream="BIG", contains="NEEDLE", max_payload_bytes=16)
        assert [m.subject for m in result.matches] == ["big.head", "big.small"]
        head = result.matches[0].payload
        assert head.size == len(needle) + MAX_PAYLOAD_BYTES + 100 and head.truncated
        assert result.partly_searched == 2 and result.scanned == 3


# --- the faces ------------------------------------------------------------------------------------

async def test_messaging_tools_over_mcp(server_env: dict[str, str], uniq: str) -> None:
    async with mcp_client(server_env) as client:
        await client.call_tool("stream_add", {"stream": uniq, "subjects": [f"{uniq}.>"], "allow_atomic": True,
                                              "allow_direct": True})
        ev = await client.call_tool("event_publish", {"subject": f"{uniq}.e", "type": "thing.happened",
                                                      "data": {"a": 1}})
        assert not ev.is_error and ev.structured_content is not None
        batch = await client.call_tool("publish_batch", {"messages": [{"subject": f"{uniq}.b"}] * 3})
        assert not batch.is_error and batch.structured_content["count"] == 3  # type: ignore[index]
        found = await client.call_tool("stream_search", {"stream": uniq, "json_field": "type",
                                                         "json_value": "thing.happened"})
        assert found.structured_content is not None and len(found.structured_content["matches"]) == 1
        sub = await client.call_tool("subscribe", {"subject": f"{uniq}.quiet", "timeout_s": 0.2})
        assert sub.structured_content is not None and sub.structured_content["stopped_by"] == "timeout"
        nobody = await client.call_tool("request", {"subject": f"{uniq}_elsewhere.nobody"})
        assert nobody.is_error and "no_responders" in getattr(nobody.content[0], "text", "")
        too_big = await client.call_tool("publish_batch", {"messages": [{"subject": "a"}] * 1001})
        assert too_big.is_error

        await client.call_tool("stream_add", {"stream": f"{uniq}_C", "subjects": [f"{uniq}_c.>"],
                                              "allow_msg_counter": True})
        await client.call_tool("counter_add", {"subject": f"{uniq}_c.hits", "increment": 4})
        counted = await client.call_tool("counter_add", {"subject": f"{uniq}_c.hits", "increment": -1})
        assert not counted.is_error and counted.structured_content is not None, counted.content
        assert counted.structured_content["value"] == 3 and counted.structured_content["stream"] == f"{uniq}_C"

        await client.call_tool("stream_add", {"stream": f"{uniq}_S", "subjects": [f"{uniq}_s.>"],
                                              "allow_msg_schedules": True})
        at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        scheduled = await client.call_tool("schedule_add", {"subject": f"{uniq}_s.sched.r", "target": f"{uniq}_s.out.r",
                                                            "at": at.isoformat(), "payload": "later"})
        assert not scheduled.is_error and scheduled.structured_content is not None, scheduled.content
        assert scheduled.structured_content["stream"] == f"{uniq}_S" and scheduled.structured_content["seq"] == 1
        assert scheduled.structured_content["at"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
        held = await client.call_tool("stream_get", {"stream": f"{uniq}_S", "seq": 1})
        assert held.structured_content is not None
        assert held.structured_content["message"]["headers"]["Nats-Schedule-Target"] == [f"{uniq}_s.out.r"]
        refused = await client.call_tool("schedule_add", {"subject": f"{uniq}.sched.r", "target": f"{uniq}.out.r",
                                                          "at": at.isoformat()})
        assert refused.is_error and "message_schedules_disabled" in getattr(refused.content[0], "text", "")


def test_stream_search_cli(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>").exit_code == 0
    for i, paid in enumerate([True, 1, True, False]):
        sent = cli("pub", f"{uniq}.orders.{i % 2}", json.dumps({"order": {"id": i, "paid": paid}}),
                   "--headers", f"Tenant:t{i % 2}")
        assert sent.exit_code == 0, sent.output
    found = cli("--json", "stream", "search", uniq, "--json-field", "order.paid", "--json-value", "true")
    assert found.exit_code == 0, found.output
    assert [json.loads(m["payload"]["data"])["order"]["id"] for m in cli_json(found)["matches"]] == [0, 2]
    narrowed = cli("--json", "stream", "search", uniq, "--subject", f"{uniq}.orders.1", "--header", "Tenant",
                   "--header-value", "t1", "--contains", "false", "--limit", "1")
    assert narrowed.exit_code == 0, narrowed.output
    result = cli_json(narrowed)
    assert [m["seq"] for m in result["matches"]] == [4] and result["scanned"] == 2
    table = cli("stream", "search", uniq, "--contains", '"id": 1', "--max-scan", "2")
    assert table.exit_code == 0 and f"{uniq}.orders.1" in table.output


def test_messaging_cli(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>", "--allow-msg-counter", "--allow-direct").exit_code == 0
    added = cli("--json", "counter", "add", f"{uniq}.c", "4")
    assert added.exit_code == 0, added.output
    assert cli_json(added)["value"] == 4
    got = cli("counter", "get", uniq, f"{uniq}.c")
    assert got.exit_code == 0 and "4" in got.output
    ev = cli("--json", "event", "pub", f"{uniq}.e", "t.x", "--data", '{"k": 1}')
    # A counter stream refuses ordinary messages; the CLI says so and exits non-zero.
    assert ev.exit_code == 1
    assert cli("sub", f"{uniq}.none", "--timeout-s", "0.2").exit_code == 0
