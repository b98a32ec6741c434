"""Reading a stream's messages (view, get, subjects) and deleting one, through the three faces."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import nats
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError, NotFound, UserError
from tests.conftest import CliFn, cli_json, mcp_client
from tests.harness import unanswered


async def _fill(toolkit: Toolkit, stream: str, n: int, *, subjects: tuple[str, ...] = ("a", "b", "c"),
                allow_direct: bool = True, **config: Any) -> None:
    """A stream `stream` on `stream.>` holding n messages `m<i>` spread round-robin over `subjects`."""
    await toolkit.call("stream_add", stream=stream, subjects=[f"{stream}.>"], allow_direct=allow_direct, **config)
    js = (await toolkit.context.nc()).jetstream()
    for i in range(n):
        await js.publish(f"{stream}.{subjects[i % len(subjects)]}", f"m{i + 1}".encode())


async def _delete(toolkit: Toolkit, stream: str, *seqs: int) -> None:
    for seq in seqs:
        done = await toolkit.call("stream_msg_delete", stream=stream, seq=seq, confirm=f"{stream}:{seq}")
        assert done.done is True  # type: ignore[attr-defined]


async def _page_all(toolkit: Toolkit, stream: str, limit: int, **kwargs: Any) -> tuple[list[int], set[str]]:
    """Follow the cursor from the start to the end; every message's sequence in order, and the methods used."""
    seqs: list[int] = []
    methods: set[str] = set()
    for _ in range(1000):
        page: Any = await toolkit.call("stream_view", stream=stream, limit=limit, **kwargs)
        methods.add(page.method)
        assert len(page.messages) <= limit
        seqs.extend(m.seq for m in page.messages)
        if not page.truncated:
            return seqs, methods
        assert page.messages, "a truncated page must make progress"
        assert page.next_seq == page.messages[-1].seq + 1
        kwargs["start_seq"] = page.next_seq
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "msg_get"])
async def test_view_pages_reach_the_end_once_per_message_across_gaps(toolkit: Toolkit, uniq: str,
                                                                     allow_direct: bool) -> None:
    await _fill(toolkit, uniq, 40, allow_direct=allow_direct)
    deleted = (1, 2, 7, 8, 9, 20, 33, 40)
    await _delete(toolkit, uniq, *deleted)
    expected = [s for s in range(1, 41) if s not in deleted]
    method = "direct_get" if allow_direct else "msg_get"
    for limit in (1, 6, 32, 500):
        seqs, methods = await _page_all(toolkit, uniq, limit)
        assert seqs == expected, limit
        assert methods == {method}
    # A subject filter pages over that subject only (seq 2, 5, 8, ... are on .b).
    on_b = [s for s in range(2, 41, 3) if s not in deleted]
    seqs, _ = await _page_all(toolkit, uniq, 4, subject=f"{uniq}.b")
    assert seqs == on_b
    seqs, _ = await _page_all(toolkit, uniq, 3, subject=f"{uniq}.*", start_seq=30)
    assert seqs == [s for s in expected if s >= 30]


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "msg_get"])
async def test_view_and_get_keep_every_value_of_a_repeated_header(toolkit: Toolkit, uniq: str,
                                                                  allow_direct: bool) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=allow_direct)
    sent = {"Tag": ["blue", "green", "red"], "One": ["only"]}
    await toolkit.call("publish", subject=f"{uniq}.h", payload="x", headers=sent)
    page: Any = await toolkit.call("stream_view", stream=uniq)
    assert page.messages[0].headers == sent
    got: Any = await toolkit.call("stream_get", stream=uniq, seq=1)
    assert got.message.headers == sent


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "msg_get"])
async def test_view_page_fields(toolkit: Toolkit, uniq: str, allow_direct: bool) -> None:
    await _fill(toolkit, uniq, 10, allow_direct=allow_direct)
    page: Any = await toolkit.call("stream_view", stream=uniq, limit=4)
    assert [m.seq for m in page.messages] == [1, 2, 3, 4]
    assert (page.first_seq, page.last_seq, page.next_seq, page.truncated) == (1, 10, 5, True)
    first = page.messages[0]
    assert first.subject == f"{uniq}.a" and first.payload.data == "m1" and first.payload.size == 2
    assert first.time and first.time.endswith("Z")
    assert first.headers is None  # the server's Direct Get headers are not the message's
    assert page.num_pending == (6 if allow_direct else None)
    tail: Any = await toolkit.call("stream_view", stream=uniq, start_seq=9, limit=4)
    assert [m.seq for m in tail.messages] == [9, 10]
    assert (tail.truncated, tail.next_seq) == (False, 11)
    beyond: Any = await toolkit.call("stream_view", stream=uniq, start_seq=50)
    assert (beyond.messages, beyond.truncated, beyond.next_seq) == ([], False, 50)


async def test_view_payloads_are_cut_and_binary_is_base64(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    nc = await toolkit.context.nc()
    js = nc.jetstream()
    await js.publish(f"{uniq}.text", b"x" * 3000, headers={"Trace": "t-1"})
    await js.publish(f"{uniq}.bin", b"\xff\x00\xfe")
    page: Any = await toolkit.call("stream_view", stream=uniq, max_payload_bytes=100)
    text, binary = page.messages
    assert (text.payload.size, text.payload.truncated, len(text.payload.data)) == (3000, True, 100)
    assert text.headers == {"Trace": ["t-1"]}
    assert binary.payload.encoding == "base64"
    assert base64.b64decode(binary.payload.data) == b"\xff\x00\xfe"
    bare: Any = await toolkit.call("stream_view", stream=uniq, max_payload_bytes=0)
    assert bare.messages[0].payload.data == "" and bare.messages[0].payload.size == 3000


async def test_a_cut_payload_reads_as_the_whole_one_does(toolkit: Toolkit, uniq: str) -> None:
    """Text or base64 is decided on the whole body: the first bytes of a binary body can be valid UTF-8."""
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    js = (await toolkit.context.nc()).jetstream()
    await js.publish(f"{uniq}.bin", bytes(range(256)))  # UTF-8 for its first 128 bytes, then not
    await js.publish(f"{uniq}.text", "é".encode() * 10)  # two bytes a character
    for max_bytes in (10, 1000):
        page: Any = await toolkit.call("stream_view", stream=uniq, max_payload_bytes=max_bytes)
        binary, text = page.messages
        assert binary.payload.encoding == "base64"
        assert base64.b64decode(binary.payload.data) == bytes(range(256))[:max_bytes]
        assert text.payload.encoding == "utf-8"
    whole: Any = await toolkit.call("stream_get", stream=uniq, seq=1)
    assert whole.message.payload.encoding == "base64"
    # A cut never splits a character: 11 bytes show 5 characters.
    cut: Any = await toolkit.call("stream_view", stream=uniq, start_seq=2, max_payload_bytes=11)
    assert (cut.messages[0].payload.data, cut.messages[0].payload.truncated) == ("é" * 5, True)


@pytest.mark.parametrize("allow_direct", [True, False], ids=["direct_get", "msg_get"])
async def test_view_from_a_time(toolkit: Toolkit, uniq: str, allow_direct: bool) -> None:
    await _fill(toolkit, uniq, 6, allow_direct=allow_direct)
    fourth: Any = await toolkit.call("stream_get", stream=uniq, seq=4)
    page: Any = await toolkit.call("stream_view", stream=uniq, start_time=fourth.message.time)
    assert [m.seq for m in page.messages] == [4, 5, 6]
    recent: Any = await toolkit.call("stream_view", stream=uniq, since_s=3600, limit=2)
    assert [m.seq for m in recent.messages] == [1, 2] and recent.truncated
    future: Any = await toolkit.call("stream_view", stream=uniq, start_time="2999-01-01T00:00:00Z")
    assert future.messages == [] and future.truncated is False
    with pytest.raises(UserError) as both:
        await toolkit.call("stream_view", stream=uniq, start_seq=2, since_s=10)
    assert both.value.code == "invalid_argument"
    with pytest.raises(UserError) as bad:
        await toolkit.call("stream_view", stream=uniq, start_time="yesterday")
    assert bad.value.code == "invalid_time"


async def test_view_empty_stream_and_errors(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    empty: Any = await toolkit.call("stream_view", stream=uniq)
    assert (empty.messages, empty.truncated, empty.next_seq, empty.last_seq) == ([], False, 1, 0)
    with pytest.raises(NotFound) as missing:
        await toolkit.call("stream_view", stream=f"{uniq}_missing")
    assert missing.value.code == "stream_not_found"
    for bad in ({"stream": "a.b"}, {"stream": uniq, "limit": 501}, {"stream": uniq, "limit": 0},
                {"stream": uniq, "subject": "a..b"}, {"stream": uniq, "max_payload_bytes": 2 * 1024 * 1024}):
        with pytest.raises(UserError):
            await toolkit.call("stream_view", **bad)


async def test_view_stops_a_page_at_its_byte_budget(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], allow_direct=True)
    js = (await toolkit.context.nc()).jetstream()
    big = b"z" * (900 * 1024)
    for _ in range(12):
        await js.publish(f"{uniq}.big", big)
    page: Any = await toolkit.call("stream_view", stream=uniq, limit=100, max_payload_bytes=10)
    assert 1 <= len(page.messages) < 12 and page.truncated
    seqs, _ = await _page_all(toolkit, uniq, 100, max_payload_bytes=10)
    assert seqs == list(range(1, 13))


async def test_get_by_sequence_and_last_on_subject(toolkit: Toolkit, uniq: str) -> None:
    await _fill(toolkit, uniq, 7, allow_direct=False)
    got: Any = await toolkit.call("stream_get", stream=uniq, seq=3)
    assert (got.message.seq, got.message.subject, got.message.payload.data) == (3, f"{uniq}.c", "m3")
    last: Any = await toolkit.call("stream_get", stream=uniq, last_by_subj=f"{uniq}.a")
    assert last.message.seq == 7
    # Read-after-write: a message published just now is there at once.
    js = (await toolkit.context.nc()).jetstream()
    ack = await js.publish(f"{uniq}.a", b"fresh", headers={"K": "v"})
    fresh: Any = await toolkit.call("stream_get", stream=uniq, last_by_subj=f"{uniq}.a")
    assert fresh.message.seq == ack.seq and fresh.message.payload.data == "fresh"
    assert fresh.message.headers == {"K": ["v"]}


async def test_get_not_found_names_the_sequence_and_range(toolkit: Toolkit, uniq: str) -> None:
    await _fill(toolkit, uniq, 5)
    await _delete(toolkit, uniq, 2)
    with pytest.raises(NotFound) as deleted:
        await toolkit.call("stream_get", stream=uniq, seq=2)
    assert deleted.value.code == "message_not_found"
    assert "2" in deleted.value.message and "deleted" in deleted.value.message
    assert "1..5" in deleted.value.message
    with pytest.raises(NotFound) as beyond:
        await toolkit.call("stream_get", stream=uniq, seq=99)
    assert "99" in beyond.value.message and "outside" in beyond.value.message and "1..5" in beyond.value.message
    with pytest.raises(NotFound) as no_subject:
        await toolkit.call("stream_get", stream=uniq, last_by_subj=f"{uniq}.zzz")
    assert f"{uniq}.zzz" in no_subject.value.message
    with pytest.raises(NotFound) as no_stream:
        await toolkit.call("stream_get", stream=f"{uniq}_missing", seq=1)
    assert no_stream.value.code == "stream_not_found"
    for bad in ({"stream": uniq}, {"stream": uniq, "seq": 1, "last_by_subj": "x"}, {"stream": uniq, "seq": 0}):
        with pytest.raises(UserError):
            await toolkit.call("stream_get", **bad)


async def test_subjects_counts_sorted_and_paged(toolkit: Toolkit, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    js = (await toolkit.context.nc()).jetstream()
    counts = {"a": 5, "b": 1, "c": 3, "d.x": 2, "d.y": 4}
    for suffix, n in counts.items():
        for _ in range(n):
            await js.publish(f"{uniq}.{suffix}", b"")
    res: Any = await toolkit.call("stream_subjects", stream=uniq)
    assert [(s.subject, s.messages) for s in res.subjects] == [
        (f"{uniq}.a", 5), (f"{uniq}.d.y", 4), (f"{uniq}.c", 3), (f"{uniq}.d.x", 2), (f"{uniq}.b", 1)]
    assert (res.total, res.truncated, res.complete) == (5, False, True)
    by_name: Any = await toolkit.call("stream_subjects", stream=uniq, sort="name", reverse=True, limit=2)
    assert [s.subject for s in by_name.subjects] == [f"{uniq}.d.y", f"{uniq}.d.x"]
    assert (by_name.truncated, by_name.next_offset) == (True, 2)
    rest: Any = await toolkit.call("stream_subjects", stream=uniq, sort="name", reverse=True, offset=2, limit=2)
    assert [s.subject for s in rest.subjects] == [f"{uniq}.c", f"{uniq}.b"]
    filtered: Any = await toolkit.call("stream_subjects", stream=uniq, filter=f"{uniq}.d.*")
    assert {s.subject for s in filtered.subjects} == {f"{uniq}.d.x", f"{uniq}.d.y"} and filtered.total == 2
    none: Any = await toolkit.call("stream_subjects", stream=uniq, filter="nothing.here")
    assert (none.subjects, none.total) == ([], 0)
    with pytest.raises(NotFound):
        await toolkit.call("stream_subjects", stream=f"{uniq}_missing")


async def test_msg_delete_confirmation_flow(toolkit: Toolkit, uniq: str) -> None:
    await _fill(toolkit, uniq, 4)
    dry: Any = await toolkit.call("stream_msg_delete", stream=uniq, seq=3)
    assert (dry.done, dry.confirmation_required, dry.confirm_with) == (False, True, f"{uniq}:3")
    assert (dry.subject, dry.size) == (f"{uniq}.c", 2)
    assert f"{uniq}.c" in dry.action and "3" in dry.action
    with pytest.raises(UserError) as wrong:
        await toolkit.call("stream_msg_delete", stream=uniq, seq=3, confirm=uniq)
    assert wrong.value.code == "confirmation_mismatch"
    still: Any = await toolkit.call("stream_get", stream=uniq, seq=3)
    assert still.message.seq == 3
    done: Any = await toolkit.call("stream_msg_delete", stream=uniq, seq=3, confirm=f"{uniq}:3")
    assert done.done is True and done.confirmation_required is False
    with pytest.raises(NotFound):
        await toolkit.call("stream_get", stream=uniq, seq=3)
    erased: Any = await toolkit.call("stream_msg_delete", stream=uniq, seq=4, erase=True, confirm=f"{uniq}:4")
    assert erased.done and erased.erase and "erase" in erased.action
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 2
    with pytest.raises(NotFound) as again:
        await toolkit.call("stream_msg_delete", stream=uniq, seq=3)
    assert "deleted" in again.value.message


async def test_msg_delete_refused_by_deny_delete(toolkit: Toolkit, uniq: str) -> None:
    await _fill(toolkit, uniq, 2, deny_delete=True)
    with pytest.raises(Conflict) as dry:
        await toolkit.call("stream_msg_delete", stream=uniq, seq=1)
    assert dry.value.code == "stream_delete_denied" and "deny_delete" in dry.value.message
    # Confirmed straight away, the server itself refuses; the error is the same.
    with pytest.raises(Conflict) as confirmed:
        await toolkit.call("stream_msg_delete", stream=uniq, seq=1, confirm=f"{uniq}:1")
    assert confirmed.value.code == "stream_delete_denied"
    kept: Any = await toolkit.call("stream_get", stream=uniq, seq=1)
    assert kept.message.seq == 1


async def test_mcp_reading_and_deleting(server_env: dict[str, str], toolkit: Toolkit, uniq: str) -> None:
    await _fill(toolkit, uniq, 6)
    async with mcp_client(server_env) as c:
        page = await c.call_tool("stream_view", {"stream": uniq, "limit": 4})
        assert not page.is_error and page.structured_content is not None
        assert [m["seq"] for m in page.structured_content["messages"]] == [1, 2, 3, 4]
        assert page.structured_content["truncated"] is True
        nxt = await c.call_tool("stream_view", {"stream": uniq, "start_seq": page.structured_content["next_seq"]})
        assert nxt.structured_content is not None
        assert [m["seq"] for m in nxt.structured_content["messages"]] == [5, 6]
        got = await c.call_tool("stream_get", {"stream": uniq, "seq": 2})
        assert got.structured_content is not None and got.structured_content["message"]["payload"]["data"] == "m2"
        subjects = await c.call_tool("stream_subjects", {"stream": uniq})
        assert subjects.structured_content is not None and subjects.structured_content["total"] == 3
        dry = await c.call_tool("stream_msg_delete", {"stream": uniq, "seq": 2})
        assert dry.structured_content is not None and dry.structured_content["confirm_with"] == f"{uniq}:2"
        wrong = await c.call_tool("stream_msg_delete", {"stream": uniq, "seq": 2, "confirm": "yes"})
        assert wrong.is_error
        done = await c.call_tool("stream_msg_delete", {"stream": uniq, "seq": 2, "confirm": f"{uniq}:2"})
        assert done.structured_content is not None and done.structured_content["done"] is True
        gone = await c.call_tool("stream_get", {"stream": uniq, "seq": 2})
        assert gone.is_error and "message_not_found" in getattr(gone.content[0], "text", "")
        missing = await c.call_tool("stream_view", {"stream": f"{uniq}_missing"})
        assert missing.is_error and "stream_not_found" in getattr(missing.content[0], "text", "")
        bad = await c.call_tool("stream_view", {"stream": "bad name"})
        assert bad.is_error and "invalid_name" in getattr(bad.content[0], "text", "")
        too_many = await c.call_tool("stream_view", {"stream": uniq, "limit": 10_000})
        assert too_many.is_error


def _publish_sync(server: EmbeddedServer, *messages: tuple[str, bytes]) -> None:
    async def run() -> None:
        nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
        try:
            js = nc.jetstream()
            for subject, data in messages:
                await js.publish(subject, data)
        finally:
            await nc.close()

    asyncio.run(run())


def test_cli_reading_and_deleting(cli: CliFn, server: EmbeddedServer, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>").exit_code == 0
    _publish_sync(server, *((f"{uniq}.s{i % 2}", f"hello {i}".encode()) for i in range(5)))
    table = cli("stream", "view", uniq, "--limit", "3")
    assert table.exit_code == 0, table.output
    assert f"{uniq}.s0" in table.output and f"{uniq}.s1" in table.output
    page = cli_json(cli("--json", "stream", "view", uniq, "--limit", "3", "--subject", f"{uniq}.s0"))
    assert [m["seq"] for m in page["messages"]] == [1, 3, 5]
    got = cli_json(cli("--json", "stream", "get", uniq, "4"))
    assert got["message"]["payload"]["data"] == "hello 3"
    last = cli_json(cli("--json", "stream", "get", uniq, "--last-by-subj", f"{uniq}.s1"))
    assert last["message"]["seq"] == 4
    missing = cli("stream", "get", uniq, "42")
    assert missing.exit_code == 1 and "message_not_found" in missing.output and "1..5" in missing.output
    subjects = cli_json(cli("--json", "stream", "subjects", uniq))
    assert [(s["subject"], s["messages"]) for s in subjects["subjects"]] == [(f"{uniq}.s0", 3), (f"{uniq}.s1", 2)]
    refused = cli("stream", "rmm", uniq, "1")
    assert refused.exit_code == 1 and "--force" in refused.output
    assert cli("stream", "get", uniq, "1").exit_code == 0
    forced = cli("--json", "stream", "msg-delete", uniq, "1", "--force")
    assert forced.exit_code == 0, forced.output
    assert cli_json(forced)["done"] is True
    assert cli("stream", "get", uniq, "1").exit_code == 1
    assert cli("stream", "view", "no such").exit_code == 1
    assert cli("stream", "view", f"{uniq}_missing").exit_code == 1


@pytest.mark.parametrize("tool", ["stream_view", "kv_get", "kv_history"])
async def test_a_direct_get_nobody_answers_yet_is_sent_again(toolkit: Toolkit, uniq: str, tool: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    nc = await toolkit.context.nc()
    if tool == "stream_view":
        await toolkit.call("stream_add", stream=uniq, allow_direct=True)
        await toolkit.call("publish", subject=uniq, payload="hello")
        call: dict[str, Any] = {"stream": uniq}
    else:
        await toolkit.call("kv_add", bucket=uniq)
        await toolkit.call("kv_put", bucket=uniq, key="k", value="hello")
        call = {"bucket": uniq, "key": "k"}

    def seen(result: Any) -> list[str]:
        if tool == "stream_view":
            return [m.payload.data for m in result.messages]
        if tool == "kv_get":
            return [result.value.data]
        return [e.value.data for e in result.entries]

    sent = unanswered(nc, monkeypatch, ".DIRECT.GET.", range(1, 3))
    assert seen(await toolkit.call(tool, **call)) == ["hello"]
    assert len(sent) == 3, sent  # two unanswered, then the one that was served
    monkeypatch.undo()
    unanswered(nc, monkeypatch, ".DIRECT.GET.", range(1, 11))
    with pytest.raises(NatsopError) as failed:
        await toolkit.call(tool, **call)
    assert failed.value.code == "no_responders"
