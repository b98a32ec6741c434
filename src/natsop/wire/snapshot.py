"""The JetStream snapshot and restore protocols, streaming to and from disk.

Snapshot (`$JS.API.STREAM.SNAPSHOT.<stream>`): subscribe to an inbox first, ask the
stream leader to deliver there, write every chunk to the file as it arrives and
acknowledge it by replying to its `$JS.SNAPSHOT.ACK...` subject (that reply is the
flow control: the server keeps at most `window_size` bytes unacknowledged). The
transfer ends with an empty message: status 204, or no status at all when the
whole snapshot fit in one chunk. Status 408 ("No Interest", "No Flow Response")
and 500 are failures. The last, short chunk carries no reply subject.

Restore (`$JS.API.STREAM.RESTORE.<stream>` with `{"config","state"}`): the server
answers with a subject to upload to; every chunk is sent there as a request (the
server replies when it has consumed it, or with an error; a few requests are kept
in flight), an empty request ends the upload and its reply is the
`stream_create_response`.

Memory is bounded by the window on the way in (chunks go straight to the file) and
by one chunk on the way out (the file is read a chunk at a time).

`inspect_archive()` reads a snapshot file without a server: the S2 frames and their
checksums, then the archive inside — `NATSARC1` (nats-server 2.15+) or the tar of
earlier servers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natsop.errors import NatsopError, ServerError, Unavailable, UserError, from_api_error, from_nats
from natsop.wire.jsapi import JsApi
from natsop.wire.s2 import S2Error, S2Reader

__all__ = [
    "ARCHIVE_MAGIC",
    "CHUNK_REPLY_TIMEOUT_S",
    "DEFAULT_CHUNK_SIZE",
    "RESTORE_CHUNK_SIZE",
    "ArchiveReport",
    "Progress",
    "RestoreUpload",
    "SnapshotTransfer",
    "inspect_archive",
    "open_for_restore",
    "restore_from_file",
    "snapshot_to_file",
]

ARCHIVE_MAGIC = b"NATSARC1"
DEFAULT_CHUNK_SIZE = 128 * 1024
RESTORE_CHUNK_SIZE = 64 * 1024
# How long to wait, by default, for the server's answer to one uploaded chunk.
CHUNK_REPLY_TIMEOUT_S = 30.0
# Uploaded chunks that may await the server's answer at once.
_UPLOAD_WINDOW = 4

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


class Progress:
    """Progress reports throttled to a few per second (the last one always goes out)."""

    def __init__(self, report: ProgressFn | None, total: float | None, what: str, interval_s: float = 0.25,
                 suffix: str = "") -> None:
        self._report = report
        self.total = total
        self.what = what
        self.suffix = suffix
        self._interval = interval_s
        self._last = 0.0

    async def __call__(self, done: float, *, final: bool = False) -> None:
        if self._report is None:
            return
        now = time.monotonic()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        shown = f"{done / 1048576:.1f} MiB"
        if self.total:
            shown += f" of {self.total / 1048576:.1f} MiB"
        await self._report(done, self.total, f"{self.what}: {shown}{self.suffix}")


@dataclass
class RestoreUpload:
    """How far a restore got: `accepted` once the server created the upload, `finished` once it answered."""

    accepted: bool = False
    finished: bool = False
    sent: int = 0
    chunks: int = 0


@dataclass
class SnapshotTransfer:
    """What a snapshot delivered: the server's response (config, state) and the bytes written."""

    response: dict[str, Any]
    bytes: int = 0
    chunks: int = 0
    duration_s: float = 0.0


def _status_of(msg: Msg) -> tuple[str | None, str]:
    hdrs = msg.headers or {}
    return hdrs.get("Status"), str(hdrs.get("Description") or "")


async def snapshot_to_file(
    nc: NATS,
    js: JsApi,
    stream: str,
    out: BinaryIO,
    *,
    no_consumers: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    window_size: int | None = None,
    jsck: bool = False,
    stall_timeout_s: float = 30.0,
    progress: ProgressFn | None = None,
) -> SnapshotTransfer:
    """Snapshot `stream` into the open binary file `out`; raises NatsopError on any failure."""
    started = time.monotonic()
    inbox = nc.new_inbox()
    try:
        sub = await nc.subscribe(inbox)
    except Exception as exc:
        raise from_nats(exc, context=f"snapshot of {stream}") from None
    try:
        body: dict[str, Any] = {"deliver_subject": inbox, "no_consumers": no_consumers, "chunk_size": chunk_size,
                                "jsck": jsck}
        if window_size is not None:
            body["window_size"] = window_size
        response = await js.request(f"STREAM.SNAPSHOT.{stream}", body, timeout=max(10.0, stall_timeout_s),
                                    context=f"snapshot of stream {stream}")
        transfer = SnapshotTransfer(response=response)
        state = response.get("state") or {}
        # The snapshot is compressed, so its final size is unknown: no total, the stream's size as a hint.
        report = Progress(progress, None, f"backing up {stream}",
                          suffix=f" written (the stream stores {int(state.get('bytes') or 0) / 1048576:.1f} MiB)")
        while True:
            try:
                msg = await sub.next_msg(timeout=stall_timeout_s)
            except Exception as exc:
                if isinstance(exc, TimeoutError):  # nats-py's TimeoutError is one too
                    raise Unavailable(
                        f"snapshot of {stream} stalled: no data for {stall_timeout_s:g}s after "
                        f"{transfer.bytes} bytes",
                        code="snapshot_stalled",
                        hint="The stream leader may have failed or be overloaded; check stream_info and retry "
                             "(a larger stall_timeout_s helps on slow servers).",
                    ) from None
                raise from_nats(exc, context=f"snapshot of {stream}") from None
            status, description = _status_of(msg)
            if status is not None and status != "204":
                raise _snapshot_status_error(stream, status, description, transfer.bytes)
            if not msg.data:
                if status is None and msg.reply:
                    # An empty chunk that wants an ack is not the end; acknowledge and go on.
                    await nc.publish(msg.reply, b"")
                    continue
                break  # 204, or the bare end of a snapshot smaller than one chunk
            try:
                out.write(msg.data)
            except OSError as exc:
                raise UserError(f"snapshot of {stream}: cannot write the backup: {exc.strerror}",
                                code="backup_write_failed",
                                hint="Free space in the files directory, or write the backup elsewhere.") from None
            transfer.bytes += len(msg.data)
            transfer.chunks += 1
            if msg.reply:
                await nc.publish(msg.reply, b"")
            await report(transfer.bytes)
        out.flush()
        transfer.duration_s = time.monotonic() - started
        await report(transfer.bytes, final=True)
        return transfer
    finally:
        with contextlib.suppress(Exception):  # the connection may be gone; nothing to clean up then
            await sub.unsubscribe()


def _snapshot_status_error(stream: str, status: str, description: str, done: int) -> NatsopError:
    what = f"snapshot of {stream} failed after {done} bytes: {status} {description}".rstrip()
    if status == "408" and "interest" in description.lower():
        return Unavailable(what, code="snapshot_no_interest",
                           hint="The server saw no subscriber for the snapshot; check permissions on _INBOX.> "
                                "and retry.")
    if status == "408":
        return Unavailable(what, code="snapshot_no_flow_response",
                           hint="Chunks were not acknowledged in time (a slow disk or network); retry, perhaps "
                                "with a smaller chunk_size.")
    return ServerError(what, code="snapshot_failed",
                       hint="The server could not produce the snapshot; its log says why.")


async def restore_from_file(
    nc: NATS,
    js: JsApi,
    stream: str,
    request: dict[str, Any],
    source: BinaryIO,
    *,
    total: int | None = None,
    chunk_size: int = RESTORE_CHUNK_SIZE,
    final_timeout_s: float = 600.0,
    stall_timeout_s: float = CHUNK_REPLY_TIMEOUT_S,
    progress: ProgressFn | None = None,
    upload: RestoreUpload | None = None,
) -> dict[str, Any]:
    """Upload a snapshot file to a new stream; returns the final StreamInfo.

    `request` is the restore request body (`{"config","state"}`). Raises NatsopError
    on any failure; `upload` (when given) tells the caller how far it got, so that it
    can remove a half-restored stream: nats-server 2.15 keeps what it had stored when
    an archive ends early.
    """
    upload = upload if upload is not None else RestoreUpload()
    resp = await js.request(f"STREAM.RESTORE.{stream}", request, timeout=30.0,
                            context=f"restore of stream {stream}")
    deliver = resp.get("deliver_subject")
    if not deliver or not isinstance(deliver, str):
        raise ServerError(f"restore of {stream}: the server gave no upload subject")
    upload.accepted = True
    report = Progress(progress, float(total) if total else None, f"restoring {stream}")
    await _upload_chunks(nc, deliver, source, stream, chunk_size, upload, report, stall_timeout_s)
    await report(upload.sent, final=True)
    try:
        final = await nc.request(deliver, b"", timeout=final_timeout_s)
    except Exception as exc:
        err = from_nats(exc, context=f"restore of {stream}")
        if err.code == "timeout":
            err = Unavailable(f"restore of {stream}: no answer within {final_timeout_s:g}s after the upload",
                              code="restore_timeout",
                              hint="A large stream can take the server a while to rebuild; retry with a longer "
                                   "timeout_s.")
        raise err from None
    upload.finished = True
    return _decode_reply(final, stream) or {}


async def _upload_chunks(nc: NATS, deliver: str, source: BinaryIO, stream: str, chunk_size: int,
                         upload: RestoreUpload, report: Progress, stall_timeout_s: float) -> None:
    """Send every chunk as a request, keeping up to `_UPLOAD_WINDOW` unanswered.

    Replies come back in order on one inbox; each must be empty (any answer with a
    body is the server's error, and ends the restore). A small window hides the
    round trip: about 30% faster than one chunk at a time, and still bounded memory.
    """
    replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_reply(msg: Msg) -> None:
        replies.put_nowait(msg)

    inbox = nc.new_inbox()
    try:
        sub = await nc.subscribe(inbox, cb=on_reply)
    except Exception as exc:
        raise from_nats(exc, context=f"restore of {stream}") from None
    in_flight: collections.deque[int] = collections.deque()  # sizes of the unanswered chunks
    acked = 0

    async def take_reply() -> None:
        nonlocal acked
        try:
            reply = await asyncio.wait_for(replies.get(), stall_timeout_s)
        except TimeoutError:
            raise Unavailable(f"restore of {stream} stalled: the server did not answer a chunk for "
                              f"{stall_timeout_s:g}s after {acked} bytes", code="restore_stalled",
                              hint="The server may be overloaded or have lost the restore; check stream_info and "
                                   "retry.") from None
        status, _ = _status_of(reply)
        if status == "503":
            upload.finished = True
            raise Unavailable(f"restore of {stream} was abandoned by the server after {acked} bytes",
                              code="restore_abandoned",
                              hint="The server ends a restore after 5s without data, or after a fatal error.")
        try:
            _decode_reply(reply, stream)
        except NatsopError:
            upload.finished = True  # the server answered with an error: it has ended the restore
            raise
        acked += in_flight.popleft()

    try:
        while True:
            try:
                chunk = source.read(chunk_size)
            except OSError as exc:
                raise UserError(f"restore of {stream}: cannot read the backup: {exc.strerror}",
                                code="backup_unreadable") from None
            if not chunk:
                break
            if len(in_flight) >= _UPLOAD_WINDOW:
                await take_reply()
            try:
                await nc.publish(deliver, chunk, reply=inbox)
            except Exception as exc:
                raise from_nats(exc, context=f"restore of {stream} after {upload.sent} bytes") from None
            in_flight.append(len(chunk))
            upload.sent += len(chunk)
            upload.chunks += 1
            await report(upload.sent)
        while in_flight:
            await take_reply()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _decode_reply(msg: Msg, stream: str) -> dict[str, Any] | None:
    status, description = _status_of(msg)
    if status is not None and status not in ("200", "204"):
        raise ServerError(f"restore of {stream}: {status} {description}".rstrip(), code="restore_failed")
    if not msg.data:
        return None
    try:
        data = json.loads(msg.data)
    except ValueError:
        raise ServerError(f"restore of {stream}: the server's answer is not JSON", code="restore_failed") from None
    if not isinstance(data, dict):
        raise ServerError(f"restore of {stream}: unexpected answer from the server", code="restore_failed")
    if data.get("error"):
        err = from_api_error(data["error"], context=f"restore of {stream}")
        if err.code in ("server_error", "invalid_argument"):
            err.code = "restore_failed"
        raise err
    return data


# ---------------------------------------------------------------------------------------------
# Reading a snapshot file without a server


@dataclass
class ArchiveReport:
    """What a snapshot file holds, as far as it could be read."""

    format: str = "unknown"  # "NATSARC1", "tar" or "unknown"
    compressed_bytes: int = 0
    decompressed_bytes: int = 0
    complete: bool = False
    problems: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None  # NATSARC1: the state.json entry
    messages: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    subjects: dict[str, int] = field(default_factory=dict)
    subjects_truncated: bool = False
    consumers: list[dict[str, Any]] = field(default_factory=list)
    entries: int = 0
    entry_names: list[str] = field(default_factory=list)  # tar: a sample of member names


_MAX_SUBJECTS = 100_000
_MAX_NAMES = 50
_MAX_CONSUMER_ENTRY = 16 << 20


class _Truncated(Exception):
    pass


class _Reader:
    """Exact reads and varints over the decompressed stream, from a local buffer."""

    _REFILL = 1 << 18

    def __init__(self, raw: S2Reader) -> None:
        self.raw = raw
        self.buf = b""
        self.pos = 0

    def _fill(self, need: int) -> bool:
        """Make `need` bytes available from `pos`; False when the stream ends first."""
        while len(self.buf) - self.pos < need:
            more = self.raw.read(max(self._REFILL, need))
            if not more:
                return False
            self.buf = self.buf[self.pos:] + more
            self.pos = 0
        return True

    def exact(self, n: int) -> bytes:
        if not self._fill(n):
            raise _Truncated
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0 and not self._fill(1):
                raise _Truncated
            step = min(n, len(self.buf) - self.pos)
            self.pos += step
            n -= step

    def at_end(self) -> bool:
        return not self._fill(1)

    def uvarint(self, *, first: bool = False) -> int | None:
        value = 0
        shift = 0
        while True:
            if self.pos >= len(self.buf) and not self._fill(1):
                if first and shift == 0:
                    return None
                raise _Truncated
            b = self.buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")


def inspect_archive(path: Path, *, verify_crc: bool = True) -> ArchiveReport:
    """Decode a snapshot file completely and describe it (blocking: run it in a thread)."""
    report = ArchiveReport()
    with path.open("rb") as f:
        raw = S2Reader(f, verify_crc=verify_crc)
        try:
            head = raw.read(len(ARCHIVE_MAGIC))
            if head == ARCHIVE_MAGIC:
                report.format = "NATSARC1"
                _walk_natsarc(_Reader(raw), report)
            else:
                _walk_tar(head, raw, report)
        except S2Error as exc:
            report.problems.append(("truncated: " if exc.truncated else "corrupt: ") + str(exc))
        finally:
            report.compressed_bytes = raw.compressed_offset
            report.decompressed_bytes = raw.decompressed_offset
    return report


def _walk_natsarc(r: _Reader, report: ArchiveReport) -> None:
    try:
        while True:
            name_len = r.uvarint(first=True)
            if name_len is None:
                report.problems.append("truncated: the archive ends without its end-of-backup marker")
                return
            _timestamp = r.uvarint()
            seq = r.uvarint() or 0
            hdr_size = r.uvarint() or 0
            payload_size = r.uvarint() or 0
            if name_len > (1 << 20):
                report.problems.append(f"corrupt: entry {report.entries + 1} has an impossible name length")
                return
            name = r.exact(name_len).decode("utf-8", errors="replace")
            size = hdr_size + payload_size
            report.entries += 1
            if name == "" and seq == 0 and size == 0:
                report.complete = True
                if not r.at_end():
                    report.problems.append("corrupt: data follows the end-of-backup marker")
                return
            if seq == 0:
                if size > _MAX_CONSUMER_ENTRY:
                    report.problems.append(f"corrupt: metadata entry {name!r} of {size} bytes")
                    return
                data = r.exact(size)
                _metadata_entry(name, data, report)
                continue
            if report.last_seq is not None and seq <= report.last_seq:
                report.problems.append(f"corrupt: sequence {seq} follows {report.last_seq}")
                return
            if report.first_seq is None:
                report.first_seq = seq
            report.last_seq = seq
            report.messages += 1
            if name in report.subjects or len(report.subjects) < _MAX_SUBJECTS:
                report.subjects[name] = report.subjects.get(name, 0) + 1
            else:
                report.subjects_truncated = True
            r.skip(size)
    except _Truncated:
        report.problems.append(f"truncated: the archive ends inside entry {report.entries + 1}")
    except ValueError as exc:
        report.problems.append(f"corrupt: {exc}")


def _metadata_entry(name: str, data: bytes, report: ArchiveReport) -> None:
    try:
        doc = json.loads(data)
    except ValueError:
        report.problems.append(f"corrupt: entry {name!r} is not JSON")
        return
    if name == "state.json":
        report.state = doc if isinstance(doc, dict) else None
    elif name.startswith("consumers/"):
        report.consumers.append(doc if isinstance(doc, dict) else {"name": name})
    else:
        report.problems.append(f"unexpected metadata entry {name!r}")


class _Prefixed:
    """A readable that returns `head` first, then the rest of `raw` (tarfile reads from it)."""

    def __init__(self, head: bytes, raw: S2Reader) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                out = self._head + self._raw.read()
                self._head = b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._raw.read(n - len(out))
            return out
        return self._raw.read(n)


def _walk_tar(head: bytes, raw: S2Reader, report: ArchiveReport) -> None:
    if not head:
        report.problems.append("truncated: the archive is empty")
        return
    try:
        with tarfile.open(fileobj=_Prefixed(head, raw), mode="r|") as tar:  # type: ignore[call-overload]
            report.format = "tar"
            for member in tar:
                report.entries += 1
                if len(report.entry_names) < _MAX_NAMES:
                    report.entry_names.append(member.name)
                if member.name.startswith("obs/") and member.name.endswith("/meta.inf"):
                    report.consumers.append({"name": member.name.split("/")[1]})
        report.complete = True
    except tarfile.ReadError as exc:
        if report.format == "tar":
            report.problems.append(f"truncated or corrupt tar archive: {exc}")
        else:
            report.problems.append("unknown archive format: neither NATSARC1 nor tar")
    except EOFError:
        report.problems.append("truncated: the tar archive ends early")


def open_for_restore(path: Path) -> BinaryIO:
    """Open a snapshot file for reading (a helper so that callers stay free of blocking opens)."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise UserError(f"cannot read {path.name}: {exc.strerror}", code="backup_unreadable") from None
