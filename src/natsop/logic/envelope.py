"""The standard event envelope, as a small Python API.

    from natsop.logic.envelope import new_event, publish_event
    event = new_event("order.created", {"order_id": 7}, correlation_id=request_id)
    ack = await publish_event(nc, "events.orders.created", event)

An event's id is a UUIDv7 (time-ordered), published as `Nats-Msg-Id` so that the stream
drops a repeat within its duplicate window; `Correlation-Id` and `Causation-Id` travel as
headers too, so consumers can trace causality without parsing the body.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Event", "event_headers", "new_event", "publish_event", "uuid7"]


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits; sorts by time."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class Event:
    """The envelope: what happened (`type`), when, to what (`data`), and why (correlation/causation)."""

    id: str
    type: str
    timestamp: str
    data: Any
    tags: list[str] = field(default_factory=list)
    correlation_id: str | None = None
    causation_id: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({
            "id": self.id,
            "type": self.type,
            "timestamp": self.timestamp,
            "tags": list(self.tags),
            "data": self.data,
            "metadata": {"correlationId": self.correlation_id or "", "causationId": self.causation_id or ""},
        }, separators=(",", ":")).encode()


def new_event(type: str, data: Any, *, tags: list[str] | None = None, correlation_id: str | None = None,
              causation_id: str | None = None, event_id: str | None = None) -> Event:
    """A new event with a fresh UUIDv7 id and the current UTC time."""
    if not type:
        raise ValueError("an event needs a type")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    eid = event_id or uuid7()
    # A first event in a chain correlates with itself.
    return Event(id=eid, type=type, timestamp=now, data=data, tags=list(tags or []),
                 correlation_id=correlation_id or eid, causation_id=causation_id)


def event_headers(event: Event) -> dict[str, str]:
    headers = {"Nats-Msg-Id": event.id, "Correlation-Id": event.correlation_id or event.id}
    if event.causation_id:
        headers["Causation-Id"] = event.causation_id
    return headers


async def publish_event(nc: Any, subject: str, event: Event, *, timeout: float = 5.0) -> dict[str, Any]:
    """Publish to a stream and return its acknowledgement (`{"stream","seq","duplicate"}`).

    Raises natsop's errors: `Unavailable` (no_responders) when no stream captures the
    subject, and the stream's own refusal (e.g. a full stream, a wrong expected sequence)
    as the matching NatsopError rather than an acknowledgement-shaped dict.
    """
    from natsop.errors import from_nats
    from natsop.wire.jsapi import decode_response, stream_request

    context = f"publish event {event.type} to {subject}"
    try:
        msg = await stream_request(nc, subject, event.to_json(), timeout=timeout, headers=event_headers(event))
    except Exception as exc:
        raise from_nats(exc, context=context) from None
    return decode_response(msg, context=context)
