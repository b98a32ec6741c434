"""Core NATS messaging: subscribe for a while, or make one request.

Both always return: a subscription ends at its time limit or its message limit,
whichever comes first; a request ends at its timeout, and no responders is an
error at once rather than a wait.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import UserError, from_nats
from natsop.logic.validate import PublishSubject, SubjectFilter
from natsop.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    Payload,
    decode_input,
    headers_of,
    payload_of,
)
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context

__all__ = ["ReceivedMessage"]


class ReceivedMessage(BaseModel):
    """A message as a subscriber saw it."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    reply: str | None = None
    headers: dict[str, list[str]] | None = None
    payload: Payload
    received_ms: float = Field(description="Milliseconds after the subscription started")


class SubscribeParams(Params):
    subject: SubjectFilter = Field(description="Subject to listen on; wildcards * and > allowed")
    queue: str | None = Field(default=None, max_length=255, pattern=r"^[^\s]+$",
                              description="Queue group: share the messages with its other members (this takes "
                              "messages away from them; refused when natsop is read-only)")
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="Stop after this many seconds (max 300)")
    max_messages: int = Field(default=100, ge=1, le=10_000, description="Stop after this many messages (max 10000)")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this much of each payload")


class SubscribeResult(Result):
    subject: str
    messages: list[ReceivedMessage]
    count: int
    stopped_by: Literal["timeout", "max_messages"]
    elapsed_s: float


def _received(msg: Msg, start: float, max_bytes: int) -> ReceivedMessage:
    return ReceivedMessage(subject=msg.subject, reply=msg.reply or None, headers=headers_of(msg.headers),
                           payload=payload_of(msg.data, max_bytes),
                           received_ms=round((time.monotonic() - start) * 1000, 3))


@operation("subscribe", cli="sub", args=("subject",), timeout_s=330)
async def subscribe(ctx: Context, params: SubscribeParams) -> SubscribeResult:
    """Collect messages on a subject until a time limit or a message limit; always returns.

    Core NATS has no memory: only messages published while the subscription is open arrive.
    Joining a queue group (`queue`) takes messages away from its members, so read-only
    natsop refuses it.
    """
    if params.queue is not None:
        # A member of a live queue group receives messages instead of the real workers (and never answers
        # the requests among them): that acts on the deployment, which a read-only natsop must not do.
        ctx.require_writable(f"joining queue group {params.queue!r} takes messages away from its members",
                             hint="Subscribe without `queue` to watch the subject: every subscriber sees every "
                                  "message, and no member of the group loses one.")
    nc = await ctx.nc(params.account_name)
    got: list[ReceivedMessage] = []
    full = asyncio.Event()
    start = time.monotonic()

    async def on_msg(msg: Msg) -> None:
        if len(got) < params.max_messages:
            got.append(_received(msg, start, params.max_payload_bytes))
            if len(got) >= params.max_messages:
                full.set()

    try:
        sub = await nc.subscribe(params.subject, queue=params.queue or "", cb=on_msg)
        # nats-py's flush can send its PING ahead of a SUB still in the write buffer; the second round
        # trip guarantees the server has the subscription before we report it as listening.
        await nc.flush()
        await nc.flush()
    except Exception as exc:
        raise from_nats(exc, context=f"subscribe {params.subject}") from None
    try:
        try:
            await asyncio.wait_for(full.wait(), params.timeout_s)
            stopped: Literal["timeout", "max_messages"] = "max_messages"
        except TimeoutError:
            stopped = "timeout"
    finally:
        await sub.unsubscribe()
    return SubscribeResult(subject=params.subject, messages=got, count=len(got), stopped_by=stopped,
                           elapsed_s=round(time.monotonic() - start, 3))


class RequestParams(Params):
    subject: PublishSubject
    payload: str = Field(default="", description="The request body (text, or base64 with payload_encoding)")
    payload_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `payload` is written")
    headers: dict[str, list[str]] | None = Field(default=None, max_length=256, description="Request headers")
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="How long to wait for the reply (max 60)")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this much of the reply")


class RequestResult(Result):
    subject: str
    reply_subject: str | None = None
    headers: dict[str, list[str]] | None = None
    payload: Payload
    rtt_ms: float = Field(description="Time from sending the request to receiving the reply")


@operation("request", cli="req", args=("subject", "payload"), impact=Impact.WRITE, timeout_s=70)
async def request(ctx: Context, params: RequestParams) -> RequestResult:
    """Send a request and wait for one reply (core NATS request/reply).

    It is a write: whatever answers may act on it. No responders is reported at once.
    """
    nc = await ctx.nc(params.account_name)
    data = decode_input(params.payload, params.payload_encoding)
    if len(data) > nc.max_payload:
        raise UserError(f"payload is {len(data)} bytes; the server's max_payload is {nc.max_payload}",
                        code="payload_too_large", hint="Send less, or use the Object Store for large data.")
    headers = {k: ",".join(v) for k, v in (params.headers or {}).items()} or None
    start = time.monotonic()
    try:
        msg = await nc.request(params.subject, data, timeout=params.timeout_s, headers=headers)
    except Exception as exc:
        err = from_nats(exc, context=f"request {params.subject}")
        if err.code == "no_responders":
            err.message = f"no responders: nothing is listening on {params.subject}"
            err.hint = "Start a service that subscribes to this subject, or check the subject's spelling."
        elif err.code == "timeout":
            err.message = f"no reply on {params.subject} within {params.timeout_s:g}s"
            err.hint = "A responder exists but did not answer in time; raise timeout_s or check the service."
        raise err from None
    return RequestResult(subject=params.subject, reply_subject=msg.subject, headers=headers_of(msg.headers),
                         payload=payload_of(msg.data, params.max_payload_bytes),
                         rtt_ms=round((time.monotonic() - start) * 1000, 3))
