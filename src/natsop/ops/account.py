"""Accounts: JetStream usage and limits, who we are, connections, traffic and TLS.

`account_info` and `account_tls` need only the account's own connection. The reports
read every server through the system account; without one they fall back to what any
account may see of itself (its own connections and statistics, through the imports the
server gives every account) and say so.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from natsop.errors import NatsopError, ServerError, Unsupported, UserError, from_api_error, from_nats, scrub
from natsop.formats import parse_time
from natsop.ops._common import PageParams
from natsop.ops._sysreq import (
    GatherParams,
    ServerRef,
    connected_server,
    gather_replies,
    go_duration_s,
    is_no_system_account,
    server_ref,
)
from natsop.registry import Params, Result, Scope, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import decode_response

__all__ = [
    "AccountInfoResult",
    "AccountStatistics",
    "AccountTlsResult",
    "CertificateInfo",
    "ConnectionRow",
    "ConnectionsReport",
    "ServerStatistics",
    "StatisticsReport",
]

AccountFilter = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s*>]+$")]

_NO_SYSTEM_NOTE = ("No system account is configured for this deployment: this shows only the account's own "
                   "{what}. Configure one (NATSOP_SYSTEM_USER/NATSOP_SYSTEM_PASSWORD, NATSOP_SYSTEM_CREDS or a "
                   "'system' context; for the deployment of a context <name>, a context '<name>-system') "
                   "to see every account.")


async def _reporting_connection(ctx: Context, account_name: str | None) -> tuple[NATS, bool]:
    """The system account's connection if there is one, else the account's own: (connection, is_system)."""
    try:
        return await ctx.system(account_name), True
    except NatsopError as exc:
        if not is_no_system_account(exc):
            raise
    return await ctx.nc(account_name), False


# -- account info


class AccountInfoParams(Params):
    timeout_s: float = Field(default=5.0, ge=0.05, le=30.0, description="Wait at most this long for each answer")


class UserInfo(BaseModel):
    """Who the connection is, as the server sees it (`$SYS.REQ.USER.INFO`)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    account: str | None = None
    account_name: str | None = Field(default=None, description="The account's name tag, if it has one")
    permissions: dict[str, Any] | None = Field(default=None, description="Publish/subscribe allow and deny lists")
    expires_ns: int | None = Field(default=None, description="Time until the credentials expire")


class JetStreamAccountInfo(BaseModel):
    """The account's JetStream use and limits (`$JS.API.INFO`)."""

    model_config = ConfigDict(extra="forbid")

    memory: int = Field(default=0, description="Memory storage in use, bytes")
    storage: int = Field(default=0, description="File storage in use, bytes")
    reserved_memory: int | None = None
    reserved_storage: int | None = None
    streams: int = 0
    consumers: int = 0
    domain: str | None = None
    limits: dict[str, Any] = Field(default_factory=dict, description="max_memory, max_storage, max_streams, "
                                   "max_consumers... (-1 = unlimited)")
    api_level: int | None = None
    api_total: int | None = Field(default=None, description="JetStream API requests this account made")
    api_errors: int | None = None
    tiers: dict[str, Any] | None = Field(default=None, description="Use and limits per replication tier (R1, R3)")


class AccountInfoResult(Result):
    user: UserInfo | None = None
    jetstream_enabled: bool
    jetstream: JetStreamAccountInfo | None = None
    server: ServerRef | None = Field(default=None, description="The server this connection is on")
    notes: list[str] = Field(default_factory=list)


def _jetstream_account(data: dict[str, Any]) -> JetStreamAccountInfo:
    api = data.get("api") or {}
    return JetStreamAccountInfo(
        memory=int(data.get("memory") or 0),
        storage=int(data.get("storage") or 0),
        reserved_memory=data.get("reserved_memory"),
        reserved_storage=data.get("reserved_storage"),
        streams=int(data.get("streams") or 0),
        consumers=int(data.get("consumers") or 0),
        domain=data.get("domain") or None,
        limits=dict(data.get("limits") or {}),
        api_level=api.get("level"),
        api_total=api.get("total"),
        api_errors=api.get("errors"),
        tiers=data.get("tiers") or None,
    )


async def _user_info(nc: NATS, timeout_s: float) -> UserInfo:
    try:
        msg = await nc.request("$SYS.REQ.USER.INFO", b"", timeout=timeout_s)
    except Exception as exc:
        raise from_nats(exc, context="user info") from None
    reply = decode_response(msg, context="user info")
    data = reply.get("data") or {}
    expires = data.get("expires")
    return UserInfo(
        user=data.get("user") or None,
        account=data.get("account") or None,
        account_name=data.get("account_name") or None,
        permissions=data.get("permissions") or None,
        expires_ns=int(expires) if isinstance(expires, int) and expires > 0 else None,
    )


@operation("account_info", cli="account info")
async def account_info(ctx: Context, params: AccountInfoParams) -> AccountInfoResult:
    """Show the account's JetStream usage and limits, and the user, account and permissions of the connection."""
    nc = await ctx.nc(params.account_name)
    js = await ctx.js(params.account_name)
    notes: list[str] = []
    user: UserInfo | None = None
    try:
        user = await _user_info(nc, params.timeout_s)
    except NatsopError as exc:
        notes.append(f"user info unavailable ({exc.code}): the server may have no system account")
    jetstream: JetStreamAccountInfo | None = None
    try:
        jetstream = _jetstream_account(await js.request("INFO", timeout=params.timeout_s, context="account info"))
    except NatsopError as exc:
        if exc.code not in ("jetstream_not_enabled_for_account", "jetstream_not_enabled", "no_responders"):
            raise
        notes.append("JetStream is not enabled for this account (or not reachable with this API prefix).")
    info = connected_server(nc)
    server = ServerRef(name=str(info.get("server_name") or info.get("server_id") or "?"),
                       id=info.get("server_id"), cluster=info.get("cluster") or None,
                       domain=info.get("domain") or None, version=info.get("version"))
    return AccountInfoResult(user=user, jetstream_enabled=jetstream is not None, jetstream=jetstream,
                             server=server, notes=notes)


# -- connections report

ConnSort = Literal["subs", "in-msgs", "out-msgs", "msgs", "in-bytes", "out-bytes", "bytes", "pending", "uptime",
                   "cid", "rtt"]
# How each server is asked to sort, so that its first `top` rows contain its share of the overall top.
_SERVER_SORT: dict[str, str] = {
    "subs": "subs", "in-msgs": "msgs_from", "out-msgs": "msgs_to", "in-bytes": "bytes_from",
    "out-bytes": "bytes_to", "pending": "pending", "uptime": "start", "cid": "cid", "rtt": "rtt",
}
# Sums (in + out) no server sorts by: each server's first SCAN_LIMIT connections are ranked here.
SCAN_LIMIT = 1024
MAX_REPORT_DEPTH = 10_000  # offset + top: each server sends that many connections
MAX_SUBJECTS_PER_CONNECTION = 100


class ConnectionsParams(GatherParams):
    account: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[^\s*>]+$",
                                description="Only this account's connections")
    user: str | None = Field(default=None, min_length=1, max_length=256,
                             description="Only connections authenticated as this user")
    sort: ConnSort = Field(default="subs", description="Largest first (uptime: longest running first; cid: lowest)")
    top: int = Field(default=20, ge=1, le=1000, description="Show this many connections")
    offset: int = Field(default=0, ge=0, le=MAX_REPORT_DEPTH - 1,
                        description="Skip this many of the ranking (next_offset of the previous page)")
    subscriptions: bool = Field(default=False,
                                description=f"List each connection's subjects (at most {MAX_SUBJECTS_PER_CONNECTION})")


class ConnectionRow(BaseModel):
    """One client connection (no credentials: user names only)."""

    model_config = ConfigDict(extra="forbid")

    cid: int
    kind: str | None = Field(default=None, description="Set when not a client connection: Leafnode, ...")
    name: str | None = None
    server: str
    cluster: str | None = None
    ip: str | None = Field(default=None, description="Client address, ip:port")
    account: str | None = None
    user: str | None = None
    uptime: str | None = None
    rtt_ms: float | None = None
    pending_bytes: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    subscriptions: int = 0
    subscriptions_list: list[str] | None = None


class ConnectionTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connections: int = Field(description="Matching connections on all servers that answered")
    shown: int
    in_msgs: int = Field(description="Sum over the connections shown")
    out_msgs: int
    in_bytes: int
    out_bytes: int
    subscriptions: int


class ServerConnections(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str
    cluster: str | None = None
    connections: int


class ConnectionsReport(Result):
    view: Literal["system", "account"] = Field(
        description="'system': every account through the system account; 'account': this account's own only")
    sort: str
    connections: list[ConnectionRow]
    offset: int = Field(default=0, description="Rank of the first connection shown (0 = the top)")
    truncated: bool = Field(description="True when more connections follow; call again with offset=next_offset")
    next_offset: int | None = None
    totals: ConnectionTotals
    servers: list[ServerConnections] = Field(description="Matching connections per server")
    note: str | None = None


_FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)


def _connection_row(conn: dict[str, Any], ref: ServerRef, subs: bool) -> tuple[ConnectionRow, datetime]:
    subjects: list[str] | None = None
    if subs:
        subjects = [str(s) for s in (conn.get("subscriptions_list") or [])[:MAX_SUBJECTS_PER_CONNECTION]]
    ip = conn.get("ip")
    port = conn.get("port")
    name = conn.get("name") or conn.get("mqtt_client") or None
    kind = conn.get("kind")
    row = ConnectionRow(
        cid=int(conn.get("cid") or 0),
        kind=kind if kind and kind != "Client" else None,
        name=scrub(str(name)) if name else None,
        server=ref.name,
        cluster=ref.cluster,
        ip=(f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}") if ip and port else ip,
        account=conn.get("account") or None,
        user=scrub(str(user)) if (user := conn.get("authorized_user")) else None,
        uptime=conn.get("uptime"),
        rtt_ms=round(s * 1000, 3) if (s := go_duration_s(conn.get("rtt"))) is not None else None,
        pending_bytes=int(conn.get("pending_bytes") or 0),
        in_msgs=int(conn.get("in_msgs") or 0),
        out_msgs=int(conn.get("out_msgs") or 0),
        in_bytes=int(conn.get("in_bytes") or 0),
        out_bytes=int(conn.get("out_bytes") or 0),
        subscriptions=int(conn.get("subscriptions") or 0),
        subscriptions_list=subjects,
    )
    return row, parse_time(conn.get("start")) or _FAR_PAST


_MEASURES: dict[str, Callable[[ConnectionRow], float]] = {
    "subs": lambda r: r.subscriptions, "in-msgs": lambda r: r.in_msgs, "out-msgs": lambda r: r.out_msgs,
    "msgs": lambda r: r.in_msgs + r.out_msgs, "in-bytes": lambda r: r.in_bytes,
    "out-bytes": lambda r: r.out_bytes, "bytes": lambda r: r.in_bytes + r.out_bytes,
    "pending": lambda r: r.pending_bytes, "rtt": lambda r: r.rtt_ms or 0.0,
}


def _rank(sort: str) -> Callable[[tuple[ConnectionRow, datetime]], tuple[Any, ...]]:
    """The order of the merged report: the same order each server was asked for."""
    if sort == "uptime":
        return lambda rs: (rs[1], rs[0].server, rs[0].cid)
    if sort == "cid":
        return lambda rs: (rs[0].cid, rs[0].server)
    measure = _MEASURES[sort]
    return lambda rs: (-measure(rs[0]), rs[0].server, rs[0].cid)


@operation("account_report_connections", cli="account report connections", aliases=("conns", "connz"),
           scope=Scope.SYSTEM)
async def account_report_connections(ctx: Context, params: ConnectionsParams) -> ConnectionsReport:
    """Report the top connections on every server, by subscriptions, messages, bytes, pending data or uptime.

    With the system account it covers every account (narrow it with `account`); without
    one, the account's own connections. Shows user names but never credentials.
    """
    depth = params.offset + params.top
    if depth > MAX_REPORT_DEPTH:
        raise UserError(f"offset + top is {depth:,}; a report reaches at most {MAX_REPORT_DEPTH:,} deep",
                        code="invalid_argument",
                        hint="Narrow the report (account, user) or sort so the connections you want come first.")
    nc, is_system = await _reporting_connection(ctx, params.account_name)
    combined = params.sort not in _SERVER_SORT
    # Every page asks each server for the same connections, so that the local order (ties broken by
    # server and cid) ranks the same set on every page; a server asked for fewer picks among ties anew.
    limit = max(SCAN_LIMIT, depth)
    body: dict[str, Any] = {"sort": _SERVER_SORT.get(params.sort, "cid"), "limit": limit, "offset": 0,
                            "auth": True, "subscriptions": params.subscriptions}
    if params.account:
        body["acc"] = params.account
    if params.user:
        body["user"] = params.user
    replies = await gather_replies(nc, "$SYS.REQ.SERVER.PING.CONNZ", body, params)
    rows: list[tuple[ConnectionRow, datetime]] = []
    per_server: list[ServerConnections] = []
    total = 0
    scanned_all = True
    for reply in replies:
        if reply.get("error"):
            raise from_api_error(reply["error"], context="connections report")
        ref = server_ref(reply)
        data = reply.get("data") or {}
        conns = [c for c in data.get("connections") or [] if isinstance(c, dict)]
        if not is_system and params.account:
            # Through the account's import the server answers for that account only, whatever was asked.
            conns = [c for c in conns if c.get("account") == params.account]
            count = len(conns)
        else:
            count = int(data.get("total") or len(conns))
        scanned_all = scanned_all and len(conns) >= count
        total += count
        per_server.append(ServerConnections(server=ref.name, cluster=ref.cluster, connections=count))
        rows.extend(_connection_row(c, ref, params.subscriptions) for c in conns)
    rows.sort(key=_rank(params.sort))
    shown = [row for row, _ in rows[params.offset: depth]]
    more = total > params.offset + len(shown)
    notes: list[str] = []
    if not is_system:
        notes.append(_NO_SYSTEM_NOTE.format(what="connections"))
    if combined and not scanned_all:
        notes.append(f"Sorted by {params.sort} among the first {limit} connections of each server "
                     "(no server sorts by in+out); use in-/out- sorts for an exact top.")
    elif not scanned_all and params.offset:
        notes.append(f"A server has more than {limit} matching connections: pages may repeat or skip "
                     "connections that tie at the page boundary.")
    if not replies:
        notes.append(f"No server answered within {params.timeout_s:g}s.")
    per_server.sort(key=lambda s: s.server)
    return ConnectionsReport(
        view="system" if is_system else "account",
        sort=params.sort,
        connections=shown,
        offset=params.offset,
        truncated=more,
        next_offset=params.offset + len(shown) if more else None,
        totals=ConnectionTotals(
            connections=total, shown=len(shown),
            in_msgs=sum(r.in_msgs for r in shown), out_msgs=sum(r.out_msgs for r in shown),
            in_bytes=sum(r.in_bytes for r in shown), out_bytes=sum(r.out_bytes for r in shown),
            subscriptions=sum(r.subscriptions for r in shown),
        ),
        servers=per_server,
        note=" ".join(notes) or None,
    )


# -- statistics report

MAX_SERVERS_SHOWN = 1000


class StatisticsParams(PageParams, GatherParams):
    accounts: list[AccountFilter] | None = Field(default=None, max_length=100,
                                                 description="Only these accounts (default: those with connections)")
    include_unused: bool = Field(default=False, description="Also accounts without connections")


class ServerStatistics(BaseModel):
    """One server's traffic since it started (STATSZ)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: str | None = None
    connections: int = 0
    total_connections: int = Field(default=0, description="Connections accepted since the server started")
    active_accounts: int = 0
    subscriptions: int = 0
    slow_consumers: int = 0
    sent_msgs: int = Field(default=0, description="Messages the server sent (to clients, routes, gateways, leafs)")
    sent_bytes: int = 0
    received_msgs: int = Field(default=0, description="Messages the server received")
    received_bytes: int = 0


class AccountStatistics(BaseModel):
    """One account's traffic, summed over the servers that answered."""

    model_config = ConfigDict(extra="forbid")

    account: str
    name: str | None = Field(default=None, description="The account's name tag, if it differs")
    servers: int = Field(description="Servers where the account is active")
    connections: int = 0
    leafnodes: int = 0
    total_connections: int = 0
    subscriptions: int = 0
    slow_consumers: int = 0
    sent_msgs: int = Field(default=0, description="Messages delivered to the account's clients")
    sent_bytes: int = 0
    received_msgs: int = Field(default=0, description="Messages received from the account's clients")
    received_bytes: int = 0


class StatisticsTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connections: int
    leafnodes: int
    subscriptions: int
    slow_consumers: int
    sent_msgs: int
    sent_bytes: int
    received_msgs: int
    received_bytes: int


class StatisticsReport(Result):
    view: Literal["system", "account"]
    servers: list[ServerStatistics] = Field(description="Per server, sorted by name (system account only)")
    servers_truncated: bool = False
    accounts: list[AccountStatistics] = Field(description="Per account, sorted by name, a page at a time")
    accounts_total: int
    offset: int
    truncated: bool = Field(description="True when more accounts follow; call again with offset=next_offset")
    next_offset: int | None = None
    totals: StatisticsTotals = Field(description="Over every account that answered (not only this page)")
    note: str | None = None


def _server_statistics(reply: dict[str, Any]) -> ServerStatistics:
    ref = server_ref(reply)
    st = reply.get("statsz") or {}
    sent = st.get("sent") or {}
    received = st.get("received") or {}
    return ServerStatistics(
        name=ref.name, cluster=ref.cluster,
        connections=int(st.get("connections") or 0),
        total_connections=int(st.get("total_connections") or 0),
        active_accounts=int(st.get("active_accounts") or 0),
        subscriptions=int(st.get("subscriptions") or 0),
        slow_consumers=int(st.get("slow_consumers") or 0),
        sent_msgs=int(sent.get("msgs") or 0), sent_bytes=int(sent.get("bytes") or 0),
        received_msgs=int(received.get("msgs") or 0), received_bytes=int(received.get("bytes") or 0),
    )


def _add_account(acc: dict[str, AccountStatistics], item: dict[str, Any]) -> None:
    key = str(item.get("acc") or item.get("name") or "?")
    row = acc.get(key)
    if row is None:
        tag = item.get("name")
        row = acc[key] = AccountStatistics(account=key, name=tag if tag and tag != key else None, servers=0)
    sent = item.get("sent") or {}
    received = item.get("received") or {}
    row.servers += 1
    row.connections += int(item.get("conns") or 0)
    row.leafnodes += int(item.get("leafnodes") or 0)
    row.total_connections += int(item.get("total_conns") or 0)
    row.subscriptions += int(item.get("num_subscriptions") or 0)
    row.slow_consumers += int(item.get("slow_consumers") or 0)
    row.sent_msgs += int(sent.get("msgs") or 0)
    row.sent_bytes += int(sent.get("bytes") or 0)
    row.received_msgs += int(received.get("msgs") or 0)
    row.received_bytes += int(received.get("bytes") or 0)


@operation("account_report_statistics", cli="account report statistics", aliases=("stats",), scope=Scope.SYSTEM)
async def account_report_statistics(ctx: Context, params: StatisticsParams) -> StatisticsReport:
    """Report traffic per server and per account: connections, leaf nodes, messages and bytes, slow consumers.

    With the system account it covers every server and account; without one, only the
    account's own statistics.
    """
    nc, is_system = await _reporting_connection(ctx, params.account_name)
    servers: list[ServerStatistics] = []
    if is_system:
        replies = await gather_replies(nc, "$SYS.REQ.SERVER.PING.STATSZ", {}, params)
        servers = sorted((_server_statistics(r) for r in replies if not r.get("error")), key=lambda s: s.name)
    body: dict[str, Any] = {"include_unused": params.include_unused}
    if params.accounts:
        body["accounts"] = list(params.accounts)
    by_account: dict[str, AccountStatistics] = {}
    for reply in await gather_replies(nc, "$SYS.REQ.ACCOUNT.PING.STATZ", body, params):
        if reply.get("error"):
            raise from_api_error(reply["error"], context="account statistics")
        for item in (reply.get("data") or {}).get("account_statz") or []:
            if isinstance(item, dict):
                _add_account(by_account, item)
    rows = sorted(by_account.values(), key=lambda a: a.account)
    page = rows[params.offset: params.offset + params.limit]
    end = params.offset + len(page)
    more = end < len(rows)
    notes: list[str] = []
    if not is_system:
        notes.append(_NO_SYSTEM_NOTE.format(what="statistics"))
    if not rows and not servers:
        notes.append(f"No server answered within {params.timeout_s:g}s.")
    return StatisticsReport(
        view="system" if is_system else "account",
        servers=servers[:MAX_SERVERS_SHOWN],
        servers_truncated=len(servers) > MAX_SERVERS_SHOWN,
        accounts=page,
        accounts_total=len(rows),
        offset=params.offset,
        truncated=more,
        next_offset=end if more else None,
        totals=StatisticsTotals(
            connections=sum(a.connections for a in rows), leafnodes=sum(a.leafnodes for a in rows),
            subscriptions=sum(a.subscriptions for a in rows), slow_consumers=sum(a.slow_consumers for a in rows),
            sent_msgs=sum(a.sent_msgs for a in rows), sent_bytes=sum(a.sent_bytes for a in rows),
            received_msgs=sum(a.received_msgs for a in rows), received_bytes=sum(a.received_bytes for a in rows),
        ),
        note=" ".join(notes) or None,
    )


# -- TLS


class AccountTlsParams(Params):
    expiring_within_days: int = Field(default=30, ge=0, le=3650,
                                      description="Warn about certificates that expire within this many days")


class CertificateInfo(BaseModel):
    """One certificate of the chain the server presented."""

    model_config = ConfigDict(extra="forbid")

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    days_until_expiry: float = Field(description="Negative once expired")
    sans: list[str] = Field(default_factory=list, description="Subject alternative names (DNS names, IPs, URIs)")
    is_ca: bool = False
    self_signed: bool = False
    fingerprint_sha256: str


class AccountTlsResult(Result):
    tls: bool = Field(description="True when the connection is encrypted")
    tls_required: bool | None = Field(default=None, description="Whether the server requires TLS of its clients")
    server_name: str | None = None
    version: str | None = Field(default=None, description="Negotiated protocol, e.g. TLSv1.3")
    cipher: str | None = None
    certificates: list[CertificateInfo] = Field(default_factory=list, description="Server certificate first")
    expiring: bool = Field(default=False, description="True when a certificate expires within expiring_within_days")
    warnings: list[str] = Field(default_factory=list)
    note: str | None = None


def _ssl_object(nc: NATS) -> Any:
    transport = getattr(nc, "_transport", None)
    writer = getattr(transport, "_io_writer", None)
    get_extra = getattr(writer, "get_extra_info", None)
    return get_extra("ssl_object") if callable(get_extra) else None


def _peer_chain(ssl_obj: Any) -> list[bytes]:
    """The DER certificates the server sent, leaf first."""
    # Python 3.13 has public chain accessors; 3.11/3.12 have them on the inner object only.
    for holder in (ssl_obj, getattr(ssl_obj, "_sslobj", None)):
        for method in ("get_verified_chain", "get_unverified_chain"):
            fn = getattr(holder, method, None)
            if not callable(fn):
                continue
            try:
                chain = fn() or []
            except (ssl.SSLError, ValueError):
                continue
            der = [c if isinstance(c, bytes) else c.public_bytes(2) for c in chain]  # 2 = ENCODING_DER
            if der:
                return der
    leaf = ssl_obj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _certificate(der: bytes, now: datetime) -> CertificateInfo:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
    except ImportError:  # pragma: no cover - cryptography is a dependency
        raise Unsupported("reading certificates needs the 'cryptography' package",
                          hint="pip install cryptography") from None
    cert = x509.load_der_x509_certificate(der)
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
        sans += [str(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    not_after = cert.not_valid_after_utc
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=not_after.isoformat(),
        days_until_expiry=round((not_after - now).total_seconds() / 86400, 2),
        sans=sans,
        is_ca=is_ca,
        self_signed=cert.subject == cert.issuer,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


@operation("account_tls", cli="account tls")
async def account_tls(ctx: Context, params: AccountTlsParams) -> AccountTlsResult:
    """Show the TLS state of the connection and the server's certificate chain, warning about near expiry."""
    nc = await ctx.nc(params.account_name)
    info = connected_server(nc)
    base: dict[str, Any] = {"tls_required": info.get("tls_required"), "server_name": info.get("server_name")}
    ssl_obj = _ssl_object(nc)
    if ssl_obj is None:
        return AccountTlsResult(tls=False, note="The connection is not encrypted: no TLS, so no certificates. "
                                "Use a tls:// URL and a CA (NATS_CA) to connect with TLS.", **base)
    try:
        chain = _peer_chain(ssl_obj)
    except (ssl.SSLError, ValueError) as exc:
        raise ServerError(f"cannot read the server's certificates: {type(exc).__name__}") from None
    now = datetime.now(UTC)
    certs = [_certificate(der, now) for der in chain]
    warnings: list[str] = []
    for c in certs:
        if c.days_until_expiry < 0:
            warnings.append(f"certificate {c.subject} expired on {c.not_after}")
        elif c.days_until_expiry <= params.expiring_within_days:
            warnings.append(f"certificate {c.subject} expires in {c.days_until_expiry:.1f} days ({c.not_after})")
    cipher = ssl_obj.cipher()
    return AccountTlsResult(
        tls=True,
        version=ssl_obj.version(),
        cipher=cipher[0] if cipher else None,
        certificates=certs,
        expiring=bool(warnings),
        warnings=warnings,
        note=None if certs else "The server sent no certificate.",
        **base,
    )
