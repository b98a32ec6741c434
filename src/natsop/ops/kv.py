"""Key-Value: buckets and their keys, as ADR-8 lays them out on JetStream.

A bucket `B` is the stream `KV_B` capturing `$KV.B.>`; the revision of an entry is its
stream sequence. natsop reads and writes buckets exactly as nats.go and nats-py do, so
either side can use what the other wrote. Wire details live in `ops._kv`.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from natsop.errors import Conflict, NatsopError, NotFound, Unsupported, UserError
from natsop.formats import duration_ns, ns_to_s
from natsop.logic.validate import (
    MAX_COUNT,
    MAX_SEQ,
    MAX_SIZE32,
    BucketName,
    KvKey,
    SubjectFilter,
    check_bucket,
    check_kv_key,
)
from natsop.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_BYTES,
    Confirmable,
    ConfirmParams,
    Payload,
    check_confirmation,
    decode_input,
    payload_of,
)
from natsop.ops._common import PageParams, require_server
from natsop.ops.stream import ClusterInfo
from natsop.registry import Impact, Params, Result, operation
from natsop.wire.context import Context
from natsop.wire.jsapi import JsApi
from natsop.wire.kv import (
    HDR_EXPECTED_LAST_SUBJECT_SEQ,
    HDR_OPERATION,
    HDR_ROLLUP,
    HDR_TTL,
    Bucket,
    PullConsumer,
    RawEntry,
    bind,
    direct_batch,
    get_last,
    get_revision,
    is_wrong_last_sequence,
    kv_stream,
    next_for_subject,
    publish,
    subject_count,
)

__all__ = ["KvEntry", "KvInfoResult"]

MAX_HISTORY = 64
DUPLICATE_WINDOW_S = 120
MAX_VALUE_CHARS = 8 * 1024 * 1024
_PULL_BATCH = 256
_HISTORY_PAGE_BYTES = 8 * 1024 * 1024

ValueEncoding = Literal["utf-8", "base64"]


def _key_filter(key_filter: str | None) -> str | None:
    if key_filter is None:
        return None
    check_kv_key(key_filter, wildcards=True)
    # `user*` is not a pattern to NATS but a literal token that matches nothing: say so.
    for token in key_filter.split("."):
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise UserError(f"key filter {key_filter!r}: wildcards must be whole tokens", code="invalid_key",
                            hint="Filters use NATS wildcards between dots, not substrings: 'user.*' or 'user.>'.")
    return key_filter


def _bucket_name(name: str | None) -> str | None:
    return None if name is None else check_bucket(name)


# Optional names written as `Annotated[str | None, ...]` so that the CLI sees a plain optional string.
OptionalBucketName = Annotated[str | None, AfterValidator(_bucket_name), Field(max_length=255)]
KeyFilter = Annotated[str | None, AfterValidator(_key_filter), Field(max_length=4096)]


# ----------------------------------------------------------------------------- models


class KvEntry(BaseModel):
    """One entry of a key: a value, or a delete/purge marker."""

    model_config = ConfigDict(extra="forbid")

    key: str
    revision: int = Field(description="The entry's stream sequence")
    operation: Literal["PUT", "DEL", "PURGE"]
    created: datetime | None = Field(default=None, description="When the server stored it")
    delta: int | None = Field(default=None, description="Distance from the key's latest entry (0 = latest)")
    value: Payload | None = Field(default=None, description="The value (none for markers or meta-only reads)")
    ttl: str | None = Field(default=None, description="Per-key TTL (Nats-TTL) the entry was written with")


def _entry(b: Bucket, raw: RawEntry, max_bytes: int | None, delta: int | None = None) -> KvEntry:
    """Present a stored entry; `max_bytes=None` leaves the value out (markers never have one)."""
    value = None if max_bytes is None or raw.deleted else payload_of(raw.data, max_bytes)
    return KvEntry(key=b.key_of(raw.subject), revision=raw.seq, operation=raw.operation, created=raw.time,
                   delta=delta, value=value, ttl=raw.headers.get(HDR_TTL))


class BucketParams(Params):
    bucket: BucketName


class KeyParams(BucketParams):
    key: KvKey


def _max_payload_field(default: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
    return Field(default=default, ge=0, le=MAX_PAYLOAD_BYTES,
                 description="Show at most this many bytes of each value (the full size is always given)")


# ----------------------------------------------------------------------------- buckets


class KvRepublish(BaseModel):
    """Republish every write to core NATS subjects (for cheap fan-out)."""

    model_config = ConfigDict(extra="forbid")

    src: SubjectFilter | None = Field(default=None, description="Keys' subjects to republish; default all")
    dest: SubjectFilter = Field(description="Destination subject (may use the source's wildcards)")
    headers_only: bool = Field(default=False, description="Send headers only, without values")


class KvInfoResult(Result):
    """A bucket's settings and state."""

    bucket: str
    stream: str = Field(description="The backing stream")
    backing_store: str = "JetStream"
    created: str | None = None
    description: str | None = None
    values: int = Field(description="Stored entries, history and markers included")
    bytes: int
    keys: int = Field(description="Keys with entries, deleted keys whose markers remain included")
    first_revision: int = 0
    last_revision: int = 0
    history: int = Field(description="Entries kept per key")
    ttl_s: float = Field(description="Seconds an entry is kept; 0 = forever")
    max_value_size: int = Field(description="Largest value in bytes; -1 = the server's max payload")
    max_bytes: int = Field(description="Size limit of the bucket; -1 = none")
    storage: str
    replicas: int
    compression: bool
    allow_direct: bool
    limit_marker_ttl_s: float | None = Field(default=None, description="Limit markers (2.11+): marker TTL")
    per_key_ttl: bool = Field(description="True when per-key TTLs (kv_create ttl_s) are allowed")
    republish: dict[str, Any] | None = None
    mirror: str | None = Field(default=None, description="Bucket this one mirrors")
    sources: list[str] | None = Field(default=None, description="Buckets this one sources from")
    placement: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    cluster: ClusterInfo | None = None


def _bucket_of_stream(name: str) -> str:
    return name[3:] if name.startswith("KV_") else name


def _info_fields(bucket: str, info: dict[str, Any]) -> dict[str, Any]:
    cfg = info.get("config") or {}
    st = info.get("state") or {}
    mirror = cfg.get("mirror") or None
    sources = cfg.get("sources") or None
    marker_ttl = cfg.get("subject_delete_marker_ttl")
    metadata = {k: v for k, v in (cfg.get("metadata") or {}).items() if not str(k).startswith("_nats.")}
    return dict(
        bucket=bucket,
        stream=str(cfg.get("name") or kv_stream(bucket)),
        created=info.get("created"),
        description=cfg.get("description") or None,
        values=int(st.get("messages") or 0),
        bytes=int(st.get("bytes") or 0),
        keys=int(st.get("num_subjects") or 0),
        first_revision=int(st.get("first_seq") or 0),
        last_revision=int(st.get("last_seq") or 0),
        history=int(cfg.get("max_msgs_per_subject") or 1),
        ttl_s=ns_to_s(int(cfg.get("max_age") or 0)) or 0.0,
        max_value_size=int(cfg.get("max_msg_size") or -1),
        max_bytes=int(cfg.get("max_bytes") or -1),
        storage=str(cfg.get("storage") or "file"),
        replicas=int(cfg.get("num_replicas") or 1),
        compression=cfg.get("compression") == "s2",
        allow_direct=bool(cfg.get("allow_direct")),
        limit_marker_ttl_s=ns_to_s(int(marker_ttl)) if marker_ttl else None,
        per_key_ttl=bool(cfg.get("allow_msg_ttl")),
        republish=cfg.get("republish") or None,
        mirror=_bucket_of_stream(str(mirror.get("name") or "")) if mirror else None,
        sources=[_bucket_of_stream(str(s.get("name") or "")) for s in sources] if sources else None,
        placement=cfg.get("placement") or None,
        metadata=metadata or None,
        cluster=ClusterInfo.model_validate(info["cluster"]) if info.get("cluster") else None,
    )


class KvAddParams(BucketParams):
    """Bucket settings. The defaults follow the idiomatic bucket: one history entry, compression on."""

    history: int = Field(default=1, ge=1, le=MAX_HISTORY, description="Entries kept per key (1-64)")
    ttl_s: float = Field(default=0, ge=0, le=10 * 365 * 86400,
                         description="Seconds an entry is kept; 0 = forever. Use only where expiry is the intent")
    max_value_size: int | None = Field(default=None, ge=1, le=MAX_SIZE32, description="Largest value in bytes")
    max_bytes: int | None = Field(default=None, ge=-1, le=MAX_COUNT,
                                  description="Size guard for the whole bucket in bytes; -1 = deliberately none")
    storage: Literal["file", "memory"] = Field(default="file", description="file survives restarts; memory does not")
    replicas: int = Field(default=1, ge=1, le=5, description="1 on one server; 3 in production clusters")
    compression: bool = Field(default=True, description="s2 compression on disk")
    description: str | None = Field(default=None, max_length=4096, description="What the bucket holds and why")
    republish: KvRepublish | None = None
    mirror: OptionalBucketName = Field(default=None, description="Make this a read-only mirror of that bucket")
    sources: list[BucketName] | None = Field(default=None, max_length=256,
                                             description="Buckets whose keys are copied into this one")
    limit_marker_ttl_s: float | None = Field(
        default=None, ge=1, le=10 * 365 * 86400,
        description="Enable limit markers and per-key TTLs (2.11+): seconds a marker for an expired key is kept")
    placement_cluster: str | None = Field(default=None, max_length=255,
                                          description="Place the replicas in this cluster")
    placement_tags: list[str] | None = Field(default=None, max_length=64,
                                             description="Place the replicas on servers with all these tags")
    metadata: dict[str, str] | None = Field(default=None, description="Free-form labels")


class KvAddResult(KvInfoResult):
    notes: list[str] = Field(default_factory=list, description="Advice about the settings chosen")


def bucket_config(p: KvAddParams) -> dict[str, Any]:
    """The stream configuration of a bucket, field for field as ADR-8 and nats.go build it."""
    max_age = duration_ns(p.ttl_s)
    duplicate_window = duration_ns(DUPLICATE_WINDOW_S)
    if 0 < max_age < duplicate_window:
        duplicate_window = max_age
    cfg: dict[str, Any] = {
        "name": kv_stream(p.bucket),
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_msgs_per_subject": p.history,
        "max_bytes": p.max_bytes if p.max_bytes is not None else -1,
        "max_age": max_age,
        "max_msg_size": p.max_value_size or -1,
        "storage": p.storage,
        "discard": "new",
        "num_replicas": p.replicas,
        "duplicate_window": duplicate_window,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "allow_direct": True,
        "compression": "s2" if p.compression else "none",
    }
    if p.description:
        cfg["description"] = p.description
    if p.limit_marker_ttl_s is not None:
        cfg["allow_msg_ttl"] = True
        cfg["subject_delete_marker_ttl"] = duration_ns(p.limit_marker_ttl_s)
    if p.republish is not None:
        cfg["republish"] = p.republish.model_dump(exclude_none=True)
    if p.placement_cluster or p.placement_tags:
        placement: dict[str, Any] = {}
        if p.placement_cluster:
            placement["cluster"] = p.placement_cluster
        if p.placement_tags:
            placement["tags"] = p.placement_tags
        cfg["placement"] = placement
    if p.metadata:
        cfg["metadata"] = p.metadata
    subjects = [f"$KV.{p.bucket}.>"]
    if p.mirror:
        cfg["mirror"] = {"name": kv_stream(p.mirror)}
        cfg["mirror_direct"] = True
    elif p.sources:
        cfg["sources"] = [
            {"name": kv_stream(src),
             "subject_transforms": [{"src": f"$KV.{src}.>", "dest": f"$KV.{p.bucket}.>"}]}
            for src in p.sources
        ]
        cfg["subjects"] = subjects
    else:
        cfg["subjects"] = subjects
    return cfg


@operation("kv_add", cli="kv add", aliases=("new",), impact=Impact.WRITE, idempotent=True, args=("bucket",))
async def kv_add(ctx: Context, params: KvAddParams) -> KvAddResult:
    """Create a Key-Value bucket. Defaults: history 1, no TTL, file storage, one replica, compression on.

    Creating a bucket that exists with the same settings succeeds and changes nothing.
    """
    if params.max_bytes == 0:
        raise UserError("max_bytes=0 is not a size", code="invalid_argument",
                        hint="Give a size guard in bytes, or -1 to choose no limit deliberately.")
    if params.mirror and params.sources:
        raise UserError("a bucket is either a mirror or has sources, not both", code="invalid_argument",
                        hint="Give mirror= for a read replica of one bucket, or sources= to combine buckets.")
    if params.mirror == params.bucket or params.bucket in (params.sources or []):
        raise UserError("a bucket cannot mirror or source itself", code="invalid_argument")
    if params.mirror and params.limit_marker_ttl_s is not None:
        raise UserError("limit markers cannot be enabled on a mirror", code="invalid_argument",
                        hint="Enable them on the origin bucket.")
    if params.limit_marker_ttl_s is not None:
        # An older server ignores the setting: the bucket would silently have no markers.
        await require_server(ctx, params.account_name, (2, 11, 0), "limit markers (limit_marker_ttl_s)")
    js = await ctx.js(params.account_name)
    try:
        info = await js.request(f"STREAM.CREATE.{kv_stream(params.bucket)}", bucket_config(params),
                                context=f"create bucket {params.bucket}")
    except Conflict as exc:
        if exc.code == "stream_name_in_use":
            raise Conflict(f"bucket {params.bucket!r} already exists with other settings", code="bucket_exists",
                           hint="Inspect it with kv_info; pick another name or keep its settings.",
                           details=exc.details) from None
        raise
    notes: list[str] = []
    if params.max_bytes is None:
        notes.append("No size guard: the bucket may grow until account or server limits stop it. Set max_bytes "
                     "(for example 16 MiB for a projection of modest size), or -1 to choose no limit deliberately.")
    return KvAddResult(**_info_fields(params.bucket, info), notes=notes)


@operation("kv_info", cli="kv info", aliases=("status",), args=("bucket",))
async def kv_info(ctx: Context, params: BucketParams) -> KvInfoResult:
    """Show a bucket's settings (history, TTL, limits, compression) and state (values, bytes, keys)."""
    _, b = await bind(ctx, params.account_name, params.bucket)
    return KvInfoResult(**_info_fields(params.bucket, b.info))


class KvBucketSummary(BaseModel):
    """One line of a bucket listing."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    values: int
    bytes: int
    keys: int = Field(description="Keys with entries, deleted keys included")
    history: int
    ttl_s: float
    storage: str
    replicas: int
    compression: bool
    description: str | None = None


class KvLsParams(PageParams):
    bucket: OptionalBucketName = Field(default=None, description="List this bucket's keys; omit to list buckets")
    filter: KeyFilter = Field(default=None,
                                       description="Only keys matching this NATS wildcard filter, e.g. 'user.*' or 'a.>'")


class KvLsResult(Result):
    bucket: str | None = Field(default=None, description="The bucket whose keys are listed")
    filter: str | None = None
    buckets: list[KvBucketSummary] | None = None
    keys: list[str] | None = None
    offset: int
    total: int | None = Field(
        default=None,
        description="Buckets in the account; for keys, the latest entries matching the filter, deleted keys "
                    "whose markers remain included (an upper bound on the live keys)")
    deleted_skipped: int | None = Field(default=None, description="Deleted keys passed over in this page")
    truncated: bool = Field(description="True when more follow; call again with offset=next_offset")
    next_offset: int | None = None


async def _bucket_summary(js: JsApi, stream: str, gate: asyncio.Semaphore) -> KvBucketSummary | None:
    async with gate:
        try:
            info = await js.request(f"STREAM.INFO.{stream}", context=f"stream {stream}")
        except NotFound:
            return None  # removed while we listed
    f = _info_fields(_bucket_of_stream(stream), info)
    return KvBucketSummary(**{k: f[k] for k in KvBucketSummary.model_fields})


async def _list_buckets(ctx: Context, params: KvLsParams) -> KvLsResult:
    js = await ctx.js(params.account_name)
    # Names are cheap (1024 per request); only the page's buckets are looked up in full.
    names = sorted([name async for name, _ in js.paged("STREAM.NAMES", "streams")
                    if isinstance(name, str) and name.startswith("KV_")])
    page = names[params.offset: params.offset + params.limit]
    gate = asyncio.Semaphore(8)
    found = await asyncio.gather(*(_bucket_summary(js, n, gate) for n in page))
    end = params.offset + len(page)
    more = end < len(names)
    return KvLsResult(buckets=[s for s in found if s is not None], offset=params.offset, total=len(names),
                      truncated=more, next_offset=end if more else None)


async def _list_keys(ctx: Context, params: KvLsParams, bucket: str) -> KvLsResult:
    js, b = await bind(ctx, params.account_name, bucket)
    key_filter = params.filter or ">"
    # Last entry per key, headers only: keys are listed without reading a single value.
    config = {"deliver_policy": "last_per_subject", "filter_subject": b.subject(key_filter), "headers_only": True}
    keys: list[str] = []
    skipped = 0
    position = 0  # entries consumed, deleted ones included: the cursor
    async with PullConsumer(js, b.stream, config) as pc:
        total = pc.num_pending
        while position < total and len(keys) < params.limit:
            got = 0
            async with aclosing(pc.fetch(min(_PULL_BATCH, total - position), expires_s=5.0)) as batch:
                async for raw in batch:
                    got += 1
                    position += 1
                    if position > params.offset:
                        if raw.deleted:
                            skipped += 1
                        else:
                            keys.append(b.key_of(raw.subject))
                    if raw.pending == 0:
                        total = position
                        break
                    if len(keys) >= params.limit:
                        break
            if got == 0:
                break  # entries removed since the consumer was created
    more = position < total
    return KvLsResult(bucket=bucket, filter=key_filter, keys=keys, offset=params.offset, total=total,
                      deleted_skipped=skipped, truncated=more, next_offset=position if more else None)


@operation("kv_ls", cli="kv ls", aliases=("list",), args=("bucket",), timeout_s=60)
async def kv_ls(ctx: Context, params: KvLsParams) -> KvLsResult:
    """List Key-Value buckets, or the keys of one bucket (optionally matching a wildcard filter), a page at a time.

    Keys are listed from their latest entries' headers only; values are never read. The
    cursor counts entries, deleted keys' markers included, and a later page passes over the
    earlier entries' headers again, so deep pages of huge buckets cost more than the first.
    """
    if params.bucket is None:
        if params.filter is not None:
            raise UserError("a key filter needs a bucket", code="invalid_argument",
                            hint="Give the bucket whose keys to list.")
        return await _list_buckets(ctx, params)
    return await _list_keys(ctx, params, params.bucket)


class KvDeleteBucketParams(ConfirmParams):
    bucket: BucketName


class KvDeleteBucketResult(Confirmable):
    bucket: str
    values: int = Field(description="Entries the bucket held")
    bytes: int
    keys: int


@operation("kv_delete_bucket", cli="kv rm", impact=Impact.DESTRUCTIVE, args=("bucket",))
async def kv_delete_bucket(ctx: Context, params: KvDeleteBucketParams) -> KvDeleteBucketResult:
    """Delete a whole bucket with every key and its history. Needs confirmation."""
    js, b = await bind(ctx, params.account_name, params.bucket)
    st = b.state
    result = KvDeleteBucketResult(
        done=False, bucket=b.name, values=int(st.get("messages") or 0), bytes=int(st.get("bytes") or 0),
        keys=int(st.get("num_subjects") or 0),
        action=f"delete bucket {b.name} with {int(st.get('num_subjects') or 0)} keys "
               f"and {int(st.get('messages') or 0)} entries",
    )
    if not check_confirmation(params.confirm, b.name):
        result.confirmation_required = True
        result.confirm_with = b.name
        return result
    await js.request(f"STREAM.DELETE.{b.stream}", context=f"delete bucket {b.name}")
    result.done = True
    return result


# ----------------------------------------------------------------------------- reading keys


class KvGetParams(KeyParams):
    revision: int | None = Field(default=None, ge=1, le=MAX_SEQ, description="This revision instead of the latest")
    max_payload_bytes: int = _max_payload_field()


class KvGetResult(Result):
    bucket: str
    key: str
    revision: int
    operation: Literal["PUT", "DEL", "PURGE"]
    created: datetime | None = None
    delta: int | None = Field(default=None, description="0 when this is the key's latest entry")
    value: Payload
    ttl: str | None = Field(default=None, description="Per-key TTL the entry was written with")


def _deleted(b: Bucket, key: str, raw: RawEntry) -> NotFound:
    return NotFound(
        f"key {key!r} in bucket {b.name!r} was deleted ({raw.operation} at revision {raw.seq})",
        code="key_deleted",
        hint="kv_history shows the key's earlier values that remain; kv_create sets it again.",
        details={"revision": raw.seq, "operation": raw.operation},
    )


def _missing(b: Bucket, key: str) -> NotFound:
    return NotFound(f"key {key!r} not found in bucket {b.name!r}", code="key_not_found",
                    hint="List keys with kv_ls (a filter such as 'prefix.>' narrows it).")


@operation("kv_get", cli="kv get", args=("bucket", "key"))
async def kv_get(ctx: Context, params: KvGetParams) -> KvGetResult:
    """Get a key's value (latest, or a given revision) with its revision, time and operation."""
    js, b = await bind(ctx, params.account_name, params.bucket)
    if params.revision is None:
        raw = await get_last(js, b, params.key)
        if raw is None:
            raise _missing(b, params.key)
    else:
        raw = await get_revision(js, b, params.revision)
        if raw is None or raw.subject != b.subject(params.key):
            raise NotFound(f"revision {params.revision} is not an entry of key {params.key!r} in bucket {b.name!r}",
                           code="revision_not_found",
                           hint="kv_history lists the key's revisions that remain.")
    if raw.deleted:
        raise _deleted(b, params.key, raw)
    return KvGetResult(bucket=b.name, key=params.key, revision=raw.seq, operation=raw.operation, created=raw.time,
                       delta=0 if params.revision is None else None,
                       value=payload_of(raw.data, params.max_payload_bytes), ttl=raw.headers.get(HDR_TTL))


class KvHistoryParams(KeyParams):
    from_revision: int = Field(default=0, ge=0, le=MAX_SEQ, description="Start at this revision (next_revision of the last page)")
    limit: int = Field(default=MAX_HISTORY, ge=1, le=1000, description="At most this many entries")
    max_payload_bytes: int = _max_payload_field(1024)


class KvHistoryResult(Result):
    bucket: str
    key: str
    entries: list[KvEntry] = Field(description="Oldest first; markers included")
    total: int = Field(description="Entries the key holds")
    truncated: bool = Field(description="True when more follow; call again with from_revision=next_revision")
    next_revision: int | None = None


@operation("kv_history", cli="kv history", args=("bucket", "key"))
async def kv_history(ctx: Context, params: KvHistoryParams) -> KvHistoryResult:
    """Show the entries a key still holds (values, deletes, purges), oldest first, a page at a time."""
    js, b = await bind(ctx, params.account_name, params.bucket)
    subject = b.subject(params.key)
    total = await subject_count(js, b.stream, subject)
    if total == 0:
        raise _missing(b, params.key)
    start = max(params.from_revision, 1)
    raws: list[RawEntry]
    more: bool
    if b.direct:
        # One batched Direct Get; each reply says how many later entries the key has (its delta).
        # max_bytes bounds a page of large values; the server still sends at least one entry.
        body = {"seq": start, "next_by_subj": subject, "batch": params.limit, "max_bytes": _HISTORY_PAGE_BYTES}
        raws = await direct_batch(js, b, body, limit=params.limit)
        more = bool(raws) and (raws[-1].pending or 0) > 0
        deltas: list[int | None] = [r.pending for r in raws]
    else:
        raws = []
        seq = start
        more = False
        while True:
            raw = await next_for_subject(js, b, subject, seq)
            if raw is None:
                break
            if len(raws) == params.limit:
                more = True
                break
            raws.append(raw)
            seq = raw.seq + 1
        # Deltas are known when the page reaches the latest entry, or starts at the oldest.
        if not more:
            deltas = [len(raws) - 1 - i for i in range(len(raws))]
        elif params.from_revision == 0:
            deltas = [total - 1 - i for i in range(len(raws))]
        else:
            deltas = [None] * len(raws)
    entries = [_entry(b, r, params.max_payload_bytes, d) for r, d in zip(raws, deltas, strict=True)]
    return KvHistoryResult(bucket=b.name, key=params.key, entries=entries, total=total, truncated=more,
                           next_revision=raws[-1].seq + 1 if more and raws else None)


# ----------------------------------------------------------------------------- writing keys


class KvWriteParams(KeyParams):
    value: str = Field(max_length=MAX_VALUE_CHARS, description="The value, as text or base64 (value_encoding)")
    value_encoding: ValueEncoding = Field(default="utf-8", description="How `value` is written")


class KvWriteResult(Result):
    bucket: str
    key: str
    revision: int = Field(description="The new entry's revision")
    operation: Literal["PUT", "DEL", "PURGE"] = "PUT"
    previous_revision: int | None = Field(default=None, description="The entry this one replaced, when known")


async def _write(js: JsApi, b: Bucket, key: str, data: bytes, headers: dict[str, str] | None, what: str) -> int:
    return await publish(js, b.write_subject(key), data, headers, context=f"{what} {key!r} in bucket {b.name}")


@operation("kv_put", cli="kv put", impact=Impact.WRITE, args=("bucket", "key", "value"))
async def kv_put(ctx: Context, params: KvWriteParams) -> KvWriteResult:
    """Set a key's value, whatever it holds now; returns the new revision."""
    data = decode_input(params.value, params.value_encoding)
    js, b = await bind(ctx, params.account_name, params.bucket)
    revision = await _write(js, b, params.key, data, None, "put")
    return KvWriteResult(bucket=b.name, key=params.key, revision=revision)


class KvCreateParams(KvWriteParams):
    ttl_s: int | None = Field(
        default=None, ge=1, le=10 * 365 * 86400,
        description="Remove the key after this many seconds (2.11+; the bucket needs limit_marker_ttl_s)")


def _stale(b: Bucket, key: str, current: RawEntry | None, expected: int) -> Conflict:
    if current is None:
        return Conflict(f"key {key!r} in bucket {b.name!r} has no entries, not revision {expected}",
                        code="stale_revision", hint="Create it with kv_create.",
                        details={"current_revision": None, "expected_revision": expected})
    return Conflict(
        f"key {key!r} in bucket {b.name!r} is at revision {current.seq} ({current.operation}), not {expected}",
        code="stale_revision",
        hint=f"Read the key again (kv_get) and update with revision={current.seq} if your change still applies.",
        details={"current_revision": current.seq, "operation": current.operation, "expected_revision": expected},
    )


@operation("kv_create", cli="kv create", impact=Impact.WRITE, args=("bucket", "key", "value"))
async def kv_create(ctx: Context, params: KvCreateParams) -> KvWriteResult:
    """Create a key only if it has no value: absent, deleted or purged. A key with a value is a conflict."""
    data = decode_input(params.value, params.value_encoding)
    js, b = await bind(ctx, params.account_name, params.bucket)
    headers = {HDR_EXPECTED_LAST_SUBJECT_SEQ: "0"}
    if params.ttl_s is not None:
        if not b.config.get("allow_msg_ttl"):
            raise Unsupported(f"bucket {b.name!r} does not allow per-key TTLs", code="per_key_ttl_disabled",
                              hint="Create the bucket with limit_marker_ttl_s (needs nats-server 2.11+).")
        headers[HDR_TTL] = f"{params.ttl_s}s"
    try:
        revision = await _write(js, b, params.key, data, headers, "create")
        return KvWriteResult(bucket=b.name, key=params.key, revision=revision)
    except NatsopError as exc:
        if not is_wrong_last_sequence(exc):
            raise
    # The subject has entries: it may still be created over a delete or purge marker (ADR-8).
    last = await get_last(js, b, params.key)
    if last is not None and last.deleted:
        headers[HDR_EXPECTED_LAST_SUBJECT_SEQ] = str(last.seq)
        try:
            revision = await _write(js, b, params.key, data, headers, "create")
            return KvWriteResult(bucket=b.name, key=params.key, revision=revision, previous_revision=last.seq)
        except NatsopError as exc:
            if not is_wrong_last_sequence(exc):
                raise
        last = await get_last(js, b, params.key)
    current = f"revision {last.seq}" if last is not None else "an entry"
    raise Conflict(f"key {params.key!r} already exists in bucket {b.name!r} at {current}", code="key_exists",
                   hint="Use kv_update with that revision to change it, or kv_put to overwrite.",
                   details={"current_revision": last.seq if last is not None else None})


class KvUpdateParams(KvWriteParams):
    revision: int = Field(ge=1, le=MAX_SEQ, description="The revision the key must be at now (compare-and-set)")


@operation("kv_update", cli="kv update", impact=Impact.WRITE, args=("bucket", "key", "value", "revision"))
async def kv_update(ctx: Context, params: KvUpdateParams) -> KvWriteResult:
    """Set a key's value only if its latest revision is still `revision` (compare-and-set)."""
    data = decode_input(params.value, params.value_encoding)
    js, b = await bind(ctx, params.account_name, params.bucket)
    headers = {HDR_EXPECTED_LAST_SUBJECT_SEQ: str(params.revision)}
    try:
        revision = await _write(js, b, params.key, data, headers, "update")
    except NatsopError as exc:
        if not is_wrong_last_sequence(exc):
            raise
        raise _stale(b, params.key, await get_last(js, b, params.key), params.revision) from None
    return KvWriteResult(bucket=b.name, key=params.key, revision=revision, previous_revision=params.revision)


class KvDelParams(KeyParams):
    revision: int | None = Field(default=None, ge=1, le=MAX_SEQ,
                                 description="Delete only if the key's latest revision is still this one")


@operation("kv_del", cli="kv del", impact=Impact.WRITE, args=("bucket", "key"))
async def kv_del(ctx: Context, params: KvDelParams) -> KvWriteResult:
    """Delete a key by writing a delete marker; its history stays (kv_purge removes it). Never deletes the bucket."""
    js, b = await bind(ctx, params.account_name, params.bucket)
    previous = await get_last(js, b, params.key)
    headers = {HDR_OPERATION: "DEL"}
    if params.revision is not None:
        headers[HDR_EXPECTED_LAST_SUBJECT_SEQ] = str(params.revision)
    try:
        revision = await _write(js, b, params.key, b"", headers, "delete")
    except NatsopError as exc:
        if params.revision is None or not is_wrong_last_sequence(exc):
            raise
        raise _stale(b, params.key, await get_last(js, b, params.key), params.revision) from None
    return KvWriteResult(bucket=b.name, key=params.key, revision=revision, operation="DEL",
                         previous_revision=previous.seq if previous is not None else None)


class KvPurgeParams(ConfirmParams):
    bucket: BucketName
    key: KvKey
    marker_ttl_s: int | None = Field(
        default=None, ge=1, le=10 * 365 * 86400,
        description="Remove the purge marker itself after this many seconds (needs per-key TTLs on the bucket)")


class KvPurgeResult(Confirmable):
    bucket: str
    key: str
    would_remove: int = Field(description="Entries the key holds now, all removed by the purge")
    revision: int | None = Field(default=None, description="The purge marker's revision")


@operation("kv_purge", cli="kv purge", impact=Impact.DESTRUCTIVE, args=("bucket", "key"))
async def kv_purge(ctx: Context, params: KvPurgeParams) -> KvPurgeResult:
    """Remove a key's whole history, leaving one purge marker. Needs confirmation."""
    js, b = await bind(ctx, params.account_name, params.bucket)
    count = await subject_count(js, b.stream, b.subject(params.key))
    result = KvPurgeResult(done=False, bucket=b.name, key=params.key, would_remove=count,
                           action=f"purge key {params.key} in bucket {b.name}: remove its {count} entries "
                                  f"and leave a purge marker")
    if not check_confirmation(params.confirm, params.key):
        result.confirmation_required = True
        result.confirm_with = params.key
        return result
    headers = {HDR_OPERATION: "PURGE", HDR_ROLLUP: "sub"}
    if params.marker_ttl_s is not None:
        if not b.config.get("allow_msg_ttl"):
            raise Unsupported(f"bucket {b.name!r} does not allow per-key TTLs", code="per_key_ttl_disabled",
                              hint="Create the bucket with limit_marker_ttl_s, or purge without marker_ttl_s.")
        headers[HDR_TTL] = f"{params.marker_ttl_s}s"
    result.revision = await _write(js, b, params.key, b"", headers, "purge")
    result.done = True
    return result


# ----------------------------------------------------------------------------- watch


class KvWatchParams(BucketParams):
    filter: KeyFilter = Field(default=None, description="Keys to watch, NATS wildcards allowed; default all")
    timeout_s: float = Field(default=5, gt=0, le=300, description="Stop after this many seconds (max 300)")
    max_entries: int = Field(default=100, ge=1, le=10_000, description="Stop after this many entries (max 10000)")
    initial_values: bool = Field(default=False,
                                 description="Start with each key's current entry; default: only new updates")
    include_history: bool = Field(default=False, description="Start with every stored entry, history included")
    ignore_deletes: bool = Field(default=False, description="Leave out delete and purge markers")
    meta_only: bool = Field(default=False, description="Entries without values (headers only)")
    max_payload_bytes: int = _max_payload_field(1024)


class KvWatchResult(Result):
    bucket: str
    filter: str
    entries: list[KvEntry]
    count: int
    stopped_by: Literal["timeout", "max_entries"]
    elapsed_s: float
    initial_values_done: bool | None = Field(
        default=None, description="With initial_values/include_history: True once every stored entry was seen")


@operation("kv_watch", cli="kv watch", args=("bucket", "filter"), timeout_s=330)
async def kv_watch(ctx: Context, params: KvWatchParams) -> KvWatchResult:
    """Watch a bucket (or keys matching a filter) for a bounded time and number of entries.

    It always returns: after `timeout_s`, or as soon as `max_entries` entries were seen.
    """
    js, b = await bind(ctx, params.account_name, params.bucket)
    key_filter = params.filter or ">"
    policy = "all" if params.include_history else "last_per_subject" if params.initial_values else "new"
    config: dict[str, Any] = {"deliver_policy": policy, "filter_subject": b.subject(key_filter)}
    if params.meta_only:
        config["headers_only"] = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + params.timeout_s
    entries: list[KvEntry] = []
    stopped_by: Literal["timeout", "max_entries"] = "timeout"
    max_bytes = None if params.meta_only else params.max_payload_bytes
    async with PullConsumer(js, b.stream, config) as pc:
        initial = pc.num_pending if policy != "new" else 0
        seen = 0
        while len(entries) < params.max_entries:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                break
            want = min(_PULL_BATCH, params.max_entries - len(entries))
            async with aclosing(pc.fetch(want, expires_s=remaining)) as batch:
                async for raw in batch:
                    seen += 1
                    if params.ignore_deletes and raw.deleted:
                        continue
                    entries.append(_entry(b, raw, max_bytes))
                    if len(entries) >= params.max_entries:
                        stopped_by = "max_entries"
                        break
    return KvWatchResult(bucket=b.name, filter=key_filter, entries=entries, count=len(entries),
                         stopped_by=stopped_by, elapsed_s=round(loop.time() - started, 3),
                         initial_values_done=None if policy == "new" else seen >= initial)


# ----------------------------------------------------------------------------- compact


class KvCompactParams(ConfirmParams):
    bucket: BucketName
    delete_markers_older_than_s: float = Field(
        default=1800, ge=0, le=10 * 365 * 86400,
        description="Markers younger than this are kept (only their history goes); 0 = remove every marker")
    limit: int = Field(default=100, ge=1, le=10_000, description="List at most this many keys in the report")


class KvCompactItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    operation: Literal["DEL", "PURGE"]
    marker_revision: int
    marker_age_s: float
    keep_marker: bool = Field(description="True when the marker is younger than the threshold and stays")
    entries: int | None = Field(default=None, description="Entries the key holds (dry run)")
    removed: int | None = Field(default=None, description="Entries removed")


class KvCompactResult(Confirmable):
    bucket: str
    deleted_keys: int = Field(description="Keys whose latest entry is a delete or purge marker")
    would_remove: int | None = Field(default=None, description="Entries that would be removed (dry run)")
    keys_compacted: int | None = Field(default=None, description="Keys that lost entries")
    messages_removed: int | None = None
    items: list[KvCompactItem]
    items_truncated: bool = Field(description="True when more keys were handled than listed")


async def _deleted_keys(js: JsApi, b: Bucket) -> list[RawEntry]:
    """Latest entries that are markers, from a headers-only scan of every key's last entry."""
    config = {"deliver_policy": "last_per_subject", "filter_subject": b.subject(">"), "headers_only": True}
    out: list[RawEntry] = []
    async with PullConsumer(js, b.stream, config) as pc:
        left = pc.num_pending
        while left > 0:
            got = 0
            last_pending: int | None = None
            async with aclosing(pc.fetch(min(_PULL_BATCH, left), expires_s=5.0)) as batch:
                async for raw in batch:
                    got += 1
                    last_pending = raw.pending
                    if raw.deleted:
                        out.append(raw)
            left = 0 if got == 0 or last_pending == 0 else left - got
    return out


@operation("kv_compact", cli="kv compact", impact=Impact.DESTRUCTIVE, args=("bucket",), timeout_s=120)
async def kv_compact(ctx: Context, params: KvCompactParams) -> KvCompactResult:
    """Reclaim space from deleted keys: remove their history, and their markers once old. Needs confirmation.

    As `nats kv compact`: for each key whose latest entry is a delete or purge marker, the
    key's entries are purged; markers younger than `delete_markers_older_than_s` (30
    minutes by default) are kept so that watchers still see the delete.
    """
    js, b = await bind(ctx, params.account_name, params.bucket)
    markers = await _deleted_keys(js, b)
    now = datetime.now(UTC)
    plan: list[KvCompactItem] = []
    for raw in markers:
        age = (now - raw.time).total_seconds() if raw.time else 0.0
        keep = params.delete_markers_older_than_s > 0 and age < params.delete_markers_older_than_s
        op: Literal["DEL", "PURGE"] = "PURGE" if raw.operation == "PURGE" else "DEL"
        plan.append(KvCompactItem(key=b.key_of(raw.subject), operation=op, marker_revision=raw.seq,
                                  marker_age_s=round(max(age, 0.0), 3), keep_marker=keep))
    confirmed = check_confirmation(params.confirm, b.name)
    result = KvCompactResult(done=False, bucket=b.name, deleted_keys=len(plan), items=[],
                             items_truncated=len(plan) > params.limit,
                             action=f"compact bucket {b.name}: purge the history of {len(plan)} deleted keys")
    gate = asyncio.Semaphore(8)

    async def count(item: KvCompactItem) -> None:
        async with gate:
            item.entries = await subject_count(js, b.stream, b.subject(item.key))
            item.removed = max(item.entries - (1 if item.keep_marker else 0), 0)

    async def purge(item: KvCompactItem) -> None:
        # Bounded by the marker's sequence ("up to but not including seq"), so a value put on
        # the key after the listing survives; the marker itself goes only when old enough.
        seq = item.marker_revision if item.keep_marker else item.marker_revision + 1
        body: dict[str, Any] = {"filter": b.subject(item.key), "seq": seq}
        async with gate:
            resp = await js.request(f"STREAM.PURGE.{b.stream}", body, context=f"compact key {item.key!r}")
        item.removed = int(resp.get("purged") or 0)

    if not confirmed:
        await asyncio.gather(*(count(i) for i in plan))
        result.would_remove = sum(i.removed or 0 for i in plan)
        result.action += f", removing {result.would_remove} entries"
        result.confirmation_required = True
        result.confirm_with = b.name
    else:
        await asyncio.gather(*(purge(i) for i in plan))
        result.keys_compacted = sum(1 for i in plan if i.removed)
        result.messages_removed = sum(i.removed or 0 for i in plan)
        result.done = True
    result.items = plan[: params.limit]
    return result
