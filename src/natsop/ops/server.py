"""Servers: what they are, which ones answer, and how quickly.

These operations ask every server through the system account (`$SYS.REQ.SERVER.PING.*`)
of the deployment the selected account connects to, never another deployment's.
`server_info` alone still says something without it: what the server told our
connection when it connected. `rtt` times every server it knows a URL of over a
connection of its own, as `nats rtt` does, and with the system account also over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import nats.errors as nats_errors
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import NatsopError, NotFound, ServerError, from_api_error, from_nats
from natsop.formats import parse_time
from natsop.ops._common import PageParams
from natsop.ops._sysreq import (
    SERVER_ID,
    GatherParams,
    ServerRef,
    active_servers,
    connected_server,
    gather_replies,
    is_no_system_account,
    server_ref,
    timed_gather,
)
from natsop.registry import Params, Result, Scope, operation
from natsop.wire.context import Context

__all__ = [
    "JetStreamServerInfo",
    "PingReply",
    "RttMeasurement",
    "RttResult",
    "ServerInfoResult",
    "ServerListResult",
    "ServerPingResult",
    "ServerRtt",
    "ServerSummary",
]


def _uptime_s(start: Any, now: Any) -> float | None:
    started = parse_time(start)
    if started is None:
        return None
    end = parse_time(now) or datetime.now(UTC)
    return round(max(0.0, (end - started).total_seconds()), 3)


# -- server info


class ServerInfoParams(Params):
    server: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="Server name or id (default: the server this account is connected to)",
    )
    timeout_s: float = Field(default=2.0, ge=0.05, le=30.0, description="Wait at most this long for the server")


class JetStreamServerInfo(BaseModel):
    """A server's JetStream settings and use."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool
    domain: str | None = None
    store_dir: str | None = None
    max_memory: int | None = Field(default=None, description="Memory JetStream may use on this server, bytes")
    max_storage: int | None = Field(default=None, description="Disk JetStream may use on this server, bytes")
    sync_interval_ns: int | None = Field(default=None, description="How often the store is flushed to disk")
    sync_always: bool = Field(default=False, description="True when every write is flushed before it is acknowledged")
    memory: int | None = Field(default=None, description="Memory in use, bytes")
    storage: int | None = Field(default=None, description="Disk in use, bytes")
    accounts: int | None = Field(default=None, description="Accounts with JetStream on this server")
    ha_assets: int | None = Field(default=None, description="Replicated streams and consumers (Raft groups)")
    api_level: int | None = None
    api_total: int | None = Field(default=None, description="JetStream API requests served")
    api_errors: int | None = None
    meta_leader: str | None = Field(default=None, description="The JetStream meta leader, in a cluster")
    meta_cluster_size: int | None = None
    limits: dict[str, Any] | None = Field(default=None, description="Server-wide JetStream limits")


class ServerInfoResult(Result):
    source: str = Field(description="'varz' (full, via the system account) or 'connect_info' (what clients are told)")
    name: str
    id: str | None = None
    version: str | None = None
    go: str | None = None
    git_commit: str | None = None
    host: str | None = None
    port: int | None = None
    cluster: str | None = None
    domain: str | None = None
    auth_required: bool | None = None
    tls_required: bool | None = None
    max_payload: int | None = Field(default=None, description="Largest message the server accepts, bytes")
    max_connections: int | None = None
    connections: int | None = None
    total_connections: int | None = Field(default=None, description="Connections accepted since the server started")
    subscriptions: int | None = None
    slow_consumers: int | None = None
    routes: int | None = None
    leafnodes: int | None = None
    start: str | None = Field(default=None, description="When the server started (RFC 3339)")
    uptime_s: float | None = None
    memory_bytes: int | None = Field(default=None, description="Resident memory of the server process")
    cpu_percent: float | None = None
    cores: int | None = None
    in_msgs: int | None = None
    out_msgs: int | None = None
    in_bytes: int | None = None
    out_bytes: int | None = None
    jetstream: JetStreamServerInfo | None = None
    note: str | None = None


def _jetstream_info(js: Any, domain_hint: str | None) -> JetStreamServerInfo:
    if not isinstance(js, dict) or not js:
        return JetStreamServerInfo(enabled=False)
    cfg = js.get("config") or {}
    stats = js.get("stats") or {}
    api = stats.get("api") or {}
    meta = js.get("meta") or {}
    return JetStreamServerInfo(
        enabled=True,
        domain=cfg.get("domain") or domain_hint,
        store_dir=cfg.get("store_dir"),
        max_memory=cfg.get("max_memory"),
        max_storage=cfg.get("max_storage"),
        sync_interval_ns=cfg.get("sync_interval"),
        sync_always=bool(cfg.get("sync_always")),
        memory=stats.get("memory"),
        storage=stats.get("storage"),
        accounts=stats.get("accounts"),
        ha_assets=stats.get("ha_assets"),
        api_level=api.get("level"),
        api_total=api.get("total"),
        api_errors=api.get("errors"),
        meta_leader=meta.get("leader"),
        meta_cluster_size=meta.get("cluster_size"),
        limits=js.get("limits") or None,
    )


def _from_varz(reply: dict[str, Any]) -> ServerInfoResult:
    ref = server_ref(reply)
    v = reply.get("data") or {}
    cluster = v.get("cluster") or {}
    return ServerInfoResult(
        source="varz",
        name=str(v.get("server_name") or ref.name),
        id=v.get("server_id") or ref.id,
        version=v.get("version") or ref.version,
        go=v.get("go"),
        git_commit=v.get("git_commit"),
        host=v.get("host"),
        port=v.get("port"),
        cluster=cluster.get("name") or ref.cluster,
        domain=ref.domain,
        auth_required=v.get("auth_required"),
        tls_required=v.get("tls_required"),
        max_payload=v.get("max_payload"),
        max_connections=v.get("max_connections"),
        connections=v.get("connections"),
        total_connections=v.get("total_connections"),
        subscriptions=v.get("subscriptions"),
        slow_consumers=v.get("slow_consumers"),
        routes=v.get("routes"),
        leafnodes=v.get("leafnodes"),
        start=v.get("start"),
        uptime_s=_uptime_s(v.get("start"), v.get("now")),
        memory_bytes=v.get("mem"),
        cpu_percent=v.get("cpu"),
        cores=v.get("cores"),
        in_msgs=v.get("in_msgs"),
        out_msgs=v.get("out_msgs"),
        in_bytes=v.get("in_bytes"),
        out_bytes=v.get("out_bytes"),
        jetstream=_jetstream_info(v.get("jetstream"), ref.domain),
    )


def _from_connect_info(info: dict[str, Any]) -> ServerInfoResult:
    js = bool(info.get("jetstream"))
    return ServerInfoResult(
        source="connect_info",
        name=str(info.get("server_name") or info.get("server_id") or "?"),
        id=info.get("server_id"),
        version=info.get("version"),
        go=info.get("go"),
        git_commit=info.get("git_commit"),
        host=info.get("host"),
        port=info.get("port"),
        cluster=info.get("cluster") or None,
        domain=info.get("domain") or None,
        auth_required=info.get("auth_required"),
        tls_required=info.get("tls_required"),
        max_payload=info.get("max_payload"),
        jetstream=JetStreamServerInfo(enabled=js, domain=info.get("domain") or None, api_level=info.get("api_lvl")),
        note="Only what the server tells every client when it connects: configure the system account of this "
        "deployment (NATSOP_SYSTEM_USER/NATSOP_SYSTEM_PASSWORD, NATSOP_SYSTEM_CREDS or a 'system' context; for the "
        "deployment of a context <name>, a context '<name>-system') for connections, memory, CPU, uptime and the "
        "JetStream settings.",
    )


@operation("server_info", cli="server info", scope=Scope.SYSTEM, args=("server",))
async def server_info(ctx: Context, params: ServerInfoParams) -> ServerInfoResult:
    """Show one server's version, cluster, JetStream settings, connections, uptime, memory and CPU.

    Without a name, the server this account is connected to. Uses the system account;
    without one, reports what the server told the connection (version, name, limits).
    """
    nc = await ctx.nc(params.account_name)
    here = connected_server(nc)
    try:
        sys_nc = await ctx.system(params.account_name)
    except NatsopError as exc:
        if is_no_system_account(exc) and (params.server is None
                                          or params.server in (here.get("server_name"), here.get("server_id"))):
            return _from_connect_info(here)
        raise
    target = params.server
    if target is None:
        target = here.get("server_id")
        if not target:
            raise ServerError("the server did not say who it is (no server_id in its INFO)")
    if SERVER_ID.match(target):
        replies = await gather_replies(sys_nc, f"$SYS.REQ.SERVER.{target}.VARZ", {},
                                       GatherParams(expected=1, timeout_s=params.timeout_s))
    else:
        replies = await gather_replies(sys_nc, "$SYS.REQ.SERVER.PING.VARZ",
                                       {"server_name": target, "exact_match": True},
                                       GatherParams(expected=1, timeout_s=params.timeout_s))
    if not replies:
        raise NotFound(f"no server named {target!r} answered within {params.timeout_s:g}s", code="server_not_found",
                       hint="List the servers with server_list and use one of their names or ids.")
    reply = replies[0]
    if reply.get("error"):
        raise from_api_error(reply["error"], context=f"server {target}")
    return _from_varz(reply)


# -- server list


class ServerListParams(PageParams, GatherParams):
    cluster: str | None = Field(default=None, min_length=1, max_length=256,
                                description="Only the servers of this cluster")


class ServerSummary(BaseModel):
    """One server of a listing (from its STATSZ)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: str | None = None
    domain: str | None = None
    version: str | None = None
    jetstream: bool = False
    connections: int = 0
    subscriptions: int = 0
    slow_consumers: int = 0
    routes: int = Field(default=0, description="Other servers this one has routes to")
    memory_bytes: int | None = None
    cpu_percent: float | None = None
    uptime_s: float | None = None


class ServerListResult(Result):
    servers: list[ServerSummary]
    total: int = Field(description="Servers that answered")
    offset: int
    truncated: bool = Field(description="True when more servers follow; call again with offset=next_offset")
    next_offset: int | None = None
    clusters: list[str] = Field(default_factory=list, description="Names of the clusters that answered")
    connections: int = Field(description="Client connections over all servers that answered")
    subscriptions: int = Field(description="Subscriptions over all servers that answered")
    expected: int | None = None
    missing: int | None = Field(default=None, description="Servers known to exist (or expected) that did not answer")


def _summary(reply: dict[str, Any]) -> ServerSummary:
    ref = server_ref(reply)
    st = reply.get("statsz") or reply.get("data") or {}
    srv = reply.get("server") or {}
    return ServerSummary(
        name=ref.name,
        cluster=ref.cluster,
        domain=ref.domain,
        version=ref.version,
        jetstream=bool(srv.get("jetstream") or st.get("jetstream")),
        connections=int(st.get("connections") or 0),
        subscriptions=int(st.get("subscriptions") or 0),
        slow_consumers=int(st.get("slow_consumers") or 0),
        routes=len({r.get("name") or r.get("rid") for r in st.get("routes") or []}),
        memory_bytes=st.get("mem"),
        cpu_percent=st.get("cpu"),
        uptime_s=_uptime_s(st.get("start"), srv.get("time")),
    )


@operation("server_list", cli="server ls", aliases=("list",), scope=Scope.SYSTEM, args=("expected",))
async def server_list(ctx: Context, params: ServerListParams) -> ServerListResult:
    """List every server in the cluster or super-cluster with its load, sorted by name.

    Needs the system account. It waits until every server the deployment counts has
    answered, or `timeout_s`; pass `expected` (the number of servers) to wait for exactly
    that many and be told how many are missing.
    """
    nc = await ctx.system(params.account_name)
    body: dict[str, Any] = {"cluster": params.cluster} if params.cluster else {}
    # active_servers counts the whole deployment: no help in waiting for one cluster's servers.
    gathered = await timed_gather(nc, "$SYS.REQ.SERVER.PING.STATSZ", body, params,
                                  learn_expected=None if params.cluster else active_servers)
    replies = [r.data for r in gathered if not r.data.get("error")]
    rows = sorted((_summary(r) for r in replies), key=lambda s: s.name)
    known = max((active_servers(r) for r in replies), default=0)
    want = params.expected or (None if params.cluster else known or None)
    page = rows[params.offset: params.offset + params.limit]
    end = params.offset + len(page)
    more = end < len(rows)
    return ServerListResult(
        servers=page,
        total=len(rows),
        offset=params.offset,
        truncated=more,
        next_offset=end if more else None,
        clusters=sorted({s.cluster for s in rows if s.cluster}),
        connections=sum(s.connections for s in rows),
        subscriptions=sum(s.subscriptions for s in rows),
        expected=params.expected,
        missing=max(0, want - len(rows)) if want else None,
    )


# -- server ping


class ServerPingParams(GatherParams):
    pass


class PingReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: str | None = None
    rtt_ms: float = Field(description="From sending the request to receiving this server's reply")


class ServerPingResult(Result):
    replies: list[PingReply] = Field(description="Fastest first")
    count: int
    min_ms: float | None = None
    avg_ms: float | None = None
    max_ms: float | None = None
    expected: int | None = None
    missing: int | None = Field(default=None, description="Servers known to exist (or expected) that did not answer")


@operation("server_ping", cli="server ping", scope=Scope.SYSTEM, args=("expected",))
async def server_ping(ctx: Context, params: ServerPingParams) -> ServerPingResult:
    """Ping every server and report each one's round-trip time, with min/avg/max.

    Needs the system account. The time runs from sending the request to receiving a
    server's reply, so it includes the routes between servers.
    """
    nc = await ctx.system(params.account_name)
    replies = await timed_gather(nc, "$SYS.REQ.SERVER.PING.STATSZ", {}, params, learn_expected=active_servers)
    rows: list[PingReply] = []
    for r in replies:
        ref: ServerRef = server_ref(r.data)
        rows.append(PingReply(name=ref.name, cluster=ref.cluster, rtt_ms=round(r.elapsed_s * 1000, 3)))
    rows.sort(key=lambda p: p.rtt_ms)
    times = [p.rtt_ms for p in rows]
    want = params.expected or max((active_servers(r.data) for r in replies), default=0)
    return ServerPingResult(
        replies=rows,
        count=len(rows),
        min_ms=min(times) if times else None,
        avg_ms=round(statistics.fmean(times), 3) if times else None,
        max_ms=max(times) if times else None,
        expected=params.expected,
        missing=max(0, want - len(rows)) if want else None,
    )


# -- rtt

#: At most this many servers are measured over connections of their own, this many at a time.
MAX_RTT_SERVERS = 64
_PROBES_AT_ONCE = 8


class RttParams(Params):
    iterations: int = Field(default=5, ge=1, le=100, description="Round trips to time per connection and per server")
    all_accounts: bool = Field(default=False,
                               description="Measure every configured account's connection, not just this one")
    timeout_s: float = Field(default=2.0, ge=0.05, le=30.0,
                             description="Wait at most this long for each round trip and for the servers to answer")


class RttMeasurement(BaseModel):
    """Round trips over one account's connection."""

    model_config = ConfigDict(extra="forbid")

    account_name: str = Field(description="The configured account (natscli context or credential set)")
    server_name: str | None = None
    server_id: str | None = None
    url: str | None = Field(default=None, description="The server URL connected to (without credentials)")
    rtt_ms: float | None = Field(default=None, description="Average round trip")
    min_ms: float | None = None
    max_ms: float | None = None
    samples_ms: list[float] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why this connection could not be measured")


class ServerRtt(BaseModel):
    """One server of the deployment and the round trips to it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    id: str | None = None
    cluster: str | None = None
    url: str | None = Field(default=None, description="The client URL measured directly (without credentials)")
    rtt_ms: float | None = Field(default=None, description="Average PING/PONG round trip over a connection of its "
                                 "own to this server, as `nats rtt` measures it")
    min_ms: float | None = None
    max_ms: float | None = None
    system_rtt_ms: float | None = Field(default=None, description="Average request/reply time to this server over "
                                        "the system account: via the server natsop is connected to and the routes")
    error: str | None = Field(default=None, description="Why this server could not be measured")


class RttResult(Result):
    iterations: int
    connections: list[RttMeasurement] = Field(description="The account's own connection (with all_accounts, every "
                                              "configured account's)")
    servers: list[ServerRtt] = Field(description="Every server of the deployment, sorted by name")
    missing: int | None = Field(default=None, description="Servers the deployment counts that did not answer")
    note: str | None = None


def _safe_url(nc: Any) -> str | None:
    uri = getattr(nc, "connected_url", None)
    return _display_url(uri) if uri is not None else None


def _display_url(uri: Any) -> str | None:
    host = getattr(uri, "hostname", None)
    if not host:
        return None
    host = host if ":" not in host else f"[{host}]"
    return f"{uri.scheme}://{host}:{uri.port}" if uri.port else f"{uri.scheme}://{host}"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _stats(samples: list[float]) -> dict[str, float]:
    return {"rtt_ms": round(statistics.fmean(samples), 3), "min_ms": min(samples), "max_ms": max(samples)}


def _failure(exc: BaseException) -> str:
    err = from_nats(exc)
    return f"{err.code}: {err.message}"


async def _round_trips(nc: Any, iterations: int, timeout_s: float) -> list[float]:
    """PING/PONG `iterations` times, each bounded by `timeout_s`: milliseconds each."""
    samples: list[float] = []
    for _ in range(iterations):
        started = time.perf_counter()
        await asyncio.wait_for(nc.flush(timeout=max(1, math.ceil(timeout_s))), timeout_s)
        samples.append(_ms(time.perf_counter() - started))
    return samples


async def _measure(ctx: Context, name: str | None, label: str, params: RttParams) -> RttMeasurement:
    try:
        nc = await ctx.nc(name)
        samples = await _round_trips(nc, params.iterations, params.timeout_s)
    except Exception as exc:
        return RttMeasurement(account_name=label, error=_failure(exc))
    info = connected_server(nc)
    return RttMeasurement(account_name=label, server_name=info.get("server_name"), server_id=info.get("server_id"),
                          url=_safe_url(nc), samples_ms=samples, **_stats(samples))


def _known_urls(ctx: Context, account_name: str | None, nc: Any) -> list[tuple[str, str]]:
    """(URL to connect to, URL to show) of every server the connection knows: configured and advertised."""
    configured = {}
    for url in ctx.settings.target(account_name).servers:
        full = url if "://" in url else f"nats://{url}"
        configured[full.split("://", 1)[1].rsplit("@", 1)[-1].rstrip("/").lower()] = url
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for uri in list(getattr(nc, "servers", None) or []):
        shown = _display_url(uri)
        netloc = str(getattr(uri, "netloc", "")).rsplit("@", 1)[-1].lower()
        if shown is None or netloc in seen:
            continue
        seen.add(netloc)
        out.append((configured.get(netloc, shown), shown))
    return out


async def _probe(ctx: Context, account_name: str | None, url: str, shown: str, params: RttParams,
                 gate: asyncio.Semaphore) -> ServerRtt:
    """Connect to the one server at `url` and time PING/PONG over that connection, as `nats rtt` does."""
    async with gate:
        try:
            nc = await ctx.direct(account_name, url)
        except Exception as exc:
            return ServerRtt(name=shown, url=shown, error=_failure(exc))
        try:
            samples = await _round_trips(nc, params.iterations, params.timeout_s)
        except Exception as exc:
            info = connected_server(nc)
            return ServerRtt(name=str(info.get("server_name") or shown), id=info.get("server_id"), url=shown,
                             error=_failure(exc))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
    info = connected_server(nc)
    return ServerRtt(name=str(info.get("server_name") or info.get("server_id") or shown), id=info.get("server_id"),
                     cluster=info.get("cluster") or None, url=shown, **_stats(samples))


async def _system_round_trips(sys_nc: Any, server_id: str, params: RttParams) -> float | str:
    """Average request/reply time to one server over the system account, or why it failed."""
    samples: list[float] = []
    subject = f"$SYS.REQ.SERVER.{server_id}.IDZ"
    try:
        for _ in range(params.iterations):
            started = time.perf_counter()
            try:
                await sys_nc.request(subject, b"", timeout=params.timeout_s)
            except nats_errors.NoRespondersError:
                if samples or subject.endswith(".STATSZ"):
                    raise
                subject = f"$SYS.REQ.SERVER.{server_id}.STATSZ"  # servers before 2.10 have no IDZ
                started = time.perf_counter()
                await sys_nc.request(subject, b"", timeout=params.timeout_s)
            samples.append(_ms(time.perf_counter() - started))
    except Exception as exc:
        return _failure(exc)
    return round(statistics.fmean(samples), 3)


async def _servers(ctx: Context, params: RttParams) -> tuple[list[ServerRtt], int | None, list[str]]:
    """Every server of the deployment: listed over the system account (when there is one for this
    deployment) and over the URLs the connection knows, each timed both ways it can be."""
    notes: list[str] = []
    nc = await ctx.nc(params.account_name)
    sys_nc: Any = None
    try:
        sys_nc = await ctx.system(params.account_name)
    except NatsopError as exc:
        if not is_no_system_account(exc):
            raise
        notes.append("No system account is configured for this deployment: the servers are those whose URLs the "
                     "connection knows (configured, and advertised by the cluster), without system_rtt_ms.")
    listed: dict[str, ServerRef] = {}
    known = 0
    if sys_nc is not None:
        gathered = await timed_gather(sys_nc, "$SYS.REQ.SERVER.PING.STATSZ", {},
                                      GatherParams(timeout_s=params.timeout_s), learn_expected=active_servers)
        for reply in gathered:
            ref = server_ref(reply.data)
            if ref.id:
                listed[ref.id] = ref
            known = max(known, active_servers(reply.data))
    urls = _known_urls(ctx, params.account_name, nc)
    if len(urls) > MAX_RTT_SERVERS:
        notes.append(f"Only the first {MAX_RTT_SERVERS} of {len(urls)} server URLs were measured directly.")
        urls = urls[:MAX_RTT_SERVERS]
    gate = asyncio.Semaphore(_PROBES_AT_ONCE)
    probes, over_system = await asyncio.gather(
        asyncio.gather(*(_probe(ctx, params.account_name, url, shown, params, gate) for url, shown in urls)),
        asyncio.gather(*(_system_round_trips(sys_nc, sid, params) for sid in listed)),
    )
    rows: dict[str, ServerRtt] = {}
    for sid, ref in listed.items():
        rows[sid] = ServerRtt(name=ref.name, id=sid, cluster=ref.cluster)
    for (sid, timed) in zip(listed, over_system, strict=True):
        if isinstance(timed, float):
            rows[sid].system_rtt_ms = timed
        else:
            rows[sid].error = f"over the system account: {timed}"
    for probe in probes:
        row = rows.get(probe.id or "")
        if row is None:
            rows[probe.id or f"url:{probe.url}"] = probe
            continue
        row.url, row.rtt_ms, row.min_ms, row.max_ms = probe.url, probe.rtt_ms, probe.min_ms, probe.max_ms
        row.error = "; ".join(e for e in (row.error, probe.error) if e) or None
    servers = sorted(rows.values(), key=lambda r: (r.name, r.url or ""))
    if any(r.url is None for r in servers):
        notes.append("Servers without a url were not measured directly: their client URLs are not known to this "
                     "connection (the cluster does not advertise them).")
    missing = max(0, known - len(listed)) if known else None
    return servers, missing, notes


@operation("rtt", cli="rtt")
async def rtt(ctx: Context, params: RttParams) -> RttResult:
    """Measure round-trip times: the connection's own, and every server's of the cluster.

    Like `nats rtt`, each server whose client URL the connection knows (configured, or
    advertised by the cluster) is timed by PING/PONG over a connection of its own. With
    the system account of the deployment, every server is also listed and timed by
    request/reply over it (`system_rtt_ms`, which includes the routes).
    """
    targets: list[tuple[str | None, str]] = [(params.account_name, ctx.settings.target(params.account_name).name)]
    if params.all_accounts:
        seen = {targets[0][1]}
        for name in [ctx.settings.default.name, *sorted(ctx.settings.accounts)]:
            if name not in seen:
                seen.add(name)
                targets.append((name, name))
    rows = [await _measure(ctx, name, label, params) for name, label in targets]
    if rows[0].error is not None:
        return RttResult(iterations=params.iterations, connections=rows, servers=[],
                         note="The servers were not measured: the account's own connection failed.")
    servers, missing, notes = await _servers(ctx, params)
    return RttResult(iterations=params.iterations, connections=rows, servers=servers, missing=missing,
                     note=" ".join(notes) or None)
