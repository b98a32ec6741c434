"""The standard event envelope (public import path; the code lives in `natsop.logic.envelope`)."""

from natsop.logic.envelope import Event, event_headers, new_event, publish_event, uuid7

__all__ = ["Event", "event_headers", "new_event", "publish_event", "uuid7"]
