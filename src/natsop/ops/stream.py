"""Streams: list, inspect, create, change and remove them.

Reading messages (view, get, subjects, find) lives in `ops.stream_read`; this
module owns a stream's configuration and lifecycle.
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import Conflict, NatsopError, UserError
from natsop.formats import duration_ns, parse_time, parse_version
from natsop.logic.validate import MAX_COUNT, MAX_DURATION_S, MAX_SEQ, MAX_SIZE32, StreamName, SubjectFilter
from natsop.models import Confirmable, ConfirmParams, check_confirmation
from natsop.ops._common import PageParams, require_server
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.connection import server_version
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi, subject_counts

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
    max_msgs: int | None = Field(default=None, ge=-1, le=MAX_COUNT, description="Most messages kept; -1 = no limit")
    max_bytes: int | None = Field(default=None, ge=-1, le=MAX_COUNT,
                                  description="Most bytes kept; -1 = no limit (set one: disks fill)")
    max_age_s: float | None = Field(default=None, ge=0, le=MAX_DURATION_S, description="Seconds to keep a message; 0 = forever")
    max_msg_size: int | None = Field(default=None, ge=-1, le=MAX_SIZE32, description="Largest message accepted; -1 = no limit")
    max_msgs_per_subject: int | None = Field(default=None, ge=-1, le=MAX_COUNT,
                                             description="Messages kept per subject (1 = last value); -1 = no limit")
    discard: Literal["old", "new"] | None = Field(
        default=None, description="At a limit: old drops the oldest messages, new refuses new ones (default old)")
    duplicate_window_s: float | None = Field(default=None, ge=0, le=MAX_DURATION_S, description="Dedup window for Nats-Msg-Id")
    compression: Literal["none", "s2"] | None = Field(default=None, description="s2 is worth it for file streams")
    deny_delete: bool | None = Field(default=None, description="True for event streams: messages are never deleted")
    deny_purge: bool | None = Field(default=None, description="True for event streams: never purged")
    allow_rollup_hdrs: bool | None = Field(default=None,
                                           description="Allow Nats-Rollup headers that replace a subject's messages")
    allow_direct: bool | None = Field(default=None,
                                      description="Serve Direct Get from every replica (stream_add's default: on)")
    mirror_direct: bool | None = Field(default=None, description="Mirrors of this stream also answer Direct Get")
    max_consumers: int | None = Field(default=None, ge=-1, le=MAX_COUNT, description="-1 = unlimited")
    discard_new_per_subject: bool | None = Field(
        default=None, description="With discard=new and max_msgs_per_subject: refuse new messages per subject")
    first_seq: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="Sequence of the first message (create only)")
    allow_msg_ttl: bool | None = Field(default=None, description="Allow per-message TTL (Nats-TTL, 2.11+)")
    subject_delete_marker_ttl_s: float | None = Field(default=None, ge=1, le=MAX_DURATION_S, description="2.11+; needs rollup")
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


# Settings newer servers understand; an older server ignores a field it does not know, so the
# setting would silently not take effect. (parameter, minimum server, what it is)
NEWER_SETTINGS: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("allow_msg_ttl", (2, 11, 0), "per-message TTL (allow_msg_ttl)"),
    ("subject_delete_marker_ttl_s", (2, 11, 0), "subject delete markers (subject_delete_marker_ttl_s)"),
    ("allow_atomic", (2, 12, 0), "atomic batch publish (allow_atomic)"),
    ("allow_msg_counter", (2, 12, 0), "distributed counters (allow_msg_counter)"),
    ("allow_msg_schedules", (2, 12, 0), "message schedules (allow_msg_schedules)"),
)


async def require_features(ctx: Context, params: StreamConfigParams) -> None:
    """Refuse settings the connected server is too old to apply (turning one off needs no check)."""
    for name, minimum, feature in NEWER_SETTINGS:
        value = getattr(params, name)
        if value is not None and value is not False:
            await require_server(ctx, params.account_name, minimum, feature)


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
    await require_features(ctx, params)
    js = await ctx.js(params.account_name)
    info = await js.request(f"STREAM.CREATE.{params.stream}", cfg, context=f"create stream {params.stream}")
    return _info_result(info)


Precision = Literal["exact", "up_to", "estimate"]

# Above this many subjects the per-subject counts are not fetched for a dry run.
MAX_SUBJECTS_COUNTED = 10_000


async def count_from(js: JsApi, info: dict[str, Any], *, subject: str | None = None, seq: int | None = None,
                     start_time: datetime | None = None) -> int | None:
    """Messages (on `subject`, if given) at or after `seq` or `start_time`, counted exactly; None if it cannot be.

    One batched Direct Get answers with the count of matching messages after the one
    it returns (2.11+, allow_direct). Otherwise an ephemeral consumer that starts there
    reports its pending count and is deleted; that is done on limits streams only, as
    on interest and work-queue streams a consumer's coming and going decides which
    messages are kept.
    """
    cfg = info.get("config") or {}
    stream = str(cfg.get("name"))
    when = start_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if start_time else None
    if cfg.get("allow_direct") and parse_version(server_version(js.nc)) >= (2, 11, 0):
        body: dict[str, Any] = {"batch": 1}
        if seq is not None:
            body["seq"] = seq
        if when is not None:
            body["start_time"] = when
        if subject is not None:
            body["next_by_subj"] = subject
        try:
            msg = await js.nc.request(js.subject(f"DIRECT.GET.{stream}"), json.dumps(body).encode(),
                                      timeout=js.timeout)
        except Exception:  # no replica answered in time: count another way
            msg = None
        headers = (msg.headers or {}) if msg is not None else {}
        if headers.get("Status") == "404":
            return 0
        pending = headers.get("Nats-Num-Pending")
        if msg is not None and not headers.get("Status") and pending is not None and pending.isdigit():
            return 1 + int(pending)
    if (cfg.get("retention") or "limits") != "limits":
        return None
    config: dict[str, Any] = {"ack_policy": "none", "mem_storage": True, "num_replicas": 1,
                              "inactive_threshold": duration_ns(30)}
    if subject is not None:
        config["filter_subject"] = subject
    if when is not None:
        config.update(deliver_policy="by_start_time", opt_start_time=when)
    else:
        config.update(deliver_policy="by_start_sequence", opt_start_seq=seq or 1)
    try:
        made = await js.request(f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config},
                                context=f"count messages in stream {stream}")
    except NatsopError:
        return None
    try:
        return int(made.get("num_pending") or 0)
    finally:
        with contextlib.suppress(NatsopError):  # else its inactive_threshold removes it soon
            await js.request(f"CONSUMER.DELETE.{stream}.{made.get('name')}")


class StreamRemoval(BaseModel):
    """Stored messages one changed setting removes as soon as it is applied."""

    model_config = ConfigDict(extra="forbid")

    setting: str = Field(description="The parameter that removes them, e.g. max_msgs")
    messages: int = Field(description="Messages it removes")
    bytes: int | None = Field(default=None, description="Bytes it removes, when known")
    precision: Precision = Field(description="exact; up_to: at most this many; estimate: about this many")
    reason: str = Field(description="Which messages go")


class StreamUpdateResult(Confirmable, StreamInfoResult):
    """The stream after the change; on a dry run, as it is (unchanged) and what the change would remove."""

    would_remove: int = Field(default=0, description="Stored messages the change removes at once")
    would_remove_precision: Precision = Field(default="exact", description="How exact would_remove is")
    removals: list[StreamRemoval] = Field(default_factory=list, description="What each setting removes")


class StreamUpdateParams(StreamConfigParams, ConfirmParams):
    """Stream settings to change; a change that removes stored messages needs `confirm`."""


async def _removals(js: JsApi, info: dict[str, Any], new: dict[str, Any]) -> list[StreamRemoval]:
    """What applying config `new` would remove from the stream at once (nothing for most changes)."""
    st = StreamState.model_validate(info.get("state") or {})
    old = info.get("config") or {}
    if st.messages <= 0:
        return []
    out: list[StreamRemoval] = []
    # The server enforces a lowered max_msgs or max_bytes only when it discards old messages.
    discard_old = new.get("discard") != "new"
    max_msgs = int(new.get("max_msgs") or -1)
    if discard_old and 0 < max_msgs < st.messages:
        out.append(StreamRemoval(setting="max_msgs", messages=st.messages - max_msgs, precision="exact",
                                 reason=f"all but the newest {max_msgs}"))
    max_bytes = int(new.get("max_bytes") or -1)
    if discard_old and 0 < max_bytes < st.bytes:
        over = st.bytes - max_bytes
        average = st.bytes / st.messages
        out.append(StreamRemoval(
            setting="max_bytes", messages=min(st.messages, math.ceil(over / average)), bytes=over,
            precision="estimate",
            reason=f"the oldest, until at most {max_bytes} bytes remain (count estimated at the average size of "
                   f"{average:.0f} bytes)"))
    per_subject = int(new.get("max_msgs_per_subject") or -1)
    if 0 < per_subject < st.messages:
        removal = await _per_subject_removal(js, info, st, per_subject)
        if removal is not None:
            out.append(removal)
    max_age = int(new.get("max_age") or 0)
    if max_age > 0:
        removal = await _age_removal(js, info, st, max_age)
        if removal is not None:
            out.append(removal)
    if new.get("retention") == "interest" and (old.get("retention") or "limits") == "limits":
        if st.consumer_count == 0:
            out.append(StreamRemoval(setting="retention", messages=st.messages, bytes=st.bytes, precision="exact",
                                     reason="every message: no consumer is interested in any"))
        else:
            out.append(StreamRemoval(setting="retention", messages=st.messages, precision="up_to",
                                     reason="the messages no consumer still needs"))
    return out


async def _per_subject_removal(js: JsApi, info: dict[str, Any], st: StreamState,
                               per_subject: int) -> StreamRemoval | None:
    reason = f"all but the newest {per_subject} on each subject"
    subjects = st.num_subjects or 0
    if 0 < subjects <= MAX_SUBJECTS_COUNTED:
        counts = (await subject_counts(js, str((info.get("config") or {}).get("name")), ">")).values()
        if len(counts) >= subjects:
            n = sum(max(0, int(c) - per_subject) for c in counts)
            return StreamRemoval(setting="max_msgs_per_subject", messages=n, precision="exact",
                                 reason=reason) if n else None
    # Every subject keeps at least one message.
    bound = st.messages - subjects if subjects else st.messages
    if bound <= 0:
        return None
    return StreamRemoval(setting="max_msgs_per_subject", messages=bound, precision="up_to",
                         reason=f"{reason} ({subjects} subjects: too many to count one by one)")


async def _age_removal(js: JsApi, info: dict[str, Any], st: StreamState, max_age_ns: int) -> StreamRemoval | None:
    cutoff = datetime.now(UTC) - timedelta(microseconds=max_age_ns // 1000)
    reason = f"those stored before {cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    # With per-message TTLs a message's own Nats-TTL (or 'never') can keep it longer.
    ttl = bool((info.get("config") or {}).get("allow_msg_ttl"))
    first, last = parse_time(st.first_ts), parse_time(st.last_ts)
    if first is not None and first >= cutoff:
        return None
    if last is not None and last < cutoff:
        return StreamRemoval(setting="max_age_s", messages=st.messages, bytes=None if ttl else st.bytes,
                             precision="up_to" if ttl else "exact", reason=f"every message: all are {reason}")
    kept = await count_from(js, info, start_time=cutoff)
    if kept is None:
        return StreamRemoval(setting="max_age_s", messages=st.messages, precision="up_to", reason=reason)
    n = max(0, st.messages - kept)
    return StreamRemoval(setting="max_age_s", messages=n, precision="up_to" if ttl else "exact",
                         reason=reason) if n else None


def _describe(removals: list[StreamRemoval], total: int, precision: Precision, stored: int) -> str:
    how = {"exact": "", "up_to": "up to ", "estimate": "about "}
    parts = [f"{r.setting} removes {how[r.precision]}{r.messages}" for r in removals]
    return f"remove {how[precision]}{total} of its {stored} messages at once ({'; '.join(parts)})"


@operation("stream_update", cli="stream edit", aliases=("update",), impact=Impact.DESTRUCTIVE, idempotent=True,
           args=("stream",))
async def stream_update(ctx: Context, params: StreamUpdateParams) -> StreamUpdateResult:
    """Change a stream's settings; only the parameters given change, the rest stay as they are.

    A change that removes stored messages at once (a lower max_msgs, max_bytes, max_age_s
    or max_msgs_per_subject than the stream holds, or limits to interest retention), and
    sealing, need confirmation: without it the call changes nothing and reports how many
    messages would go. Other changes need none.
    """
    confirmed = check_confirmation(params.confirm, params.stream)
    await require_features(ctx, params)
    current = await fetch_stream_info(ctx, params.stream, params.account_name)
    old = current.get("config") or {}
    cfg = config_from_params(params, old)
    js = await ctx.js(params.account_name)
    removals = await _removals(js, current, cfg)
    state = StreamState.model_validate(current.get("state") or {})
    total = min(state.messages, sum(r.messages for r in removals))
    precision: Precision = removals[0].precision if len(removals) == 1 else "up_to" if removals else "exact"
    what = [f"update stream {params.stream}"]
    if removals:
        what.append(_describe(removals, total, precision, state.messages))
    sealing = bool(cfg.get("sealed")) and not old.get("sealed")
    if sealing:
        what.append("seal it (irreversible: no more messages, deletions or purges)")
    action = " and ".join(what)
    extra: dict[str, Any] = {"would_remove": total, "would_remove_precision": precision, "removals": removals}
    if (removals or sealing) and not confirmed:
        return StreamUpdateResult(**dict(_info_result(current)), done=False, confirmation_required=True,
                                  confirm_with=params.stream, action=action, **extra)
    info = await js.request(f"STREAM.UPDATE.{params.stream}", cfg, context=f"update stream {params.stream}")
    return StreamUpdateResult(**dict(_info_result(info)), done=True, action=action, **extra)


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
    seq: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="Purge up to, but not including, this sequence")
    keep: int | None = Field(default=None, ge=0, le=MAX_SEQ, description="Keep this many newest messages")


class StreamPurgeResult(Confirmable):
    stream: str
    would_remove: int | None = Field(default=None, description="Messages that match (before confirming)")
    would_remove_precision: Precision = Field(default="exact", description="up_to: would_remove is an upper bound")
    purged: int | None = Field(default=None, description="Messages removed")


@operation("stream_purge", cli="stream purge", impact=Impact.DESTRUCTIVE, args=("stream",))
async def stream_purge(ctx: Context, params: StreamPurgeParams) -> StreamPurgeResult:
    """Remove messages from a stream (all, by subject, up to a sequence, or all but the newest N)."""
    if params.seq is not None and params.keep is not None:
        raise UserError("give seq or keep, not both", code="invalid_argument",
                        hint="seq removes everything before a sequence; keep leaves the newest N.")
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    js = await ctx.js(params.account_name)
    would, precision = await _purge_count(js, info, params)
    what = [f"purge {'up to ' if precision == 'up_to' else ''}{would} messages from stream {params.stream}"]
    if params.subject:
        what.append(f"on {params.subject}")
    if params.seq is not None:
        what.append(f"before sequence {params.seq}")
    if params.keep is not None:
        what.append(f"keeping the newest {params.keep}")
    result = StreamPurgeResult(done=False, stream=params.stream, would_remove=would,
                               would_remove_precision=precision, action=" ".join(what))
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


async def _purge_count(js: JsApi, info: dict[str, Any], params: StreamPurgeParams) -> tuple[int, Precision]:
    """How many messages the purge removes: those on the subject, before seq, or all but the newest `keep`."""
    st = StreamState.model_validate(info.get("state") or {})
    first = max(1, st.first_seq)
    matching: int | None = st.messages
    if params.subject and st.messages:
        matching = await count_from(js, info, subject=params.subject, seq=first)
        if matching is None:
            matching = sum((await subject_counts(js, params.stream, params.subject)).values())
    would = matching or 0
    if params.seq is not None and would:
        if params.seq <= first:
            return 0, "exact"
        if params.seq <= st.last_seq:
            # Those before seq are those matching less those matching from seq on.
            rest = await count_from(js, info, subject=params.subject, seq=params.seq)
            if rest is None:
                return min(would, params.seq - first), "up_to"
            would -= rest
    if params.keep is not None:
        would = max(0, would - params.keep)
    return would, "exact"


def _deny_purge(stream: str) -> Conflict:
    return Conflict(f"stream {stream} has deny_purge set: it cannot be purged", code="stream_purge_denied",
                    hint="The stream protects its history; nothing was removed.")
