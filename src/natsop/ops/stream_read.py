"""Messages in a stream: view a page, get one, count subjects, delete one.

Reading never creates a consumer and never walks the stream: a page of `stream_view`
is one batched Direct Get request when the stream allows Direct Get, otherwise one
`STREAM.MSG.GET` request per message shown (`next_by_subj` skips deleted sequences
on the server). Either way the cost is the page, not the stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import Conflict, NatsopError, NotFound, ServerError, Unavailable, UserError, from_nats
from natsop.formats import parse_time
from natsop.logic.validate import StreamName, SubjectFilter
from natsop.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    Confirmable,
    ConfirmParams,
    Message,
    check_confirmation,
    headers_of,
    parse_header_block,
    payload_of,
)
from natsop.ops._common import PageParams
from natsop.ops.stream import StreamState, fetch_stream_info
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi, Resend

__all__ = ["fetch_message"]

DEFAULT_VIEW_PAGE = 20
MAX_VIEW_PAGE = 500
DEFAULT_VIEW_PAYLOAD_BYTES = 1024
# A page stops early (still `truncated`, with a correct cursor) once it has carried this
# much data, so that 500 one-megabyte messages never arrive at once.
PAGE_BUDGET_BYTES = 8 * 1024 * 1024
# Subjects read for one `stream_subjects` call: the server's own page size.
MAX_SUBJECTS_SCAN = 100_000

# Headers the server adds to Direct Get replies; they describe the reply, not the message.
_DIRECT_HEADERS = frozenset({
    "Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject", "Nats-Num-Pending",
    "Nats-Last-Sequence", "Nats-UpTo-Sequence", "Status", "Description",
})


def _api_message(m: dict[str, Any], max_bytes: int) -> Message:
    """A `Message` from a STREAM.MSG.GET response's `message` object."""
    hdrs = base64.b64decode(m["hdrs"]) if m.get("hdrs") else None
    data = base64.b64decode(m["data"]) if m.get("data") else b""
    return Message(seq=int(m.get("seq") or 0), subject=str(m.get("subject") or ""), time=m.get("time"),
                   headers=parse_header_block(hdrs), payload=payload_of(data, max_bytes))


def _direct_message(msg: Msg, max_bytes: int) -> Message:
    """A `Message` from a Direct Get reply (the stored message with the server's headers added)."""
    hdrs = msg.headers or {}
    user = {k: v for k, v in (headers_of(hdrs) or {}).items() if k not in _DIRECT_HEADERS}
    return Message(seq=int(hdrs.get("Nats-Sequence", 0)), subject=str(hdrs.get("Nats-Subject", "")),
                   time=hdrs.get("Nats-Time-Stamp"), headers=user or None, payload=payload_of(msg.data, max_bytes))


async def fetch_message(js: JsApi, stream: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """One STREAM.MSG.GET (served by the leader: read-after-write); None when there is no such message."""
    try:
        resp = await js.request(f"STREAM.MSG.GET.{stream}", body, context=f"stream {stream}")
    except NotFound as err:
        if err.code == "message_not_found":
            return None
        raise
    message = resp.get("message")
    return message if isinstance(message, dict) else None


def _state(info: dict[str, Any]) -> StreamState:
    return StreamState.model_validate(info.get("state") or {})


# --- stream_view ---------------------------------------------------------------------------------


class StreamViewParams(Params):
    stream: StreamName
    start_seq: int | None = Field(default=None, ge=1, le=2**63,
                                  description="First sequence to show (the `next_seq` of the previous page); "
                                              "default: the stream's first message")
    start_time: str | None = Field(default=None, max_length=64,
                                   description="Start at the first message stored at or after this RFC 3339 time")
    since_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                  description="Start at messages stored in the last this many seconds")
    subject: SubjectFilter | None = Field(default=None, description="Only messages on this subject (wildcards allowed)")
    limit: int = Field(default=DEFAULT_VIEW_PAGE, ge=1, le=MAX_VIEW_PAGE,
                       description=f"At most this many messages (max {MAX_VIEW_PAGE})")
    max_payload_bytes: int = Field(default=DEFAULT_VIEW_PAYLOAD_BYTES, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this many bytes of each payload (its full size is "
                                               "always given)")


class StreamViewResult(Result):
    stream: str
    subject: str | None = Field(default=None, description="The subject filter applied")
    messages: list[Message]
    next_seq: int = Field(description="Pass as start_seq to read the next page (also to poll for new messages)")
    truncated: bool = Field(description="True when more messages follow; call again with start_seq=next_seq")
    num_pending: int | None = Field(default=None,
                                    description="Matching messages after this page (known with Direct Get)")
    first_seq: int = Field(description="The stream's first sequence")
    last_seq: int = Field(description="The stream's last sequence")
    method: Literal["direct_get", "msg_get"] = Field(
        description="direct_get: one batched request; msg_get: one request per message (allow_direct is off, "
                    "or the server predates batched Direct Get)")


def _start_time(params: StreamViewParams) -> datetime | None:
    if params.since_s is not None:
        when = datetime.now(UTC) - timedelta(seconds=params.since_s)
    elif params.start_time is not None:
        parsed = parse_time(params.start_time)
        if parsed is None:
            raise UserError(f"start_time {params.start_time!r} is not an RFC 3339 time", code="invalid_time",
                            hint="Write it like 2024-05-01T12:00:00Z, or use since_s for a relative start.")
        when = parsed
    else:
        return None
    return when.astimezone(UTC)


@operation("stream_view", cli="stream view", args=("stream",))
async def stream_view(ctx: Context, params: StreamViewParams) -> StreamViewResult:
    """Show a page of a stream's messages, from a sequence or a time, optionally on one subject.

    Call again with start_seq=next_seq while `truncated` is true. Deleted messages are
    skipped. Reading costs the page, not the stream, and creates no consumer.
    """
    starts = [x for x in (params.start_seq, params.start_time, params.since_s) if x is not None]
    if len(starts) > 1:
        raise UserError("give only one of start_seq, start_time and since_s", code="invalid_argument",
                        hint="Use start_seq to continue from a previous page's next_seq.")
    since = _start_time(params)
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    state = _state(info)
    direct = bool((info.get("config") or {}).get("allow_direct"))
    method: Literal["direct_get", "msg_get"] = "direct_get" if direct else "msg_get"
    last_ts = parse_time(state.last_ts)
    if since is not None and (last_ts is None or since > last_ts):
        # Nothing was stored at or after that time. (Asked anyway, the server answers from the first message.)
        return StreamViewResult(stream=params.stream, subject=params.subject, messages=[],
                                next_seq=state.last_seq + 1, truncated=False, num_pending=0 if direct else None,
                                first_seq=state.first_seq, last_seq=state.last_seq, method=method)
    start_time = since.isoformat().replace("+00:00", "Z") if since is not None else None
    js = await ctx.js(params.account_name)
    seq = params.start_seq or max(1, state.first_seq)
    pending: int | None = None
    batch = None
    if direct:
        batch = await _view_direct(js, params, seq, start_time)
    if batch is not None:
        messages, pending = batch
        truncated = bool(pending)
    else:
        method = "msg_get"
        messages, truncated = await _view_msg_get(js, params, seq, start_time, state.last_seq)
    if messages:
        next_seq = messages[-1].seq + 1
    elif params.start_seq is not None:
        next_seq = params.start_seq
    else:
        next_seq = state.last_seq + 1
    return StreamViewResult(stream=params.stream, subject=params.subject, messages=messages, next_seq=next_seq,
                            truncated=truncated, num_pending=pending, first_seq=state.first_seq,
                            last_seq=state.last_seq, method=method)


async def _view_direct(js: JsApi, params: StreamViewParams, seq: int,
                       start_time: str | None) -> tuple[list[Message], int] | None:
    """One batched Direct Get: the replies are the messages, then an end-of-batch status.

    None when the server does not do batches (before 2.11 it answers with one plain message).
    """
    body: dict[str, Any] = {"batch": params.limit, "max_bytes": PAGE_BUDGET_BYTES}
    if start_time is not None:
        body["start_time"] = start_time
    else:
        body["seq"] = seq
    if params.subject:
        body["next_by_subj"] = params.subject
    nc = js.nc
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    context = f"stream {params.stream}"
    messages: list[Message] = []
    pending = 0
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_msg)
    except Exception as exc:
        raise from_nats(exc, context=context) from None
    try:
        async def send() -> None:
            await nc.publish(js.subject(f"DIRECT.GET.{params.stream}"), json.dumps(body).encode(), reply=inbox)

        await send()
        resend = Resend(send)  # a stream just created or moved in a cluster may lack interest here yet
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), js.timeout)
            except TimeoutError:
                raise Unavailable(f"{context}: Direct Get did not answer in time", code="timeout") from None
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is None:
                if "Nats-Num-Pending" not in headers:
                    return None
                messages.append(_direct_message(msg, params.max_payload_bytes))
                pending = int(headers.get("Nats-Num-Pending") or 0)
            elif status in ("204", "404"):  # end of batch / nothing at or after the start
                break
            elif status == "503" and not messages and await resend.again():
                continue
            elif status == "503":
                raise Unavailable(f"{context}: nothing answers Direct Get requests", code="no_responders",
                                  hint="Check that the stream exists and has allow_direct set.")
            else:
                description = str(headers.get("Description") or "")
                raise ServerError(f"{context}: Direct Get failed with status {status} {description}".rstrip())
    except NatsopError:
        raise
    except Exception as exc:
        raise from_nats(exc, context=context) from None
    finally:
        await sub.unsubscribe()
    return messages, pending


async def _view_msg_get(js: JsApi, params: StreamViewParams, seq: int, start_time: str | None,
                        last_seq: int) -> tuple[list[Message], bool]:
    """One STREAM.MSG.GET per message; `next_by_subj` makes the server skip gaps and other subjects."""
    subject = params.subject or ">"
    messages: list[Message] = []
    carried = 0
    cursor = seq
    first: dict[str, Any] = {"start_time": start_time} if start_time is not None else {"seq": seq}
    while len(messages) < params.limit and carried < PAGE_BUDGET_BYTES:
        body = first if not messages else {"seq": cursor}
        if not messages and start_time is None and cursor > last_seq:
            return messages, False
        m = await fetch_message(js, params.stream, {**body, "next_by_subj": subject})
        if m is None:
            return messages, False
        message = _api_message(m, params.max_payload_bytes)
        messages.append(message)
        carried += message.payload.size
        cursor = message.seq + 1
        if cursor > last_seq:
            return messages, False
    # Is there one more? Ask for it (its body is not shown) rather than guess from last_seq.
    more = await fetch_message(js, params.stream, {"seq": cursor, "next_by_subj": subject})
    return messages, more is not None


# --- stream_get ----------------------------------------------------------------------------------


class StreamGetParams(Params):
    stream: StreamName
    seq: int | None = Field(default=None, ge=1, le=2**63, description="Sequence of the message")
    last_by_subj: SubjectFilter | None = Field(default=None,
                                               description="Instead of seq: the last message on this subject")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this many bytes of the payload")


class StreamGetResult(Result):
    stream: str
    message: Message


@operation("stream_get", args=("stream", "seq"))
async def stream_get(ctx: Context, params: StreamGetParams) -> StreamGetResult:
    """Get one message by sequence, or the last message on a subject (read-after-write)."""
    if (params.seq is None) == (params.last_by_subj is None):
        raise UserError("give either seq or last_by_subj", code="invalid_argument",
                        hint="seq reads one message by sequence; last_by_subj reads the newest on a subject.")
    js = await ctx.js(params.account_name)
    body: dict[str, Any] = {"seq": params.seq} if params.seq is not None else {"last_by_subj": params.last_by_subj}
    m = await fetch_message(js, params.stream, body)
    if m is None:
        raise await _no_message(ctx, params.stream, params.account_name, params.seq, params.last_by_subj)
    return StreamGetResult(stream=params.stream, message=_api_message(m, params.max_payload_bytes))


async def _no_message(ctx: Context, stream: str, account_name: str | None, seq: int | None,
                      subject: str | None) -> NotFound:
    """A NotFound that names what was asked for and what the stream holds."""
    state = _state(await fetch_stream_info(ctx, stream, account_name))
    held = (f"it holds sequences {state.first_seq}..{state.last_seq}" if state.messages
            else "it holds no messages")
    if seq is None:
        return NotFound(f"stream {stream} has no message on {subject}; {held}", code="message_not_found",
                        hint="List the stream's subjects with stream_subjects.")
    if state.messages and state.first_seq <= seq <= state.last_seq:
        why = "it was deleted"
    else:
        why = "it is outside the stream's range"
    return NotFound(f"stream {stream} has no message {seq} ({why}); {held}", code="message_not_found",
                    hint="Page through the stream with stream_view to see which sequences exist.")


# --- stream_subjects -----------------------------------------------------------------------------


class SubjectCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str
    messages: int


class StreamSubjectsParams(PageParams):
    stream: StreamName
    filter: SubjectFilter = Field(default=">", description="Only subjects matching this filter")
    sort: Literal["messages", "name"] = Field(default="messages",
                                              description="messages: most messages first; name: alphabetical")
    reverse: bool = Field(default=False, description="Reverse the order")


class StreamSubjectsResult(Result):
    stream: str
    filter: str
    subjects: list[SubjectCount]
    total: int = Field(description="Subjects in the stream matching the filter")
    offset: int
    truncated: bool = Field(description="True when more subjects follow; call again with offset=next_offset")
    next_offset: int | None = None
    complete: bool = Field(description=f"False when more than {MAX_SUBJECTS_SCAN:,} subjects match: then only "
                                       "those were sorted; narrow the filter")


@operation("stream_subjects", cli="stream subjects", aliases=("subj",), args=("stream", "filter"))
async def stream_subjects(ctx: Context, params: StreamSubjectsParams) -> StreamSubjectsResult:
    """List the subjects a stream holds with their message counts, sorted and paged."""
    js = await ctx.js(params.account_name)
    counts: dict[str, int] = {}
    total = 0
    while len(counts) < MAX_SUBJECTS_SCAN:
        resp = await js.request(f"STREAM.INFO.{params.stream}",
                                {"subjects_filter": params.filter, "offset": len(counts)},
                                context=f"stream {params.stream}")
        page = (resp.get("state") or {}).get("subjects") or {}
        total = int(resp.get("total") or len(page))
        counts.update({str(k): int(v) for k, v in page.items()})
        if not page or len(counts) >= total:
            break
    if params.sort == "name":
        ordered = sorted(counts.items(), reverse=params.reverse)
    else:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]), reverse=params.reverse)
    total = max(total, len(counts))
    window = ordered[params.offset: params.offset + params.limit]
    end = params.offset + len(window)
    more = end < len(ordered)
    return StreamSubjectsResult(
        stream=params.stream, filter=params.filter,
        subjects=[SubjectCount(subject=s, messages=n) for s, n in window], total=total, offset=params.offset,
        truncated=more, next_offset=end if more else None, complete=len(counts) >= total,
    )


# --- stream_msg_delete ---------------------------------------------------------------------------


class StreamMsgDeleteParams(ConfirmParams):
    stream: StreamName
    seq: int = Field(ge=1, le=2**63, description="Sequence of the message to delete")
    erase: bool = Field(default=False, description="Also overwrite the stored data (slower); default just remove")


class StreamMsgDeleteResult(Confirmable):
    stream: str
    seq: int
    subject: str = Field(description="Subject of the message")
    size: int = Field(description="Payload size in bytes")
    erase: bool


@operation("stream_msg_delete", cli="stream rmm", aliases=("msg-delete",), impact=Impact.DESTRUCTIVE,
           args=("stream", "seq"))
async def stream_msg_delete(ctx: Context, params: StreamMsgDeleteParams) -> StreamMsgDeleteResult:
    """Delete one message from a stream by sequence. Needs confirmation.

    Without confirm it shows the message that would go. Streams with deny_delete refuse.
    """
    js = await ctx.js(params.account_name)
    m = await fetch_message(js, params.stream, {"seq": params.seq})
    if m is None:
        raise await _no_message(ctx, params.stream, params.account_name, params.seq, None)
    message = _api_message(m, 0)
    expected = f"{params.stream}:{params.seq}"
    how = "erase (overwrite) and delete" if params.erase else "delete"
    result = StreamMsgDeleteResult(
        done=False, stream=params.stream, seq=params.seq, subject=message.subject, size=message.payload.size,
        erase=params.erase,
        action=f"{how} message {params.seq} on {message.subject} ({message.payload.size} B) "
               f"from stream {params.stream}",
    )
    if not check_confirmation(params.confirm, expected):
        cfg = (await fetch_stream_info(ctx, params.stream, params.account_name)).get("config") or {}
        if cfg.get("deny_delete"):
            raise _deny_delete(params.stream)
        result.confirmation_required = True
        result.confirm_with = expected
        return result
    try:
        await js.request(f"STREAM.MSG.DELETE.{params.stream}", {"seq": params.seq, "no_erase": not params.erase},
                         context=f"delete message {params.seq} from stream {params.stream}")
    except NatsopError as err:
        # deny_delete comes back as the generic "message delete failed" (10057) with this text.
        if err.details.get("err_code") == 10057 and "not permitted" in err.message:
            raise _deny_delete(params.stream) from None
        raise
    result.done = True
    return result


def _deny_delete(stream: str) -> Conflict:
    return Conflict(f"stream {stream} has deny_delete set: its messages cannot be deleted",
                    code="stream_delete_denied", hint="The stream protects its history; nothing was deleted.")
