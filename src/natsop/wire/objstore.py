"""The Object Store on the wire (ADR-20): names, metadata records, and chunks streamed both ways.

Private to natsop; `natsop.ops.object` builds the tools on it. It speaks the JetStream
API and core NATS directly, so that what it writes is what nats.go writes and what
any ADR-20 client writes is read here:

- bucket `B` is the stream `OBJ_B` over `$O.B.C.>` (chunks) and `$O.B.M.>` (metadata);
- an object's chunks go to `$O.B.C.<nuid>`, a fresh nuid on every put;
- its metadata is one JSON record on `$O.B.M.<base64url(name), padded>`, published with
  `Nats-Rollup: sub` so that only the latest record per object stays in the stream;
- the digest is `SHA-256=<base64url(sha256)>`; the modification time is the
  metadata message's time, never a stored value.

Memory stays bounded whatever the object's size: a put has at most a window of
chunks awaiting acknowledgement, a get holds at most a few batches of chunks, and
hashing and file I/O run in a worker thread next to the network traffic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.nuid import NUID

from natsop.errors import Conflict, NatsopError, NotFound, ServerError, Unavailable, UserError, from_nats
from natsop.wire.jsapi import JsApi, stream_request

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DIGEST_PREFIX",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "DigestMismatch",
    "DirectReader",
    "RawMsg",
    "StoredMeta",
    "bucket_error",
    "chunk_subject",
    "decode_digest",
    "encode_name",
    "fetch_bucket",
    "meta_config",
    "meta_of_delivery",
    "meta_subject",
    "publish_meta",
    "purge_subject",
    "put_object",
    "read_chunks",
    "read_meta",
    "read_meta_at",
    "scan_meta",
    "stream_name",
]

DEFAULT_CHUNK_SIZE = 128 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 8 * 1024 * 1024
DIGEST_PREFIX = "SHA-256="
# nats.go marshals its zero time here: the real time is the message's, never a stored one.
ZERO_TIME = "0001-01-01T00:00:00Z"

# A put keeps at most this many bytes of chunks unacknowledged; a get asks for
# batches of this many bytes and holds at most _GET_QUEUE of them waiting for the disk.
PUT_WINDOW_BYTES = 8 * 1024 * 1024
GET_BATCH_BYTES = 4 * 1024 * 1024
_GET_QUEUE = 1
_READ_BLOCK_BYTES = 1024 * 1024
ACK_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 5.0
# A replica serving Direct Get may trail the leader for a moment after a put.
_SHORT_READ_RETRIES = 5
_MAX_SUBJECT_BYTES = 4000

Progress = Callable[[int, int | None], Awaitable[None]]

_nuid = NUID()


def new_nuid() -> str:
    return _nuid.next().decode()


def stream_name(bucket: str) -> str:
    return f"OBJ_{bucket}"


def encode_name(name: str) -> str:
    """The metadata subject's last token: base64 URL-safe *with* padding, as nats.go's URLEncoding."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def meta_subject(bucket: str, name: str) -> str:
    subject = f"$O.{bucket}.M.{encode_name(name)}"
    if len(subject) > _MAX_SUBJECT_BYTES:
        raise UserError(f"object name is too long ({len(name.encode())} bytes)", code="invalid_object_name",
                        hint="Object names must stay under about 2,900 bytes (they become a subject).")
    return subject


def chunk_subject(bucket: str, nuid: str) -> str:
    return f"$O.{bucket}.C.{nuid}"


def all_meta(bucket: str) -> str:
    return f"$O.{bucket}.M.>"


def digest_text(raw: bytes) -> str:
    return DIGEST_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii")


def decode_digest(text: str | None) -> bytes | None:
    """The raw sha256 of a `SHA-256=<base64url>` digest, or None when it is absent or not one."""
    if not text or "=" not in text:
        return None
    kind, _, value = text.partition("=")
    if kind.upper() != "SHA-256":
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def rfc3339_ns(ns: int) -> str:
    """Nanoseconds since the epoch as the server writes times (RFC 3339, UTC, nanoseconds)."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


# ---------------------------------------------------------------------------------------------
# Errors


def bucket_error(err: NatsopError, bucket: str) -> NatsopError:
    """Give the stream-level errors their Object Store meaning."""
    err_code = int(err.details.get("err_code") or 0)
    desc = err.message.lower()
    if err.code == "stream_not_found" or err_code == 10059:
        return NotFound(f"object store bucket {bucket!r} does not exist", code="bucket_not_found",
                        hint="List buckets with object_ls (`natsop object ls`), or create it with object_add.")
    if err_code == 10109 or "sealed" in desc:
        return Conflict(f"object store bucket {bucket!r} is sealed: it accepts no changes", code="bucket_sealed",
                        hint="Sealing is permanent. Write to another bucket.")
    if "maximum bytes exceeded" in desc or "maximum messages exceeded" in desc or "insufficient resources" in desc:
        return Conflict(f"object store bucket {bucket!r} is full: {err.message}", code="bucket_full",
                        hint="Delete objects you no longer need, or raise the bucket's max_bytes.")
    if "message size exceeds maximum" in desc:
        return UserError(f"a chunk is larger than bucket {bucket!r} allows: {err.message}", code="chunk_too_large",
                         hint="Use a smaller chunk_size.")
    return err


def _api_error(data: bytes, bucket: str, what: str) -> NatsopError | None:
    """The error in a JetStream publish acknowledgement, if any."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ServerError(f"{what}: the server's acknowledgement is not JSON")
    if not isinstance(doc, dict):
        return ServerError(f"{what}: unexpected acknowledgement")
    if doc.get("error"):
        from natsop.errors import from_api_error

        return bucket_error(from_api_error(doc["error"], context=what), bucket)
    return None


def _status(msg: Msg) -> str | None:
    hdrs = msg.headers or {}
    status = hdrs.get("Status")
    return str(status) if status else None


def _no_stream(bucket: str) -> NatsopError:
    return NotFound(f"object store bucket {bucket!r} does not exist (nothing stores its subjects)",
                    code="bucket_not_found", hint="List buckets with object_ls, or create it with object_add.")


# ---------------------------------------------------------------------------------------------
# Metadata records


@dataclass(frozen=True)
class StoredMeta:
    """One object's metadata record as stored, with its stream sequence and time."""

    doc: dict[str, Any]
    seq: int
    time: str | None

    @classmethod
    def parse(cls, data: bytes, seq: int, time: str | None, *, subject: str = "") -> StoredMeta:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ServerError(f"the metadata record at {subject or seq} is not an object-store record",
                              code="bad_object_meta", hint="Another program wrote there; inspect it with stream_get.")
        return cls(doc=doc, seq=seq, time=time)

    @property
    def name(self) -> str:
        return str(self.doc.get("name") or "")

    @property
    def nuid(self) -> str:
        return str(self.doc.get("nuid") or "")

    @property
    def size(self) -> int:
        return int(self.doc.get("size") or 0)

    @property
    def chunks(self) -> int:
        return int(self.doc.get("chunks") or 0)

    @property
    def digest(self) -> str | None:
        value = self.doc.get("digest")
        return str(value) if value else None

    @property
    def deleted(self) -> bool:
        return bool(self.doc.get("deleted"))

    @property
    def options(self) -> dict[str, Any]:
        opts = self.doc.get("options")
        return opts if isinstance(opts, dict) else {}

    @property
    def max_chunk_size(self) -> int | None:
        value = self.options.get("max_chunk_size")
        return int(value) if value else None

    @property
    def link(self) -> tuple[str, str | None] | None:
        """(bucket, name) this record links to; name None for a link to a whole bucket."""
        link = self.options.get("link")
        if not isinstance(link, dict):
            return None
        return str(link.get("bucket") or ""), (str(link["name"]) if link.get("name") else None)


async def fetch_bucket(js: JsApi, bucket: str, **body: Any) -> dict[str, Any]:
    """The bucket's stream info (`body` may carry `subjects_filter`)."""
    try:
        return await js.request(f"STREAM.INFO.{stream_name(bucket)}", body or None,
                                context=f"object store bucket {bucket}")
    except NatsopError as err:
        raise bucket_error(err, bucket) from None


async def read_meta(js: JsApi, bucket: str, name: str) -> StoredMeta | None:
    """The object's latest metadata record, from the stream leader (so it sees the last write)."""
    subject = meta_subject(bucket, name)
    try:
        resp = await js.request(f"STREAM.MSG.GET.{stream_name(bucket)}", {"last_by_subj": subject},
                                context=f"object {name!r} in bucket {bucket}")
    except NatsopError as err:
        if err.code == "message_not_found" or int(err.details.get("err_code") or 0) == 10037:
            return None
        raise bucket_error(err, bucket) from None
    message = resp.get("message") or {}
    data = base64.b64decode(message.get("data") or "")
    return StoredMeta.parse(data, int(message.get("seq") or 0), message.get("time"), subject=subject)


async def read_meta_at(js: JsApi, bucket: str, seq: int) -> StoredMeta:
    """The metadata record stored at `seq` (to learn the time the server gave it)."""
    try:
        resp = await js.request(f"STREAM.MSG.GET.{stream_name(bucket)}", {"seq": seq},
                                context=f"metadata record {seq} in bucket {bucket}")
    except NatsopError as err:
        raise bucket_error(err, bucket) from None
    message = resp.get("message") or {}
    data = base64.b64decode(message.get("data") or "")
    return StoredMeta.parse(data, seq, message.get("time"), subject=str(message.get("subject") or ""))


async def publish_meta(nc: NATS, bucket: str, doc: dict[str, Any]) -> int:
    """Store a metadata record, replacing the object's previous one; returns its sequence."""
    subject = meta_subject(bucket, str(doc["name"]))
    what = f"store metadata of {doc['name']!r} in bucket {bucket}"
    try:
        reply = await stream_request(nc, subject, json.dumps(doc, separators=(",", ":")).encode(),
                                     timeout=REPLY_TIMEOUT_S, headers={"Nats-Rollup": "sub"})
    except Exception as exc:
        err = from_nats(exc, context=what)
        raise (_no_stream(bucket) if err.code == "no_responders" else err) from None
    if _status(reply) == "503":
        raise _no_stream(bucket)
    problem = _api_error(reply.data, bucket, what)
    if problem is not None:
        raise problem
    return int(json.loads(reply.data).get("seq") or 0)


async def purge_subject(js: JsApi, bucket: str, subject: str) -> int:
    try:
        resp = await js.request(f"STREAM.PURGE.{stream_name(bucket)}", {"filter": subject},
                                context=f"purge {subject}")
    except NatsopError as err:
        raise bucket_error(err, bucket) from None
    return int(resp.get("purged") or 0)


# ---------------------------------------------------------------------------------------------
# Reading stored messages in batches (Direct Get), with the leader's MSG.GET as fallback


@dataclass(frozen=True)
class RawMsg:
    seq: int
    subject: str
    data: bytes
    time: str | None
    pending: int | None


class DirectReader:
    """Batched reads of the messages on a subject (wildcards allowed) from a sequence on.

    Uses Direct Get `next_by_subj` + `batch` (ADR-31): one request returns up to a
    batch of messages and an end-of-batch marker. Each request has its own reply
    subject, so a late answer to an abandoned request is never taken for a new one.
    Streams without `allow_direct` are read one message per request from the leader.
    """

    def __init__(self, nc: NATS, js: JsApi, bucket: str) -> None:
        self.nc = nc
        self.js = js
        self.bucket = bucket
        self.stream = stream_name(bucket)
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self._req = 0
        self._direct = True

    async def __aenter__(self) -> DirectReader:
        async def on_msg(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=on_msg)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def batch(self, subject: str, seq: int, count: int, max_bytes: int) -> tuple[list[RawMsg], int | None]:
        """Up to `count` messages (about `max_bytes`) on `subject` from `seq` on, and how many remain after."""
        if self._direct:
            try:
                return await self._direct_batch(subject, seq, count, max_bytes)
            except _NoDirect:
                self._direct = False
        return await self._leader_batch(subject, seq, count, max_bytes)

    async def _direct_batch(self, subject: str, seq: int, count: int,
                            max_bytes: int) -> tuple[list[RawMsg], int | None]:
        self._req += 1
        reply = f"{self._inbox}.{self._req}"
        body = {"seq": max(seq, 1), "next_by_subj": subject, "batch": count, "max_bytes": max_bytes}
        try:
            await self.nc.publish(f"{self.js.prefix}.DIRECT.GET.{self.stream}", json.dumps(body).encode(), reply=reply)
        except Exception as exc:
            raise from_nats(exc, context=f"read {subject}") from None
        out: list[RawMsg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLY_TIMEOUT_S
        while True:
            try:
                msg = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise Unavailable(f"the server stopped answering while reading {subject}", code="timeout") from None
            if msg.subject != reply:
                continue  # a late answer to an earlier request
            deadline = loop.time() + REPLY_TIMEOUT_S
            hdrs = msg.headers or {}
            status = _status(msg)
            if status == "204":  # end of batch
                return out, _int(hdrs.get("Nats-Num-Pending"))
            if status == "404":
                return out, 0
            if status == "503":
                raise _NoDirect
            if status is not None:
                raise ServerError(f"reading {subject} failed: status {status} {hdrs.get('Description', '')}".strip())
            out.append(RawMsg(seq=int(hdrs.get("Nats-Sequence") or 0), subject=str(hdrs.get("Nats-Subject") or ""),
                              data=msg.data, time=hdrs.get("Nats-Time-Stamp"),
                              pending=_int(hdrs.get("Nats-Num-Pending"))))

    async def _leader_batch(self, subject: str, seq: int, count: int,
                            max_bytes: int) -> tuple[list[RawMsg], int | None]:
        out: list[RawMsg] = []
        size = 0
        while len(out) < count and (size < max_bytes or not out):
            try:
                resp = await self.js.request(f"STREAM.MSG.GET.{self.stream}",
                                             {"seq": max(seq, 1), "next_by_subj": subject}, context=f"read {subject}")
            except NatsopError as err:
                if err.code == "message_not_found" or int(err.details.get("err_code") or 0) == 10037:
                    return out, 0
                raise bucket_error(err, self.bucket) from None
            m = resp.get("message") or {}
            data = base64.b64decode(m.get("data") or "")
            out.append(RawMsg(seq=int(m["seq"]), subject=str(m.get("subject") or ""), data=data,
                              time=m.get("time"), pending=None))
            size += len(data)
            seq = int(m["seq"]) + 1
        return out, None


class _NoDirect(Exception):
    """The stream does not serve Direct Get (allow_direct is off)."""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def scan_meta(nc: NATS, js: JsApi, bucket: str, start_seq: int,
                    max_msgs: int) -> AsyncIterator[tuple[StoredMeta, int | None]]:
    """Metadata records from `start_seq` on, in stream order, with how many records follow each.

    Every record is published with a subject rollup, so each object has exactly one.
    """
    async with DirectReader(nc, js, bucket) as reader:
        seq = start_seq
        while True:
            msgs, pending = await reader.batch(all_meta(bucket), seq, max_msgs, 1024 * 1024)
            for m in msgs:
                yield StoredMeta.parse(m.data, m.seq, m.time, subject=m.subject), m.pending
            if not msgs or pending == 0:
                return
            seq = msgs[-1].seq + 1


def meta_config(bucket: str, *, include_current: bool) -> dict[str, Any]:
    """Consumer settings that deliver a bucket's new metadata records (optionally every current one first)."""
    return {"deliver_policy": "last_per_subject" if include_current else "new", "filter_subject": all_meta(bucket)}


def meta_of_delivery(msg: Msg) -> tuple[StoredMeta, int | None]:
    """A metadata record delivered by a consumer, and how many more were waiting behind it."""
    seq, ns, pending = _ack_fields(msg.reply)
    return StoredMeta.parse(msg.data, seq, rfc3339_ns(ns) if ns else None, subject=msg.subject), pending


def _ack_fields(reply: str) -> tuple[int, int, int | None]:
    """(stream sequence, time in ns, pending) from a `$JS.ACK...` reply subject (v1 or v2 layout)."""
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[7]), int(tokens[8])
        if len(tokens) >= 11:
            return int(tokens[7]), int(tokens[9]), int(tokens[10])
    except ValueError:
        pass
    return 0, 0, None


# ---------------------------------------------------------------------------------------------
# Put


class _AckWindow:
    """Counts chunks awaiting acknowledgement; the first error stops the put."""

    def __init__(self, bucket: str, window: int) -> None:
        self.bucket = bucket
        self.slots = asyncio.Semaphore(window)
        self.outstanding = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.error: NatsopError | None = None

    async def take(self) -> None:
        self.check()
        try:
            await asyncio.wait_for(self.slots.acquire(), ACK_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"the server stopped acknowledging chunks for bucket {self.bucket}",
                              code="timeout", hint="Check the server's health and retry the put.") from None
        self.outstanding += 1
        self.drained.clear()

    async def on_ack(self, msg: Msg) -> None:
        if self.error is None:
            if _status(msg) == "503":
                self.error = _no_stream(self.bucket)
            else:
                self.error = _api_error(msg.data, self.bucket, f"store a chunk in bucket {self.bucket}")
        self.outstanding -= 1
        self.slots.release()
        if self.outstanding <= 0:
            self.drained.set()

    async def wait_all(self) -> None:
        try:
            await asyncio.wait_for(self.drained.wait(), ACK_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"the server did not acknowledge every chunk for bucket {self.bucket}",
                              code="timeout", hint="Check the server's health and retry the put.") from None
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every chunk sent has been answered, whatever the answers.

        A put that fails must not purge its chunks while some are still on their way: the
        purge frees space, and a chunk arriving after it would be stored for good.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), timeout_s)


async def put_object(nc: NATS, js: JsApi, bucket: str, meta: dict[str, Any], source: BinaryIO, *,
                     chunk_size: int = DEFAULT_CHUNK_SIZE, total: int | None = None,
                     progress: Progress | None = None) -> tuple[StoredMeta, StoredMeta | None]:
    """Store `source` as the object `meta["name"]`; returns the stored record and the one it replaced.

    Chunks are read and hashed in a worker thread one block ahead of the network, and
    published with at most PUT_WINDOW_BYTES awaiting acknowledgement. The metadata
    record is written last; only then are the chunks of the object it replaces purged.
    If anything fails, the new chunks are purged and the old object stays as it was.
    """
    name = str(meta["name"])
    meta_subject(bucket, name)  # refuse a name too long before sending anything
    info = await fetch_bucket(js, bucket)
    cfg = info.get("config") or {}
    if cfg.get("sealed"):
        raise bucket_error(Conflict("sealed", details={"err_code": 10109}), bucket)
    limit = int(nc.max_payload or chunk_size)
    if int(cfg.get("max_msg_size") or -1) > 0:
        limit = min(limit, int(cfg["max_msg_size"]))
    if chunk_size > limit:
        raise UserError(f"chunk_size {chunk_size} is larger than the server accepts in one message ({limit})",
                        code="chunk_too_large", hint=f"Use chunk_size <= {limit}.")
    previous = await read_meta(js, bucket, name)

    nuid = new_nuid()
    csubj = chunk_subject(bucket, nuid)
    window = _AckWindow(bucket, max(2, PUT_WINDOW_BYTES // chunk_size))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=window.on_ack)
    digest = hashlib.sha256()
    block = max(chunk_size, (_READ_BLOCK_BYTES // chunk_size) * chunk_size)

    def read_block() -> bytes:
        data = source.read(block)
        if data:
            digest.update(data)
        return data

    size = chunks = 0
    reported = 0
    done = False
    pending_read: asyncio.Future[bytes] | None = None
    try:
        pending_read = asyncio.ensure_future(asyncio.to_thread(read_block))
        while True:
            data = await pending_read
            if not data:
                break
            pending_read = asyncio.ensure_future(asyncio.to_thread(read_block))
            view = memoryview(data)
            for start in range(0, len(data), chunk_size):
                await window.take()
                piece = view[start:start + chunk_size]
                await nc.publish(csubj, piece, reply=inbox)  # type: ignore[arg-type]
                chunks += 1
                size += len(piece)
            if progress is not None and size - reported >= 1024 * 1024:
                reported = size
                await progress(size, total)
        await window.wait_all()
        record: dict[str, Any] = {"name": name}
        for key in ("description", "headers", "metadata"):
            if meta.get(key):
                record[key] = meta[key]
        record.update({
            "options": {"max_chunk_size": chunk_size},
            "bucket": bucket,
            "nuid": nuid,
            "size": size,
            "mtime": ZERO_TIME,
            "chunks": chunks,
            "digest": digest_text(digest.digest()),
        })
        seq = await publish_meta(nc, bucket, record)
        done = True
    except BaseException as exc:
        if not done:
            if pending_read is not None and not pending_read.done():
                pending_read.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(_cleanup(js, bucket, csubj, chunks, window))
        if isinstance(exc, NatsopError | asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        if isinstance(exc, OSError):
            raise UserError(f"cannot read the data to store: {exc.strerror or exc}", code="read_failed") from None
        raise from_nats(exc, context=f"put {name!r} into bucket {bucket}") from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    if previous is not None and not previous.deleted and previous.nuid and previous.nuid != nuid:
        with contextlib.suppress(NatsopError):
            await purge_subject(js, bucket, chunk_subject(bucket, previous.nuid))
    if progress is not None:
        await progress(size, total if total is not None else size)
    return await read_meta_at(js, bucket, seq), previous


async def _cleanup(js: JsApi, bucket: str, subject: str, chunks: int, window: _AckWindow) -> None:
    if chunks:
        await window.settle(ACK_TIMEOUT_S)
        await purge_subject(js, bucket, subject)


# ---------------------------------------------------------------------------------------------
# Get


class DigestMismatch(ServerError):
    """The chunks read do not hash to the digest in the metadata record."""

    code = "digest_mismatch"
    default_hint = "The stored object is corrupt or was written by a faulty client; put it again."


async def read_chunks(nc: NATS, js: JsApi, bucket: str, meta: StoredMeta, sink: Callable[[bytes], object], *,
                      progress: Progress | None = None) -> int:
    """Feed the object's chunks to `sink` (called in a worker thread, in order); verify size and digest.

    Returns the bytes read. Raises DigestMismatch or an `object_incomplete` error; the
    caller discards what `sink` received.
    """
    expected = decode_digest(meta.digest)
    if meta.size and expected is None:
        raise ServerError(f"object {meta.name!r} has no valid digest ({meta.digest!r})", code="bad_object_meta",
                          hint="The metadata was written by a faulty client; put the object again.")
    digest = hashlib.sha256()
    subject = chunk_subject(bucket, meta.nuid)
    chunk_hint = meta.max_chunk_size or DEFAULT_CHUNK_SIZE
    per_batch = max(1, GET_BATCH_BYTES // max(chunk_hint, 1))
    queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=_GET_QUEUE)
    received = 0

    def consume(batch: list[bytes]) -> None:
        for piece in batch:
            digest.update(piece)
            sink(piece)

    async def writer() -> None:
        written = 0
        reported = 0
        while (batch := await queue.get()) is not None:
            try:
                await asyncio.to_thread(consume, batch)
            except OSError as exc:
                raise UserError(f"cannot write object {meta.name!r}: {exc.strerror or exc}",
                                code="write_failed", hint="Check free space and permissions.") from None
            written += sum(len(b) for b in batch)
            if progress is not None and written - reported >= 1024 * 1024:
                reported = written
                await progress(written, meta.size)

    writer_task: asyncio.Task[None] | None = None

    async def hand_over(item: list[bytes] | None) -> None:
        """Queue a batch for the writer, or raise the writer's error if it has stopped."""
        assert writer_task is not None
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait({put, writer_task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            writer_task.result()  # raises the writer's error
            raise ServerError("the writer stopped early")

    async def fetch() -> None:
        nonlocal received
        got = 0
        seq = 1
        retries = 0
        async with DirectReader(nc, js, bucket) as reader:
            while got < meta.chunks:
                want = min(meta.chunks - got, per_batch)
                msgs, _pending = await reader.batch(subject, seq, want, GET_BATCH_BYTES)
                if not msgs:
                    retries += 1
                    if retries > _SHORT_READ_RETRIES:
                        break
                    await asyncio.sleep(0.05 * 2**retries)
                    continue
                retries = 0
                seq = msgs[-1].seq + 1
                got += len(msgs)
                received += sum(len(m.data) for m in msgs)
                await hand_over([m.data for m in msgs])
        await hand_over(None)
        if got != meta.chunks or received != meta.size:
            raise ServerError(
                f"object {meta.name!r} in bucket {bucket} is incomplete: read {got} of {meta.chunks} chunks "
                f"({received} of {meta.size} bytes)",
                code="object_incomplete",
                hint="Chunks are missing (purged, expired by the bucket's TTL, or not yet replicated); "
                     "retry, and put the object again if it persists.")

    if meta.chunks:
        writer_task = asyncio.ensure_future(writer())
        try:
            await fetch()
            await writer_task
        finally:
            if not writer_task.done():
                writer_task.cancel()
                with contextlib.suppress(BaseException):
                    await writer_task
    elif meta.size:
        raise ServerError(f"object {meta.name!r} claims {meta.size} bytes in 0 chunks", code="bad_object_meta")
    if expected is not None and digest.digest() != expected:
        raise DigestMismatch(f"object {meta.name!r} in bucket {bucket}: the data read does not match its digest "
                             f"{meta.digest}")
    if progress is not None:
        await progress(received, meta.size)
    return received

