"""`audit`: check a live account against the operator's creed; `audit_rules`: what it checks.

The audit only reads. It makes a bounded number of requests: the stream list (256
streams a page), one consumer list per stream that has consumers, one sample of recent
message ids for a few of the most recently written streams, one account info (its limits),
and one VARZ scatter-gather over the system account when it is configured.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import ConfigError, NatsopError, UserError
from natsop.formats import parse_time
from natsop.logic.audit_rules import RULES, Observed, run_rules, threshold_names
from natsop.registry import Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi, gather

__all__: list[str] = []

Severity = Literal["critical", "warning", "info"]
_RANK = {"critical": 0, "warning": 1, "info": 2}


class FindingModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # For people, findings read as one table: these fields, under these headings ("why" is in the JSON
    # and in audit_rules' rationale).
    table_columns: ClassVar[dict[str, str]] = {"rule": "rule", "severity": "severity", "object": "object",
                                               "observed": "observed", "why": "why it matters",
                                               "do": "what to do"}

    rule: str
    severity: Severity
    object: str = Field(description="What it concerns, e.g. 'stream ORDERS'")
    observed: dict[str, Any] = Field(description="The numbers that triggered it")
    why: str
    do: str


class AuditParams(Params):
    skip: list[str] | None = Field(default=None, max_length=100, description="Rule ids not to run")
    thresholds: dict[str, float] | None = Field(
        default=None, max_length=100, description='Override thresholds by "rule.name" (JSON object), e.g. {"consumer-lag.messages": 500}; '
                                    'audit_rules lists the names and defaults')
    sample_streams: int = Field(default=20, ge=0, le=200,
                                description="Sample recent message ids in this many of the busiest streams")
    sample_messages: int = Field(default=10, ge=1, le=100, description="Messages sampled per stream")
    max_streams: int = Field(default=10_000, ge=1, le=100_000, description="Audit at most this many streams")
    fail_on: Severity | None = Field(default=None,
                                     description="Mark the audit failed when a finding is this severe or worse "
                                                 "(the CLI then exits 2)")


class AuditSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critical: int = 0
    warning: int = 0
    info: int = 0


class AuditResult(Result):
    summary: AuditSummary
    findings: list[FindingModel]
    checked: dict[str, int] = Field(description="How many of each kind of object were looked at")
    requests: int = Field(description="Requests the audit made")
    notes: list[str] = Field(default_factory=list, description="What could not be checked, and why")
    skipped_rules: list[str] = Field(default_factory=list)
    failed: bool = Field(default=False, description="True when fail_on was given and a finding reached it")

    def exit_status(self) -> int:
        return 2 if self.failed else 0

    def reworded(self, say: Callable[[str], str]) -> Self:
        return self.model_copy(update={"findings": [f.model_copy(update={"do": say(f.do)}) for f in self.findings],
                                       "notes": [say(n) for n in self.notes]})


async def _sample_ids(js: JsApi, info: dict[str, Any], n: int) -> list[str]:
    """Nats-Msg-Id values of the stream's last `n` messages (one Direct Get batch, or a few MSG.GETs)."""
    cfg, st = info.get("config") or {}, info.get("state") or {}
    name, last, first = cfg.get("name"), int(st.get("last_seq") or 0), int(st.get("first_seq") or 0)
    start = max(first, last - n + 1, 1)
    ids: list[str] = []
    if cfg.get("allow_direct"):
        inbox = js.nc.new_inbox()
        sub = await js.nc.subscribe(inbox)
        try:
            await js.nc.publish(js.subject(f"DIRECT.GET.{name}"), json.dumps({"seq": start, "batch": n}).encode(),
                                reply=inbox)
            for _ in range(n + 1):
                msg: Msg = await sub.next_msg(timeout=js.timeout)
                hdrs = msg.headers or {}
                if hdrs.get("Status"):
                    break
                if hdrs.get("Nats-Msg-Id"):
                    ids.append(str(hdrs["Nats-Msg-Id"]))
        finally:
            await sub.unsubscribe()
        return ids
    for seq in range(start, last + 1):
        try:
            resp = await js.request(f"STREAM.MSG.GET.{name}", {"seq": seq})
        except NatsopError:
            continue
        raw = (resp.get("message") or {}).get("hdrs")
        if raw:
            for line in base64.b64decode(raw).decode("utf-8", "replace").split("\r\n")[1:]:
                key, _, value = line.partition(":")
                if key.strip().lower() == "nats-msg-id":
                    ids.append(value.strip())
    return ids


@operation("audit", cli="audit", timeout_s=300)
async def audit(ctx: Context, params: AuditParams) -> AuditResult:
    """Check the account against the operator's creed: anti-patterns, durability and lag.

    Each finding has a rule id, a severity, the object, the numbers seen, why it matters and
    what to do. Read-only. List the rules with audit_rules; skip one with skip=[id].
    """
    known = {r.id for r in RULES}
    unknown = sorted(set(params.skip or []) - known)
    if unknown:
        raise UserError(f"unknown rule id(s): {', '.join(unknown)}", code="unknown_rule",
                        hint="List the rules with audit_rules.")
    names = threshold_names()
    unknown = sorted(set(params.thresholds or {}) - set(names))
    if unknown:
        raise UserError(f"unknown threshold(s): {', '.join(unknown)}", code="unknown_threshold",
                        hint=f"Valid thresholds (rule.name): {', '.join(names)}.")
    js = await ctx.js(params.account_name)
    requests = 0
    streams: list[dict[str, Any]] = []
    offset = 0
    while len(streams) < params.max_streams:
        page = await js.request("STREAM.LIST", {"offset": offset})
        requests += 1
        items = page.get("streams") or []
        streams.extend(items)
        offset += len(items)
        if not items or offset >= int(page.get("total") or 0):
            break
    streams = streams[: params.max_streams]
    notes: list[str] = []
    if offset < int(page.get("total") or 0):
        notes.append(f"only the first {len(streams)} streams were audited (max_streams)")

    consumers: dict[str, list[dict[str, Any]]] = {}
    limit = asyncio.Semaphore(8)

    async def list_consumers(name: str) -> None:
        nonlocal requests
        async with limit:
            out: list[dict[str, Any]] = []
            off = 0
            while True:
                resp = await js.request(f"CONSUMER.LIST.{name}", {"offset": off})
                requests += 1
                got = resp.get("consumers") or []
                out.extend(got)
                off += len(got)
                if not got or off >= int(resp.get("total") or 0):
                    break
            consumers[name] = out

    await asyncio.gather(*(list_consumers(str((s.get("config") or {}).get("name")))
                           for s in streams if int((s.get("state") or {}).get("consumer_count") or 0) > 0))

    msg_ids: dict[str, list[str]] = {}
    busy = sorted((s for s in streams if int((s.get("state") or {}).get("messages") or 0) > 0
                   and not str((s.get("config") or {}).get("name", "")).startswith(("KV_", "OBJ_"))),
                  key=lambda s: parse_time((s.get("state") or {}).get("last_ts")) or datetime.min.replace(tzinfo=UTC),
                  reverse=True)[: params.sample_streams]
    for s in busy:
        try:
            msg_ids[str(s["config"]["name"])] = await _sample_ids(js, s, params.sample_messages)
        except NatsopError as err:
            notes.append(f"could not sample {s['config']['name']}: {err.message}")
        except Exception as exc:  # a sample is best effort; the audit goes on
            notes.append(f"could not sample {s['config']['name']}: {type(exc).__name__}")
        requests += 1 if (s.get("config") or {}).get("allow_direct") else params.sample_messages

    account_limits: dict[str, Any] | None = None
    try:
        # The account's limits bound what the server fills in (max_ack_pending), so a derived value is no "change".
        account_limits = dict((await js.request("INFO")).get("limits") or {})
        requests += 1
    except NatsopError as err:
        notes.append(f"account limits not read: {err.message}")

    servers: list[dict[str, Any]] | None = None
    nc = await ctx.nc(params.account_name)
    info = getattr(nc, "_server_info", None) or {}
    clustered = bool(info.get("cluster"))
    try:
        sys_nc = await ctx.system(params.account_name)
        # A lone server answers alone; a cluster's size shows in each server's routes. Knowing how many
        # replies to expect spares the wait for a lull after the last one.
        replies = await gather(sys_nc, "$SYS.REQ.SERVER.PING.VARZ", {}, timeout=2.0,
                               expect=None if clustered else 1)
        requests += 1
        servers = []
        for r in replies:
            data = dict(r.get("data") or {})
            data.setdefault("server_name", (r.get("server") or {}).get("name"))
            servers.append(data)
            if (data.get("cluster") or {}).get("name"):
                clustered = True
    except ConfigError as err:
        notes.append(f"server configuration (sync_interval, versions) not checked: {err.message}")
    except NatsopError as err:
        notes.append(f"server configuration not checked: {err.message}")

    observed = Observed(now=datetime.now(UTC), streams=streams, consumers=consumers, servers=servers,
                        clustered=clustered, msg_ids=msg_ids, account_limits=account_limits)
    findings = run_rules(observed, skip=set(params.skip or []), thresholds=params.thresholds)
    summary = AuditSummary()
    for f in findings:
        setattr(summary, f.severity, getattr(summary, f.severity) + 1)
    failed = params.fail_on is not None and any(_RANK[f.severity] <= _RANK[params.fail_on] for f in findings)
    return AuditResult(
        summary=summary,
        findings=[FindingModel(rule=f.rule, severity=f.severity, object=f.object, observed=f.observed, why=f.why,
                               do=f.do) for f in findings],
        checked={"streams": len(streams), "consumers": sum(len(v) for v in consumers.values()),
                 "kv_buckets": sum(1 for s in streams if str(s["config"]["name"]).startswith("KV_")),
                 "object_buckets": sum(1 for s in streams if str(s["config"]["name"]).startswith("OBJ_")),
                 "servers": len(servers or [])},
        requests=requests, notes=notes, skipped_rules=sorted(params.skip or []), failed=failed,
    )


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    severity: Severity = Field(description="The most severe level it reports")
    title: str
    rationale: str
    thresholds: dict[str, float]


class AuditRulesParams(Params):
    pass


class AuditRulesResult(Result):
    rules: list[RuleModel]


@operation("audit_rules", cli="audit-rules")
async def audit_rules(ctx: Context, params: AuditRulesParams) -> AuditRulesResult:
    """List the audit's rules with their rationale and default thresholds."""
    return AuditRulesResult(rules=[RuleModel(id=r.id, severity=r.severity, title=r.title, rationale=r.rationale,
                                             thresholds=r.thresholds) for r in RULES])
