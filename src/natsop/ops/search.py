"""Find messages in a stream by what they hold.

The server narrows by subject (the filter goes into each page request); natsop looks
at headers, payload text and JSON fields of what comes back, within a scan budget of
messages and time, and says how far it got and where to resume.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Literal

from pydantic import Field

from natsop.errors import UserError
from natsop.logic.validate import StreamName, SubjectFilter
from natsop.models import MAX_PAYLOAD_BYTES, Message, payload_of
from natsop.ops.stream_read import StreamViewParams, stream_view
from natsop.registry import Params, Result, operation
from natsop.wire.context import Context

__all__: list[str] = []

_MISSING = object()


class StreamSearchParams(Params):
    stream: StreamName
    subject: SubjectFilter | None = Field(default=None, description="Only messages on this subject (server-side)")
    header: str | None = Field(default=None, max_length=255, description="Only messages carrying this header")
    header_value: str | None = Field(default=None, max_length=4096,
                                     description="...with exactly this value (needs `header`)")
    contains: str | None = Field(default=None, min_length=1, max_length=4096,
                                 description="Only messages whose payload contains this text")
    json_field: str | None = Field(default=None, max_length=255, pattern=r"^[^.\s]+(\.[^.\s]+)*$",
                                   description="Dot path into a JSON payload, e.g. data.order_id")
    json_value: Any = Field(default=None, description="...equal to this JSON value (needs `json_field`; "
                                                      "omit to match any message that has the field)")
    start_seq: int | None = Field(default=None, ge=1, le=2**63,
                                  description="Where to start (the `next_seq` of the previous call)")
    limit: int = Field(default=20, ge=1, le=500, description="Return at most this many matches (max 500)")
    max_scan: int = Field(default=10_000, ge=1, le=1_000_000,
                          description="Look at no more than this many messages (max 1,000,000)")
    time_budget_s: float = Field(default=5.0, gt=0, le=60, description="Stop scanning after this long (max 60)")
    max_payload_bytes: int = Field(default=1024, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this much of each matching payload")


class StreamSearchResult(Result):
    stream: str
    matches: list[Message]
    scanned: int = Field(description="Messages looked at")
    scanned_from_seq: int
    next_seq: int = Field(description="Pass as start_seq to continue the search")
    stopped_by: Literal["end", "limit", "max_scan", "time_budget"]
    truncated: bool = Field(description="True when the stream was not searched to its end")
    partly_searched: int = Field(default=0, description="Messages larger than 1 MiB: only their first 1 MiB "
                                                        "was searched, so a match beyond it is missed")


def _json_lookup(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return _MISSING
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality without Python's `True == 1`: booleans and numbers are different types."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _body(message: Message) -> bytes:
    p = message.payload
    return base64.b64decode(p.data) if p.encoding == "base64" else p.data.encode("utf-8")


def _matches(params: StreamSearchParams, message: Message, body: bytes) -> bool:
    if params.header:
        values = {k.lower(): v for k, v in (message.headers or {}).items()}.get(params.header.lower())
        if values is None or (params.header_value is not None and params.header_value not in values):
            return False
    if params.contains and params.contains.encode("utf-8") not in body:
        return False
    if params.json_field:
        try:
            doc = json.loads(body)
        except ValueError:
            return False
        found = _json_lookup(doc, params.json_field)
        if found is _MISSING:
            return False
        if "json_value" in params.model_fields_set and not _json_equal(found, params.json_value):
            return False
    return True


@operation("stream_search", cli="stream search", args=("stream",), timeout_s=90)
async def stream_search(ctx: Context, params: StreamSearchParams) -> StreamSearchResult:
    """Find messages in a stream by subject, header, payload text or JSON field value.

    Scans at most `max_scan` messages for at most `time_budget_s`, then says where to resume
    (call again with start_seq=next_seq).
    """
    if params.header_value is not None and not params.header:
        raise UserError("header_value needs header", code="invalid_argument", hint="Name the header too.")
    if "json_value" in params.model_fields_set and not params.json_field:
        raise UserError("json_value needs json_field", code="invalid_argument", hint="Give the field's dot path.")
    deadline = time.monotonic() + params.time_budget_s
    matches: list[Message] = []
    scanned = 0
    partly = 0
    seq = params.start_seq
    start = seq or 0
    stopped: Literal["end", "limit", "max_scan", "time_budget"] = "end"
    while True:
        view: dict[str, Any] = {"account_name": params.account_name, "stream": params.stream,
                                "limit": min(500, params.max_scan - scanned), "max_payload_bytes": MAX_PAYLOAD_BYTES}
        if params.subject is not None:
            view["subject"] = params.subject
        if seq is not None:
            view["start_seq"] = seq
        page = await stream_view(ctx, StreamViewParams.model_validate(view))
        if not start:
            start = page.messages[0].seq if page.messages else page.next_seq
        for message in page.messages:
            scanned += 1
            seq = message.seq + 1
            body = _body(message)
            cut = message.payload.truncated
            partly += cut
            if _matches(params, message, body):
                size = message.payload.size
                message.payload = payload_of(body, params.max_payload_bytes)
                message.payload.size = size
                message.payload.truncated = message.payload.truncated or cut
                matches.append(message)
                if len(matches) >= params.limit:
                    stopped = "limit"
                    break
        if stopped == "limit":
            break
        seq = page.next_seq
        if not page.truncated:
            stopped = "end"
            break
        if scanned >= params.max_scan:
            stopped = "max_scan"
            break
        if time.monotonic() >= deadline:
            stopped = "time_budget"
            break
    next_seq = seq if seq is not None else start
    return StreamSearchResult(stream=params.stream, matches=matches, scanned=scanned, scanned_from_seq=start,
                              next_seq=next_seq, stopped_by=stopped, truncated=stopped != "end",
                              partly_searched=partly)
