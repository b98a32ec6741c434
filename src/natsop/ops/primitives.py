"""JetStream's server-native primitives from 2.12: atomic batches, counters, schedules.

Each uses the server's own mechanism (ADR-50, ADR-49, ADR-51) rather than a client-side
imitation, checks the server's version first, and names the stream setting to enable
when a stream does not allow it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import NatsopError, NotFound, Unsupported, UserError, from_api_error, from_nats
from natsop.logic.validate import MAX_SEQ, PublishSubject, StreamName, SubjectFilter
from natsop.models import decode_input
from natsop.ops._common import require_server
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import stream_request

__all__ = ["stream_publish"]

MAX_BATCH = 1000  # the server's default limit of messages in one atomic batch


class BatchMessage(BaseModel):
    """One message of a batch."""

    model_config = ConfigDict(extra="forbid")

    subject: PublishSubject
    payload: str = Field(default="", description="Text, or base64 with payload_encoding")
    payload_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `payload` is written")
    headers: dict[str, str] | None = Field(default=None, max_length=64)


class PublishBatchParams(Params):
    messages: list[BatchMessage] = Field(min_length=1, max_length=MAX_BATCH,
                                         description=f"The messages, stored all together or not at all (max {MAX_BATCH})")
    expected_last_seq: int | None = Field(default=None, ge=0, le=MAX_SEQ,
                                          description="Store the batch only if the stream's last sequence is this")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the stream's answer")


class PublishBatchResult(Result):
    stream: str
    batch_id: str
    count: int = Field(description="Messages committed")
    first_seq: int
    last_seq: int


_STREAM_HINTS = {
    "atomic_publish_disabled": ("allow_atomic", "stream_update <stream> allow_atomic=true"),
    "message_counter_disabled": ("allow_msg_counter", "create the stream with allow_msg_counter=true"),
    "message_schedules_disabled": ("allow_msg_schedules", "stream_update <stream> allow_msg_schedules=true"),
}


def _ack(msg: Msg, context: str) -> dict[str, Any]:
    if msg.headers and msg.headers.get("Status") == "503":
        raise Unsupported(f"{context}: no stream answered", code="no_responders")
    try:
        data = json.loads(msg.data) if msg.data else {}
    except ValueError:
        raise NatsopError(f"{context}: the server's answer is not JSON") from None
    if isinstance(data, dict) and data.get("error"):
        err = from_api_error(data["error"], context=context)
        known = _STREAM_HINTS.get(err.code)
        if known:
            err.hint = f"Enable {known[0]} on the stream: {known[1]}."
        raise err
    return data if isinstance(data, dict) else {}


async def stream_publish(nc: Any, subject: str, body: bytes, *, headers: dict[str, str] | None, timeout: float,
                         context: str, no_stream_hint: str) -> dict[str, Any]:
    """Publish to a stream and return its acknowledgement; errors say what the stream needs."""
    try:
        reply = await stream_request(nc, subject, body, timeout=timeout, headers=headers)
    except Exception as exc:
        err = from_nats(exc, context=context)
        if err.code == "no_responders":
            err.message = f"no stream captures {subject}"
            err.hint = no_stream_hint
        raise err from None
    return _ack(reply, context)


@operation("publish_batch", cli="batch pub", impact=Impact.WRITE)
async def publish_batch(ctx: Context, params: PublishBatchParams) -> PublishBatchResult:
    """Publish several messages to one stream atomically: all are stored, or none (2.12+).

    The stream needs allow_atomic. Uses the server's batch headers (Nats-Batch-Id,
    Nats-Batch-Sequence, Nats-Batch-Commit); a failure anywhere stores nothing.
    """
    await require_server(ctx, params.account_name, (2, 12, 0), "atomic batch publish")
    nc = await ctx.nc(params.account_name)
    batch_id = uuid.uuid4().hex[:22]
    n = len(params.messages)
    bodies = [decode_input(m.payload, m.payload_encoding) for m in params.messages]
    for i, body in enumerate(bodies):
        if len(body) > nc.max_payload:
            raise UserError(f"message {i + 1} is {len(body)} bytes; max_payload is {nc.max_payload}",
                            code="payload_too_large")
    for m in params.messages:
        for name in m.headers or {}:
            if name.lower().startswith("nats-batch"):
                raise UserError(f"header {name} is set by natsop", code="invalid_header")
    ack: dict[str, Any] = {}
    context = "atomic batch"
    try:
        for i, (m, body) in enumerate(zip(params.messages, bodies, strict=True), start=1):
            headers = dict(m.headers or {})
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(i)
            if i == 1 and params.expected_last_seq is not None:
                headers["Nats-Expected-Last-Sequence"] = str(params.expected_last_seq)
            if i == n:
                headers["Nats-Batch-Commit"] = "1"
            if i == 1 or i == n:
                # The first message must be a request (the server answers errors at once); the commit
                # returns the acknowledgement for the whole batch.
                reply = await stream_request(nc, m.subject, body, timeout=params.timeout_s, headers=headers)
                ack = _ack(reply, context)
            else:
                await nc.publish(m.subject, body, headers=headers)
    except NatsopError:
        raise
    except Exception as exc:
        err = from_nats(exc, context=context)
        if err.code == "no_responders":
            err.message = f"no stream captures {params.messages[0].subject}"
            err.hint = "Publish batches to subjects of a stream with allow_atomic enabled."
        raise err from None
    last = int(ack.get("seq") or 0)
    count = int(ack.get("count") or n)
    return PublishBatchResult(stream=str(ack.get("stream")), batch_id=batch_id, count=count,
                              first_seq=last - count + 1, last_seq=last)


class CounterAddParams(Params):
    subject: PublishSubject = Field(description="The counter's subject (in a stream with allow_msg_counter)")
    increment: int = Field(description="Signed amount to add, e.g. 1 or -5 (0 reads the value back)")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the stream's answer")


class CounterValue(Result):
    subject: str
    value: int = Field(description="The counter's value after this change")
    stream: str | None = None
    seq: int | None = None


@operation("counter_add", cli="counter add", aliases=("incr",), impact=Impact.WRITE, args=("subject", "increment"))
async def counter_add(ctx: Context, params: CounterAddParams) -> CounterValue:
    """Add a signed integer to a distributed counter (2.12+, header Nats-Incr); returns the new value."""
    await require_server(ctx, params.account_name, (2, 12, 0), "distributed counters")
    nc = await ctx.nc(params.account_name)
    incr = f"{params.increment:+d}"
    ack = await stream_publish(
        nc, params.subject, b"", headers={"Nats-Incr": incr}, timeout=params.timeout_s,
        context=f"counter {params.subject}",
        no_stream_hint="Create a stream with allow_msg_counter=true (and allow_direct) for the counter subjects.")
    if "val" not in ack:
        raise Unsupported(f"the stream {ack.get('stream')} stored the message but is not a counter stream",
                          code="message_counter_disabled",
                          hint="Counters need a stream created with allow_msg_counter=true.")
    return CounterValue(subject=params.subject, value=int(ack["val"]), stream=ack.get("stream"), seq=ack.get("seq"))


class CounterGetParams(Params):
    stream: StreamName = Field(description="The counter stream")
    subject: SubjectFilter = Field(description="A counter's subject, or a wildcard to sum several")
    max_subjects: int = Field(default=1000, ge=1, le=1024, description="At most this many counters with a wildcard")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the stream's answer")


class CounterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str
    value: int


class CounterGetResult(Result):
    stream: str
    subject: str
    value: int = Field(description="The counter's value, or the sum over the matching counters")
    counters: list[CounterEntry]
    truncated: bool = Field(default=False, description="True when more counters matched than max_subjects")


def _counter_value(data: bytes, subject: str) -> int:
    try:
        return int(json.loads(data)["val"])
    except (ValueError, KeyError, TypeError):
        raise Unsupported(f"{subject} does not hold a counter value", code="not_a_counter",
                          hint="Read counters from a stream with allow_msg_counter.") from None


@operation("counter_get", cli="counter get", args=("stream", "subject"))
async def counter_get(ctx: Context, params: CounterGetParams) -> CounterGetResult:
    """Read a counter's value, or the sum of the counters matching a wildcard (2.12+)."""
    await require_server(ctx, params.account_name, (2, 12, 0), "distributed counters")
    js = await ctx.js(params.account_name)
    info = await js.request(f"STREAM.INFO.{params.stream}", context=f"stream {params.stream}")
    cfg = info.get("config") or {}
    if not cfg.get("allow_msg_counter"):
        raise Unsupported(f"stream {params.stream} is not a counter stream", code="message_counter_disabled",
                          hint="Counters need a stream created with allow_msg_counter=true.")
    if not cfg.get("allow_direct"):
        raise Unsupported(f"stream {params.stream} does not allow direct get", code="direct_get_disabled",
                          hint=f"stream_update {params.stream} allow_direct=true (counters are read with Direct Get).")
    nc = js.nc
    entries: list[CounterEntry] = []
    truncated = False
    body = {"multi_last": [params.subject], "batch": params.max_subjects}
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(js.subject(f"DIRECT.GET.{params.stream}"), json.dumps(body).encode(), reply=inbox)
        while True:
            try:
                msg = await sub.next_msg(timeout=params.timeout_s)
            except Exception as exc:
                raise from_nats(exc, context=f"counter {params.subject}") from None
            hdrs = msg.headers or {}
            status = hdrs.get("Status")
            if status == "404":
                break
            if status == "204" or (not msg.data and status):
                break
            if status == "413":
                truncated = True
                break
            subj = hdrs.get("Nats-Subject", "")
            entries.append(CounterEntry(subject=subj, value=_counter_value(msg.data, subj)))
            if len(entries) >= params.max_subjects:
                truncated = int(hdrs.get("Nats-Num-Pending", "0") or 0) > 0
                break
    finally:
        await sub.unsubscribe()
    if not entries and "*" not in params.subject and ">" not in params.subject:
        raise NotFound(f"no counter on {params.subject} in stream {params.stream}", code="counter_not_found",
                       hint="A counter exists once counter_add has been called on its subject.")
    entries.sort(key=lambda e: e.subject)
    return CounterGetResult(stream=params.stream, subject=params.subject, value=sum(e.value for e in entries),
                            counters=entries, truncated=truncated)


class ScheduleParams(Params):
    subject: PublishSubject = Field(description="The schedule's own subject (one schedule per subject)")
    target: PublishSubject = Field(description="Where the message is published when due (same stream)")
    at: datetime = Field(description="When to publish it (RFC 3339, e.g. 2030-01-01T09:00:00Z)")
    payload: str = Field(default="", description="The message to deliver")
    payload_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `payload` is written")
    ttl: str | None = Field(default=None, max_length=32, description="Nats-Schedule-TTL for the produced message")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the stream's answer")


class ScheduleResult(Result):
    subject: str
    target: str
    at: str
    stream: str
    seq: int


@operation("schedule_add", cli="schedule add", impact=Impact.WRITE, args=("subject", "target", "at"))
async def schedule_add(ctx: Context, params: ScheduleParams) -> ScheduleResult:
    """Schedule a message for later delivery by the server (Nats-Schedule '@at', 2.12+).

    The stream needs allow_msg_schedules; the schedule subject and the target are both in it.
    Cancel it by purging the schedule subject.
    """
    await require_server(ctx, params.account_name, (2, 12, 0), "message schedules")
    at = params.at if params.at.tzinfo else params.at.replace(tzinfo=UTC)
    when = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"Nats-Schedule": f"@at {when}", "Nats-Schedule-Target": params.target}
    if params.ttl:
        headers["Nats-Schedule-TTL"] = params.ttl
    nc = await ctx.nc(params.account_name)
    body = decode_input(params.payload, params.payload_encoding)
    ack = await stream_publish(
        nc, params.subject, body, headers=headers, timeout=params.timeout_s, context=f"schedule {params.subject}",
        no_stream_hint="Create a stream with allow_msg_schedules=true covering the schedule and target subjects.")
    return ScheduleResult(subject=params.subject, target=params.target, at=when, stream=str(ack.get("stream")),
                          seq=int(ack.get("seq") or 0))
