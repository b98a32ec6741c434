"""Events in the spec's standard envelope, published for exactly-once storage."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from natsop.errors import UserError
from natsop.logic.envelope import event_headers, new_event
from natsop.logic.validate import PublishSubject
from natsop.ops.primitives import stream_publish
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context

__all__: list[str] = []


class EventPublishParams(Params):
    subject: PublishSubject = Field(description="Subject a stream captures, e.g. events.orders.created")
    type: str = Field(min_length=1, max_length=255, description="What happened, e.g. 'order.created'")
    data: Any = Field(default=None, description="The event's data (any JSON value)")
    tags: list[str] | None = Field(default=None, max_length=64, description="Free-form tags")
    correlation_id: str | None = Field(default=None, max_length=255,
                                       description="The request or flow this event belongs to (default: its own id)")
    causation_id: str | None = Field(default=None, max_length=255, description="The id of the event that caused it")
    event_id: str | None = Field(default=None, max_length=255,
                                 description="Reuse an id to retry safely (default: a new UUIDv7)")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the stream's answer")


class EventPublishResult(Result):
    id: str = Field(description="The event id (UUIDv7), also its Nats-Msg-Id")
    type: str
    subject: str
    stream: str
    seq: int
    duplicate: bool = Field(description="True when the stream had this id already (a retry)")
    correlation_id: str
    causation_id: str | None = None


@operation("event_publish", cli="event pub", aliases=("publish",), impact=Impact.WRITE, args=("subject", "type"))
async def event_publish(ctx: Context, params: EventPublishParams) -> EventPublishResult:
    """Publish an event in the standard envelope to a stream, deduplicated by its UUIDv7 id.

    The envelope is {id, type, timestamp, tags, data, metadata{correlationId, causationId}};
    headers Nats-Msg-Id, Correlation-Id and Causation-Id are set from it.
    """
    event = new_event(params.type, params.data, tags=params.tags, correlation_id=params.correlation_id,
                      causation_id=params.causation_id, event_id=params.event_id)
    body = event.to_json()
    nc = await ctx.nc(params.account_name)
    if len(body) > nc.max_payload:
        raise UserError(f"the event is {len(body)} bytes; the server's max_payload is {nc.max_payload}",
                        code="payload_too_large", hint="Keep events small; put large data in the Object Store.")
    ack = await stream_publish(
        nc, params.subject, body, headers=event_headers(event), timeout=params.timeout_s,
        context=f"event on {params.subject}",
        no_stream_hint="The event would be lost: create a stream for it (stream_add subjects=[...]).")
    return EventPublishResult(id=event.id, type=event.type, subject=params.subject, stream=str(ack.get("stream")),
                              seq=int(ack.get("seq") or 0), duplicate=bool(ack.get("duplicate")),
                              correlation_id=event.correlation_id or event.id, causation_id=event.causation_id)
