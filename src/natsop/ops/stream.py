"""Streams: list, inspect, create, change and remove them.

Reading messages (view, get, subjects, find) lives in `ops.stream_read`; this
module owns a stream's configuration and lifecycle.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from natsop.context import Context
from natsop.errors import Conflict, NatsopError, UserError
from natsop.models import Confirmable, ConfirmParams, check_confirmation
from natsop.ops._common import PageParams, duration_ns
from natsop.registry import Impact, Params, Result, operation
from natsop.validate import StreamName, SubjectFilter

__all__ = [
    "ClusterInfo",
    "StreamConfigParams",
    "StreamInfoResult",
    "StreamState",
    "StreamSummary",
    "fetch_stream_info",
]


class StreamState(BaseModel):
    """How much a stream holds."""

    model_config = ConfigDict(extra="ignore")

    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    first_ts: str | None = None
    last_seq: int = 0
    last_ts: str | None = None
    num_subjects: int | None = None
    num_deleted: int | None = None
    consumer_count: int = 0


class PeerInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    current: bool = False
    active: int | None = Field(default=None, description="Nanoseconds since last seen")
    lag: int | None = None
    offline: bool | None = None


class ClusterInfo(BaseModel):
    """Where a replicated asset lives: its Raft leader and the other replicas."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    leader: str | None = None
    replicas: list[PeerInfo] = Field(default_factory=list)


class StreamSummary(BaseModel):
    """One line of a stream listing."""

    model_config = ConfigDict(extra="forbid")

    name: str
    subjects: list[str] = Field(default_factory=list)
    storage: str | None = None
    replicas: int = 1
    messages: int = 0
    bytes: int = 0
    consumers: int = 0
    created: str | None = None
    description: str | None = None


class StreamListParams(PageParams):
    subject: SubjectFilter | None = Field(default=None, description="Only streams that capture this subject")


class StreamListResult(Result):
    streams: list[StreamSummary]
    total: int = Field(description="Streams in the account matching the filter")
    offset: int
    truncated: bool = Field(description="True when more streams follow; call again with offset=next_offset")
    next_offset: int | None = None


def summarize(info: dict[str, Any]) -> StreamSummary:
    cfg = info.get("config") or {}
    st = info.get("state") or {}
    return StreamSummary(
        name=cfg.get("name", "?"),
        subjects=list(cfg.get("subjects") or []),
        storage=cfg.get("storage"),
        replicas=int(cfg.get("num_replicas") or 1),
        messages=int(st.get("messages") or 0),
        bytes=int(st.get("bytes") or 0),
        consumers=int(st.get("consumer_count") or 0),
        created=info.get("created"),
        description=cfg.get("description"),
    )


@operation("stream_list", cli="stream ls", aliases=("list",))
async def stream_list(ctx: Context, params: StreamListParams) -> StreamListResult:
    """List the account's streams with their size, a page at a time."""
    js = await ctx.js(params.account_name)
    out: list[StreamSummary] = []
    total = 0
    offset = params.offset
    body: dict[str, Any] = {"subject": params.subject} if params.subject else {}
    # The server pages lists 256 at a time; ask from our offset and stop once the page is full.
    while len(out) < params.limit:
        resp = await js.request("STREAM.LIST", {**body, "offset": offset})
        items = resp.get("streams") or []
        total = int(resp.get("total") or 0)
        out.extend(summarize(i) for i in items[: params.limit - len(out)])
        offset += len(items)
        if not items or offset >= total:
            break
    end = params.offset + len(out)
    more = end < total
    return StreamListResult(streams=out, total=total, offset=params.offset, truncated=more,
                            next_offset=end if more else None)


class StreamInfoParams(Params):
    stream: StreamName


class StreamInfoResult(Result):
    name: str
    created: str | None = None
    config: dict[str, Any] = Field(description="The stream's configuration as the server reports it")
    state: StreamState
    cluster: ClusterInfo | None = None
    mirror: dict[str, Any] | None = None
    sources: list[dict[str, Any]] | None = None


async def fetch_stream_info(ctx: Context, stream: str, account_name: str | None = None) -> dict[str, Any]:
    js = await ctx.js(account_name)
    return await js.request(f"STREAM.INFO.{stream}", context=f"stream {stream}")


def _info_result(info: dict[str, Any]) -> StreamInfoResult:
    cfg = info.get("config") or {}
    return StreamInfoResult(
        name=cfg.get("name", ""),
        created=info.get("created"),
        config=cfg,
        state=StreamState.model_validate(info.get("state") or {}),
        cluster=ClusterInfo.model_validate(info["cluster"]) if info.get("cluster") else None,
        mirror=info.get("mirror"),
        sources=info.get("sources"),
    )


@operation("stream_info", args=("stream",))
async def stream_info(ctx: Context, params: StreamInfoParams) -> StreamInfoResult:
    """Show a stream's configuration, state and cluster placement."""
    return _info_result(await fetch_stream_info(ctx, params.stream, params.account_name))


class StreamStateResult(Result):
    name: str
    state: StreamState


@operation("stream_state", args=("stream",))
async def stream_state(ctx: Context, params: StreamInfoParams) -> StreamStateResult:
    """Show how much a stream holds: messages, bytes, first and last sequence and time."""
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    return StreamStateResult(name=params.stream, state=StreamState.model_validate(info.get("state") or {}))


class StreamConfigParams(Params):
    """Stream settings. Unset fields keep the server's defaults, which are almost always right."""

    stream: StreamName
    subjects: list[SubjectFilter] | None = Field(default=None, max_length=10000,
                                                 description="Subjects the stream captures; default: the stream name")
    description: str | None = Field(default=None, max_length=4096,
                                    description="Why this stream exists and why any default was changed")
    retention: Literal["limits", "interest", "workqueue"] | None = Field(
        default=None, description="Default limits: keep messages until a limit removes them")
    storage: Literal["file", "memory"] | None = Field(default=None, description="Default file")
    replicas: int | None = Field(default=None, ge=1, le=5, description="1 on one server; 3 in production clusters")
    max_msgs: int | None = Field(default=None, ge=-1, description="Most messages kept; -1 = no limit")
    max_bytes: int | None = Field(default=None, ge=-1,
                                  description="Most bytes kept; -1 = no limit (set one: disks fill)")
    max_age_s: float | None = Field(default=None, ge=0, description="Seconds to keep a message; 0 = forever")
    max_msg_size: int | None = Field(default=None, ge=-1, description="Largest message accepted; -1 = no limit")
    max_msgs_per_subject: int | None = Field(default=None, ge=-1,
                                             description="Messages kept per subject (1 = last value); -1 = no limit")
    discard: Literal["old", "new"] | None = Field(
        default=None, description="At a limit: old drops the oldest messages, new refuses new ones (default old)")
    duplicate_window_s: float | None = Field(default=None, ge=0, description="Dedup window for Nats-Msg-Id")
    compression: Literal["none", "s2"] | None = Field(default=None, description="s2 is worth it for file streams")
    deny_delete: bool | None = Field(default=None, description="True for event streams: messages are never deleted")
    deny_purge: bool | None = Field(default=None, description="True for event streams: never purged")
    allow_rollup_hdrs: bool | None = Field(default=None,
                                           description="Allow Nats-Rollup headers that replace a subject's messages")
    allow_direct: bool | None = Field(default=None,
                                      description="Serve Direct Get from every replica (stream_add's default: on)")
    mirror_direct: bool | None = Field(default=None, description="Mirrors of this stream also answer Direct Get")
    max_consumers: int | None = Field(default=None, ge=-1, description="-1 = unlimited")
    discard_new_per_subject: bool | None = Field(
        default=None, description="With discard=new and max_msgs_per_subject: refuse new messages per subject")
    first_seq: int | None = Field(default=None, ge=1, description="Sequence of the first message (create only)")
    allow_msg_ttl: bool | None = Field(default=None, description="Allow per-message TTL (Nats-TTL, 2.11+)")
    subject_delete_marker_ttl_s: float | None = Field(default=None, ge=1, description="2.11+; needs rollup")
    allow_atomic: bool | None = Field(default=None, description="Atomic batch publish (2.12+)")
    allow_msg_counter: bool | None = Field(default=None, description="Distributed counters (2.12+, create only)")
    allow_msg_schedules: bool | None = Field(default=None, description="Message schedules (2.12+)")
    placement_cluster: str | None = Field(default=None, description="Place the replicas in this cluster")
    placement_tags: list[str] | None = Field(default=None,
                                             description="Place the replicas on servers with all these tags")
    metadata: dict[str, str] | None = Field(default=None, description="Free-form labels, e.g. why a default changed")
    sealed: bool | None = Field(default=None, description="Seal the stream (irreversible; update only)")


def config_from_params(p: StreamConfigParams, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the set parameters over `base` (the current config on update)."""
    cfg: dict[str, Any] = dict(base or {})
    cfg["name"] = p.stream
    simple = ("subjects", "description", "retention", "storage", "max_msgs", "max_bytes", "max_msg_size",
              "max_msgs_per_subject", "discard", "compression", "deny_delete", "deny_purge", "allow_rollup_hdrs",
              "allow_direct", "mirror_direct", "max_consumers", "discard_new_per_subject", "first_seq",
              "allow_msg_ttl", "allow_atomic", "allow_msg_counter", "allow_msg_schedules",
              "metadata", "sealed")
    for key in simple:
        value = getattr(p, key)
        if value is not None:
            cfg[key] = value
    if p.replicas is not None:
        cfg["num_replicas"] = p.replicas
    if p.max_age_s is not None:
        cfg["max_age"] = duration_ns(p.max_age_s)
    if p.duplicate_window_s is not None:
        cfg["duplicate_window"] = duration_ns(p.duplicate_window_s)
    if p.subject_delete_marker_ttl_s is not None:
        cfg["subject_delete_marker_ttl"] = duration_ns(p.subject_delete_marker_ttl_s)
    if p.placement_cluster is not None or p.placement_tags is not None:
        placement = dict(cfg.get("placement") or {})
        if p.placement_cluster is not None:
            placement["cluster"] = p.placement_cluster
        if p.placement_tags is not None:
            placement["tags"] = p.placement_tags
        cfg["placement"] = placement
    return cfg


@operation("stream_add", cli="stream add", aliases=("create", "new"), impact=Impact.WRITE, idempotent=True,
           args=("stream",))
async def stream_add(ctx: Context, params: StreamConfigParams) -> StreamInfoResult:
    """Create a stream. Defaults: file storage, limits retention, one replica, subjects = the name, Direct Get on.

    Creating a stream that already exists with the same settings succeeds and changes nothing.
    """
    cfg = config_from_params(params)
    cfg.setdefault("subjects", [params.stream])
    cfg.setdefault("storage", "file")
    cfg.setdefault("retention", "limits")
    cfg.setdefault("num_replicas", 1)
    # As natscli does: reading a page (stream_view) is then one request, served by any replica.
    cfg.setdefault("allow_direct", True)
    if cfg.get("sealed"):
        raise UserError("a stream cannot be created sealed", code="invalid_argument",
                        hint="Create it, fill it, then seal it with stream_update sealed=true.")
    js = await ctx.js(params.account_name)
    info = await js.request(f"STREAM.CREATE.{params.stream}", cfg, context=f"create stream {params.stream}")
    return _info_result(info)


@operation("stream_update", cli="stream edit", aliases=("update",), impact=Impact.WRITE, idempotent=True,
           args=("stream",))
async def stream_update(ctx: Context, params: StreamConfigParams) -> StreamInfoResult:
    """Change a stream's settings; only the parameters given change, the rest stay as they are."""
    current = await fetch_stream_info(ctx, params.stream, params.account_name)
    cfg = config_from_params(params, current.get("config") or {})
    js = await ctx.js(params.account_name)
    info = await js.request(f"STREAM.UPDATE.{params.stream}", cfg, context=f"update stream {params.stream}")
    return _info_result(info)


class StreamDeleteParams(ConfirmParams):
    stream: StreamName


class StreamDeleteResult(Confirmable):
    stream: str
    messages: int = Field(description="Messages the stream held")
    bytes: int
    consumers: int


@operation("stream_delete", cli="stream rm", aliases=("delete", "del"), impact=Impact.DESTRUCTIVE,
           args=("stream",))
async def stream_delete(ctx: Context, params: StreamDeleteParams) -> StreamDeleteResult:
    """Delete a stream with all its messages and consumers. Needs confirmation."""
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    st = StreamState.model_validate(info.get("state") or {})
    result = StreamDeleteResult(
        done=False, stream=params.stream, messages=st.messages, bytes=st.bytes, consumers=st.consumer_count,
        action=f"delete stream {params.stream} with {st.messages} messages and {st.consumer_count} consumers",
    )
    if not check_confirmation(params.confirm, params.stream):
        result.confirmation_required = True
        result.confirm_with = params.stream
        return result
    js = await ctx.js(params.account_name)
    await js.request(f"STREAM.DELETE.{params.stream}", context=f"delete stream {params.stream}")
    result.done = True
    return result


class StreamPurgeParams(ConfirmParams):
    stream: StreamName
    subject: SubjectFilter | None = Field(default=None, description="Only messages on this subject")
    seq: int | None = Field(default=None, ge=1, description="Purge up to, but not including, this sequence")
    keep: int | None = Field(default=None, ge=0, description="Keep this many newest messages")


class StreamPurgeResult(Confirmable):
    stream: str
    would_remove: int | None = Field(default=None, description="Messages that match (before confirming)")
    purged: int | None = Field(default=None, description="Messages removed")


@operation("stream_purge", cli="stream purge", impact=Impact.DESTRUCTIVE, args=("stream",))
async def stream_purge(ctx: Context, params: StreamPurgeParams) -> StreamPurgeResult:
    """Remove messages from a stream (all, by subject, up to a sequence, or all but the newest N)."""
    if params.seq is not None and params.keep is not None:
        raise UserError("give seq or keep, not both", code="invalid_argument",
                        hint="seq removes everything before a sequence; keep leaves the newest N.")
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    st = StreamState.model_validate(info.get("state") or {})
    would = st.messages
    if params.subject:
        subj = await ctx.js(params.account_name)
        detail = await subj.request(f"STREAM.INFO.{params.stream}", {"subjects_filter": params.subject})
        would = sum(int(v) for v in ((detail.get("state") or {}).get("subjects") or {}).values())
    if params.seq is not None:
        would = min(would, max(0, params.seq - st.first_seq))
    if params.keep is not None:
        would = max(0, would - params.keep)
    what = [f"purge {would} messages from stream {params.stream}"]
    if params.subject:
        what.append(f"on {params.subject}")
    if params.seq is not None:
        what.append(f"before sequence {params.seq}")
    if params.keep is not None:
        what.append(f"keeping the newest {params.keep}")
    result = StreamPurgeResult(done=False, stream=params.stream, would_remove=would, action=" ".join(what))
    if not check_confirmation(params.confirm, params.stream):
        if (info.get("config") or {}).get("deny_purge"):
            raise _deny_purge(params.stream)
        result.confirmation_required = True
        result.confirm_with = params.stream
        return result
    body: dict[str, Any] = {}
    if params.subject:
        body["filter"] = params.subject
    if params.seq is not None:
        body["seq"] = params.seq
    if params.keep is not None:
        body["keep"] = params.keep
    js = await ctx.js(params.account_name)
    try:
        resp = await js.request(f"STREAM.PURGE.{params.stream}", body or None,
                                context=f"purge stream {params.stream}")
    except NatsopError as err:
        # deny_purge comes back as the generic "stream purge failed" (10110) with this text.
        if err.details.get("err_code") == 10110 and "not permitted" in err.message:
            raise _deny_purge(params.stream) from None
        raise
    result.done = True
    result.purged = int(resp.get("purged") or 0)
    return result


def _deny_purge(stream: str) -> Conflict:
    return Conflict(f"stream {stream} has deny_purge set: it cannot be purged", code="stream_purge_denied",
                    hint="The stream protects its history; nothing was removed.")
