"""Message tracing (nats-server 2.11+, ADR-41): the path one message takes through the servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any, Literal

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import Unsupported, UserError, from_nats
from natsop.logic.validate import PublishSubject
from natsop.models import decode_input
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context

__all__ = ["TraceEvent", "TraceHop", "TraceParams", "TraceResult", "check_trace_support"]

TRACE_DEST = "Nats-Trace-Dest"
TRACE_ONLY = "Nats-Trace-Only"
TRACE_HOP = "Nats-Trace-Hop"
MAX_TIMEOUT_S = 10.0
MAX_HOPS = 1000
# The connection kinds in trace events (server/msgtrace.go).
KINDS = {0: "CLIENT", 1: "ROUTER", 2: "GATEWAY", 3: "SYSTEM", 4: "LEAF", 5: "JETSTREAM", 6: "ACCOUNT"}
EVENT_TYPES = {"in": "ingress", "sm": "subject_mapping", "se": "stream_export", "si": "service_import",
               "js": "jetstream", "eg": "egress"}
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


class TraceParams(Params):
    subject: PublishSubject = Field(description="Subject to send the traced message to")
    payload: str = Field(default="", max_length=1024 * 1024,
                         description="Body: text, or base64 with payload_encoding='base64'")
    payload_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `payload` is written")
    headers: dict[str, list[str]] | None = Field(default=None, max_length=256,
                                                 description="Headers to send with it, name -> list of values")
    deliver: bool = Field(default=False,
                          description="Really deliver the message (to subscribers and streams); by default it is "
                                      "traced only and nothing receives it")
    timeout_s: float = Field(default=1.0, gt=0, le=MAX_TIMEOUT_S,
                             description=f"How long to collect trace events, at most {MAX_TIMEOUT_S:g}s; the call "
                                         "returns earlier once every server on the path has reported")
    max_hops: int = Field(default=100, ge=1, le=MAX_HOPS,
                          description="Keep at most this many servers' reports")


class TraceEvent(BaseModel):
    """One step a server took with the message, in order."""

    model_config = ConfigDict(extra="forbid")

    server: str = Field(description="Server that reports it")
    hop: str = Field(description="Where on the path the server is: '' at the origin, then 1, 1.1, 2, ...")
    type: Literal["ingress", "subject_mapping", "stream_export", "service_import", "jetstream", "egress"]
    ts: str | None = Field(default=None, description="When (RFC 3339)")
    kind: str | None = Field(default=None, description="Connection kind: CLIENT, ROUTER, GATEWAY, LEAF, ...")
    cid: int | None = Field(default=None, description="Connection id on that server")
    name: str | None = Field(default=None, description="Client name, or the remote server's name")
    account: str | None = None
    subject: str | None = Field(default=None, description="Ingress: the subject received; jetstream: the subject stored")
    to: str | None = Field(default=None, description="Mapping, export or import: the subject it becomes")
    from_subject: str | None = Field(default=None, description="Service import: the subject it was imported from")
    stream: str | None = Field(default=None, description="JetStream: the stream that captures it")
    no_interest: bool | None = Field(default=None, description="JetStream: the stream has no interest in it")
    subscription: str | None = Field(default=None, description="Egress: the subscription subject it matched")
    queue: str | None = Field(default=None, description="Egress: the queue group")
    next_hop: str | None = Field(default=None, description="Egress to a route, gateway or leaf: its hop id")
    error: str | None = None


class TraceHop(BaseModel):
    """One server's report."""

    model_config = ConfigDict(extra="forbid")

    server: str
    hop: str = Field(description="'' at the origin server, then the hop id the sender gave it")
    cluster: str | None = None
    version: str | None = None
    forwarded: int = Field(default=0, description="Servers it passed the message on to (routes, gateways, leafs)")
    events: int = Field(description="Number of events it reported")


class TraceResult(Result):
    subject: str
    trace_only: bool = Field(description="True when the message was traced but not delivered")
    hops: list[TraceHop] = Field(description="The servers on the path, origin first")
    events: list[TraceEvent] = Field(description="Every step, server by server")
    complete: bool = Field(description="Every server the message was forwarded to has reported")
    truncated: bool = Field(default=False, description="More servers reported than max_hops; the rest is left out")
    elapsed_s: float = Field(description="How long the trace took to collect")
    note: str = Field(default="", description="What to make of the result")


def check_trace_support(version: str) -> None:
    """Raise `Unsupported` unless `version` is nats-server 2.11 or later."""
    found = _VERSION.match(version or "")
    if found is None or (int(found[1]), int(found[2])) < (2, 11):
        raise Unsupported(
            f"message tracing needs nats-server 2.11 or later; the connected server is {version or 'of unknown version'}",
            code="trace_unsupported",
            hint="Upgrade the server (or connect to a 2.11+ server of the cluster).",
        )


def _connected_version(nc: Any) -> str | None:
    known = nc.connected_server_version
    try:
        major, minor, patch = int(known.major), int(known.minor), int(known.patch)
    except (TypeError, ValueError):
        return None
    return f"{major}.{minor}.{patch}" if major else None


def _headers(params: TraceParams, inbox: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in (params.headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise UserError(f"header name {name!r} is not valid", code="invalid_header",
                            hint="Header names are letters, digits and !#$%&'*+-.^_`|~ without spaces or ':'.")
        if name.lower().startswith("nats-trace-"):
            raise UserError(f"{name} is set by the trace itself", code="invalid_header",
                            hint="Leave out the Nats-Trace-* headers; use deliver=true to deliver the message.")
        if len(values) != 1:
            raise UserError(f"header {name} needs exactly one value here", code="invalid_header",
                            hint="Give a single value per header name.")
        if any(ch in values[0] for ch in "\r\n"):
            raise UserError(f"header {name} contains a line break", code="invalid_header")
        out[name] = values[0]
    out[TRACE_DEST] = inbox
    if not params.deliver:
        out[TRACE_ONLY] = "true"
    return out


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _event(server: str, hop: str, raw: dict[str, Any]) -> TraceEvent | None:
    kind_name = EVENT_TYPES.get(str(raw.get("type")))
    if kind_name is None:
        return None  # an event type newer than natsop: skipped rather than misread
    kind = raw.get("kind")
    cid = raw.get("cid")
    return TraceEvent(
        server=server, hop=hop, type=kind_name,
        ts=_text(raw.get("ts")),
        kind=KINDS.get(kind, str(kind)) if isinstance(kind, int) else _text(kind),
        cid=cid if isinstance(cid, int) else None,
        name=_text(raw.get("name")),
        account=_text(raw.get("acc")),
        subject=_text(raw.get("subj") or raw.get("subject")),
        to=_text(raw.get("to")),
        from_subject=_text(raw.get("from")),
        stream=_text(raw.get("stream")),
        no_interest=True if raw.get("nointerest") else None,
        subscription=_text(raw.get("sub")),
        queue=_text(raw.get("queue")),
        next_hop=_text(raw.get("hop")),
        error=_text(raw.get("error")),
    )


def _hop_of(report: dict[str, Any]) -> str:
    header = (report.get("request") or {}).get("header") or {}
    for name, values in header.items():
        if name.lower() == TRACE_HOP.lower():
            return str(values[0] if isinstance(values, list) and values else values)
    return ""


def _unreported(reports: list[dict[str, Any]]) -> int:
    """How many servers on the path have not reported yet: the origin ('') and every hop a report forwarded to.

    A server at hop h that forwards to n servers names them h.1 ... h.n (1 ... n at the origin),
    so the set of expected reports is known exactly, whatever order the reports arrive in.
    """
    seen = {_hop_of(r) for r in reports}
    expected = {""}
    for report in reports:
        hop = _hop_of(report)
        expected.update(f"{hop}.{i}" if hop else str(i) for i in range(1, int(report.get("hops") or 0) + 1))
    return len(expected - seen)


def _hop_order(hop: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in hop.split(".")) if hop else ()


@operation("trace", impact=Impact.WRITE, idempotent=False, args=("subject", "payload"), timeout_s=MAX_TIMEOUT_S + 20)
async def trace(ctx: Context, params: TraceParams) -> TraceResult:
    """Trace a message through the servers: ingress, mappings, imports, JetStream and egress, per server.

    Sends one message with `Nats-Trace-Dest` (and, unless `deliver` is set,
    `Nats-Trace-Only`, so no subscriber or stream receives it) and collects the report
    of every server on the path (nats-server 2.11+). It publishes a message, so it is
    not available in read-only mode; with `deliver=true` the message is really delivered.
    """
    payload = decode_input(params.payload, params.payload_encoding)
    nc = await ctx.nc(params.account_name)
    version = _connected_version(nc)
    if version is not None:  # unknown: try anyway, the notes say when nothing reports
        check_trace_support(version)
    inbox = nc.new_inbox()
    headers = _headers(params, inbox)
    reports: list[dict[str, Any]] = []
    undecodable = 0
    everyone_reported = asyncio.Event()

    async def on_report(msg: Msg) -> None:
        nonlocal undecodable
        try:
            report = json.loads(msg.data)
        except ValueError:
            undecodable += 1
            return
        if not isinstance(report, dict):
            undecodable += 1
            return
        reports.append(report)
        # Each report says how many servers it forwarded to; each of those reports too.
        if not _unreported(reports) or len(reports) >= params.max_hops:
            everyone_reported.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        sub = await nc.subscribe(inbox, cb=on_report)
        try:
            await nc.publish(params.subject, payload, headers=headers)
            await nc.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone_reported.wait(), params.timeout_s)
        finally:
            await sub.unsubscribe()
    except Exception as exc:
        raise from_nats(exc, context=f"trace {params.subject}") from None
    elapsed = loop.time() - started

    unreported = _unreported(reports)
    complete = bool(reports) and not unreported
    truncated = len(reports) > params.max_hops
    kept = sorted(reports, key=lambda r: _hop_order(_hop_of(r)))[: params.max_hops]
    hops: list[TraceHop] = []
    events: list[TraceEvent] = []
    for report in kept:
        info = report.get("server") or {}
        name = str(info.get("name") or info.get("id") or "?")
        hop = _hop_of(report)
        raw_events = [e for e in report.get("events") or [] if isinstance(e, dict)]
        hops.append(TraceHop(server=name, hop=hop, cluster=_text(info.get("cluster")), version=_text(info.get("ver")),
                             forwarded=int(report.get("hops") or 0), events=len(raw_events)))
        events.extend(e for e in (_event(name, hop, raw) for raw in raw_events) if e is not None)

    notes: list[str] = []
    if not params.deliver:
        notes.append("Trace only: no subscriber or stream received the message (deliver=true delivers it).")
    if not reports:
        notes.append(f"No server reported within {params.timeout_s:g}s: the path may cross a server older than "
                     "2.11, or the trace subject is not reachable for this account.")
    elif not complete and not truncated:
        notes.append(f"{unreported} forwarded server(s) did not report within {params.timeout_s:g}s; "
                     "raise timeout_s, or those servers may not support tracing.")
    receivers = any(e.type in ("egress", "jetstream") for e in events)
    crossed = sorted({e.account for e in events if e.type in ("service_import", "stream_export") and e.account})
    if reports and not receivers and crossed:
        notes.append(f"The message goes on into account {', '.join(crossed)}; the trace follows it across an "
                     "account boundary only when allowed: `allow_trace: true` on the stream import (in the "
                     "receiving account) or on the service export.")
    elif reports and not receivers:
        notes.append("Nothing would receive this message: no subscription or stream matched it.")
    if any(e.error for e in events):
        notes.append("Some steps report an error: see the events' error field.")
    if undecodable:
        notes.append(f"{undecodable} trace message(s) were not JSON and were skipped (compressed traces are not "
                     "requested by natsop).")
    return TraceResult(subject=params.subject, trace_only=not params.deliver, hops=hops, events=events,
                       complete=complete, truncated=truncated, elapsed_s=round(elapsed, 3), note=" ".join(notes))
