"""Publish a message: core NATS, or to a stream with its acknowledgement and optimistic-concurrency checks."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from natsop.errors import Conflict, NatsopError, UserError, from_nats
from natsop.logic.validate import PublishSubject, StreamName
from natsop.models import decode_input
from natsop.ops._common import require_server
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi, decode_response, stream_request

__all__ = ["PublishParams", "PublishResult", "capturing_streams"]

MAX_COUNT = 10_000
# One call must not flood the server: count x size is bounded too.
MAX_TOTAL_BYTES = 64 * 1024 * 1024
# An HTTP-style token: what nats-py and the server accept as a header name.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Nats-TTL: whole seconds, a Go duration, or "never" (ADR-43).
_TTL = re.compile(r"^(never|\d+|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")
_RESERVED = {
    "nats-msg-id": "msg_id",
    "nats-expected-last-sequence": "expected_last_seq",
    "nats-expected-last-subject-sequence": "expected_last_subject_seq",
    "nats-expected-stream": "expected_stream",
    "nats-expected-last-msg-id": "expected_last_msg_id",
    "nats-ttl": "ttl",
}


class PublishParams(Params):
    subject: PublishSubject
    payload: str = Field(default="", description="The body: text, or base64 with payload_encoding='base64'")
    payload_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `payload` is written")
    headers: dict[str, list[str]] | None = Field(default=None, max_length=256,
                                                 description="Headers, name -> list of values")
    reply: PublishSubject | None = Field(default=None,
                                         description="Reply subject (core NATS; no acknowledgement is awaited)")
    msg_id: str | None = Field(default=None, min_length=1, max_length=1024,
                               description="Nats-Msg-Id: the stream drops repeats within its duplicate window")
    expected_last_seq: int | None = Field(default=None, ge=0, le=2**63,
                                          description="Store only if the stream's last sequence is this")
    expected_last_subject_seq: int | None = Field(
        default=None, ge=0, le=2**63,
        description="Store only if the last sequence on this subject is this (0 = no message on it yet)")
    expected_stream: StreamName | None = Field(default=None, description="Store only if this stream captures it")
    expected_last_msg_id: str | None = Field(default=None, min_length=1, max_length=1024,
                                             description="Store only if the stream's last Nats-Msg-Id is this")
    ttl: str | None = Field(default=None, max_length=32,
                            description="Nats-TTL: how long the stream keeps it, e.g. '60s', '1h' or 'never' "
                                        "(the stream needs allow_msg_ttl)")
    jetstream: bool | None = Field(
        default=None, description="Wait for the stream's acknowledgement; default: when a stream captures the subject")
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description=f"Publish the message this many times (max {MAX_COUNT})")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="How long to wait for each acknowledgement")


class PublishResult(Result):
    subject: str
    size: int = Field(description="Payload size in bytes")
    count: int = Field(description="Messages published")
    acked: bool = Field(description="True when a stream acknowledged storing it")
    stream: str | None = Field(default=None, description="The stream that stored it (or captures the subject)")
    seq: int | None = Field(default=None, description="Its sequence in the stream (the last one, with count > 1)")
    duplicate: bool | None = Field(default=None, description="True when the stream had it already (same msg_id)")


def _headers(params: PublishParams) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in (params.headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise UserError(f"header name {name!r} is not valid", code="invalid_header",
                            hint="Header names use letters, digits and !#$%&'*+-.^_`|~ (no spaces or ':').")
        if name.lower() in _RESERVED:
            raise UserError(f"header {name} is set by the parameter {_RESERVED[name.lower()]}",
                            code="invalid_header", hint=f"Use {_RESERVED[name.lower()]} instead of the header.")
        if not values:
            raise UserError(f"header {name} has no value", code="invalid_header", hint="Give at least one value.")
        for v in values:
            if "\r" in v or "\n" in v:
                raise UserError(f"header {name} has a line break in its value", code="invalid_header",
                                hint="Header values are one line each; repeat the name for more values.")
        out[name] = list(values)
    fixed = {
        "Nats-Msg-Id": params.msg_id,
        "Nats-Expected-Last-Sequence": params.expected_last_seq,
        "Nats-Expected-Last-Subject-Sequence": params.expected_last_subject_seq,
        "Nats-Expected-Stream": params.expected_stream,
        "Nats-Expected-Last-Msg-Id": params.expected_last_msg_id,
        "Nats-TTL": params.ttl,
    }
    for name, value in fixed.items():
        if value is not None:
            out[name] = [str(value)]
    return out


def _wire_headers(headers: dict[str, list[str]]) -> dict[str, str] | None:
    """nats-py takes one value per name and strips names; a name padded with spaces sends a repeated header."""
    if not headers:
        return None
    wire: dict[str, str] = {}
    for name, values in headers.items():
        for i, value in enumerate(values):
            wire[name + " " * i] = value
    return wire


def _header_bytes(headers: dict[str, list[str]]) -> int:
    if not headers:
        return 0
    lines = sum(len(n.encode()) + 2 + len(v.encode()) + 2 for n, vs in headers.items() for v in vs)
    return len(b"NATS/1.0\r\n") + lines + 2


async def capturing_streams(js: JsApi, subject: str) -> list[str]:
    """Names of the streams whose subjects capture `subject` (at most one outside mirrors and sources)."""
    resp = await js.request("STREAM.NAMES", {"subject": subject}, context=f"streams capturing {subject}")
    return [str(s) for s in resp.get("streams") or []]


def _check(params: PublishParams) -> None:
    if params.ttl is not None and not _TTL.match(params.ttl):
        raise UserError(f"ttl {params.ttl!r} is not a duration", code="invalid_ttl",
                        hint="Write seconds ('60'), a duration ('90s', '1h30m') or 'never'.")
    conditional = [n for n in ("msg_id", "expected_last_seq", "expected_last_subject_seq", "expected_last_msg_id")
                   if getattr(params, n) is not None]
    if params.count > 1 and conditional:
        raise UserError(f"count > 1 cannot be combined with {', '.join(conditional)}", code="invalid_argument",
                        hint="Repeats would be dropped or refused by the stream; publish once.")
    if params.reply is not None and params.jetstream:
        raise UserError("a reply subject and jetstream=true exclude each other", code="invalid_argument",
                        hint="The acknowledgement goes to the reply subject; omit reply to wait for it here.")


@operation("publish", cli="pub", aliases=("publish",), impact=Impact.WRITE, idempotent=False,
           args=("subject", "payload"))
async def publish(ctx: Context, params: PublishParams) -> PublishResult:
    """Publish a message, with headers, reply subject, deduplication id and expected-sequence checks.

    When a stream captures the subject the call waits for the stream's acknowledgement
    and returns the stored sequence (set jetstream=false to send without waiting).
    """
    _check(params)
    if params.ttl is not None:
        # An older server ignores the header: the message would be kept as if it had no TTL.
        await require_server(ctx, params.account_name, (2, 11, 0), "per-message TTL (Nats-TTL)")
    data = decode_input(params.payload, params.payload_encoding)
    headers = _headers(params)
    nc = await ctx.nc(params.account_name)
    limit = int(nc.max_payload)
    size = len(data) + _header_bytes(headers)
    if size > limit:
        raise UserError(
            f"message is {size:,} bytes ({len(data):,} payload + headers); the server's max_payload is {limit:,}",
            code="payload_too_large", hint="Send less, or store large data in the Object Store (object_put).")
    if size * params.count > MAX_TOTAL_BYTES:
        raise UserError(
            f"{params.count} messages of {size:,} bytes make {size * params.count:,} bytes; one call sends at most "
            f"{MAX_TOTAL_BYTES:,}", code="publish_too_large",
            hint="Lower count, or publish in several calls; bulk data belongs in the Object Store.")
    js = await ctx.js(params.account_name)
    stream: str | None = None
    use_js = params.jetstream
    if use_js is not False:
        try:
            streams = await capturing_streams(js, params.subject)
        except NatsopError as err:
            if use_js or err.code not in ("no_responders", "jetstream_not_enabled_for_account",
                                          "jetstream_not_enabled"):
                raise
            streams = []
        stream = streams[0] if streams else None
        if use_js and stream is None:
            raise UserError(f"no stream captures {params.subject}", code="no_stream_for_subject",
                            hint="Create a stream for the subject (stream_add), or publish with jetstream=false.")
        use_js = stream is not None and params.reply is None
    wire = _wire_headers(headers)
    result = PublishResult(subject=params.subject, size=len(data), count=params.count, acked=False, stream=stream)
    try:
        if not use_js:
            for _ in range(params.count):
                await nc.publish(params.subject, data, reply=params.reply or "", headers=wire)
            await nc.flush(timeout=max(1, int(params.timeout_s)))
            return result
        for _ in range(params.count):
            msg = await stream_request(nc, params.subject, data, timeout=params.timeout_s, headers=wire)
            try:
                ack = _ack(decode_response(msg, context=f"publish to {params.subject}"), params)
            except Conflict as err:
                raise _explain(err, params, stream) from None
            result.stream = str(ack.get("stream") or stream)
            result.seq = int(ack.get("seq") or 0)
            result.duplicate = bool(ack.get("duplicate", False))
    except NatsopError:
        raise
    except Exception as exc:
        raise from_nats(exc, context=f"publish to {params.subject}") from None
    result.acked = True
    return result


def _explain(err: Conflict, params: PublishParams, stream: str | None) -> Conflict:
    """Say which expectation failed, what the server holds, and how to read the current value."""
    where = stream or "the stream"
    current = err.message.rsplit(":", 1)[-1].strip() or "(none)"
    head = f"publish to {params.subject}: "
    message, hint = err.message, err.hint
    if err.code == "wrong_last_sequence" and params.expected_last_subject_seq is not None:
        message = (f"{head}expected the last sequence on {params.subject} to be "
                   f"{params.expected_last_subject_seq}, but it is {current}; nothing was stored")
        hint = (f"Read it with stream_get stream={where} last_by_subj={params.subject} (its seq), decide again, "
                "and publish with that expected_last_subject_seq.")
    elif err.code == "wrong_last_sequence":
        message = (f"{head}expected {where}'s last sequence to be {params.expected_last_seq}, but it is "
                   f"{current}; nothing was stored")
        hint = (f"Read it with stream_state stream={where} (last_seq), decide again, and publish with that "
                "expected_last_seq.")
    elif err.code == "wrong_last_msg_id":
        message = (f"{head}expected {where}'s last Nats-Msg-Id to be {params.expected_last_msg_id!r}, but it is "
                   f"{current}; nothing was stored")
        hint = (f"Read the newest message with stream_view stream={where} (its Nats-Msg-Id header), decide "
                "again, and publish with that expected_last_msg_id.")
    elif err.code == "wrong_expected_stream":
        message = (f"{head}expected stream {params.expected_stream} to store it, but {where} captures the "
                   "subject; nothing was stored")
    return Conflict(message, code=err.code, hint=hint, details=err.details)


def _ack(ack: dict[str, Any], params: PublishParams) -> dict[str, Any]:
    if not ack.get("stream"):
        raise Conflict(f"publish to {params.subject}: the answer is not a stream acknowledgement",
                       code="not_acknowledged", hint="Something other than a stream answers on this subject.")
    return ack
