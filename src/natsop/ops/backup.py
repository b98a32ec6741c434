"""Backups: streams and whole accounts to disk in natscli's layout, and back.

A stream's backup is a directory holding two files, exactly as `nats stream backup`
writes them, so that either tool restores what the other wrote:

- `backup.json`: `{"config": ..., "state": ...}` as the snapshot response sent them
  (indented JSON). It is also the body of the restore request.
- `stream.tar.s2`: the snapshot's chunks concatenated untouched — an S2 stream holding
  a `NATSARC1` archive (nats-server 2.15+) or a tar (earlier servers).

An account backup is one such directory per stream, named after the stream.
Files are written under temporary names and renamed once complete, `backup.json`
last, so an interrupted backup never looks complete. Directories are resolved
inside the configured files directory; anything outside it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import Conflict, NatsopError, NotFound, Unsupported, UserError
from natsop.logic.backup_checks import config_problems, state_problems
from natsop.logic.validate import StreamName, SubjectFilter
from natsop.models import Confirmable, ConfirmParams, check_confirmation
from natsop.ops._common import PageParams
from natsop.ops.stream import StreamState
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context, ProgressFn
from natsop.wire.jsapi import JsApi
from natsop.wire.s2 import S2Error, scan_frames
from natsop.wire.snapshot import (
    CHUNK_REPLY_TIMEOUT_S,
    DEFAULT_CHUNK_SIZE,
    ArchiveReport,
    RestoreUpload,
    inspect_archive,
    open_for_restore,
    restore_from_file,
    snapshot_to_file,
)

__all__ = [
    "BACKUP_JSON",
    "DATA_FILE",
    "AccountBackupResult",
    "AccountRestoreResult",
    "BackupVerifyResult",
    "StreamBackupResult",
    "StreamRestoreResult",
]

BACKUP_JSON = "backup.json"
DATA_FILE = "stream.tar.s2"
PARTIAL = ".partial"
# Backups and restores of large streams take as long as they take; stalls are detected inside.
LONG_OP_S = 24 * 3600.0
# nats-server abandons a restore after 5s without data; wait a little longer before looking again.
_ABANDON_WAIT_S = 6.0



def _directory_field(what: str) -> Any:
    return Field(min_length=1, max_length=4096,
                 description=f"{what} (relative paths are taken from the files directory; paths outside it "
                             "are refused)")


class _SnapshotOptions(Params):
    no_consumers: bool = Field(default=False, description="Leave the consumers out (by default they are included)")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=1024 * 1024,
                            description="Bytes per chunk the server sends (1 KiB .. 1 MiB)")
    window_size: int | None = Field(default=None, ge=1024, le=32 * 1024 * 1024,
                                    description="Unacknowledged bytes the server may send ahead (server default 8 MiB)")
    check: bool = Field(default=False, description="Ask the server to check the stream while snapshotting (jsck)")
    overwrite: bool = Field(default=False, description="Replace a backup already in the directory")
    stall_timeout_s: float = Field(default=30.0, ge=1, le=600,
                                   description="Fail when the server sends nothing for this long")


# ---------------------------------------------------------------------------------------------
# Files (blocking helpers; each is quick: small metadata writes, renames, one open)


def _prepare_target(target: Path, overwrite: bool) -> bool:
    """Make the directory ready for a backup; True when it had to be created."""
    created = not target.exists()
    if not created and not target.is_dir():
        raise UserError(f"{target} exists and is not a directory", code="not_a_directory")
    if not overwrite and ((target / BACKUP_JSON).exists() or (target / DATA_FILE).exists()):
        raise Conflict(f"{target} already holds a backup", code="backup_exists",
                       hint="Choose another directory, or pass overwrite=true to replace it.")
    try:
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {target}: {exc.strerror}", code="directory_unwritable") from None
    return created


def _open_new(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}", code="directory_unwritable") from None
    return os.fdopen(fd, "wb")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    with _open_new(path) as f:
        f.write(json.dumps(doc, indent=2).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _commit(target: Path, data_tmp: Path, json_tmp: Path) -> None:
    """Put the finished files in place: data first, backup.json last (it marks the backup complete)."""
    with contextlib.suppress(FileNotFoundError):
        (target / BACKUP_JSON).unlink()  # an old backup.json must never describe the new data
    os.replace(data_tmp, target / DATA_FILE)
    os.replace(json_tmp, target / BACKUP_JSON)
    with contextlib.suppress(OSError):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # fails, as it should, unless empty


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


@dataclass
class _Backup:
    """A backup directory that passed the cheap checks."""

    path: Path
    config: dict[str, Any]
    state: dict[str, Any]
    data: Path
    data_bytes: int

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def messages(self) -> int:
        return int(self.state.get("messages") or 0)


def _read_backup_json(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = path / BACKUP_JSON
    if not meta.is_file():
        partial = (path / (BACKUP_JSON + PARTIAL)).exists() or (path / (DATA_FILE + PARTIAL)).exists()
        raise UserError(
            f"{path} holds no {BACKUP_JSON}" + (" (an interrupted backup left partial files)" if partial else ""),
            code="backup_incomplete" if partial else "not_a_backup",
            hint="Point at a directory written by stream_backup or `nats stream backup`.")
    try:
        doc = json.loads(meta.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{meta} cannot be read as JSON: {exc}", code="backup_corrupt") from None
    if not isinstance(doc, dict):
        raise UserError(f"{meta} is not a JSON object", code="backup_corrupt")
    config, state = doc.get("config"), doc.get("state")
    if not isinstance(config, dict) or not isinstance(config.get("name"), str) or not config["name"]:
        raise UserError(f"{meta} has no config with a stream name", code="backup_corrupt")
    if not isinstance(state, dict):
        raise UserError(f"{meta} has no state", code="backup_corrupt")
    return config, state


def _load_backup(path: Path) -> _Backup:
    """Read backup.json and check the data file's framing (fast: headers only)."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory", code="not_a_backup")
    config, state = _read_backup_json(path)
    data = path / DATA_FILE
    if not data.is_file():
        raise UserError(f"{path} has {BACKUP_JSON} but no {DATA_FILE}", code="backup_incomplete",
                        hint="The backup is incomplete; take it again.")
    try:
        with data.open("rb") as f:
            _, size = scan_frames(f)
    except S2Error as exc:
        code = "backup_truncated" if exc.truncated else "backup_corrupt"
        raise UserError(f"{data} is damaged: {exc}", code=code,
                        hint="This backup cannot be restored; use another copy or take it again.") from None
    except OSError as exc:
        raise UserError(f"cannot read {data}: {exc.strerror}", code="backup_unreadable") from None
    return _Backup(path=path, config=config, state=state, data=data, data_bytes=size)


# ---------------------------------------------------------------------------------------------
# Backup


class StreamBackupParams(_SnapshotOptions):
    stream: StreamName
    directory: str = _directory_field("Directory to write the backup into; created if missing")


class StreamBackupResult(Result):
    stream: str
    directory: str = Field(description="Where the backup was written")
    storage: str | None = None
    bytes: int = Field(description="Size of stream.tar.s2 (compressed snapshot)")
    chunks: int
    messages: int = Field(description="Messages in the stream when the snapshot began")
    stream_bytes: int = Field(description="Stored bytes of the stream when the snapshot began")
    first_seq: int
    last_seq: int
    consumers: int = Field(description="Consumers of the stream (included unless no_consumers)")
    duration_s: float


# JSStreamSnapshotErrF: "snapshot failed: {err}"; before 2.15 a memory store answers it with "no impl".
_SNAPSHOT_FAILED = 10064


def memory_snapshot_refusal(stream: str, storage: str | None, err: NatsopError) -> Unsupported | None:
    """The error to report when `err` means the server cannot snapshot memory streams at all, else None.

    nats-server before 2.15 has no snapshot for memory stores: the request fails with
    10064 "snapshot failed: no impl". Any other failure stays a failure.
    """
    if storage != "memory" or err.details.get("err_code") != _SNAPSHOT_FAILED or "no impl" not in err.message:
        return None
    return Unsupported(
        f"the server cannot snapshot memory stream {stream} (nats-server before 2.15 cannot): {err.message}",
        code="memory_stream_not_supported",
        hint="nats-server 2.15+ backs up memory streams; on older servers mirror the stream into a file stream "
             "and back that up.")


async def _backup_stream(ctx: Context, account_name: str | None, stream: str, target: Path,
                         opts: _SnapshotOptions, progress: ProgressFn | None) -> StreamBackupResult:
    js = await ctx.js(account_name)
    nc = await ctx.nc(account_name)
    info = await js.request(f"STREAM.INFO.{stream}", context=f"stream {stream}")
    storage = (info.get("config") or {}).get("storage")
    created = _prepare_target(target, opts.overwrite)
    data_tmp = target / (DATA_FILE + PARTIAL)
    json_tmp = target / (BACKUP_JSON + PARTIAL)
    try:
        out = _open_new(data_tmp)
        try:
            transfer = await snapshot_to_file(
                nc, js, stream, out, no_consumers=opts.no_consumers, chunk_size=opts.chunk_size,
                window_size=opts.window_size, jsck=opts.check, stall_timeout_s=opts.stall_timeout_s,
                progress=progress)
            await asyncio.to_thread(os.fsync, out.fileno())
        except NatsopError as err:
            refusal = memory_snapshot_refusal(stream, storage, err)
            if refusal is not None:
                raise refusal from None
            raise
        finally:
            out.close()
        config = transfer.response.get("config")
        state = transfer.response.get("state")
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise NatsopError(f"snapshot of {stream}: the server's answer has no config or state",
                              code="snapshot_failed")
        _write_json(json_tmp, {"config": config, "state": state})
        _commit(target, data_tmp, json_tmp)
    except OSError as exc:
        _remove(data_tmp, json_tmp)
        if created:
            _remove_empty_dir(target)
        raise UserError(f"backup of {stream}: cannot write {target}: {exc.strerror}", code="backup_write_failed",
                        hint="Free space in the files directory, or write the backup elsewhere.") from None
    except BaseException:
        _remove(data_tmp, json_tmp)
        if created:
            _remove_empty_dir(target)
        raise
    return StreamBackupResult(
        stream=stream, directory=str(target), storage=storage, bytes=transfer.bytes, chunks=transfer.chunks,
        messages=int(state.get("messages") or 0), stream_bytes=int(state.get("bytes") or 0),
        first_seq=int(state.get("first_seq") or 0), last_seq=int(state.get("last_seq") or 0),
        consumers=int(state.get("consumer_count") or 0), duration_s=round(transfer.duration_s, 3),
    )


@operation("stream_backup", cli="stream backup", aliases=("snapshot",), impact=Impact.WRITE, idempotent=False,
           args=("stream", "directory"), timeout_s=LONG_OP_S)
async def stream_backup(ctx: Context, params: StreamBackupParams) -> StreamBackupResult:
    """Back up a stream with its consumers into a directory, in natscli's format.

    Writes DIR/backup.json (config and state) and DIR/stream.tar.s2 (the server's
    snapshot, untouched). `nats stream restore` and stream_restore both read it.
    """
    target = ctx.local_path(params.directory)
    return await _backup_stream(ctx, params.account_name, params.stream, target, params, ctx.report)


class AccountBackupParams(_SnapshotOptions):
    directory: str = _directory_field("Directory to write into: one subdirectory per stream")
    streams: list[StreamName] | None = Field(default=None, max_length=100_000,
                                             description="Only these streams (default: every stream)")
    filter: SubjectFilter | None = Field(default=None, description="Only streams that capture this subject")


class AccountBackupItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    status: Literal["ok", "skipped", "failed"]
    reason: str | None = Field(default=None, description="Why it was skipped or failed")
    directory: str | None = None
    storage: str | None = None
    bytes: int = 0
    messages: int = 0
    consumers: int = 0
    duration_s: float = 0.0


class AccountBackupResult(Result):
    directory: str
    streams: list[AccountBackupItem]
    backed_up: int
    skipped: int
    failed: int
    bytes: int = Field(description="Bytes written in all")
    duration_s: float


def _prefixed(ctx: Context, prefix: str) -> ProgressFn:
    async def report(done: float, total: float | None, message: str | None) -> None:
        await ctx.report(done, total, f"{prefix} {message}" if message else prefix)

    return report


async def _stream_names(js: JsApi, subject: str | None) -> list[str]:
    names: list[str] = []
    async for name, _total in js.paged("STREAM.NAMES", "streams", {"subject": subject} if subject else None):
        names.append(str(name))
    return sorted(names)


@operation("account_backup", cli="account backup", impact=Impact.WRITE, idempotent=False, args=("directory",),
           timeout_s=LONG_OP_S)
async def account_backup(ctx: Context, params: AccountBackupParams) -> AccountBackupResult:
    """Back up every stream of the account (or the ones chosen), one subdirectory per stream.

    Each subdirectory is a stream backup that stream_restore or `nats stream restore`
    reads. A stream that cannot be backed up is reported (skipped or failed, with the
    reason) and the others go on.
    """
    if params.streams and params.filter:
        raise UserError("give either streams or filter, not both", code="invalid_argument")
    root = ctx.local_path(params.directory)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a directory", code="not_a_directory")
    js = await ctx.js(params.account_name)
    names = sorted(set(params.streams)) if params.streams else await _stream_names(js, params.filter)
    started = time.monotonic()
    items: list[AccountBackupItem] = []
    for i, name in enumerate(names, 1):
        target = root / name
        try:
            r = await _backup_stream(ctx, params.account_name, name, target, params,
                                     _prefixed(ctx, f"[{i}/{len(names)}]"))
        except NatsopError as err:
            if err.code == "memory_stream_not_supported":
                items.append(AccountBackupItem(stream=name, status="skipped", reason=err.message, storage="memory"))
            else:
                items.append(AccountBackupItem(stream=name, status="failed", reason=f"{err.code}: {err.message}"))
            continue
        items.append(AccountBackupItem(stream=name, status="ok", directory=r.directory, storage=r.storage,
                                       bytes=r.bytes, messages=r.messages, consumers=r.consumers,
                                       duration_s=r.duration_s))
    return AccountBackupResult(
        directory=str(root), streams=items,
        backed_up=sum(i.status == "ok" for i in items), skipped=sum(i.status == "skipped" for i in items),
        failed=sum(i.status == "failed" for i in items), bytes=sum(i.bytes for i in items),
        duration_s=round(time.monotonic() - started, 3))


# ---------------------------------------------------------------------------------------------
# Restore


class _RestoreOptions(BaseModel):
    replicas: int | None = Field(default=None, ge=1, le=5, description="Restore with this many replicas")
    placement_cluster: str | None = Field(default=None, max_length=255, description="Place it in this cluster")
    placement_tags: list[str] | None = Field(default=None, max_length=64, description="Place it on servers with these tags")
    timeout_s: float = Field(default=600.0, ge=1, le=86400,
                             description="How long to wait for the server to finish after the upload")
    stall_timeout_s: float = Field(default=CHUNK_REPLY_TIMEOUT_S, ge=1, le=600,
                                   description="Fail when the server does not answer an uploaded chunk for this long")
    check_archive: bool = Field(
        default=True,
        description="Read the whole archive first (one pass over the file): a damaged backup is refused before "
                    "anything changes, and per-subject counts are checked after the restore")


def _with_overrides(config: dict[str, Any], opts: _RestoreOptions) -> dict[str, Any]:
    cfg = dict(config)
    if opts.replicas is not None:
        cfg["num_replicas"] = opts.replicas
    if opts.placement_cluster is not None or opts.placement_tags is not None:
        placement = dict(cfg.get("placement") or {})
        if opts.placement_cluster is not None:
            placement["cluster"] = opts.placement_cluster
        if opts.placement_tags is not None:
            placement["tags"] = list(opts.placement_tags)
        cfg["placement"] = placement
    return cfg


async def _existing_state(js: JsApi, stream: str) -> dict[str, Any] | None:
    try:
        info = await js.request(f"STREAM.INFO.{stream}", context=f"stream {stream}")
    except NotFound:
        return None
    return dict(info.get("state") or {})


async def _remove_partial(js: JsApi, stream: str, upload: RestoreUpload) -> str:
    """Delete what a failed restore left behind; returns a sentence for the error message."""
    if not upload.accepted:
        return "nothing was created"
    removed = False
    for attempt in range(2):
        try:
            await js.request(f"STREAM.DELETE.{stream}", context=f"remove partly restored stream {stream}")
            removed = True
        except NotFound:
            pass
        except NatsopError as err:
            return (f"the partly restored stream {stream} could not be removed ({err.message}); "
                    f"delete it with stream_delete")
        if upload.finished or attempt == 1:
            break
        # The server may still be working on the upload; it abandons it after 5s without data.
        await asyncio.sleep(_ABANDON_WAIT_S)
    return f"the partly restored stream {stream} was removed" if removed else "no stream was left behind"


@dataclass
class _Restored:
    info: dict[str, Any]
    upload: RestoreUpload
    duration_s: float
    verified: bool
    differences: list[str]
    notes: list[str]


async def _upload(ctx: Context, account_name: str | None, backup: _Backup, config: dict[str, Any],
                  opts: _RestoreOptions, progress: ProgressFn | None, *, after_delete: bool) -> tuple[
                      dict[str, Any], RestoreUpload]:
    """Send the backup; on failure remove whatever the server kept, and say so in the error."""
    js = await ctx.js(account_name)
    nc = await ctx.nc(account_name)
    name = str(config["name"])
    for attempt in range(len(_RESTORE_RETRY_S) + 1):
        upload = RestoreUpload()
        source = open_for_restore(backup.data)
        try:
            info = await restore_from_file(nc, js, name, {"config": config, "state": backup.state}, source,
                                           total=backup.data_bytes, final_timeout_s=opts.timeout_s,
                                           stall_timeout_s=opts.stall_timeout_s, progress=progress, upload=upload)
            return info, upload
        except NatsopError as exc:
            outcome = await _remove_partial(js, name, upload)
            # nats-server 2.15.1 sometimes fails a restore begun right after deleting a stream of the
            # same name (the old store is still being torn down); it succeeds moments later.
            if after_delete and _STORE_RACE in exc.message and attempt < len(_RESTORE_RETRY_S):
                await asyncio.sleep(_RESTORE_RETRY_S[attempt])
                continue
            exc.message = f"{exc.message}; {outcome}"
            exc.details["partial_stream_removed"] = outcome.endswith("was removed")
            raise
        finally:
            source.close()
    raise AssertionError("unreachable")


_STORE_RACE = "does not match store"
_RESTORE_RETRY_S = (0.25, 0.5, 1.0)


def _refuse_invalid_config(backup: _Backup, config: dict[str, Any]) -> None:
    """Refuse, before anything changes, a configuration or state the server would reject.

    Deleting an existing stream and then having the restore refused would lose it.
    """
    problems = config_problems(config)[0] + state_problems(backup.state)[0]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UserError(f"the backup in {backup.path} cannot be restored as it is: {shown}; nothing was changed",
                        code="backup_config_invalid",
                        hint="backup_verify lists every problem. Correct backup.json, or restore the stream with "
                             "stream_restore and a corrected configuration in config_file.")


async def _check_archive(backup: _Backup) -> ArchiveReport:
    """Decode the whole archive; a damaged one is refused before anything on the server changes."""
    report = await asyncio.to_thread(inspect_archive, backup.data)
    if report.problems or not report.complete:
        problems = "; ".join(report.problems[:3]) or "the archive ends early"
        truncated = any(p.startswith("truncated") for p in report.problems)
        raise UserError(f"the backup in {backup.path} is damaged: {problems}; nothing was changed",
                        code="backup_truncated" if truncated else "backup_corrupt",
                        hint="Use another copy of the backup, or take it again. (check_archive=false would send "
                             "it anyway and let the server judge.)")
    return report


async def _restore_stream(ctx: Context, account_name: str | None, backup: _Backup, config: dict[str, Any],
                          opts: _RestoreOptions, progress: ProgressFn | None, *, report: ArchiveReport | None,
                          after_delete: bool = False) -> _Restored:
    started = time.monotonic()
    info, upload = await _upload(ctx, account_name, backup, config, opts, progress, after_delete=after_delete)
    duration = time.monotonic() - started
    js = await ctx.js(account_name)
    verified, differences, notes = await _verify(js, str(config["name"]), backup.state, report)
    return _Restored(info=info, upload=upload, duration_s=duration, verified=verified, differences=differences,
                     notes=notes)


_COMPARED = ("messages", "first_seq", "last_seq", "num_subjects", "num_deleted")
# The server returns at most this many subject details in one stream info.
_MAX_SUBJECT_DETAILS = 100_000


async def _verify(js: JsApi, stream: str, expected: dict[str, Any],
                  report: ArchiveReport | None) -> tuple[bool, list[str], list[str]]:
    """Compare the restored stream with the backup: counts, sequences, subjects, consumers."""
    want_subjects = (report is not None and report.format == "NATSARC1" and not report.subjects_truncated
                     and len(report.subjects) <= _MAX_SUBJECT_DETAILS)
    info: dict[str, Any] | None = None
    if want_subjects:
        try:
            info = await js.request(f"STREAM.INFO.{stream}", {"subjects_filter": ">"},
                                    context=f"verify restored stream {stream}")
        except NatsopError:
            want_subjects = False  # the server declined the subject details; compare the totals only
    if info is None:
        info = await js.request(f"STREAM.INFO.{stream}", context=f"verify restored stream {stream}")
    got = info.get("state") or {}
    differences: list[str] = []
    notes: list[str] = []
    for key in _COMPARED:
        if key in expected and int(expected.get(key) or 0) != int(got.get(key) or 0):
            differences.append(f"{key}: backup {int(expected.get(key) or 0)}, restored {int(got.get(key) or 0)}")
    if report is not None:
        if report.format == "NATSARC1":
            if report.messages != int(got.get("messages") or 0):
                differences.append(f"messages in the archive: {report.messages}, restored "
                                   f"{int(got.get('messages') or 0)}")
            if len(report.consumers) != int(got.get("consumer_count") or 0):
                differences.append(f"consumers in the archive: {len(report.consumers)}, restored "
                                   f"{int(got.get('consumer_count') or 0)}")
        if want_subjects:
            restored = {str(k): int(v) for k, v in (got.get("subjects") or {}).items()}
            if len(restored) < int(got.get("num_subjects") or 0):
                notes.append("per-subject counts not compared: the stream has more subjects than one info "
                             "request returns")
            else:
                diff = [s for s in set(restored) | set(report.subjects)
                        if restored.get(s, 0) != report.subjects.get(s, 0)]
                for s in sorted(diff)[:20]:
                    differences.append(f"subject {s}: backup {report.subjects.get(s, 0)}, restored "
                                       f"{restored.get(s, 0)}")
                if len(diff) > 20:
                    differences.append(f"... and {len(diff) - 20} more subjects differ")
        elif report.format != "NATSARC1":
            notes.append(f"per-subject counts not compared: the archive is {report.format}")
        else:
            notes.append("per-subject counts not compared: too many subjects")
    else:
        notes.append("per-subject counts not compared (check_archive is off)")
    return not differences, differences, notes


class StreamRestoreParams(ConfirmParams, _RestoreOptions):
    directory: str = _directory_field("Backup directory (with backup.json and stream.tar.s2)")
    config_file: str | None = Field(
        default=None, max_length=4096,
        description="JSON file (in the files directory) with a stream configuration to restore with instead of "
                    "the backup's; the name must be the same")


class StreamRestoreResult(Confirmable):
    stream: str
    directory: str
    backup_messages: int = Field(description="Messages recorded in backup.json")
    existing_messages: int | None = Field(default=None, description="Messages of the stream it replaces")
    replaced: bool = Field(default=False, description="True when an existing stream was deleted first")
    bytes_sent: int = 0
    duration_s: float | None = None
    state: StreamState | None = Field(default=None, description="The restored stream's state")
    verified: bool | None = Field(default=None, description="True when the restored stream matches the backup")
    differences: list[str] = Field(default_factory=list, description="How the restored stream differs")
    notes: list[str] = Field(default_factory=list)


def _load_config_file(ctx: Context, path: str, name: str) -> dict[str, Any]:
    full = ctx.local_path(path, must_exist=True)
    try:
        doc = json.loads(full.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as JSON: {exc}", code="invalid_config_file") from None
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
        doc = doc["config"]  # a StreamInfo or a backup.json
    if not isinstance(doc, dict):
        raise UserError(f"{path} does not hold a stream configuration", code="invalid_config_file")
    if doc.get("name") != name:
        raise UserError(f"{path} configures stream {doc.get('name')!r}, but the backup is of {name!r}",
                        code="invalid_config_file", hint="The configuration must keep the stream's name.")
    return doc


@operation("stream_restore", cli="stream restore", impact=Impact.DESTRUCTIVE, args=("directory",),
           timeout_s=LONG_OP_S)
async def stream_restore(ctx: Context, params: StreamRestoreParams) -> StreamRestoreResult:
    """Restore a stream from a backup directory and check the result against the backup.

    The stream must not exist; if it does, nothing happens until confirmed with the
    stream's name, then the existing stream is deleted and the backup restored. The
    archive is read in full first, so a damaged backup is refused before anything
    changes. The restored stream's message count, sequences, subjects and consumers
    are compared with the backup (`verified`, `differences`). If the restore fails,
    no half-restored stream is left behind.
    """
    backup = await asyncio.to_thread(_load_backup, ctx.local_path(params.directory))
    config = backup.config
    if params.config_file:
        config = _load_config_file(ctx, params.config_file, backup.name)
    config = _with_overrides(config, params)
    _refuse_invalid_config(backup, config)
    name = backup.name
    js = await ctx.js(params.account_name)
    existing = await _existing_state(js, name)
    result = StreamRestoreResult(done=False, stream=name, directory=str(backup.path),
                                 backup_messages=backup.messages,
                                 action=f"restore stream {name} ({backup.messages} messages) from {backup.path}")
    if existing is not None:
        result.existing_messages = int(existing.get("messages") or 0)
        result.action = (f"delete the existing stream {name} ({result.existing_messages} messages, "
                         f"{int(existing.get('consumer_count') or 0)} consumers) and restore {backup.messages} "
                         f"messages from {backup.path}")
        if not check_confirmation(params.confirm, name):
            result.confirmation_required = True
            result.confirm_with = name
            return result
    report = await _check_archive(backup) if params.check_archive else None
    if existing is not None:
        await js.request(f"STREAM.DELETE.{name}", context=f"delete stream {name} before restoring it")
        result.replaced = True
    restored = await _restore_stream(ctx, params.account_name, backup, config, params, ctx.report,
                                     report=report, after_delete=result.replaced)
    _fill(result, restored)
    return result


def _fill(result: StreamRestoreResult, restored: _Restored) -> None:
    result.done = True
    result.bytes_sent = restored.upload.sent
    result.duration_s = round(restored.duration_s, 3)
    result.state = StreamState.model_validate(restored.info.get("state") or {})
    result.verified = restored.verified
    result.differences = restored.differences
    result.notes = restored.notes


class AccountRestoreParams(ConfirmParams, _RestoreOptions):
    directory: str = _directory_field("Directory written by account_backup (one subdirectory per stream)")
    streams: list[StreamName] | None = Field(default=None, max_length=100_000,
                                             description="Only these streams (default: every backup found)")


class AccountRestoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    subdirectory: str
    exists: bool = Field(default=False, description="A stream of this name existed before the restore")
    status: Literal["pending", "restored", "skipped", "failed"]
    reason: str | None = None
    backup_messages: int = 0
    messages: int | None = Field(default=None, description="Messages after the restore")
    verified: bool | None = None
    differences: list[str] = Field(default_factory=list)


class AccountRestoreResult(Confirmable):
    directory: str
    streams: list[AccountRestoreItem]
    existing: list[str] = Field(description="Streams that exist and would be (or were) replaced")
    restored: int = 0
    skipped: int = 0
    failed: int = 0


def _replace_token(names: list[str]) -> str:
    joined = ",".join(sorted(names))
    if len(joined) <= 200:
        return f"replace {joined}"
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:8]
    return f"replace {len(names)} streams {digest}"


def _discover(root: Path, only: set[str] | None) -> tuple[list[_Backup], list[AccountRestoreItem]]:
    backups: list[_Backup] = []
    skipped: list[AccountRestoreItem] = []
    seen: set[str] = set()
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            backup = _load_backup(sub)
        except UserError as err:
            if only is None or sub.name in only:
                skipped.append(AccountRestoreItem(stream=sub.name, subdirectory=sub.name, status="skipped",
                                                  reason=f"{err.code}: {err.message}"))
            continue
        if only is not None and backup.name not in only:
            continue
        if backup.name in seen:
            skipped.append(AccountRestoreItem(stream=backup.name, subdirectory=sub.name, status="skipped",
                                              reason="another subdirectory holds a backup of the same stream"))
            continue
        seen.add(backup.name)
        backups.append(backup)
    return backups, skipped


@operation("account_restore", cli="account restore", impact=Impact.DESTRUCTIVE, args=("directory",),
           timeout_s=LONG_OP_S)
async def account_restore(ctx: Context, params: AccountRestoreParams) -> AccountRestoreResult:
    """Restore every stream backed up in a directory (one subdirectory per stream).

    Streams that already exist are refused until confirmed: the dry run lists them and
    gives the value to confirm with — `replace NAME1,NAME2,...` (or, for long lists,
    `replace N streams <digest>`), which names exactly the streams that will be
    deleted and restored. Each restore is verified like stream_restore's.
    """
    root = ctx.local_path(params.directory, must_exist=True)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory", code="not_a_directory")
    only = set(params.streams) if params.streams else None
    backups, skipped = await asyncio.to_thread(_discover, root, only)
    if not backups and not skipped:
        raise UserError(f"{root} holds no stream backups", code="not_a_backup",
                        hint="Point at a directory written by account_backup or `nats account backup`.")
    js = await ctx.js(params.account_name)
    existing: dict[str, dict[str, Any]] = {}
    for b in backups:
        state = await _existing_state(js, b.name)
        if state is not None:
            existing[b.name] = state
    items = [AccountRestoreItem(stream=b.name, subdirectory=b.path.name, exists=b.name in existing,
                                status="pending", backup_messages=b.messages) for b in backups]
    result = AccountRestoreResult(
        done=False, directory=str(root), streams=items + skipped, existing=sorted(existing),
        skipped=len(skipped),
        action=f"restore {len(backups)} streams from {root}" + (
            f", deleting the existing {', '.join(sorted(existing))} first" if existing else ""))
    if existing:
        token = _replace_token(list(existing))
        if not check_confirmation(params.confirm, token):
            result.confirmation_required = True
            result.confirm_with = token
            return result
    for i, (backup, item) in enumerate(zip(backups, items, strict=True), 1):
        try:
            config = _with_overrides(backup.config, params)
            _refuse_invalid_config(backup, config)
            report = await _check_archive(backup) if params.check_archive else None
            if item.exists:
                await js.request(f"STREAM.DELETE.{backup.name}",
                                 context=f"delete stream {backup.name} before restoring it")
            restored = await _restore_stream(ctx, params.account_name, backup, config, params,
                                             _prefixed(ctx, f"[{i}/{len(backups)}]"), report=report,
                                             after_delete=item.exists)
        except NatsopError as err:
            item.status = "failed"
            item.reason = f"{err.code}: {err.message}"
            continue
        item.status = "restored"
        item.messages = int((restored.info.get("state") or {}).get("messages") or 0)
        item.verified = restored.verified
        item.differences = restored.differences
    result.done = True
    result.restored = sum(i.status == "restored" for i in items)
    result.failed = sum(i.status == "failed" for i in items)
    return result


# ---------------------------------------------------------------------------------------------
# Verify


class BackupVerifyParams(PageParams):
    directory: str = _directory_field("A stream backup directory, or an account backup directory")
    check_data: bool = Field(default=True,
                             description="Decompress the whole archive and check every checksum (reads it all)")


class BackupCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    directory: str
    stream: str | None = None
    ok: bool
    problems: list[str] = Field(default_factory=list, description="Why it would not restore as it was")
    notes: list[str] = Field(default_factory=list)
    state: StreamState | None = Field(default=None, description="The stream's state recorded in backup.json")
    archive_bytes: int | None = None
    format: str | None = Field(default=None, description="NATSARC1 (nats-server 2.15+) or tar (earlier)")
    complete: bool | None = Field(default=None, description="The archive ends with its end marker")
    messages: int | None = Field(default=None, description="Message entries in the archive")
    first_seq: int | None = None
    last_seq: int | None = None
    subjects: int | None = Field(default=None, description="Distinct subjects in the archive")
    consumers: list[str] = Field(default_factory=list)
    entries: int | None = None
    entry_names: list[str] = Field(default_factory=list, description="Tar archives: the first member names")


class BackupVerifyResult(Result):
    directory: str
    ok: bool = Field(description="True when every backup checked is sound")
    backups: list[BackupCheck]
    total: int = Field(description="Backups found in the directory")
    offset: int
    truncated: bool = Field(description="True when more backups follow; call again with offset=next_offset")
    next_offset: int | None = None


def _consumer_name(entry: dict[str, Any]) -> str:
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    return str(cfg.get("name") or cfg.get("durable_name") or entry.get("name") or "?")


def _check_one(path: Path, check_data: bool) -> BackupCheck:
    check = BackupCheck(directory=str(path), ok=False)
    try:
        config, state = _read_backup_json(path)
    except UserError as err:
        check.problems.append(err.message)
        return check
    check.stream = str(config["name"])
    config_bad, config_notes = config_problems(config)
    state_bad, state_notes = state_problems(state)
    check.problems.extend(config_bad + state_bad)
    check.notes.extend(config_notes + state_notes)
    if not state_bad:
        check.state = StreamState.model_validate(state)
    data = path / DATA_FILE
    if not data.is_file():
        check.problems.append(f"{DATA_FILE} is missing")
        return check
    try:
        with data.open("rb") as f:
            _, check.archive_bytes = scan_frames(f)
    except S2Error as exc:
        check.problems.append(("truncated: " if exc.truncated else "corrupt: ") + str(exc))
        return check
    if not check_data:
        check.notes.append("archive contents not checked (check_data is off)")
        check.ok = not check.problems
        return check
    report = inspect_archive(data)
    check.format = report.format
    check.complete = report.complete
    check.problems.extend(report.problems)
    check.entries = report.entries
    check.consumers = [_consumer_name(c) for c in report.consumers]
    if report.format == "tar":
        check.entry_names = report.entry_names
    elif report.format == "NATSARC1":
        check.messages = report.messages
        check.first_seq = report.first_seq
        check.last_seq = report.last_seq
        check.subjects = len(report.subjects)
        if check.state is not None:
            _cross_check(check, state, report)
    check.ok = not check.problems and report.complete
    return check


def _cross_check(check: BackupCheck, state: dict[str, Any], report: ArchiveReport) -> None:
    first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
    if report.state is not None:
        for key in ("first_seq", "last_seq"):
            if int(report.state.get(key) or 0) != int(state.get(key) or 0):
                check.problems.append(f"{key} differs between backup.json ({int(state.get(key) or 0)}) and the "
                                      f"archive ({int(report.state.get(key) or 0)})")
    elif report.entries:
        check.problems.append("the archive does not start with the stream state")
    if report.first_seq is not None and (report.first_seq < first or (report.last_seq or 0) > last):
        check.problems.append(f"the archive holds sequences {report.first_seq}..{report.last_seq}, outside the "
                              f"recorded {first}..{last}")
    if report.complete and report.messages != int(state.get("messages") or 0):
        check.notes.append(f"the archive holds {report.messages} messages, backup.json records "
                           f"{int(state.get('messages') or 0)} (messages removed during the backup are left out)")


def _find_backups(root: Path) -> list[Path]:
    if (root / BACKUP_JSON).exists() or (root / DATA_FILE).exists():
        return [root]
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and any((p / n).exists() for n in (BACKUP_JSON, DATA_FILE, DATA_FILE + PARTIAL)))


@operation("backup_verify", cli="backup verify", args=("directory",), timeout_s=LONG_OP_S)
async def backup_verify(ctx: Context, params: BackupVerifyParams) -> BackupVerifyResult:
    """Check a backup without restoring it: files complete, archive decodes, checksums and config sound.

    The configuration and state in backup.json are checked as the server checks a
    restore request (field types, policies, limits, durations, name, subjects); fields
    natsop does not know are noted, not refused. Works on one stream's backup or on an
    account backup (each subdirectory). Nothing is sent to the server.
    """
    root = ctx.local_path(params.directory, must_exist=True)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory", code="not_a_directory")
    found = await asyncio.to_thread(_find_backups, root)
    if not found:
        raise UserError(f"{root} holds no backups", code="not_a_backup",
                        hint="Point at a directory written by stream_backup or account_backup.")
    page = found[params.offset:params.offset + params.limit]
    checks: list[BackupCheck] = []
    for i, path in enumerate(page, 1):
        await ctx.report(i - 1, len(page), f"checking {path.name}")
        checks.append(await asyncio.to_thread(_check_one, path, params.check_data))
    end = params.offset + len(page)
    more = end < len(found)
    return BackupVerifyResult(directory=str(root), ok=all(c.ok for c in checks), backups=checks, total=len(found),
                              offset=params.offset, truncated=more, next_offset=end if more else None)
