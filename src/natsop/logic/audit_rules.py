"""The operator's creed as executable rules.

Each rule looks at an `Observed` snapshot of an account (streams, consumers, a sample of
message ids, and — with system credentials — the servers) and yields findings: what
was seen (the numbers), why it matters, and what to do. Rules are pure functions of the
snapshot, so they are cheap to run and to test; `natsop.ops.audit` collects the
snapshot with a bounded number of requests per object.

Sources: the spec's principles and "Don't / Do Instead" table, the Jepsen analysis of
NATS 2.12.1 and nats-server's defaults (see the skill's reference.md).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from natsop.formats import parse_time, parse_version

__all__ = ["RULES", "Finding", "Observed", "Rule", "run_rules", "threshold_names"]

Severity = Literal["critical", "warning", "info"]

NS = 1_000_000_000
DEFAULT_MAX_CONSUMERS = 1000  # nats-server 2.15's limit per stream when max_consumers is not set
GIB = 1024**3
MIB = 1024**2
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
_ID_TOKEN = re.compile(
    r"^(\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{6,}|[A-Z0-9]{20,}|"
    r"[a-z]+\d+|\d+[a-z]+)$",
    re.I,
)
_WORD_SPLIT = re.compile(r"[._\-\s]+|(?<=[a-z])(?=[A-Z])")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    object: str
    observed: dict[str, Any]
    why: str
    do: str


@dataclass
class Observed:
    """What the audit saw. Streams and consumers are the server's JSON (StreamInfo, ConsumerInfo)."""

    now: datetime
    streams: list[dict[str, Any]] = field(default_factory=list)
    consumers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    servers: list[dict[str, Any]] | None = None  # VARZ data per server; None: no system account
    clustered: bool = False
    msg_ids: dict[str, list[str]] = field(default_factory=dict)  # stream -> sampled Nats-Msg-Id values
    account_limits: dict[str, Any] | None = None  # the account's JetStream limits ($JS.API.INFO)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    rationale: str
    thresholds: dict[str, float]
    check: Callable[[Observed, dict[str, float]], Iterator[Finding]]


def _cfg(s: dict[str, Any]) -> dict[str, Any]:
    return s.get("config") or {}


def _state(s: dict[str, Any]) -> dict[str, Any]:
    return s.get("state") or {}


def _name(s: dict[str, Any]) -> str:
    return str(_cfg(s).get("name", "?"))


def _is_kv(s: dict[str, Any]) -> bool:
    return _name(s).startswith("KV_")


def _is_obj(s: dict[str, Any]) -> bool:
    return _name(s).startswith("OBJ_")


def _plain(s: dict[str, Any]) -> bool:
    return not (_is_kv(s) or _is_obj(s))


def _label(s: dict[str, Any]) -> str:
    """How a finding names a stream: KV and Object Store buckets by their bucket names."""
    name = _name(s)
    if _is_kv(s):
        return f"bucket {name[3:]}"
    if _is_obj(s):
        return f"object bucket {name[4:]}"
    return f"stream {name}"


def _words(text: str) -> set[str]:
    """The lower-case words of a name or subject: ORDER_EVENTS, orders.events.> and OrderEvents all hold 'events'."""
    return {w.lower() for w in _WORD_SPLIT.split(text) if w}


def _eventish_name(text: str) -> bool:
    return bool(_words(text) & {"event", "events"})


def _user_metadata(cfg: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (cfg.get("metadata") or {}).items() if not str(k).startswith("_nats")}


def _explained(cfg: dict[str, Any]) -> bool:
    return bool((cfg.get("description") or "").strip() or _user_metadata(cfg))


def _shape(text: str) -> str:
    """A name or subject with id-like tokens replaced by '#': entities of one kind share a shape."""
    parts = re.split(r"([._-])", text)
    return "".join("#" if (i % 2 == 0 and _ID_TOKEN.match(p) and not p.isalpha()) else p
                   for i, p in enumerate(parts))


# --- the rules -------------------------------------------------------------------------------------

def _id_like(token: str) -> bool:
    return bool(_ID_TOKEN.match(token)) and not token.isalpha()


def _subject_groups(o: Observed, t: dict[str, float]) -> Iterator[tuple[str, list[str]]]:
    """Streams whose subjects are equal but for one token: (pattern with '*' there, stream names).

    An id-like token (digits, a uuid, hex, a word with digits) that varies across
    `min_streams` streams is an entity id. A plain word that varies is much weaker
    evidence (orders.> and payments.> are two domains, not two entities), so it counts only
    when the other tokens hold a literal in common and `min_streams_by_word` streams vary in it.
    """
    by_pattern: dict[tuple[int, tuple[str, ...]], dict[str, str]] = defaultdict(dict)
    for s in o.streams:
        if not _plain(s):
            continue
        for subject in _cfg(s).get("subjects") or []:
            tokens = str(subject).split(".")
            for i, tok in enumerate(tokens):
                if tok in ("*", ">") or not tok:
                    continue
                key = (i, (*tokens[:i], "*", *tokens[i + 1:]))
                by_pattern[key].setdefault(_name(s), tok)
    for (_, pattern), members in sorted(by_pattern.items()):
        ids = sorted(name for name, tok in members.items() if _id_like(tok))
        literal_rest = any(tok not in ("*", ">") for tok in pattern)
        if len(ids) >= t["min_streams"]:
            yield ".".join(pattern), ids
        elif literal_rest and len(members) >= t["min_streams_by_word"]:
            yield ".".join(pattern), sorted(members)


def _stream_per_entity(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    why = ("One stream per entity multiplies Raft groups and limits, and makes cross-entity consumers "
           "impossible.")
    do = "Use one stream with an entity id token in the subject (e.g. orders.<id>.>) and filtered consumers."
    groups: dict[str, list[str]] = defaultdict(list)
    for s in o.streams:
        if _plain(s) and _shape(_name(s)) != _name(s):
            groups[_shape(_name(s))].append(_name(s))
    reported: list[set[str]] = []
    for shape, names in sorted(groups.items()):
        if len(names) >= t["min_streams"]:
            reported.append(set(names))
            yield Finding("stream-per-entity", "warning", f"streams {shape}",
                          {"streams": len(names), "examples": sorted(names)[:5]}, why, do)
    for pattern, names in _subject_groups(o, t):
        # The same streams seen by name and by subject (or by two tokens of one subject) are one finding.
        if any(set(names) <= seen for seen in reported):
            continue
        reported.append(set(names))
        yield Finding("stream-per-entity", "warning", f"streams on {pattern}",
                      {"streams": len(names), "examples": names[:5]}, why,
                      f"Use one stream on {pattern} (the varying token is the entity id) and filtered consumers.")


def _event_stream_mutable(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        cfg = _cfg(s)
        if not _plain(s):
            continue
        meta = {k.lower(): str(v).lower() for k, v in _user_metadata(cfg).items()}
        eventish = (_eventish_name(_name(s)) or any(_eventish_name(str(x)) for x in cfg.get("subjects") or [])
                    or meta.get("kind") in ("events", "event") or meta.get("event_sourced") in ("true", "yes", "1"))
        if eventish and not (cfg.get("deny_delete") and cfg.get("deny_purge")):
            yield Finding("event-stream-mutable", "warning", f"stream {_name(s)}",
                          {"deny_delete": bool(cfg.get("deny_delete")), "deny_purge": bool(cfg.get("deny_purge"))},
                          "An event stream is the append-only truth; if messages can be deleted or purged, "
                          "the history every projection is rebuilt from can silently change.",
                          f"stream_update {_name(s)} deny_delete=true deny_purge=true")


def _consumers(o: Observed) -> Iterator[tuple[str, dict[str, Any]]]:
    for stream, items in sorted(o.consumers.items()):
        for c in items:
            yield stream, c


def _cname(stream: str, c: dict[str, Any]) -> str:
    return f"consumer {stream}/{c.get('name') or (c.get('config') or {}).get('name')}"


def _transient_reader(cfg: dict[str, Any]) -> bool:
    """A reader that is ephemeral and unacknowledged by design, not by mistake.

    Ordered consumers (nats.go, nats-py), KV and Object Store watchers, and natsop's own
    readers keep their state in memory on one replica, with no durable name and no acks:
    the client recreates them from its last sequence when they go away.
    """
    return (not cfg.get("durable_name") and cfg.get("ack_policy") == "none" and bool(cfg.get("mem_storage"))
            and int(cfg.get("num_replicas") or 1) <= 1)


def _ack_none(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        cfg = c.get("config") or {}
        if cfg.get("ack_policy") == "none" and not _transient_reader(cfg):
            yield Finding("consumer-ack-none", "warning", _cname(stream, c), {"ack_policy": "none"},
                          "With AckNone a message counts as processed when it is sent: a crash loses it.",
                          "Use ack_policy explicit and acknowledge after processing.")


def _ephemeral_long_lived(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        cfg = c.get("config") or {}
        created = parse_time(c.get("created"))
        if cfg.get("durable_name") or created is None or _transient_reader(cfg):
            continue
        age = (o.now - created).total_seconds()
        if age >= t["age_s"]:
            yield Finding("consumer-not-durable", "info", _cname(stream, c), {"age_s": round(age)},
                          "A long-lived consumer that is not durable disappears after inactivity and loses its "
                          "position.",
                          "Make it durable (durable_name) with ack_policy explicit.")


def _churn(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, items in sorted(o.consumers.items()):
        recent = [c for c in items if (ct := parse_time(c.get("created"))) is not None
                  and (o.now - ct).total_seconds() <= t["window_s"]]
        if len(recent) >= t["min_created"]:
            yield Finding("consumer-churn", "warning", f"stream {stream}",
                          {"created_recently": len(recent), "window_s": t["window_s"]},
                          "Creating and destroying consumers in bursts churns Raft groups and can destabilise "
                          "a cluster.",
                          "Use long-lived durable consumers; create them once, idempotently (consumer_add).")


def _many_filters(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        filters = (c.get("config") or {}).get("filter_subjects") or []
        if len(filters) > t["max_filters"]:
            yield Finding("consumer-many-filters", "warning", _cname(stream, c), {"filter_subjects": len(filters)},
                          "The server evaluates every filter for every message; hundreds of disjoint filters "
                          "cost time on the whole stream.",
                          "Redesign the subject hierarchy so a few wildcards select the messages.")


def _many_consumers(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        n = int(_state(s).get("consumer_count") or 0)
        limit = int(_cfg(s).get("max_consumers") or -1)
        if n > t["critical"]:
            yield Finding("stream-many-consumers", "critical", f"stream {_name(s)}", {"consumers": n},
                          "Each consumer carries metadata and state; beyond 100,000 the stream's overhead "
                          "dominates.", "Redesign: fewer consumers with broader filters.")
        elif limit > 0:
            # A limit set on purpose: warn only as the stream nears it (at the same fraction as the default's),
            # and only for a limit meant for growth; a stream capped at a few consumers is full by design.
            if limit >= t["min_limit"] and n >= limit * t["near_default_limit"] / DEFAULT_MAX_CONSUMERS:
                yield Finding("stream-many-consumers", "warning", f"stream {_name(s)}",
                              {"consumers": n, "max_consumers": limit},
                              "The stream is near its max_consumers: creating more consumers will fail.",
                              "Reduce the consumers, or raise max_consumers (and say why).")
        elif n >= t["near_default_limit"]:
            yield Finding("stream-many-consumers", "warning", f"stream {_name(s)}", {"consumers": n},
                          "nats-server 2.15 limits a stream to 1,000 consumers by default; this stream is near it.",
                          "Reduce the consumers, or set the stream's max_consumers deliberately (and say why).")


_STREAM_DEFAULTS: dict[str, Any] = {"retention": "limits", "discard": "old", "duplicate_window": 120 * NS,
                                    "max_msgs_per_subject": -1, "max_msg_size": -1, "storage": "file"}
_CONSUMER_DEFAULTS: dict[str, Any] = {"ack_wait": 30 * NS, "max_deliver": -1, "max_ack_pending": 1000,
                                      "max_waiting": 512}


def _server_limit(o: Observed, key: str) -> int:
    """The tightest positive JetStream limit `key` (VARZ jetstream.limits) among the servers; 0 when none is set."""
    values = [int(v) for sv in o.servers or [] if (v := ((sv.get("jetstream") or {}).get("limits") or {}).get(key))
              and int(v) > 0]
    return min(values, default=0)


def _stream_defaults(o: Observed, cfg: dict[str, Any]) -> dict[str, Any]:
    """What the server fills in for this stream when the creator leaves a field out."""
    expected = dict(_STREAM_DEFAULTS)
    if cfg.get("mirror") or cfg.get("sources"):
        expected["duplicate_window"] = 0  # the server sets no window on a mirror or a sourcing stream
    else:
        # duplicate_window: 2 minutes, clamped to the server's max_duplicate_window and to max_age.
        window = 120 * NS
        for bound in (_server_limit(o, "max_duplicate_window"), int(cfg.get("max_age") or 0)):
            if bound > 0:
                window = min(window, bound)
        expected["duplicate_window"] = window
    return expected


def _consumer_defaults(o: Observed, cfg: dict[str, Any], stream_cfg: dict[str, Any]) -> dict[str, Any]:
    """What the server fills in for this consumer (nats-server setConsumerConfigDefaults)."""
    expected = dict(_CONSUMER_DEFAULTS)
    ack = cfg.get("ack_policy") or "none"
    expected["max_waiting"] = 0 if cfg.get("deliver_subject") else 512
    backoff = cfg.get("backoff") or []
    expected["ack_wait"] = backoff[0] if backoff else 30 * NS if ack in ("explicit", "all") else 0
    pending = int((stream_cfg.get("consumer_limits") or {}).get("max_ack_pending") or 0)
    if pending <= 0 and ack != "none":
        pending = 1000
        for bound in (_server_limit(o, "max_ack_pending"), int((o.account_limits or {}).get("max_ack_pending") or 0)):
            if 0 < bound < pending:
                pending = bound
    expected["max_ack_pending"] = max(pending, 0)
    return expected


def _undocumented_defaults(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    why = ("The defaults were tested at scale; a changed default with no recorded reason is a trap for the next "
           "operator.")
    for s in o.streams:
        cfg = _cfg(s)
        if not _plain(s) or _explained(cfg):
            continue
        expected = _stream_defaults(o, cfg)
        changed = {k: cfg[k] for k, v in expected.items() if k in cfg and cfg[k] != v}
        if changed:
            yield Finding("undocumented-defaults", "info", f"stream {_name(s)}", {"changed": changed}, why,
                          f"Say why in the description or metadata (stream_update {_name(s)} description='<why>'), "
                          "or return to the default.")
    stream_cfgs = {_name(s): _cfg(s) for s in o.streams}
    for stream, c in _consumers(o):
        cfg = c.get("config") or {}
        if _explained(cfg) or not (cfg.get("durable_name") or cfg.get("name")):
            continue
        expected = _consumer_defaults(o, cfg, stream_cfgs.get(stream) or {})
        changed = {k: cfg[k] for k, v in expected.items() if k in cfg and cfg[k] != v}
        if changed:
            yield Finding("undocumented-defaults", "info", _cname(stream, c), {"changed": changed}, why,
                          "Say why in the consumer's description or metadata, or return to the default.")


def _is_critical(cfg: dict[str, Any]) -> bool:
    meta = {k.lower(): str(v).lower() for k, v in _user_metadata(cfg).items()}
    return meta.get("critical") in ("true", "yes", "1") or meta.get("durability") == "critical"


def _sname(sv: dict[str, Any]) -> str:
    return str(sv.get("server_name") or sv.get("name") or "?")


def _holders(s: dict[str, Any], servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The servers holding the stream's replicas, or, when the stream info does not say, those it may be placed on.

    A clustered stream's info names its leader and replicas. Without that (a lone server,
    or a stream without a leader) the placement narrows the candidates: its cluster and
    its tags (a stream placed with tags lands only on servers carrying all of them).
    """
    cl = s.get("cluster") or {}
    names = {str(n) for n in [cl.get("leader"), *((r or {}).get("name") for r in cl.get("replicas") or [])] if n}
    held = [sv for sv in servers if _sname(sv) in names]
    if held:
        return held
    placement = _cfg(s).get("placement") or {}
    candidates = servers
    if placement.get("cluster"):
        candidates = [sv for sv in candidates if (sv.get("cluster") or {}).get("name") == placement["cluster"]]
    tags = {str(x).lower() for x in placement.get("tags") or []}
    if tags:
        candidates = [sv for sv in candidates if tags <= {str(x).lower() for x in sv.get("tags") or []}]
    # A placement no server we heard from matches says nothing: stay on the safe side.
    return candidates or servers


def _sync_always(sv: dict[str, Any]) -> bool:
    return bool(((sv.get("jetstream") or {}).get("config") or {}).get("sync_always"))


SYNC_RISK_KEY = "sync_risk"  # stream metadata that records an accepted durability risk, and why


def _sync_interval(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    why = ("JetStream fsyncs every sync_interval (2 minutes by default), not before the ack: an OS crash or "
           "power loss can lose acknowledged writes (Jepsen, NATS 2.12.1).")
    accept = (f"accept the risk knowingly: record why under {SYNC_RISK_KEY} in its metadata (a stream "
              "marked critical cannot opt out)")
    do = ("Set jetstream { sync_interval: always } on the servers holding it, or place it on servers tagged "
          f"sync:always; otherwise {accept}.")
    for s in o.streams:
        cfg = _cfg(s)
        if cfg.get("storage", "file") != "file":
            continue
        critical = _is_critical(cfg)
        # KV and Object Store buckets are streams too, and an R1 bucket is often the only copy of its data.
        r1 = int(cfg.get("num_replicas") or 1) == 1 and not _user_metadata(cfg).get(SYNC_RISK_KEY)
        if not (critical or r1):
            continue
        if cfg.get("persist_mode") == "async":
            # Seen in the stream's own configuration: no system account needed.
            yield Finding("sync-interval", "critical" if critical else "warning", _label(s),
                          {"persist_mode": "async", "replicas": int(cfg.get("num_replicas") or 1)},
                          "persist_mode async acknowledges a write before it is stored, whatever the servers' "
                          "sync_interval: a crash of the process loses acknowledged writes (ADR-56).",
                          "persist_mode cannot be changed: recreate the stream without it (copy the data with "
                          f"a sourcing stream, or back up and restore with an edited config), or {accept}.")
            continue
        if not o.servers:
            continue
        lax = [sv for sv in _holders(s, o.servers) if not _sync_always(sv)]
        if not lax:
            continue
        observed = {"servers_without_sync_always": sorted(_sname(sv) for sv in lax),
                    "sync_interval_ns": ((lax[0].get("jetstream") or {}).get("config") or {}).get("sync_interval"),
                    "replicas": int(cfg.get("num_replicas") or 1)}
        if critical:
            yield Finding("sync-interval", "critical", _label(s), observed, why, do)
        else:
            yield Finding("sync-interval", "warning", _label(s), observed,
                          why + " An R1 stream has no other copy to recover from.", do)


def _server_version(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for sv in o.servers or []:
        ver = str(sv.get("version") or "")
        v = parse_version(ver)
        name = str(sv.get("server_name") or sv.get("name") or "?")
        if v == (0, 0, 0):
            continue
        if v < (2, 10, 23):
            yield Finding("server-version", "critical", f"server {name}", {"version": ver},
                          "Versions before 2.10.23 can forget a stream after a process crash (Jepsen).",
                          "Upgrade to a current release (2.12.3 or later).")
        elif v < (2, 12, 3):
            yield Finding("server-version", "warning", f"server {name}", {"version": ver},
                          "Peer-removal and membership bugs that lost data under partitions were fixed in 2.12.3.",
                          "Upgrade to 2.12.3 or later before changing cluster membership.")


def _kv_size_guard(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        if _is_kv(s) and int(_cfg(s).get("max_bytes") or -1) < 0:
            yield Finding("kv-no-size-guard", "warning", f"bucket {_name(s)[3:]}",
                          {"max_bytes": -1, "bytes": int(_state(s).get("bytes") or 0)},
                          "A bucket without max_bytes can grow until the server's storage is full, taking "
                          "every other stream with it.",
                          "Set max_bytes on the bucket (the idiomatic guard is a few times its expected size).")


def _kv_large_values(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        if not _is_kv(s):
            continue
        cfg, st = _cfg(s), _state(s)
        limit = int(cfg.get("max_msg_size") or -1)
        msgs = int(st.get("messages") or 0)
        avg = int(st.get("bytes") or 0) // msgs if msgs else 0
        if limit > t["max_value_bytes"] or avg > t["avg_value_bytes"]:
            yield Finding("kv-large-values", "warning", f"bucket {_name(s)[3:]}",
                          {"max_value_size": limit, "average_entry_bytes": avg},
                          "Large values make every watcher receive the whole value on each change and belong "
                          "in finer keys or the Object Store.",
                          "Split values into granular keys; put blobs in the Object Store and store a reference.")


def _names_a_stream(cfg: dict[str, Any], streams: set[str]) -> bool:
    """Whether the description or metadata names a stream of the account (e.g. 'rebuilt from EVENTS')."""
    texts = [str(cfg.get("description") or ""), *(str(v) for v in _user_metadata(cfg).values())]
    return any(word in streams for text in texts for word in re.split(r"[^\w-]+", text) if word)


def _kv_only_copy(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    plain = {_name(s) for s in o.streams if _plain(s)}
    for s in o.streams:
        cfg = _cfg(s)
        if not _is_kv(s) or cfg.get("sources") or cfg.get("mirror") or _names_a_stream(cfg, plain):
            continue
        if int(_state(s).get("messages") or 0):
            yield Finding("kv-only-copy", "info", f"bucket {_name(s)[3:]}", {"sources": 0, "mirror": False},
                          "KV is a projection: if this bucket is the only copy of its data, losing it cannot be "
                          "repaired by replaying a stream.",
                          "Keep the events in a stream and build the bucket from them with a consumer; name "
                          "that stream in the bucket's description or metadata (e.g. 'rebuilt from EVENTS').")


def _uuid4_ids(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, ids in sorted(o.msg_ids.items()):
        v4 = [i for i in ids if UUID4.match(i)]
        if ids and len(v4) >= max(1, t["min_fraction"] * len(ids)):
            yield Finding("msg-id-uuid4", "warning", f"stream {stream}",
                          {"sampled": len(ids), "uuid_v4": len(v4), "example": v4[0]},
                          "Random UUIDv4 ids say nothing about order; UUIDv7 ids sort by time, which helps "
                          "debugging, storage locality and replay.",
                          "Generate event ids as UUIDv7 (natsop.logic.envelope.uuid7, event_publish).")


def _r1_on_cluster(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    if not o.clustered:
        return
    for s in o.streams:
        if int(_cfg(s).get("num_replicas") or 1) == 1:
            yield Finding("r1-on-cluster", "warning", f"stream {_name(s)}", {"replicas": 1},
                          "On a cluster an R1 stream lives on one server: losing that server loses the stream "
                          "or makes it unavailable.",
                          f"stream_update {_name(s)} replicas=3")


def _even_replicas(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        r = int(_cfg(s).get("num_replicas") or 1)
        if r in (2, 4):
            yield Finding("even-replicas", "warning", f"stream {_name(s)}", {"replicas": r},
                          f"R{r} tolerates no more failures than R{r - 1} but costs an extra copy and slower "
                          "quorum.",
                          f"stream_update {_name(s)} replicas={r + 1 if r == 2 else 3}")


def _unbounded(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        cfg, st = _cfg(s), _state(s)
        if not _plain(s) or cfg.get("retention", "limits") != "limits":
            continue
        if any(int(cfg.get(k) or -1) > 0 for k in ("max_msgs", "max_bytes", "max_msgs_per_subject")) or int(
                cfg.get("max_age") or 0) > 0:
            continue
        size = int(st.get("bytes") or 0)
        if size >= t["warn_bytes"]:
            yield Finding("stream-unbounded", "warning", f"stream {_name(s)}",
                          {"bytes": size, "messages": int(st.get("messages") or 0)},
                          "A stream with no limit grows until the server's storage is full.",
                          "Set max_bytes (or max_age) as a guard, even a generous one.")
        elif int(st.get("messages") or 0) > 0:
            yield Finding("stream-unbounded", "info", f"stream {_name(s)}", {"bytes": size},
                          "The stream has no limits; fine for an event log, as long as someone watches its size.",
                          "Consider max_bytes as a guard.")


def _compression(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        cfg = _cfg(s)
        size = int(_state(s).get("bytes") or 0)
        if cfg.get("storage", "file") == "file" and cfg.get("compression", "none") == "none" and size >= t["min_bytes"]:
            yield Finding("no-compression", "info", f"stream {_name(s)}", {"bytes": size},
                          "S2 compression usually shrinks JSON and text several times at little CPU cost.",
                          f"stream_update {_name(s)} compression=s2")


def _dup_window(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for s in o.streams:
        cfg = _cfg(s)
        if not _plain(s):
            continue
        dw, age = int(cfg.get("duplicate_window") or 0), int(cfg.get("max_age") or 0)
        if age > 0 and dw >= age and age > 120 * NS:
            yield Finding("duplicate-window", "warning", f"stream {_name(s)}", {"duplicate_window_ns": dw,
                          "max_age_ns": age},
                          "The deduplication window spans the whole retention: the server keeps every message "
                          "id in memory for as long as the message itself.",
                          "Use a duplicate window as long as a publisher may retry (the default is 2 minutes).")
        elif dw > t["max_window_s"] * NS:
            yield Finding("duplicate-window", "info", f"stream {_name(s)}", {"duplicate_window_ns": dw},
                          "A long deduplication window holds every message id of that period in memory.",
                          "Keep it as long as a publisher may retry (the default is 2 minutes).")


def _ack_pending(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        limit = int((c.get("config") or {}).get("max_ack_pending") or 0)
        pending = int(c.get("num_ack_pending") or 0)
        if limit > 0 and pending >= t["fraction"] * limit:
            yield Finding("ack-pending-saturated", "warning", _cname(stream, c),
                          {"num_ack_pending": pending, "max_ack_pending": limit},
                          "The server stops delivering when max_ack_pending is reached: the consumer stalls "
                          "waiting for acks.",
                          "Ack faster (or in parallel), shorten processing, or raise max_ack_pending with a reason.")


def _lag(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        pending = int(c.get("num_pending") or 0)
        if pending >= t["messages"]:
            yield Finding("consumer-lag", "warning", _cname(stream, c), {"num_pending": pending},
                          "The consumer is far behind the stream; its projection or work is stale.",
                          f"Check the subscriber (consumer_report {stream}; for an assistant, the "
                          "investigate_consumer_lag prompt); scale it or fix its errors.")


def _paused(o: Observed, t: dict[str, float]) -> Iterator[Finding]:
    for stream, c in _consumers(o):
        if not c.get("paused"):
            continue
        remaining = int(c.get("pause_remaining") or 0)
        severity: Severity = "warning" if remaining >= t["long_s"] * NS else "info"
        yield Finding("consumer-paused", severity, _cname(stream, c), {"pause_remaining_ns": remaining},
                      "A paused consumer delivers nothing; messages pile up behind it.",
                      f"consumer_resume {stream} {c.get('name')} when the reason for pausing is gone.")


RULES: tuple[Rule, ...] = (
    Rule("stream-per-entity", "warning", "One stream per entity",
         "Prefer one stream with a subject hierarchy and filtered consumers.",
         {"min_streams": 5, "min_streams_by_word": 20}, _stream_per_entity),
    Rule("event-stream-mutable", "warning", "Event stream allows delete or purge",
         "Streams are append-only truth: deny_delete and deny_purge for event streams.", {}, _event_stream_mutable),
    Rule("consumer-ack-none", "warning", "Consumer with AckNone",
         "AckExplicit, always, for data that matters (ordered consumers and watchers are exempt: "
         "unacknowledged by design).", {}, _ack_none),
    Rule("consumer-not-durable", "info", "Long-lived consumer that is not durable",
         "Consumers are durable by default (ordered consumers and watchers are exempt).", {"age_s": 3600},
         _ephemeral_long_lived),
    Rule("consumer-churn", "warning", "Consumers created in a burst",
         "Long-lived consumers; burst create/destroy causes Raft instability.",
         {"min_created": 20, "window_s": 600}, _churn),
    Rule("consumer-many-filters", "warning", "Consumer with more than 300 filter subjects",
         "The server evaluates all filters; use broader wildcards.", {"max_filters": 300}, _many_filters),
    Rule("stream-many-consumers", "warning", "Stream with very many consumers",
         ">100K consumers per stream is a redesign; 2.15 limits 1,000 by default.",
         {"critical": 100_000, "near_default_limit": 900, "min_limit": 100}, _many_consumers),
    Rule("undocumented-defaults", "info", "Defaults changed without a recorded reason",
         "Defaults are sacred; document why when you change one.", {}, _undocumented_defaults),
    Rule("sync-interval", "critical", "Durability depends on sync_interval",
         "Jepsen: writes are fsynced every 2 minutes by default; set sync_interval: always for critical data "
         "(metadata critical=true) and R1 streams, and never persist_mode async for them. An R1 stream whose "
         f"risk is accepted says so in its metadata: {SYNC_RISK_KEY}=<reason>.",
         {}, _sync_interval),
    Rule("server-version", "critical", "Server version with known data-loss bugs",
         "2.10.23 fixed stream loss after crashes; 2.12.3 fixed peer-removal bugs.", {}, _server_version),
    Rule("kv-no-size-guard", "warning", "KV bucket without max_bytes",
         "The idiomatic bucket carries a size guard.", {}, _kv_size_guard),
    Rule("kv-large-values", "warning", "KV bucket with large values",
         "Massive KV values: split into granular keys.",
         {"max_value_bytes": MIB, "avg_value_bytes": 256 * 1024}, _kv_large_values),
    Rule("kv-only-copy", "info", "KV bucket that may be the only copy of its data",
         "KV is a projection; the stream is truth. A bucket that sources or mirrors a stream, or whose "
         "description or metadata names a stream of the account, is taken as a projection.", {}, _kv_only_copy),
    Rule("msg-id-uuid4", "warning", "Random UUIDv4 message ids",
         "Use UUIDv7: time-sortable, chronologically ordered.", {"min_fraction": 0.5}, _uuid4_ids),
    Rule("r1-on-cluster", "warning", "R1 stream on a cluster",
         "R3 is the production choice on a cluster.", {}, _r1_on_cluster),
    Rule("even-replicas", "warning", "R2 or R4 stream",
         "R2 and R4 add cost without tolerating more failures than R1 and R3.", {}, _even_replicas),
    Rule("stream-unbounded", "warning", "Stream with no limits",
         "A stream with no limit grows until storage is full.", {"warn_bytes": GIB}, _unbounded),
    Rule("no-compression", "info", "Large file stream without compression",
         "S2 compression is worth it.", {"min_bytes": GIB}, _compression),
    Rule("duplicate-window", "warning", "Duplicate window as long as the retention",
         "The dedup window holds every id in memory for its duration.", {"max_window_s": 3600}, _dup_window),
    Rule("ack-pending-saturated", "warning", "max_ack_pending nearly reached",
         "A consumer at max_ack_pending stops receiving.", {"fraction": 0.9}, _ack_pending),
    Rule("consumer-lag", "warning", "Consumer far behind",
         "Lag means stale projections and late work.", {"messages": 10_000}, _lag),
    Rule("consumer-paused", "info", "Paused consumer",
         "Paused consumers left paused pile up messages.", {"long_s": 86_400}, _paused),
)


def threshold_names() -> list[str]:
    """Every threshold that can be overridden, as 'rule.name'."""
    return sorted(f"{rule.id}.{name}" for rule in RULES for name in rule.thresholds)


def run_rules(observed: Observed, *, skip: set[str] | None = None,
              thresholds: dict[str, float] | None = None) -> list[Finding]:
    """Every finding of every rule not skipped; thresholds override by 'rule.name' keys.

    An unknown threshold name raises ValueError: a misspelt override silently ignored would
    make the audit look clean for the wrong reason.
    """
    skip = skip or set()
    overrides = thresholds or {}
    unknown = sorted(set(overrides) - set(threshold_names()))
    if unknown:
        raise ValueError(f"unknown threshold(s): {', '.join(unknown)}")
    findings: list[Finding] = []
    for rule in RULES:
        if rule.id in skip:
            continue
        t = dict(rule.thresholds)
        for key, value in overrides.items():
            rid, _, name = key.partition(".")
            if rid == rule.id:
                t[name] = value
        findings.extend(rule.check(observed, t))
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], f.rule, f.object))
    return findings
