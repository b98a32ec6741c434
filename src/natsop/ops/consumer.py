"""Consumers: list them with their lag, inspect, create, change, pause, read from and remove them.

Everything goes through the raw JetStream API (`$JS.API.CONSUMER.*`) so that the
configuration comes back exactly as the server holds it. Creating is idempotent
(the server's create-or-update), as the operator's rule "check-then-create is an
anti-pattern" asks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import nats.errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from natsop.errors import Conflict, NatsopError, NotFound, Unsupported, UserError, from_nats
from natsop.formats import duration_ns, ns_to_s, parse_time
from natsop.logic.validate import (
    MAX_COUNT,
    MAX_DURATION_S,
    MAX_SEQ,
    ConsumerName,
    StreamName,
    SubjectFilter,
    check_subject,
)
from natsop.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    Confirmable,
    ConfirmParams,
    Payload,
    check_confirmation,
    headers_of,
    payload_of,
)
from natsop.ops._common import PageParams
from natsop.ops.stream import ClusterInfo, fetch_stream_info
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import Resend

__all__ = [
    "ConsumerInfoResult",
    "ConsumerState",
    "ConsumerSummary",
    "SequenceInfo",
    "fetch_consumer_info",
    "parse_ack_subject",
]

# The spec's anti-pattern table: "> 300 disjoint filters per consumer — the server evaluates all."
MANY_FILTERS = 300
ACK_NONE_WARNING = (
    "ack_policy 'none': the server forgets each message as soon as it is sent, so a consumer that crashes "
    "loses it. AckNone for important data -> AckExplicit. Always."
)
MAX_NEXT = 1000
MAX_NEXT_TIMEOUT_S = 60.0


def _rfc3339(value: str) -> str:
    """Accept an RFC 3339 time with a zone and write it as UTC with a `Z`, as the server expects."""
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UserError(f"{value!r} is not an RFC 3339 time", code="invalid_time",
                        hint="Write it like 2030-01-02T15:04:05Z.") from None
    if dt.tzinfo is None:
        raise UserError(f"{value!r} has no time zone", code="invalid_time",
                        hint="Add a zone: a trailing Z for UTC, or an offset such as +02:00.")
    return _format_time(dt)


def _format_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _optional(check: Callable[[str], str]) -> AfterValidator:
    return AfterValidator(lambda v: v if v is None else check(v))


# Optional values are written `Annotated[str | None, ...]` rather than `Annotated[str, ...] | None` so that the
# CLI sees a plain optional string (it reads an Annotated inside a union as JSON).
OptRfc3339 = Annotated[str | None, _optional(_rfc3339), Field(max_length=64)]
OptSubjectFilter = Annotated[str | None, _optional(check_subject)]
OptPublishSubject = Annotated[str | None, _optional(lambda s: check_subject(s, wildcards=False))]


# ---------------------------------------------------------------- models of what the server reports


class SequenceInfo(BaseModel):
    """A position in the consumer's and the stream's sequence."""

    model_config = ConfigDict(extra="ignore")

    consumer_seq: int = 0
    stream_seq: int = 0
    last_active: str | None = Field(default=None, description="When this position last moved (RFC 3339)")


class ConsumerState(BaseModel):
    """Where a consumer is and how far behind."""

    model_config = ConfigDict(extra="forbid")

    delivered: SequenceInfo = Field(description="Last message sent to a client")
    ack_floor: SequenceInfo = Field(description="Every message up to here is acknowledged")
    num_pending: int = Field(default=0, description="Messages matching the filter not yet delivered")
    num_ack_pending: int = Field(default=0, description="Delivered, not yet acknowledged")
    num_redelivered: int = Field(default=0, description="Delivered more than once and not yet acknowledged")
    num_waiting: int = Field(default=0, description="Pull requests waiting for messages")
    paused: bool = False
    pause_until: str | None = Field(default=None, description="When a pause ends (RFC 3339)")
    pause_remaining_s: float | None = Field(default=None, description="Seconds left in the pause")
    push_bound: bool | None = Field(default=None, description="Push consumers: a subscriber is listening")


class ConsumerInfoResult(Result):
    stream: str
    name: str
    kind: Literal["pull", "push"]
    created: str | None = None
    config: dict[str, Any] = Field(description="The consumer's configuration as the server reports it")
    state: ConsumerState
    cluster: ClusterInfo | None = None


class ConsumerSummary(BaseModel):
    """One line of a consumer listing, with its lag."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["pull", "push"]
    filter: str | None = Field(default=None, description="Filter subject(s); the stream's subjects when empty")
    ack_policy: str | None = None
    num_pending: int = Field(default=0, description="Not yet delivered")
    num_ack_pending: int = Field(default=0, description="Delivered, not yet acknowledged")
    num_redelivered: int = 0
    num_waiting: int = Field(default=0, description="Waiting pull requests")
    last_active: str | None = Field(default=None, description="Last delivery (RFC 3339)")
    paused: bool = False
    ack_floor: int = Field(default=0, description="Stream sequence up to which everything is acknowledged")
    delivered: int = Field(default=0, description="Stream sequence of the last delivery")


def _kind(cfg: dict[str, Any]) -> Literal["pull", "push"]:
    return "push" if cfg.get("deliver_subject") else "pull"


def _filter_text(cfg: dict[str, Any]) -> str | None:
    subjects = list(cfg.get("filter_subjects") or [])
    if cfg.get("filter_subject"):
        subjects.insert(0, cfg["filter_subject"])
    if not subjects:
        return None
    shown = ", ".join(subjects[:5])
    return f"{shown} (+{len(subjects) - 5} more)" if len(subjects) > 5 else shown


def _state(info: dict[str, Any]) -> ConsumerState:
    remaining = info.get("pause_remaining")
    return ConsumerState(
        delivered=SequenceInfo.model_validate(info.get("delivered") or {}),
        ack_floor=SequenceInfo.model_validate(info.get("ack_floor") or {}),
        num_pending=int(info.get("num_pending") or 0),
        num_ack_pending=int(info.get("num_ack_pending") or 0),
        num_redelivered=int(info.get("num_redelivered") or 0),
        num_waiting=int(info.get("num_waiting") or 0),
        paused=bool(info.get("paused")),
        pause_until=(info.get("config") or {}).get("pause_until") if info.get("paused") else None,
        pause_remaining_s=ns_to_s(int(remaining)) if remaining else None,
        push_bound=info.get("push_bound"),
    )


def _info_result(info: dict[str, Any]) -> ConsumerInfoResult:
    cfg = info.get("config") or {}
    return ConsumerInfoResult(
        stream=info.get("stream_name", ""),
        name=info.get("name") or cfg.get("name") or cfg.get("durable_name") or "",
        kind=_kind(cfg),
        created=info.get("created"),
        config=cfg,
        state=_state(info),
        cluster=ClusterInfo.model_validate(info["cluster"]) if info.get("cluster") else None,
    )


def _summary(info: dict[str, Any]) -> ConsumerSummary:
    cfg = info.get("config") or {}
    st = _state(info)
    return ConsumerSummary(
        name=info.get("name") or cfg.get("name") or "?",
        kind=_kind(cfg),
        filter=_filter_text(cfg),
        ack_policy=cfg.get("ack_policy"),
        num_pending=st.num_pending,
        num_ack_pending=st.num_ack_pending,
        num_redelivered=st.num_redelivered,
        num_waiting=st.num_waiting,
        last_active=st.delivered.last_active,
        paused=st.paused,
        ack_floor=st.ack_floor.stream_seq,
        delivered=st.delivered.stream_seq,
    )


async def fetch_consumer_info(ctx: Context, stream: str, consumer: str,
                              account_name: str | None = None) -> dict[str, Any]:
    js = await ctx.js(account_name)
    return await js.request(f"CONSUMER.INFO.{stream}.{consumer}", context=f"consumer {stream} > {consumer}")


async def _scan(ctx: Context, stream: str, account_name: str | None, offset: int,
                want: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `want` consumer infos from `offset` on (the server sends 256 a page), and the total."""
    js = await ctx.js(account_name)
    out: list[dict[str, Any]] = []
    total = 0
    while len(out) < want:
        resp = await js.request(f"CONSUMER.LIST.{stream}", {"offset": offset}, context=f"consumers of {stream}")
        items = resp.get("consumers") or []
        total = int(resp.get("total") or 0)
        out.extend(items[: want - len(out)])
        offset += len(items)
        if not items or offset >= total:
            break
    return out, total


# ---------------------------------------------------------------- list, info, report


class ConsumerListParams(PageParams):
    stream: StreamName


class ConsumerListResult(Result):
    stream: str
    consumers: list[ConsumerSummary]
    total: int = Field(description="Consumers on the stream")
    offset: int
    truncated: bool = Field(description="True when more consumers follow; call again with offset=next_offset")
    next_offset: int | None = None


@operation("consumer_list", cli="consumer ls", aliases=("list",), args=("stream",))
async def consumer_list(ctx: Context, params: ConsumerListParams) -> ConsumerListResult:
    """List a stream's consumers by name with their lag (pending, ack pending, redelivered), a page at a time."""
    infos, total = await _scan(ctx, params.stream, params.account_name, params.offset, params.limit)
    rows = sorted((_summary(i) for i in infos), key=lambda s: s.name)
    end = params.offset + len(rows)
    more = end < total
    return ConsumerListResult(stream=params.stream, consumers=rows, total=total, offset=params.offset,
                              truncated=more, next_offset=end if more else None)


class ConsumerRef(Params):
    stream: StreamName
    consumer: ConsumerName


@operation("consumer_info", args=("stream", "consumer"))
async def consumer_info(ctx: Context, params: ConsumerRef) -> ConsumerInfoResult:
    """Show a consumer's configuration and state: delivered and acknowledged positions, pending, paused."""
    return _info_result(await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name))


class ConsumerReportParams(PageParams):
    stream: StreamName
    scan_limit: int = Field(default=10_000, ge=1, le=100_000,
                            description="Read at most this many consumers to rank them (max 100000)")


class ConsumerReportResult(Result):
    stream: str
    last_seq: int = Field(description="The stream's last sequence")
    messages: int = Field(description="Messages in the stream")
    consumers: list[ConsumerSummary] = Field(description="Most pending first")
    total: int = Field(description="Consumers on the stream")
    scanned: int = Field(description="Consumers read to rank them")
    complete: bool = Field(description="False when the stream has more consumers than scan_limit")
    offset: int
    truncated: bool = Field(description="True when more rows follow; call again with offset=next_offset")
    next_offset: int | None = None


@operation("consumer_report", args=("stream",))
async def consumer_report(ctx: Context, params: ConsumerReportParams) -> ConsumerReportResult:
    """Report the lag of every consumer of a stream, the most pending first.

    To rank them all, natsop reads every consumer's state (up to scan_limit) and
    returns one page of the ranking.
    """
    info = await fetch_stream_info(ctx, params.stream, params.account_name)
    st = info.get("state") or {}
    infos, total = await _scan(ctx, params.stream, params.account_name, 0, params.scan_limit)
    ranked = sorted((_summary(i) for i in infos), key=lambda s: (-s.num_pending, -s.num_ack_pending, s.name))
    page = ranked[params.offset: params.offset + params.limit]
    end = params.offset + len(page)
    more = end < len(ranked)
    return ConsumerReportResult(
        stream=params.stream, last_seq=int(st.get("last_seq") or 0), messages=int(st.get("messages") or 0),
        consumers=page, total=total, scanned=len(infos), complete=len(infos) >= total, offset=params.offset,
        truncated=more, next_offset=end if more else None,
    )


# ---------------------------------------------------------------- add and edit


class ConsumerConfigParams(Params):
    """Consumer settings. Unset fields keep the server's defaults (or, on edit, the current value)."""

    stream: StreamName
    consumer: ConsumerName
    description: str | None = Field(default=None, max_length=4096, description="What reads from this consumer")
    filter_subject: OptSubjectFilter = Field(default=None, description="Only messages on this subject")
    filter_subjects: list[SubjectFilter] | None = Field(
        default=None, max_length=10_000,
        description="Only messages on these subjects (several filters; more than 300 is an anti-pattern). "
                    "An empty list on edit removes the filter.")
    deliver_policy: Literal["all", "last", "new", "by_start_sequence", "by_start_time",
                            "last_per_subject"] | None = Field(
        default=None, description="Where a new consumer starts; default all (replay from the start)")
    opt_start_seq: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="Start at this stream sequence")
    opt_start_time: OptRfc3339 = Field(default=None, description="Start at this time (RFC 3339)")
    ack_policy: Literal["explicit", "none", "all"] | None = Field(
        default=None, description="Default explicit: each message acknowledged. 'none' loses messages on a crash")
    ack_wait_s: float | None = Field(default=None, gt=0, le=31_536_000,
                                     description="Seconds before an unacknowledged message is sent again (default 30)")
    max_deliver: int | None = Field(default=None, ge=-1, le=MAX_COUNT, description="Deliveries per message; -1 = unlimited")
    backoff_s: list[Annotated[float, Field(gt=0, le=MAX_DURATION_S)]] | None = Field(
        default=None, max_length=1000,
                                          description="Redelivery delays in seconds, one per attempt")
    max_ack_pending: int | None = Field(default=None, ge=-1, le=MAX_COUNT,
                                        description="Unacknowledged messages allowed in flight (default 1000)")
    max_waiting: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Pull consumers: waiting requests (default 512)")
    replay_policy: Literal["instant", "original"] | None = Field(default=None, description="Default instant")
    sample_freq: int | None = Field(default=None, ge=0, le=100,
                                    description="Percent of acknowledgements sampled for latency advisories")
    headers_only: bool | None = Field(default=None, description="Deliver headers only, not bodies")
    inactive_threshold_s: float | None = Field(default=None, ge=0, le=31_536_000,
                                               description="Remove the consumer after this many idle seconds")
    metadata: dict[str, str] | None = Field(default=None, description="Free-form labels")
    replicas: int | None = Field(default=None, ge=0, le=5, description="0 = as many as the stream")
    mem_storage: bool | None = Field(default=None, description="Keep the consumer's state in memory")
    pause_until: OptRfc3339 = Field(default=None, description="Paused until this time (2.11+, RFC 3339)")
    priority_groups: list[str] | None = Field(default=None, max_length=16,
                                              description="Pull consumers: priority group names (2.11+)")
    priority_policy: Literal["none", "overflow", "pinned_client", "prioritized"] | None = Field(
        default=None, description="How priority groups share messages (2.11+; prioritized 2.12+)")
    priority_timeout_s: float | None = Field(default=None, gt=0, le=86_400,
                                             description="pinned_client: seconds before the pin moves")
    deliver_subject: OptPublishSubject = Field(
        default=None, description="Makes a push consumer delivering here; omit for a pull consumer (preferred)")
    deliver_group: str | None = Field(default=None, max_length=255,
                                      description="Push consumers: queue group of the subscribers")
    flow_control: bool | None = Field(default=None, description="Push consumers: flow control")
    idle_heartbeat_s: float | None = Field(default=None, gt=0, le=3600,
                                           description="Push consumers: heartbeat every this many idle seconds")

    @model_validator(mode="after")
    def _one_filter_form(self) -> ConsumerConfigParams:
        if self.filter_subject is not None and self.filter_subjects is not None:
            raise UserError("give filter_subject or filter_subjects, not both", code="invalid_argument",
                            hint="Use filter_subjects for several subjects.")
        return self


class ConsumerAddParams(ConsumerConfigParams):
    durable: bool = Field(default=True, description="Durable (default). False: the server removes it after "
                                                    "inactive_threshold_s (default 5s) without a client")


def _merge(p: ConsumerConfigParams, base: dict[str, Any]) -> dict[str, Any]:
    """The set parameters over `base` (the current config on edit, defaults on add)."""
    cfg = dict(base)
    simple = ("description", "deliver_policy", "opt_start_seq", "opt_start_time", "ack_policy", "max_deliver",
              "max_ack_pending", "max_waiting", "replay_policy", "headers_only", "metadata", "mem_storage",
              "pause_until", "priority_groups", "priority_policy", "deliver_subject", "deliver_group",
              "flow_control")
    for key in simple:
        value = getattr(p, key)
        if value is not None:
            cfg[key] = value
    if p.filter_subject is not None:
        cfg["filter_subject"] = p.filter_subject
        cfg.pop("filter_subjects", None)
    if p.filter_subjects is not None:
        cfg.pop("filter_subject", None)
        if p.filter_subjects:
            cfg["filter_subjects"] = list(p.filter_subjects)
        else:
            cfg.pop("filter_subjects", None)
    if p.opt_start_seq is not None and p.deliver_policy is None:
        cfg["deliver_policy"] = "by_start_sequence"
    if p.opt_start_time is not None and p.deliver_policy is None:
        cfg["deliver_policy"] = "by_start_time"
    durations = {"ack_wait": p.ack_wait_s, "inactive_threshold": p.inactive_threshold_s,
                 "priority_timeout": p.priority_timeout_s, "idle_heartbeat": p.idle_heartbeat_s}
    for key, seconds in durations.items():
        if seconds is not None:
            cfg[key] = duration_ns(seconds)
    if p.backoff_s is not None:
        cfg["backoff"] = [duration_ns(s) for s in p.backoff_s]
    if p.sample_freq is not None:
        cfg["sample_freq"] = f"{p.sample_freq}%"
    if p.replicas is not None:
        cfg["num_replicas"] = p.replicas
    return cfg


def _check(cfg: dict[str, Any]) -> None:
    """Refuse combinations the server would refuse, with a clearer word, before sending anything."""
    policy = cfg.get("deliver_policy")
    if policy == "by_start_sequence" and not cfg.get("opt_start_seq"):
        raise UserError("deliver_policy by_start_sequence needs opt_start_seq", code="invalid_argument")
    if policy == "by_start_time" and not cfg.get("opt_start_time"):
        raise UserError("deliver_policy by_start_time needs opt_start_time", code="invalid_argument")
    if cfg.get("opt_start_seq") and policy != "by_start_sequence":
        raise UserError("opt_start_seq goes with deliver_policy by_start_sequence", code="invalid_argument")
    if cfg.get("opt_start_time") and policy != "by_start_time":
        raise UserError("opt_start_time goes with deliver_policy by_start_time", code="invalid_argument")
    push = bool(cfg.get("deliver_subject"))
    if push:
        for key in ("max_waiting", "priority_groups"):
            if cfg.get(key):
                raise UserError(f"{key} is for pull consumers; this one has a deliver_subject (push)",
                                code="invalid_argument", hint="Drop deliver_subject to make a pull consumer.")
    else:
        for key in ("deliver_group", "flow_control", "idle_heartbeat"):
            if cfg.get(key):
                raise UserError(f"{key} is for push consumers; give deliver_subject too, or drop {key}",
                                code="invalid_argument", hint="Pull consumers (no deliver_subject) are preferred.")
    groups = cfg.get("priority_groups")
    if groups and cfg.get("priority_policy") in (None, "none"):
        raise UserError("priority_groups need a priority_policy", code="invalid_argument",
                        hint="Set priority_policy to overflow, pinned_client or prioritized.")
    if cfg.get("priority_policy") not in (None, "none") and not groups:
        raise UserError("priority_policy needs priority_groups", code="invalid_argument")


def _warnings(cfg: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if cfg.get("ack_policy") == "none":
        out.append(ACK_NONE_WARNING)
    filters = len(cfg.get("filter_subjects") or []) + (1 if cfg.get("filter_subject") else 0)
    if filters > MANY_FILTERS:
        out.append(f"{filters} filter subjects: more than {MANY_FILTERS} disjoint filters per consumer is an "
                   "anti-pattern (the server evaluates every one for every message). Use broader wildcards.")
    return out


class ConsumerWriteResult(ConsumerInfoResult):
    outcome: Literal["created", "updated", "unchanged"] = Field(description="What the call did")
    warnings: list[str] = Field(default_factory=list, description="Anti-patterns in this configuration")


async def _info_or_none(ctx: Context, stream: str, consumer: str, account_name: str | None) -> dict[str, Any] | None:
    try:
        return await fetch_consumer_info(ctx, stream, consumer, account_name)
    except NotFound as err:
        if err.code == "consumer_not_found":
            return None
        raise


async def _write(ctx: Context, p: ConsumerConfigParams, cfg: dict[str, Any], action: str,
                 before: dict[str, Any] | None) -> ConsumerWriteResult:
    js = await ctx.js(p.account_name)
    body = {"stream_name": p.stream, "config": cfg, "action": action}
    verb = "update" if action == "update" else "create"
    try:
        info = await js.request(f"CONSUMER.CREATE.{p.stream}.{p.consumer}", body,
                                context=f"{verb} consumer {p.stream} > {p.consumer}")
    except NatsopError as err:
        # 10012 is the server's catch-all for a failed create; "can not ... update" means a fixed setting.
        if err.details.get("err_code") == 10012 and "can not" in err.message and before is not None:
            raise Conflict(err.message, code="consumer_setting_fixed", details=err.details,
                           hint="ack_policy, deliver_policy, the start position and pull/push are fixed once a "
                                "consumer exists; create a new consumer under another name instead.") from None
        raise
    result = _info_result(info)
    if before is None:
        outcome: Literal["created", "updated", "unchanged"] = "created"
    elif (before.get("config") or {}) == result.config:
        outcome = "unchanged"
    else:
        outcome = "updated"
    return ConsumerWriteResult(**dict(result), outcome=outcome, warnings=_warnings(result.config))


@operation("consumer_add", cli="consumer add", aliases=("create", "new"), impact=Impact.WRITE, idempotent=True,
           args=("stream", "consumer"))
async def consumer_add(ctx: Context, params: ConsumerAddParams) -> ConsumerWriteResult:
    """Create a consumer, or bring an existing one to this configuration (idempotent).

    Defaults: durable, ack_policy explicit, deliver_policy all, pull (no deliver_subject).
    Calling it again with the same settings changes nothing; with other settings it
    updates the consumer where the server allows the change. Settings left out take the
    server's defaults. `warnings` names anti-patterns such as ack_policy none.
    """
    base: dict[str, Any] = {"ack_policy": "explicit", "deliver_policy": "all"}
    if params.durable:
        base["durable_name"] = params.consumer
    else:
        base["name"] = params.consumer
    cfg = _merge(params, base)
    _check(cfg)
    before = await _info_or_none(ctx, params.stream, params.consumer, params.account_name)
    return await _write(ctx, params, cfg, "", before)


@operation("consumer_edit", cli="consumer edit", aliases=("update",), impact=Impact.WRITE, idempotent=True,
           args=("stream", "consumer"))
async def consumer_edit(ctx: Context, params: ConsumerConfigParams) -> ConsumerWriteResult:
    """Change a consumer's settings; only the parameters given change, the rest stay as they are.

    Some settings (deliver_policy, ack_policy, start position, pull/push) are fixed at
    creation; the server refuses to change them.
    """
    before = await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name)
    cfg = _merge(params, before.get("config") or {})
    _check(cfg)
    return await _write(ctx, params, cfg, "update", before)


# ---------------------------------------------------------------- delete


class ConsumerDeleteParams(ConfirmParams):
    stream: StreamName
    consumer: ConsumerName


class ConsumerDeleteResult(Confirmable):
    stream: str
    consumer: str
    num_pending: int = Field(description="Messages it had not yet delivered")
    num_ack_pending: int = Field(description="Delivered messages not yet acknowledged")


@operation("consumer_delete", cli="consumer rm", aliases=("delete", "del"), impact=Impact.DESTRUCTIVE,
           args=("stream", "consumer"))
async def consumer_delete(ctx: Context, params: ConsumerDeleteParams) -> ConsumerDeleteResult:
    """Delete a consumer and its position in the stream (the messages stay). Needs confirmation."""
    info = await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name)
    st = _state(info)
    result = ConsumerDeleteResult(
        done=False, stream=params.stream, consumer=params.consumer, num_pending=st.num_pending,
        num_ack_pending=st.num_ack_pending,
        action=(f"delete consumer {params.consumer} of stream {params.stream}, losing its position: "
                f"{st.num_pending} messages not yet delivered and {st.num_ack_pending} awaiting acknowledgement"),
    )
    if not check_confirmation(params.confirm, params.consumer):
        result.confirmation_required = True
        result.confirm_with = params.consumer
        return result
    js = await ctx.js(params.account_name)
    await js.request(f"CONSUMER.DELETE.{params.stream}.{params.consumer}",
                     context=f"delete consumer {params.stream} > {params.consumer}")
    result.done = True
    return result


# ---------------------------------------------------------------- pause and resume (2.11+)


async def _require_pause_support(ctx: Context, account_name: str | None) -> None:
    """Consumer pause arrived with JetStream API level 1 (nats-server 2.11)."""
    js = await ctx.js(account_name)
    info = await js.request("INFO", context="JetStream account info")
    level = (info.get("api") or {}).get("level")
    if level is None:
        nc = await ctx.nc(account_name)
        version = nc.connected_server_version
        supported = (version.major, version.minor) >= (2, 11)
        found = f"server version {version}"
    else:
        supported = int(level) >= 1
        found = f"JetStream API level {level}"
    if not supported:
        raise Unsupported(f"consumer pause needs nats-server 2.11 or newer (API level 1); this one has {found}",
                          code="server_too_old", hint="Upgrade the server to 2.11+, or stop the clients instead.")


class ConsumerPauseParams(ConsumerRef):
    until: OptRfc3339 = Field(default=None, description="Pause until this time (RFC 3339)")
    for_s: float | None = Field(default=None, gt=0, le=10 * 31_536_000, description="Pause for this many seconds")

    @model_validator(mode="after")
    def _one_end(self) -> ConsumerPauseParams:
        if (self.until is None) == (self.for_s is None):
            raise UserError("give exactly one of until (a time) or for_s (seconds)", code="invalid_argument",
                            hint="For example for_s=3600, or until='2030-01-02T15:04:05Z'.")
        return self


class ConsumerPauseResult(Result):
    stream: str
    consumer: str
    paused: bool
    pause_until: str | None = Field(default=None, description="When delivery resumes (RFC 3339)")
    pause_remaining_s: float | None = Field(default=None, description="Seconds until delivery resumes")


def _pause_result(p: ConsumerRef, resp: dict[str, Any]) -> ConsumerPauseResult:
    paused = bool(resp.get("paused"))
    remaining = resp.get("pause_remaining")
    return ConsumerPauseResult(stream=p.stream, consumer=p.consumer, paused=paused,
                               pause_until=resp.get("pause_until") if paused else None,
                               pause_remaining_s=ns_to_s(int(remaining)) if paused and remaining else None)


@operation("consumer_pause", impact=Impact.WRITE, idempotent=True, args=("stream", "consumer"))
async def consumer_pause(ctx: Context, params: ConsumerPauseParams) -> ConsumerPauseResult:
    """Pause delivery from a consumer until a time or for a duration, keeping it and its position (2.11+)."""
    if params.until is not None:
        until = params.until
        when = parse_time(until)
        if when is None or when <= datetime.now(UTC):
            raise UserError(f"until {params.until!r} is not in the future", code="invalid_argument",
                            hint="Give a later time, or use consumer_resume to resume now.")
    else:
        until = _format_time(datetime.now(UTC) + timedelta(seconds=params.for_s or 0))
    await _require_pause_support(ctx, params.account_name)
    await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name)
    js = await ctx.js(params.account_name)
    resp = await js.request(f"CONSUMER.PAUSE.{params.stream}.{params.consumer}", {"pause_until": until},
                            context=f"pause consumer {params.stream} > {params.consumer}")
    return _pause_result(params, resp)


@operation("consumer_resume", impact=Impact.WRITE, idempotent=True, args=("stream", "consumer"))
async def consumer_resume(ctx: Context, params: ConsumerRef) -> ConsumerPauseResult:
    """Resume delivery from a paused consumer now (2.11+)."""
    await _require_pause_support(ctx, params.account_name)
    await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name)
    js = await ctx.js(params.account_name)
    resp = await js.request(f"CONSUMER.PAUSE.{params.stream}.{params.consumer}",
                            context=f"resume consumer {params.stream} > {params.consumer}")
    return _pause_result(params, resp)


# ---------------------------------------------------------------- next (fetch from a pull consumer)


class AckMetadata(BaseModel):
    """What a JetStream message's reply subject says about it."""

    model_config = ConfigDict(extra="forbid")

    stream: str
    consumer: str
    delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int
    domain: str | None = None


def parse_ack_subject(reply: str) -> AckMetadata | None:
    """Read `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (v1) or the
    v2 form with `<domain>.<account hash>` after `$JS.ACK` (and a token more at the end)."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    if len(tokens) == 9:
        domain, rest = None, tokens[2:]
    elif len(tokens) >= 11:
        domain, rest = (None if tokens[2] == "_" else tokens[2]), tokens[4:]
    else:
        return None
    try:
        return AckMetadata(stream=rest[0], consumer=rest[1], delivered=int(rest[2]), stream_seq=int(rest[3]),
                           consumer_seq=int(rest[4]), timestamp_ns=int(rest[5]), pending=int(rest[6]),
                           domain=domain)
    except ValueError:
        return None


class ConsumerNextParams(ConsumerRef):
    count: int = Field(default=1, ge=1, le=MAX_NEXT, description=f"Fetch up to this many messages (max {MAX_NEXT})")
    timeout_s: float = Field(default=2.0, ge=0.1, le=MAX_NEXT_TIMEOUT_S,
                             description="Wait at most this long for messages (max 60)")
    no_wait: bool = Field(default=False, description="Return at once with what is available")
    ack: bool = Field(default=False, description="Acknowledge each message (default: a peek, nothing acknowledged)")
    max_bytes: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Ask the server for at most this many bytes")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=0, le=MAX_PAYLOAD_BYTES,
                                   description="Show at most this much of each body")


class ConsumerMessage(BaseModel):
    """A message as a consumer delivered it."""

    model_config = ConfigDict(extra="forbid")

    stream_seq: int | None = None
    consumer_seq: int | None = None
    subject: str
    time: str | None = Field(default=None, description="When the stream stored it (RFC 3339)")
    delivered: int | None = Field(default=None, description="Times delivered, this one included")
    pending: int | None = Field(default=None, description="Messages left for the consumer after this one")
    headers: dict[str, list[str]] | None = None
    payload: Payload
    acked: bool = False


class ConsumerNextResult(Result):
    stream: str
    consumer: str
    messages: list[ConsumerMessage]
    acknowledged: bool = Field(description="True when every message was acknowledged")
    ended: str = Field(description="Why fetching stopped: count reached, or the server's status")
    note: str | None = None


def _status(msg: Msg) -> tuple[str, str] | None:
    headers = msg.headers or {}
    status = headers.get("Status")
    if status is None or msg.data:
        return None
    return str(status), str(headers.get("Description") or "")


async def _ack(nc: NATS, reply: str) -> bool:
    """Double acknowledgement: the server answers once it has recorded the ack."""
    if not reply:
        return False
    try:
        await nc.request(reply, b"+ACK", timeout=5)
    except Exception:
        return False
    return True


@operation("consumer_next", impact=Impact.WRITE, idempotent=False, args=("stream", "consumer"), timeout_s=90)
async def consumer_next(ctx: Context, params: ConsumerNextParams) -> ConsumerNextResult:
    """Fetch up to `count` messages from a pull consumer; by default a peek that acknowledges nothing.

    Unacknowledged messages are sent again after the consumer's ack_wait. Pass ack=true
    to acknowledge each one (the server confirms each ack). This is a write even as a
    peek: every fetch moves the consumer's delivered position and delivery counts.
    """
    info = await fetch_consumer_info(ctx, params.stream, params.consumer, params.account_name)
    cfg = info.get("config") or {}
    if cfg.get("deliver_subject"):
        raise UserError(f"consumer {params.consumer} is a push consumer (it delivers to {cfg['deliver_subject']})",
                        code="push_consumer", hint="consumer_next reads pull consumers; subscribe to the "
                                                   "deliver subject instead, or create a pull consumer.")
    js = await ctx.js(params.account_name)
    nc = await ctx.nc(params.account_name)
    # With no_wait the request carries no expiry: with one, the server would hold it open until it expires.
    body: dict[str, Any] = {"batch": params.count}
    if params.no_wait:
        body["no_wait"] = True
    else:
        body["expires"] = duration_ns(params.timeout_s)
    if params.max_bytes is not None:
        body["max_bytes"] = params.max_bytes
    inbox = nc.new_inbox()
    messages: list[ConsumerMessage] = []
    replies: list[str] = []
    ended = "timeout"
    try:
        sub = await nc.subscribe(inbox)
        try:
            async def send() -> None:
                await nc.publish(js.subject(f"CONSUMER.MSG.NEXT.{params.stream}.{params.consumer}"),
                                 json.dumps(body).encode(), reply=inbox)

            await send()
            resend = Resend(send)  # a consumer just created or moved in a cluster may lack interest here yet
            loop = asyncio.get_running_loop()
            # The server ends the request itself (408) when it expires; wait a little longer for that word.
            deadline = loop.time() + params.timeout_s + 1.0
            while len(messages) < params.count:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except (nats_errors.TimeoutError, TimeoutError):
                    break
                status = _status(msg)
                if status is not None:
                    code, description = status
                    if code == "100":  # heartbeat
                        continue
                    if code == "503" and await resend.again(remaining):
                        continue
                    said = f"{code} {description}".strip()
                    # 404 No Messages / 408 Request Timeout end a fetch normally; 409 is the server ending it
                    # for a reason of its own (max waiting, consumer deleted, leadership change, size).
                    ended = f"no more messages ({said})" if code in ("404", "408") else f"ended by the server ({said})"
                    break
                messages.append(_message(msg, params.max_payload_bytes))
                replies.append(msg.reply or "")
            else:
                ended = "count reached"
        finally:
            await sub.unsubscribe()
        if params.ack and cfg.get("ack_policy") != "none" and messages:
            oks = await asyncio.gather(*(_ack(nc, r) for r in replies))
            for m, ok in zip(messages, oks, strict=True):
                m.acked = ok
    except NatsopError:
        raise
    except Exception as exc:
        raise from_nats(exc, context=f"next from {params.stream} > {params.consumer}") from None
    return ConsumerNextResult(stream=params.stream, consumer=params.consumer, messages=messages,
                              acknowledged=bool(messages) and all(m.acked for m in messages), ended=ended,
                              note=_next_note(params, info, messages))


def _next_note(params: ConsumerNextParams, info: dict[str, Any], messages: list[ConsumerMessage]) -> str | None:
    cfg = info.get("config") or {}
    if not messages:
        if info.get("paused"):
            return f"The consumer is paused until {cfg.get('pause_until')}: it delivers nothing until then."
        return None
    if cfg.get("ack_policy") == "none":
        return "ack_policy none: nothing to acknowledge; the server counts these messages as done."
    if not params.ack:
        wait = ns_to_s(cfg.get("ack_wait")) or 30.0
        return (f"Not acknowledged (a peek): the server sends these messages again after ack_wait ({wait:g}s). "
                "Pass ack=true to acknowledge them.")
    if not all(m.acked for m in messages):
        return "Some acknowledgements were not confirmed; those messages may be delivered again."
    return None


def _message(msg: Msg, max_bytes: int) -> ConsumerMessage:
    meta = parse_ack_subject(msg.reply or "")
    time = None
    if meta is not None:
        time = _format_time(datetime.fromtimestamp(meta.timestamp_ns / 1e9, tz=UTC))
    return ConsumerMessage(
        stream_seq=meta.stream_seq if meta else None,
        consumer_seq=meta.consumer_seq if meta else None,
        subject=msg.subject,
        time=time,
        delivered=meta.delivered if meta else None,
        pending=meta.pending if meta else None,
        headers=headers_of(msg.headers),
        payload=payload_of(msg.data, max_bytes),
    )
