"""Streams across the account: find them by criteria, and report on all of them in one table.

Both read the account's stream list (`STREAM.LIST`, 256 streams a request) and
then filter, sort and page locally; no message is read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import UserError
from natsop.formats import parse_time
from natsop.logic.validate import MAX_COUNT, MAX_SEQ, SubjectFilter
from natsop.ops._common import PageParams
from natsop.ops.stream import StreamSummary, summarize
from natsop.registry import Result, operation
from natsop.wire.context import Context

__all__ = ["StreamReportRow", "all_stream_infos", "replica_health"]


async def all_stream_infos(ctx: Context, account_name: str | None, subject: str | None) -> list[dict[str, Any]]:
    """Every stream's info in the account (only those capturing `subject` when given)."""
    js = await ctx.js(account_name)
    infos: list[dict[str, Any]] = []
    async for info, total in js.paged("STREAM.LIST", "streams", {"subject": subject} if subject else None):
        infos.append(info)
        if len(infos) % 256 == 0:
            await ctx.report(len(infos), total, "reading stream information")
    return infos


def _regex(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UserError(f"{what} {pattern!r} is not a regular expression: {exc}", code="invalid_regex",
                        hint="Give a Python regular expression, e.g. 'n[12]' or '^east-'.") from None


def replica_health(info: dict[str, Any]) -> tuple[bool, list[str]]:
    """(healthy, one line per problem or replica) from a stream info's cluster section."""
    cfg = info.get("config") or {}
    cluster = info.get("cluster") or {}
    want = int(cfg.get("num_replicas") or 1)
    lines: list[str] = []
    healthy = True
    if not cluster:
        return True, lines  # a server without clustering: nothing to replicate
    if not cluster.get("leader"):
        healthy = False
        lines.append("no leader")
    peers = cluster.get("replicas") or []
    for peer in peers:
        name = str(peer.get("name") or "?")
        if peer.get("offline"):
            healthy = False
            lines.append(f"{name}: offline")
        elif not peer.get("current"):
            healthy = False
            details = []
            if peer.get("lag"):
                details.append(f"{peer['lag']} ops behind")
            if peer.get("active"):
                details.append(f"seen {int(peer['active']) / 1e9:.1f}s ago")
            lines.append(f"{name}: not current" + (f" ({', '.join(details)})" if details else ""))
        else:
            lines.append(f"{name}: current")
    missing = want - 1 - len(peers)
    if want > 1 and missing > 0:
        healthy = False
        lines.append(f"{missing} of {want - 1} followers missing")
    return healthy, lines


def _servers(info: dict[str, Any]) -> list[str]:
    cluster = info.get("cluster") or {}
    names = [str(cluster["leader"])] if cluster.get("leader") else []
    return names + [str(p.get("name")) for p in cluster.get("replicas") or [] if p.get("name")]


# --- stream_find ---------------------------------------------------------------------------------


class StreamFindParams(PageParams):
    subject: SubjectFilter | None = Field(default=None, description="Streams capturing this subject (wildcards ok)")
    name_contains: str | None = Field(default=None, min_length=1, max_length=255,
                                      description="Streams whose name contains this (any case)")
    empty: bool | None = Field(default=None, description="true: only empty streams; false: only non-empty ones")
    min_messages: int | None = Field(default=None, ge=0, le=MAX_SEQ, description="Streams holding at least this many messages")
    min_bytes: int | None = Field(default=None, ge=0, le=MAX_COUNT, description="Streams holding at least this many bytes")
    storage: Literal["file", "memory"] | None = Field(default=None, description="Streams with this storage")
    max_replicas: int | None = Field(default=None, ge=1, le=5,
                                     description="Streams with at most this many replicas (natscli --replicas)")
    consumers_below: int | None = Field(default=None, ge=0, le=10**9,
                                        description="Streams with fewer consumers than this")
    idle_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86400,
                                 description="Streams that stored no new message for at least this many seconds")
    created_older_than_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86400,
                                               description="Streams created at least this many seconds ago")
    sourced: bool | None = Field(default=None, description="true: streams that source from others")
    mirrored: bool | None = Field(default=None, description="true: streams that mirror another")
    deny_delete: bool | None = Field(default=None, description="Streams with (true) or without (false) deny_delete")
    deny_purge: bool | None = Field(default=None, description="Streams with (true) or without (false) deny_purge")
    sealed: bool | None = Field(default=None, description="Sealed (true) or unsealed (false) streams")
    allow_direct: bool | None = Field(default=None, description="Streams with (true) or without (false) Direct Get")
    cluster: str | None = Field(default=None, max_length=255, description="Regular expression on the cluster name")
    server_name: str | None = Field(default=None, max_length=255,
                                    description="Regular expression on the servers holding a replica")
    leader: str | None = Field(default=None, max_length=255, description="Streams whose leader is this server")
    invert: bool = Field(default=False, description="Return the streams that do NOT match the criteria "
                                                    "(subject and name_contains still narrow the search)")


class StreamFindResult(Result):
    streams: list[StreamSummary]
    total: int = Field(description="Streams matching")
    scanned: int = Field(description="Streams examined")
    offset: int
    truncated: bool = Field(description="True when more streams follow; call again with offset=next_offset")
    next_offset: int | None = None


def _matches(info: dict[str, Any], p: StreamFindParams, now: datetime,
             cluster_re: re.Pattern[str] | None, server_re: re.Pattern[str] | None) -> bool:
    cfg = info.get("config") or {}
    st = info.get("state") or {}
    msgs = int(st.get("messages") or 0)
    if p.name_contains is not None and p.name_contains.lower() not in str(cfg.get("name", "")).lower():
        return False  # like `subject`, the name narrows the search and is not inverted
    checks: list[bool] = []
    if p.empty is not None:
        checks.append((msgs == 0) is p.empty)
    if p.min_messages is not None:
        checks.append(msgs >= p.min_messages)
    if p.min_bytes is not None:
        checks.append(int(st.get("bytes") or 0) >= p.min_bytes)
    if p.storage is not None:
        checks.append(cfg.get("storage") == p.storage)
    if p.max_replicas is not None:
        checks.append(int(cfg.get("num_replicas") or 1) <= p.max_replicas)
    if p.consumers_below is not None:
        checks.append(int(st.get("consumer_count") or 0) < p.consumers_below)
    if p.idle_s is not None:
        last = parse_time(st.get("last_ts"))
        checks.append(last is None or now - last >= timedelta(seconds=p.idle_s))
    if p.created_older_than_s is not None:
        created = parse_time(info.get("created"))
        checks.append(created is not None and now - created >= timedelta(seconds=p.created_older_than_s))
    if p.sourced is not None:
        checks.append(bool(cfg.get("sources")) is p.sourced)
    if p.mirrored is not None:
        checks.append(bool(cfg.get("mirror")) is p.mirrored)
    for flag in ("deny_delete", "deny_purge", "sealed", "allow_direct"):
        wanted = getattr(p, flag)
        if wanted is not None:
            checks.append(bool(cfg.get(flag)) is wanted)
    if cluster_re is not None:
        checks.append(bool(cluster_re.search(str((info.get("cluster") or {}).get("name") or ""))))
    if server_re is not None:
        checks.append(any(server_re.search(s) for s in _servers(info)))
    if p.leader is not None:
        checks.append((info.get("cluster") or {}).get("leader") == p.leader)
    return all(checks) is not p.invert


@operation("stream_find", cli="stream find", aliases=("query",))
async def stream_find(ctx: Context, params: StreamFindParams) -> StreamFindResult:
    """Find streams by criteria: subject, name, size, storage, replicas, consumers, idleness, flags, placement.

    Every given criterion must hold (invert returns the rest, still within subject and
    name_contains). Results are sorted by name and paged.
    """
    cluster_re = _regex(params.cluster, "cluster")
    server_re = _regex(params.server_name, "server_name")
    infos = await all_stream_infos(ctx, params.account_name, params.subject)
    now = datetime.now(UTC)
    found = sorted((summarize(i) for i in infos if _matches(i, params, now, cluster_re, server_re)),
                   key=lambda s: s.name)
    window = found[params.offset: params.offset + params.limit]
    end = params.offset + len(window)
    more = end < len(found)
    return StreamFindResult(streams=window, total=len(found), scanned=len(infos), offset=params.offset,
                            truncated=more, next_offset=end if more else None)


# --- stream_report -------------------------------------------------------------------------------


class StreamReportRow(BaseModel):
    """One stream in the report."""

    model_config = ConfigDict(extra="forbid")

    name: str
    storage: str | None = None
    replicas: int = 1
    consumers: int = 0
    messages: int = 0
    bytes: int = 0
    deleted: int = Field(default=0, description="Deleted messages inside the stream's range (gaps)")
    cluster: str | None = None
    leader: str | None = None
    healthy: bool = Field(description="A leader, and every follower current and online")
    replica_status: list[str] = Field(default_factory=list, description="Each follower's state, or the problem")


class StreamReportParams(PageParams):
    subject: SubjectFilter | None = Field(default=None, description="Only streams capturing this subject")
    cluster: str | None = Field(default=None, max_length=255, description="Only streams in this cluster")
    sort: Literal["name", "messages", "bytes", "consumers", "storage"] = Field(
        default="bytes", description="Order of the rows, smallest first as in natscli (default bytes)")
    reverse: bool = Field(default=False, description="Largest first")


class StreamReportResult(Result):
    streams: list[StreamReportRow]
    total: int = Field(description="Streams in the report")
    unhealthy: int = Field(description="Streams in the whole report without a leader or with followers behind")
    offset: int
    truncated: bool = Field(description="True when more rows follow; call again with offset=next_offset")
    next_offset: int | None = None


def _row(info: dict[str, Any]) -> StreamReportRow:
    cfg = info.get("config") or {}
    st = info.get("state") or {}
    cluster = info.get("cluster") or {}
    healthy, lines = replica_health(info)
    return StreamReportRow(
        name=str(cfg.get("name", "?")), storage=cfg.get("storage"), replicas=int(cfg.get("num_replicas") or 1),
        consumers=int(st.get("consumer_count") or 0), messages=int(st.get("messages") or 0),
        bytes=int(st.get("bytes") or 0), deleted=int(st.get("num_deleted") or 0), cluster=cluster.get("name"),
        leader=cluster.get("leader"), healthy=healthy, replica_status=lines,
    )


@operation("stream_report", cli="stream report")
async def stream_report(ctx: Context, params: StreamReportParams) -> StreamReportResult:
    """Report on every stream: size, consumers, deleted messages, leader and replica health, in one table."""
    infos = await all_stream_infos(ctx, params.account_name, params.subject)
    rows = [_row(i) for i in infos]
    if params.cluster is not None:
        rows = [r for r in rows if r.cluster == params.cluster]
    key: dict[str, Any] = {
        "name": lambda r: r.name,
        "messages": lambda r: (r.messages, r.name),
        "bytes": lambda r: (r.bytes, r.name),
        "consumers": lambda r: (r.consumers, r.name),
        "storage": lambda r: (r.storage or "", r.name),
    }
    rows.sort(key=key[params.sort], reverse=params.reverse)
    window = rows[params.offset: params.offset + params.limit]
    end = params.offset + len(window)
    more = end < len(rows)
    return StreamReportResult(streams=window, total=len(rows), unhealthy=sum(1 for r in rows if not r.healthy),
                              offset=params.offset, truncated=more, next_offset=end if more else None)
