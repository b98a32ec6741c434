"""Publishing: core and JetStream, headers, deduplication, expected-sequence checks, limits; three faces."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from natsop import Toolkit
from natsop.errors import Conflict, Unsupported, UserError
from tests.conftest import CliFn, cli_json, mcp_client


async def _stream(toolkit: Toolkit, name: str, **config: Any) -> None:
    await toolkit.call("stream_add", stream=name, subjects=[f"{name}.>"], **config)


async def test_core_publish_reaches_a_subscriber_with_headers_and_reply(toolkit: Toolkit, uniq: str) -> None:
    nc = await toolkit.context.nc()
    sub = await nc.subscribe(f"{uniq}.core")
    try:
        res: Any = await toolkit.call("publish", subject=f"{uniq}.core", payload="hi", reply=f"{uniq}.back",
                                      headers={"Trace": ["a"]})
        assert (res.acked, res.stream, res.seq, res.size, res.count) == (False, None, None, 2, 1)
        msg = await sub.next_msg(timeout=2)
        assert (msg.data, msg.reply, msg.headers) == (b"hi", f"{uniq}.back", {"Trace": "a"})
    finally:
        await sub.unsubscribe()


async def test_jetstream_publish_is_acknowledged_and_stored(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    res: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="one",
                                  headers={"Multi": ["1", "2"], "Single": ["s"]})
    assert (res.acked, res.stream, res.seq, res.duplicate) == (True, uniq, 1, False)
    got: Any = await toolkit.call("stream_get", stream=uniq, seq=1)
    assert got.message.payload.data == "one"
    assert got.message.headers == {"Multi": ["1", "2"], "Single": ["s"]}
    # Binary payloads travel as base64 both ways.
    raw = bytes(range(256))
    binary: Any = await toolkit.call("publish", subject=f"{uniq}.bin", payload=base64.b64encode(raw).decode(),
                                     payload_encoding="base64")
    assert binary.size == 256
    stored: Any = await toolkit.call("stream_get", stream=uniq, seq=binary.seq)
    assert base64.b64decode(stored.message.payload.data) == raw
    repeated: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="again", count=5)
    assert (repeated.count, repeated.seq) == (5, 7)


async def test_jetstream_choice(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    no_wait: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="x", jetstream=False)
    assert (no_wait.acked, no_wait.seq) == (False, None)
    with pytest.raises(UserError) as nothing:
        await toolkit.call("publish", subject=f"{uniq}_nostream.x", payload="x", jetstream=True)
    assert nothing.value.code == "no_stream_for_subject"
    with pytest.raises(UserError):
        await toolkit.call("publish", subject=f"{uniq}.x", reply=f"{uniq}_r", jetstream=True)


async def test_msg_id_deduplicates(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    first: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="a", msg_id="order-1")
    second: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="a", msg_id="order-1")
    assert (first.duplicate, second.duplicate, second.seq) == (False, True, first.seq)
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 1


async def test_expected_last_sequence(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    await toolkit.call("publish", subject=f"{uniq}.a", payload="1", expected_last_seq=0)
    await toolkit.call("publish", subject=f"{uniq}.b", payload="2", expected_last_seq=1)
    with pytest.raises(Conflict) as stale:
        await toolkit.call("publish", subject=f"{uniq}.a", payload="3", expected_last_seq=1)
    err = stale.value
    assert err.code == "wrong_last_sequence"
    assert "expected" in err.message and "1" in err.message and "is 2" in err.message
    assert "stream_state" in err.hint
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 2  # nothing was stored


async def test_expected_last_subject_sequence(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    first: Any = await toolkit.call("publish", subject=f"{uniq}.k", payload="v1", expected_last_subject_seq=0)
    await toolkit.call("publish", subject=f"{uniq}.other", payload="x")
    second: Any = await toolkit.call("publish", subject=f"{uniq}.k", payload="v2",
                                     expected_last_subject_seq=first.seq)
    assert second.seq == 3
    with pytest.raises(Conflict) as stale:
        await toolkit.call("publish", subject=f"{uniq}.k", payload="v3", expected_last_subject_seq=first.seq)
    assert stale.value.code == "wrong_last_sequence"
    assert f"on {uniq}.k" in stale.value.message and "is 3" in stale.value.message
    assert "last_by_subj" in stale.value.hint


async def test_expected_stream_and_last_msg_id(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    ok: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="a", expected_stream=uniq, msg_id="m1")
    assert ok.acked
    with pytest.raises(Conflict) as other:
        await toolkit.call("publish", subject=f"{uniq}.x", payload="b", expected_stream="ELSEWHERE")
    assert other.value.code == "wrong_expected_stream" and "ELSEWHERE" in other.value.message
    await toolkit.call("publish", subject=f"{uniq}.x", payload="c", expected_last_msg_id="m1", msg_id="m2")
    with pytest.raises(Conflict) as stale:
        await toolkit.call("publish", subject=f"{uniq}.x", payload="d", expected_last_msg_id="m1")
    assert stale.value.code == "wrong_last_msg_id" and "m2" in stale.value.message


async def test_ttl(toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq, allow_msg_ttl=True)
    res: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="x", ttl="60s")
    got: Any = await toolkit.call("stream_get", stream=uniq, seq=res.seq)
    assert got.message.headers == {"Nats-TTL": ["60s"]}
    await toolkit.call("publish", subject=f"{uniq}.x", payload="x", ttl="never")
    with pytest.raises(UserError) as short:
        await toolkit.call("publish", subject=f"{uniq}.x", payload="x", ttl="500ms")
    assert short.value.code == "invalid_message_ttl"
    with pytest.raises(UserError) as bad:
        await toolkit.call("publish", subject=f"{uniq}.x", payload="x", ttl="soon")
    assert bad.value.code == "invalid_ttl"
    plain = f"{uniq}_plain"
    await _stream(toolkit, plain)
    with pytest.raises(Unsupported) as disabled:
        await toolkit.call("publish", subject=f"{plain}.x", payload="x", ttl="60s")
    assert disabled.value.code == "message_ttl_disabled"


async def test_ttl_refused_on_a_server_older_than_2_11(toolkit: Toolkit, uniq: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An older server ignores Nats-TTL and would keep the message for good: refuse instead."""
    await _stream(toolkit, uniq, allow_msg_ttl=True)
    nc = await toolkit.context.nc()
    monkeypatch.setitem(nc._server_info, "version", "2.10.22")  # the bundled server is newer
    with pytest.raises(Unsupported) as old:
        await toolkit.call("publish", subject=f"{uniq}.x", payload="x", ttl="60s")
    assert old.value.code == "server_too_old"
    assert "Nats-TTL" in old.value.message and "2.11" in old.value.message and "2.10.22" in old.value.message
    assert (await toolkit.call("stream_state", stream=uniq)).state.messages == 0  # type: ignore[attr-defined]
    plain: Any = await toolkit.call("publish", subject=f"{uniq}.x", payload="x")
    assert plain.acked is True


async def test_payload_larger_than_max_payload_is_refused_before_sending(toolkit: Toolkit, uniq: str) -> None:
    nc = await toolkit.context.nc()
    limit = nc.max_payload
    sub = await nc.subscribe(f"{uniq}.big")
    try:
        with pytest.raises(UserError) as big:
            await toolkit.call("publish", subject=f"{uniq}.big", payload="x" * (limit + 1))
        assert big.value.code == "payload_too_large" and f"{limit:,}" in big.value.message
        # Headers count too: a payload of exactly max_payload with a header does not fit.
        with pytest.raises(UserError):
            await toolkit.call("publish", subject=f"{uniq}.big", payload="x" * limit, headers={"H": ["v"]})
        fits: Any = await toolkit.call("publish", subject=f"{uniq}.big", payload="x" * limit)
        assert fits.size == limit
        assert len((await sub.next_msg(timeout=2)).data) == limit
    finally:
        await sub.unsubscribe()


@pytest.mark.parametrize(("args", "code"), [
    ({"subject": "a.*"}, "invalid_subject"),
    ({"subject": "a.>"}, "invalid_subject"),
    ({"subject": "a..b"}, "invalid_subject"),
    ({"subject": "ok", "reply": "r.*"}, "invalid_subject"),
    ({"subject": "ok", "payload": "!!", "payload_encoding": "base64"}, "invalid_base64"),
    ({"subject": "ok", "headers": {"Bad Name": ["v"]}}, "invalid_header"),
    ({"subject": "ok", "headers": {"H": ["a\r\nInjected: 1"]}}, "invalid_header"),
    ({"subject": "ok", "headers": {"H": []}}, "invalid_header"),
    ({"subject": "ok", "headers": {"Nats-Msg-Id": ["x"]}}, "invalid_header"),
    ({"subject": "ok", "count": 2, "msg_id": "x"}, "invalid_argument"),
    ({"subject": "ok", "count": 0}, "invalid_arguments"),
    ({"subject": "ok", "count": 10_001}, "invalid_arguments"),
    ({"subject": "ok", "expected_last_seq": -1}, "invalid_arguments"),
    ({"subject": "ok", "expected_stream": "a.b"}, "invalid_name"),
])
async def test_bad_input_is_refused_before_sending(toolkit: Toolkit, args: dict[str, Any], code: str) -> None:
    with pytest.raises(UserError) as err:
        await toolkit.call("publish", **args)
    assert err.value.code == code


async def test_mcp_publish(server_env: dict[str, str], toolkit: Toolkit, uniq: str) -> None:
    await _stream(toolkit, uniq)
    async with mcp_client(server_env) as c:
        ok = await c.call_tool("publish", {"subject": f"{uniq}.x", "payload": "hello", "headers": {"A": ["1"]}})
        assert not ok.is_error, ok.content
        assert ok.structured_content is not None
        assert ok.structured_content["acked"] is True and ok.structured_content["seq"] == 1
        cas = await c.call_tool("publish", {"subject": f"{uniq}.x", "payload": "x", "expected_last_seq": 7})
        assert cas.is_error
        text = getattr(cas.content[0], "text", "")
        assert "wrong_last_sequence" in text and "stream_state" in text
        big = await c.call_tool("publish", {"subject": f"{uniq}.x", "payload": "x" * (2 * 1024 * 1024)})
        assert big.is_error and "payload_too_large" in getattr(big.content[0], "text", "")
        wild = await c.call_tool("publish", {"subject": f"{uniq}.*"})
        assert wild.is_error and "invalid_subject" in getattr(wild.content[0], "text", "")
    state: Any = await toolkit.call("stream_state", stream=uniq)
    assert state.state.messages == 1


def test_cli_publish(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>").exit_code == 0
    table = cli("pub", f"{uniq}.x", "hello")
    assert table.exit_code == 0, table.output
    assert uniq in table.output
    res = cli("--json", "pub", f"{uniq}.x", "again", "--headers", "A:1", "--headers", "B:2", "--msg-id", "m-1")
    assert res.exit_code == 0, res.output
    data = cli_json(res)
    assert (data["acked"], data["seq"], data["stream"]) == (True, 2, uniq)
    got = cli_json(cli("--json", "stream", "get", uniq, "2"))
    assert got["message"]["headers"] == {"A": ["1"], "B": ["2"], "Nats-Msg-Id": ["m-1"]}
    stale = cli("--json", "pub", f"{uniq}.x", "late", "--expected-last-seq", "1")
    assert stale.exit_code == 1
    assert cli_json(stale)["error"]["code"] == "wrong_last_sequence"
    core = cli_json(cli("--json", "pub", f"{uniq}_none.x", "fire", "--count", "3"))
    assert (core["acked"], core["count"]) == (False, 3)
    wild = cli("pub", "a.*", "x")
    assert wild.exit_code == 1 and "invalid_subject" in wild.output


async def test_publish_bounds_the_total_bytes_of_one_call(toolkit: Toolkit, uniq: str) -> None:
    with pytest.raises(UserError) as err:
        await toolkit.call("publish", subject=f"{uniq}.bulk", payload="x" * 100_000, count=1000)
    assert err.value.code == "publish_too_large"


async def test_stream_publish_waits_out_a_moment_without_responders(toolkit: Toolkit, uniq: str) -> None:
    """Right after a stream is created or moves, its subject can lack interest on this server for a moment.

    The publish helper sends again (nobody got the first one), as nats.go does; a subject
    that stays without responders still fails, after the retries rather than the timeout.
    """
    import asyncio

    import nats.errors

    from natsop.wire.jsapi import NO_RESPONDERS_RETRIES, NO_RESPONDERS_WAIT_S, stream_request

    nc = await toolkit.context.nc()
    loop = asyncio.get_running_loop()

    async def respond(msg: Any) -> None:
        await msg.respond(b'{"seq":1}')

    async def answer_later() -> Any:
        await asyncio.sleep(NO_RESPONDERS_WAIT_S * 0.6)
        return await nc.subscribe(f"{uniq}.late", cb=respond)

    late = asyncio.create_task(answer_later())
    reply = await stream_request(nc, f"{uniq}.late", b"x", timeout=5)
    assert reply.data == b'{"seq":1}'
    await (await late).unsubscribe()

    started = loop.time()
    with pytest.raises(nats.errors.NoRespondersError):
        await stream_request(nc, f"{uniq}.never", b"x", timeout=5)
    assert loop.time() - started < NO_RESPONDERS_WAIT_S * (NO_RESPONDERS_RETRIES + 2)
