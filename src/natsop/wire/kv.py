"""Key-Value on the wire (ADR-8): buckets, entries, writes and short-lived consumers.

Private to `natsop.ops.kv` (`PullConsumer` also serves `object_watch`). A bucket `B` is the stream `KV_B` capturing `$KV.B.>`;
a key is a subject under it; deletes and purges are marker messages told apart by
headers. Everything here speaks the JetStream API directly so that buckets written
by natsop and by nats.go / nats-py clients are the same thing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from nats.aio.msg import Msg

from natsop.errors import NatsopError, NotFound, ServerError, Unavailable, from_nats
from natsop.formats import duration_ns, parse_time
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi, Resend, decode_response, stream_request, subject_counts

__all__ = [
    "HDR_EXPECTED_LAST_SUBJECT_SEQ",
    "HDR_OPERATION",
    "HDR_ROLLUP",
    "HDR_TTL",
    "Bucket",
    "PullConsumer",
    "RawEntry",
    "bind",
    "direct_batch",
    "get_last",
    "get_revision",
    "is_wrong_last_sequence",
    "kv_stream",
    "publish",
    "subject_count",
]

KV_STREAM_PREFIX = "KV_"
HDR_OPERATION = "KV-Operation"
HDR_MARKER_REASON = "Nats-Marker-Reason"
HDR_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HDR_ROLLUP = "Nats-Rollup"
HDR_TTL = "Nats-TTL"
# 10071 "wrong last sequence: N"; 10164 is the same check failing against the constant 0 (nats-py maps both).
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})

Operation = Literal["PUT", "DEL", "PURGE"]


def kv_stream(bucket: str) -> str:
    return f"{KV_STREAM_PREFIX}{bucket}"


@dataclass(frozen=True)
class Bucket:
    """A bound bucket: where its keys are read and written, and how it is read."""

    name: str
    stream: str
    read_prefix: str
    write_prefix: str
    direct: bool
    info: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.info.get("config") or {})

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.info.get("state") or {})

    def subject(self, key: str) -> str:
        return f"{self.read_prefix}{key}"

    def write_subject(self, key: str) -> str:
        return f"{self.write_prefix}{key}"

    def key_of(self, subject: str) -> str:
        return subject[len(self.read_prefix):] if subject.startswith(self.read_prefix) else subject


async def bind(ctx: Context, account_name: str | None, bucket: str) -> tuple[JsApi, Bucket]:
    """Look the bucket up (one STREAM.INFO), as nats.go does when it binds to a bucket."""
    js = await ctx.js(account_name)
    stream = kv_stream(bucket)
    try:
        info = await js.request(f"STREAM.INFO.{stream}", context=f"bucket {bucket}")
    except NotFound as exc:
        if exc.code == "stream_not_found":
            raise NotFound(f"bucket {bucket!r} does not exist", code="bucket_not_found",
                           hint="List buckets with kv_ls, or create this one with kv_add.") from None
        raise
    cfg = info.get("config") or {}
    # A mirror bucket holds its origin's subjects; writes go to the origin (ADR-8 topologies).
    origin = bucket
    mirror = cfg.get("mirror") or {}
    mirror_name = str(mirror.get("name") or "")
    if mirror_name.startswith(KV_STREAM_PREFIX):
        origin = mirror_name[len(KV_STREAM_PREFIX):]
    prefix = f"$KV.{origin}."
    return js, Bucket(name=bucket, stream=stream, read_prefix=prefix, write_prefix=prefix,
                      direct=bool(cfg.get("allow_direct")), info=info)


@dataclass
class RawEntry:
    """One stored message of a bucket, before it is presented."""

    subject: str
    seq: int
    time: datetime | None
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    pending: int | None = None

    @property
    def operation(self) -> Operation:
        op = self.headers.get(HDR_OPERATION, "")
        if op == "DEL":
            return "DEL"
        if op == "PURGE":
            return "PURGE"
        # Markers the server writes itself (2.11+) carry a reason instead of KV-Operation.
        reason = self.headers.get(HDR_MARKER_REASON, "")
        if reason in ("MaxAge", "Purge"):
            return "PURGE"
        if reason == "Remove":
            return "DEL"
        return "PUT"

    @property
    def deleted(self) -> bool:
        return self.operation != "PUT"


def _headers(raw: Any) -> dict[str, str]:
    # nats-py keys some status headers by an Enum; use their string values.
    out: dict[str, str] = {}
    for k, v in dict(raw or {}).items():
        out[str(getattr(k, "value", k))] = str(v[-1] if isinstance(v, list) and v else v)
    return out


def parse_header_block(raw: bytes) -> dict[str, str]:
    """Headers from a `NATS/1.0` block as STREAM.MSG.GET returns them (base64-decoded)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _status(headers: dict[str, str]) -> tuple[str, str]:
    return headers.get("Status", ""), headers.get("Description", "")


def entry_from_direct(msg: Msg) -> RawEntry | None:
    """A Direct Get reply: the message with Nats-* headers, or None for 404."""
    hdrs = _headers(msg.headers)
    status, desc = _status(hdrs)
    if status == "404":
        return None
    if status == "503":
        raise Unavailable("no responders for Direct Get", code="no_responders",
                          hint="The bucket's stream may not allow direct gets, or JetStream is unavailable.")
    if status:
        raise ServerError(f"Direct Get answered {status} {desc}".strip())
    pending = hdrs.get("Nats-Num-Pending")
    return RawEntry(subject=hdrs.get("Nats-Subject", ""), seq=int(hdrs.get("Nats-Sequence") or 0),
                    time=parse_time(hdrs.get("Nats-Time-Stamp")), headers=hdrs, data=msg.data or b"",
                    pending=int(pending) if pending is not None else None)


def entry_from_msg_get(resp: dict[str, Any]) -> RawEntry:
    m = resp.get("message") or {}
    hdrs = parse_header_block(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
    return RawEntry(subject=str(m.get("subject") or ""), seq=int(m.get("seq") or 0), time=parse_time(m.get("time")),
                    headers=hdrs, data=base64.b64decode(m.get("data") or ""))


def entry_from_consumer(msg: Msg) -> RawEntry:
    md = msg.metadata
    return RawEntry(subject=msg.subject, seq=int(md.sequence.stream), time=md.timestamp,
                    headers=_headers(msg.headers), data=msg.data or b"", pending=int(md.num_pending))


async def _direct_get(js: JsApi, b: Bucket, suffix: str, body: dict[str, Any] | None) -> RawEntry | None:
    subject = js.subject(f"DIRECT.GET.{b.stream}{suffix}")
    payload = json.dumps(body).encode() if body else b""
    try:
        msg = await stream_request(js.nc, subject, payload, timeout=js.timeout)  # a new bucket may lack interest yet
    except Exception as exc:
        raise from_nats(exc, context=f"read bucket {b.name}") from None
    return entry_from_direct(msg)


async def _msg_get(js: JsApi, b: Bucket, body: dict[str, Any]) -> RawEntry | None:
    try:
        resp = await js.request(f"STREAM.MSG.GET.{b.stream}", body, context=f"read bucket {b.name}")
    except NotFound:
        return None
    return entry_from_msg_get(resp)


async def get_last(js: JsApi, b: Bucket, key: str) -> RawEntry | None:
    """The key's latest entry (a value or a delete/purge marker), or None if it has none."""
    subject = b.subject(key)
    if b.direct:
        return await _direct_get(js, b, f".{subject}", None)
    return await _msg_get(js, b, {"last_by_subj": subject})


async def get_revision(js: JsApi, b: Bucket, seq: int) -> RawEntry | None:
    if b.direct:
        return await _direct_get(js, b, "", {"seq": seq})
    return await _msg_get(js, b, {"seq": seq})


async def next_for_subject(js: JsApi, b: Bucket, subject: str, seq: int) -> RawEntry | None:
    """The first entry on `subject` at or after `seq` (read from the stream leader)."""
    return await _msg_get(js, b, {"seq": max(seq, 1), "next_by_subj": subject})


async def direct_batch(js: JsApi, b: Bucket, body: dict[str, Any], *, limit: int) -> list[RawEntry]:
    """A batched Direct Get: up to `limit` messages in one request, ended by the server's EOB."""
    nc = js.nc
    inbox = nc.new_inbox()
    out: list[RawEntry] = []
    try:
        sub = await nc.subscribe(inbox)
    except Exception as exc:
        raise from_nats(exc, context=f"read bucket {b.name}") from None
    try:
        async def send() -> None:
            await nc.publish(js.subject(f"DIRECT.GET.{b.stream}"), json.dumps(body).encode(), reply=inbox)

        await send()
        resend = Resend(send)  # a new bucket's replicas may not have made their interest known here yet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + js.timeout
        while len(out) < limit:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"read bucket {b.name}: the server did not finish the batch in time", code="timeout")
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                raise Unavailable(f"read bucket {b.name}: the server did not answer in time", code="timeout") from None
            status, _ = _status(_headers(msg.headers))
            if status in ("204", "404"):  # end of batch, or nothing at all
                break
            if status == "503" and not out and await resend.again(remaining):
                continue
            entry = entry_from_direct(msg)
            if entry is None:
                break
            out.append(entry)
    except NatsopError:
        raise
    except Exception as exc:
        raise from_nats(exc, context=f"read bucket {b.name}") from None
    finally:
        await sub.unsubscribe()
    return out


def is_wrong_last_sequence(err: NatsopError) -> bool:
    return err.details.get("err_code") in _WRONG_LAST_SEQUENCE


async def publish(js: JsApi, subject: str, data: bytes, headers: dict[str, str] | None, *, context: str) -> int:
    """Publish to the bucket's stream and return the stored sequence (the new revision)."""
    try:
        msg = await stream_request(js.nc, subject, data, timeout=js.timeout, headers=headers or None)
    except Exception as exc:
        raise from_nats(exc, context=context) from None
    ack = decode_response(msg, context=context)
    return int(ack.get("seq") or 0)


async def subject_count(js: JsApi, stream: str, subject: str) -> int:
    """Messages stored on one subject (the revisions a key holds)."""
    return (await subject_counts(js, stream, subject)).get(subject, 0)


class PullConsumer:
    """An ephemeral pull consumer (no acks, memory, one replica) that is deleted on exit.

    Pulls are bounded (`batch`, `expires`), so the server sends only what is asked for;
    `inactive_threshold` removes the consumer even if natsop dies before deleting it.
    """

    def __init__(self, js: JsApi, stream: str, config: dict[str, Any]) -> None:
        self.js = js
        self.stream = stream
        self.config = {"ack_policy": "none", "mem_storage": True, "num_replicas": 1, "replay_policy": "instant",
                       "inactive_threshold": duration_ns(30), **config}
        self.name = ""
        self.num_pending = 0
        self._inbox = ""
        self._pulls = 0
        self._sub: Any = None

    async def __aenter__(self) -> PullConsumer:
        info = await self.js.request(f"CONSUMER.CREATE.{self.stream}",
                                     {"stream_name": self.stream, "config": self.config, "action": "create"},
                                     context=f"consumer on {self.stream}")
        self.name = str(info.get("name") or "")
        self.num_pending = int(info.get("num_pending") or 0)
        try:
            self._inbox = self.js.nc.new_inbox()
            self._sub = await self.js.nc.subscribe(f"{self._inbox}.*")
        except Exception as exc:
            await self._delete()
            raise from_nats(exc, context=f"consumer on {self.stream}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            # The connection may be gone; the server forgets the inbox with it.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        await self._delete()

    async def _delete(self) -> None:
        if not self.name:
            return
        # If this fails, inactive_threshold removes the consumer.
        with contextlib.suppress(NatsopError):
            await self.js.request(f"CONSUMER.DELETE.{self.stream}.{self.name}", context="delete consumer")

    async def fetch(self, batch: int, expires_s: float) -> AsyncGenerator[RawEntry, None]:
        """Yield up to `batch` entries, stopping when the pull is done or `expires_s` has passed."""
        async with contextlib.aclosing(self.fetch_msgs(batch, expires_s)) as msgs:
            async for msg in msgs:
                yield entry_from_consumer(msg)

    async def fetch_msgs(self, batch: int, expires_s: float) -> AsyncGenerator[Msg, None]:
        """`fetch`, yielding the messages as delivered."""
        self._pulls += 1
        reply = f"{self._inbox}.{self._pulls}"
        nc = self.js.nc
        request = {"batch": batch, "expires": max(duration_ns(expires_s), 1_000_000)}

        async def send() -> None:
            try:
                await nc.publish(self.js.subject(f"CONSUMER.MSG.NEXT.{self.stream}.{self.name}"),
                                 json.dumps(request).encode(), reply=reply)
            except Exception as exc:
                raise from_nats(exc, context=f"pull from {self.stream}") from None

        await send()
        resend = Resend(send)  # a new consumer's interest may not have reached this server yet (a cluster)
        loop = asyncio.get_running_loop()
        # The server ends an unfilled pull with a 408 at `expires`; allow it a moment to arrive.
        deadline = loop.time() + expires_s + 0.25
        got = 0
        while got < batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                msg = await self._sub.next_msg(timeout=remaining)
            except TimeoutError:
                return
            except Exception as exc:
                raise from_nats(exc, context=f"pull from {self.stream}") from None
            hdrs = _headers(msg.headers)
            status, desc = _status(hdrs)
            if status:
                if msg.subject != reply or status == "100":
                    continue  # a late status for an earlier pull, or a heartbeat
                if status in ("404", "408"):
                    return
                if status == "503" and await resend.again(remaining):
                    continue
                raise Unavailable(f"pull from {self.stream}: {status} {desc}".strip(), code="consumer_interrupted",
                                  hint="The consumer was removed or its leader changed; call again.")
            got += 1
            yield msg
