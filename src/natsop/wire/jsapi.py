"""Raw JetStream and system API requests.

natsop speaks the JetStream API directly (`$JS.API.*`, JSON in and out) rather than
through nats-py's typed wrappers, so that every field the server sends — including
ones newer than the client library — reaches the caller and the backups untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natsop.errors import NatsopError, ServerError, from_api_error, from_nats
from natsop.wire.connection import ensure_up, watch_lost

__all__ = ["JsApi", "Resend", "TimedReply", "gather", "gather_timed", "stream_request", "subject_counts"]

# A stream that has just been created, or whose leader has just moved, can be missing from
# a server's interest for a moment: a publish then meets "no responders" although the stream
# exists. Nobody received the message, so sending it again cannot store it twice; nats.go's
# JetStream publish retries the same way (2 more attempts, 250 ms apart).
NO_RESPONDERS_RETRIES = 2
NO_RESPONDERS_WAIT_S = 0.25


class JsApi:
    """JetStream API calls for one connection and one API prefix."""

    def __init__(self, nc: NATS, prefix: str = "$JS.API", timeout: float = 5.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout

    def subject(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    async def request(self, suffix: str, body: dict[str, Any] | None = None, *, timeout: float | None = None,
                      context: str = "") -> dict[str, Any]:
        """Send one API request and return the decoded response, raising natsop errors for API errors."""
        payload = json.dumps(body).encode() if body is not None else b""
        ensure_up(self.nc)
        try:
            msg = await self.nc.request(self.subject(suffix), payload, timeout=timeout or self.timeout)
        except Exception as exc:
            err = from_nats(exc, context=context or suffix)
            if err.code == "no_responders":
                err.hint = "JetStream may not be enabled for this account or server (or the domain/prefix is wrong)."
            raise err from None
        return decode_response(msg, context=context or suffix)

    async def paged(self, suffix: str, key: str, body: dict[str, Any] | None = None,
                    *, offset: int = 0) -> AsyncIterator[tuple[Any, int]]:
        """Yield (item, total) over a paged list/names endpoint from `offset` on."""
        while True:
            req = dict(body or {})
            req["offset"] = offset
            resp = await self.request(suffix, req)
            items = resp.get(key) or []
            total = int(resp.get("total") or 0)
            for item in items:
                yield item, total
            offset += len(items)
            if not items or offset >= total:
                return


async def stream_request(nc: NATS, subject: str, payload: bytes, *, timeout: float,
                         headers: dict[str, str] | None = None) -> Msg:
    """Publish to a stream's subject and return its acknowledgement message.

    Retries briefly on "no responders" (see NO_RESPONDERS_RETRIES), within `timeout`;
    other failures, and the last "no responders", are raised as nats-py raised them.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return await nc.request(subject, payload, timeout=max(0.001, deadline - time.monotonic()),
                                    headers=headers)
        except nats_errors.NoRespondersError:
            attempt += 1
            if attempt > NO_RESPONDERS_RETRIES or time.monotonic() + NO_RESPONDERS_WAIT_S >= deadline:
                raise
            await asyncio.sleep(NO_RESPONDERS_WAIT_S)


class Resend:
    """The same policy for a request answered by a 503 status message rather than raised by nats-py
    (a pull request, a batched Direct Get): `send` it again, at most NO_RESPONDERS_RETRIES times,
    NO_RESPONDERS_WAIT_S apart, and only while `remaining` seconds leave room for the wait."""

    def __init__(self, send: Callable[[], Awaitable[None]]) -> None:
        self._send = send
        self._count = 0

    async def again(self, remaining: float | None = None) -> bool:
        """Wait and send again; False (nothing sent) once the retries or the time are used up."""
        if self._count >= NO_RESPONDERS_RETRIES or (remaining is not None and remaining <= NO_RESPONDERS_WAIT_S):
            return False
        self._count += 1
        await asyncio.sleep(NO_RESPONDERS_WAIT_S)
        await self._send()
        return True


def decode_response(msg: Msg, *, context: str = "") -> dict[str, Any]:
    try:
        data = json.loads(msg.data) if msg.data else {}
    except ValueError:
        raise ServerError(f"{context}: the server's answer is not JSON") from None
    if not isinstance(data, dict):
        raise ServerError(f"{context}: unexpected answer from the server")
    if data.get("error"):
        raise from_api_error(data["error"], context=context)
    return data


@dataclass(frozen=True)
class TimedReply:
    """A reply to a scatter-gather request and how long after the request it arrived."""

    data: dict[str, Any]
    elapsed_s: float


async def gather_timed(nc: NATS, subject: str, body: dict[str, Any] | None = None, *, timeout: float = 2.0,
                       expect: int | None = None, idle: float = 0.3,
                       learn_expected: Callable[[dict[str, Any]], int] | None = None) -> list[TimedReply]:
    """Scatter a request and gather every reply (one per server), each with its round-trip time.

    Gathering ends at `expect` replies, at `timeout`, or — when the count is unknown — after
    `idle` seconds without a new reply. `learn_expected` may read the count from the replies
    themselves (STATSZ carries it), so that a slow server is waited for rather than missed.
    """
    ensure_up(nc)
    inbox = nc.new_inbox()
    queue: asyncio.Queue[tuple[Msg, float] | NatsopError] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put((msg, time.perf_counter()))

    replies: list[TimedReply] = []
    try:
        sub = await nc.subscribe(inbox, cb=on_msg)
    except Exception as exc:
        raise from_nats(exc, context=subject) from None
    # The connection dropping ends the wait at once: no server can answer over it any more.
    unwatch = watch_lost(nc, queue.put_nowait)
    try:
        # The subscription must reach the server before the request does.
        await nc.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = time.perf_counter()
        await nc.publish(subject, json.dumps(body or {}).encode(), reply=inbox)
        want = expect
        while want is None or len(replies) < want:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            lull = bool(replies) and want is None
            try:
                item = await asyncio.wait_for(queue.get(), min(remaining, idle) if lull else remaining)
            except TimeoutError:
                break
            if isinstance(item, NatsopError):
                raise item
            msg, received = item
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                replies.append(TimedReply(data, received - sent))
                if expect is None and learn_expected is not None:
                    want = max(want or 0, learn_expected(data)) or None
    except Exception as exc:
        raise from_nats(exc, context=subject) from None
    finally:
        unwatch()
        await sub.unsubscribe()
    return replies


async def gather(nc: NATS, subject: str, body: dict[str, Any] | None = None, *, timeout: float = 2.0,
                 expect: int | None = None, idle: float = 0.3) -> list[dict[str, Any]]:
    """Scatter a request and gather every reply's data (see `gather_timed`)."""
    return [r.data for r in await gather_timed(nc, subject, body, timeout=timeout, expect=expect, idle=idle)]


async def subject_counts(js: JsApi, stream: str, subjects_filter: str) -> dict[str, int]:
    """Messages per subject matching `subjects_filter` (STREAM.INFO's first page of subject details)."""
    info = await js.request(f"STREAM.INFO.{stream}", {"subjects_filter": subjects_filter}, context=f"stream {stream}")
    return {str(k): int(v) for k, v in ((info.get("state") or {}).get("subjects") or {}).items()}
