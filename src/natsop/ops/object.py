"""Object Store: buckets of objects of any size, stored as chunks in a stream (ADR-20).

Objects move inline (small payloads given or returned in the call) or from and to
files under the configured files directory, streamed in chunks both ways so that
memory stays small whatever the object's size. What is written here is readable by
nats.go, nats.js and nats-py, and what they write is readable here. The wire details
live in `natsop.wire.objstore`.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from natsop.errors import Conflict, NatsopError, NotFound, UserError
from natsop.formats import duration_ns, ns_to_s
from natsop.logic.validate import MAX_COUNT, MAX_DURATION_S, BucketName, check_bucket
from natsop.models import (
    MAX_PAYLOAD_BYTES,
    Confirmable,
    ConfirmParams,
    Payload,
    check_confirmation,
    decode_input,
    headers_of,
    payload_of,
)
from natsop.ops.stream import ClusterInfo
from natsop.registry import Impact, Params, Result, operation
from natsop.wire import objstore
from natsop.wire.context import Context
from natsop.wire.kv import PullConsumer

__all__ = [
    "BucketDetails",
    "BucketSummary",
    "ObjectChange",
    "ObjectDetails",
    "ObjectLink",
    "ObjectSummary",
]

MAX_INLINE_BYTES = MAX_PAYLOAD_BYTES
DEFAULT_INLINE_GET_BYTES = 64 * 1024
TRANSFER_TIMEOUT_S = 6 * 3600.0

ObjectName = Annotated[str, Field(min_length=1, max_length=2048,
                                  description="Object name (any text; it is stored base64-encoded)")]


# ---------------------------------------------------------------------------------------------
# Models


class ObjectLink(BaseModel):
    """Where a link object points: an object in a bucket, or a whole bucket when `name` is empty."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    name: str | None = None


class ObjectDetails(BaseModel):
    """An object's metadata record."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    name: str
    size: int = Field(description="Bytes")
    chunks: int
    digest: str | None = Field(default=None, description="SHA-256=<base64url> of the data")
    modified: str | None = Field(default=None, description="When the metadata was stored (RFC 3339)")
    deleted: bool = False
    description: str | None = None
    headers: dict[str, list[str]] | None = None
    metadata: dict[str, str] | None = None
    link: ObjectLink | None = Field(default=None, description="Set when this object is a link to another")
    max_chunk_size: int | None = Field(default=None, description="Chunk size the object was written with")
    nuid: str = Field(description="Id of this version; its chunks are on $O.<bucket>.C.<nuid>")


class ObjectSummary(BaseModel):
    """One line of an object listing."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size: int
    chunks: int
    modified: str | None = None
    deleted: bool = False
    link: str | None = Field(default=None, description="bucket/name the object links to")
    description: str | None = None


class BucketSummary(BaseModel):
    """One line of a bucket listing."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    description: str | None = None
    size: int = Field(description="Bytes stored, chunks and metadata")
    sealed: bool = False
    storage: str | None = None
    replicas: int = 1
    ttl_s: float | None = Field(default=None, description="Objects expire after this many seconds; empty = never")
    created: str | None = None


class BucketDetails(BucketSummary):
    """A bucket's settings and state."""

    stream: str = Field(description="The stream that holds it (OBJ_<bucket>)")
    objects: int = Field(description="Objects, counting deleted ones whose record remains")
    max_bytes: int | None = Field(default=None, description="Size limit; -1 = none")
    compression: str | None = None
    metadata: dict[str, str] | None = None
    cluster: ClusterInfo | None = None


class ObjectChange(BaseModel):
    """One change seen by a watch."""

    model_config = ConfigDict(extra="forbid")

    name: str
    size: int
    deleted: bool
    modified: str | None = None
    digest: str | None = None
    seq: int = Field(description="Stream sequence of the metadata record")


def _details(meta: objstore.StoredMeta, bucket: str) -> ObjectDetails:
    doc = meta.doc
    link = meta.link
    metadata = doc.get("metadata")
    return ObjectDetails(
        bucket=str(doc.get("bucket") or bucket),
        name=meta.name,
        size=meta.size,
        chunks=meta.chunks,
        digest=meta.digest,
        modified=meta.time,
        deleted=meta.deleted,
        description=doc.get("description") or None,
        headers=headers_of(doc.get("headers")),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) and metadata else None,
        link=ObjectLink(bucket=link[0], name=link[1]) if link else None,
        max_chunk_size=meta.max_chunk_size,
        nuid=meta.nuid,
    )


def _summary(meta: objstore.StoredMeta) -> ObjectSummary:
    link = meta.link
    return ObjectSummary(
        name=meta.name, size=meta.size, chunks=meta.chunks, modified=meta.time, deleted=meta.deleted,
        link=(f"{link[0]}/{link[1]}" if link[1] else f"{link[0]}/") if link else None,
        description=meta.doc.get("description") or None,
    )


def _bucket_of(stream: str) -> str:
    return stream.removeprefix("OBJ_")


def _bucket_summary(info: dict[str, Any]) -> BucketSummary:
    cfg = info.get("config") or {}
    st = info.get("state") or {}
    return BucketSummary(
        bucket=_bucket_of(str(cfg.get("name") or "")),
        description=cfg.get("description") or None,
        size=int(st.get("bytes") or 0),
        sealed=bool(cfg.get("sealed")),
        storage=cfg.get("storage"),
        replicas=int(cfg.get("num_replicas") or 1),
        ttl_s=ns_to_s(int(cfg["max_age"])) if cfg.get("max_age") else None,
        created=info.get("created"),
    )


def _bucket_details(info: dict[str, Any], objects: int) -> BucketDetails:
    cfg = info.get("config") or {}
    base = _bucket_summary(info)
    return BucketDetails(
        **base.model_dump(),
        stream=str(cfg.get("name") or ""),
        objects=objects,
        max_bytes=cfg.get("max_bytes"),
        compression=cfg.get("compression"),
        # The server adds its own `_nats.*` keys; show only the bucket's labels.
        metadata={k: v for k, v in (cfg.get("metadata") or {}).items() if not k.startswith("_nats.")} or None,
        cluster=ClusterInfo.model_validate(info["cluster"]) if info.get("cluster") else None,
    )


async def _bucket_info(ctx: Context, bucket: str, account_name: str | None) -> BucketDetails:
    js = await ctx.js(account_name)
    # The per-subject counts of the metadata subjects give the number of objects.
    info = await objstore.fetch_bucket(js, bucket, subjects_filter=objstore.all_meta(bucket))
    subjects = (info.get("state") or {}).get("subjects") or {}
    return _bucket_details(info, len(subjects))


async def _live_meta(ctx: Context, bucket: str, name: str, account_name: str | None, *,
                     show_deleted: bool = False) -> objstore.StoredMeta:
    js = await ctx.js(account_name)
    meta = await objstore.read_meta(js, bucket, name)
    if meta is None:  # (a missing bucket was reported by read_meta already)
        raise NotFound(f"no object {name!r} in bucket {bucket}", code="object_not_found",
                       hint=f"List the bucket's objects with object_ls bucket={bucket!r}.")
    if meta.deleted and not show_deleted:
        raise NotFound(f"object {name!r} in bucket {bucket} was deleted ({meta.time or 'time unknown'})",
                       code="object_deleted", hint="Only its delete marker remains; put it again to restore it.")
    return meta


# ---------------------------------------------------------------------------------------------
# Buckets


class ObjectAddParams(Params):
    """Bucket settings. The defaults are NATS's own and are almost always right."""

    bucket: BucketName
    description: str | None = Field(default=None, max_length=4096, description="What the bucket holds and why")
    ttl_s: float | None = Field(default=None, ge=0, le=MAX_DURATION_S, description="Expire objects after this many seconds; 0 = never")
    max_bytes: int | None = Field(default=None, ge=-1, le=MAX_COUNT, description="Size limit of the bucket; -1 = none (default)")
    storage: Literal["file", "memory"] = Field(default="file", description="file survives restarts")
    replicas: int = Field(default=1, ge=1, le=5, description="1 on one server; 3 in production clusters")
    compression: bool = Field(default=True, description="S2-compress stored chunks (little gain on compressed data)")
    metadata: dict[str, str] | None = Field(default=None, description="Labels on the bucket's stream")


class ObjectBucketResult(Result):
    bucket: BucketDetails


@operation("object_add", cli="object add", aliases=("create", "new"), impact=Impact.WRITE, idempotent=True,
           args=("bucket",))
async def object_add(ctx: Context, params: ObjectAddParams) -> ObjectBucketResult:
    """Create an Object Store bucket (stream OBJ_<bucket>).

    Creating a bucket that exists with the same settings succeeds and changes nothing.
    """
    b = params.bucket
    cfg: dict[str, Any] = {
        "name": objstore.stream_name(b),
        "subjects": [f"$O.{b}.C.>", f"$O.{b}.M.>"],
        "retention": "limits",
        "max_bytes": params.max_bytes if params.max_bytes is not None else -1,
        "storage": params.storage,
        "num_replicas": params.replicas,
        "discard": "new",
        "allow_rollup_hdrs": True,
        "allow_direct": True,
        "compression": "s2" if params.compression else "none",
    }
    if params.description:
        cfg["description"] = params.description
    if params.ttl_s:
        cfg["max_age"] = duration_ns(params.ttl_s)
    if params.metadata:
        cfg["metadata"] = params.metadata
    js = await ctx.js(params.account_name)
    try:
        await js.request(f"STREAM.CREATE.{cfg['name']}", cfg, context=f"create object store bucket {b}")
    except NatsopError as err:
        if err.code == "stream_name_in_use":
            raise Conflict(f"bucket {b!r} already exists with different settings", code="bucket_exists",
                           hint="Inspect it with object_info, or choose another name.") from None
        raise
    return ObjectBucketResult(bucket=await _bucket_info(ctx, b, params.account_name))


class ObjectInfoParams(Params):
    bucket: BucketName
    name: str | None = Field(default=None, min_length=1, max_length=2048,
                             description="An object's name; omit to describe the bucket")
    show_deleted: bool = Field(default=False, description="Describe a deleted object's marker instead of failing")


class ObjectInfoResult(Result):
    bucket: str
    bucket_info: BucketDetails | None = Field(default=None, description="The bucket (when no object was named)")
    object: ObjectDetails | None = Field(default=None, description="The object (when one was named)")


@operation("object_info", args=("bucket", "name"))
async def object_info(ctx: Context, params: ObjectInfoParams) -> ObjectInfoResult:
    """Describe a bucket, or one object in it (size, chunks, digest, modified, headers, metadata, link).

    A link object is described as the link (see `link`); object_get follows it.
    """
    if params.name is None:
        details = await _bucket_info(ctx, params.bucket, params.account_name)
        return ObjectInfoResult(bucket=params.bucket, bucket_info=details)
    meta = await _live_meta(ctx, params.bucket, params.name, params.account_name, show_deleted=params.show_deleted)
    return ObjectInfoResult(bucket=params.bucket, object=_details(meta, params.bucket))


class ObjectLsParams(Params):
    # Plain `str | None` with a validator (not `BucketName | None`) so that the CLI sees a string argument.
    bucket: str | None = Field(default=None, max_length=255,
                               description="List this bucket's objects; omit to list buckets")
    limit: int = Field(default=50, ge=1, le=1000, description="At most this many (max 1000)")
    cursor: str | None = Field(default=None, max_length=40,
                               description="Continue a listing: the next_cursor of the previous page")
    show_deleted: bool = Field(default=False, description="Also list deleted objects (their markers)")

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str | None) -> str | None:
        return None if value is None else check_bucket(value)


class ObjectLsResult(Result):
    bucket: str | None = None
    buckets: list[BucketSummary] | None = None
    objects: list[ObjectSummary] | None = None
    total: int | None = Field(default=None, description="Buckets in the account (bucket listings only)")
    truncated: bool = Field(description="True when more follow; call again with cursor=next_cursor")
    next_cursor: str | None = None


def _cursor(value: str | None) -> int:
    if value is None or value == "":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise UserError(f"cursor {value!r} is not one this tool returned", code="invalid_cursor",
                        hint="Pass the next_cursor of the previous page, or omit it to start over.")
    return n


@operation("object_ls", cli="object ls", aliases=("list",), args=("bucket",))
async def object_ls(ctx: Context, params: ObjectLsParams) -> ObjectLsResult:
    """List Object Store buckets, or the objects in one bucket, a page at a time.

    Objects are listed from their metadata records only (never their data), in the
    order they were last written; deleted objects are hidden unless show_deleted.
    """
    js = await ctx.js(params.account_name)
    start = _cursor(params.cursor)
    if params.bucket is None:
        out: list[BucketSummary] = []
        seen = total = 0
        offset = 0
        while True:
            resp = await js.request("STREAM.LIST", {"subject": "$O.*.M.>", "offset": offset})
            items = resp.get("streams") or []
            for info in items:
                name = str((info.get("config") or {}).get("name") or "")
                if not name.startswith("OBJ_"):
                    continue
                total += 1
                if seen >= start and len(out) < params.limit:
                    out.append(_bucket_summary(info))
                seen += 1
            offset += len(items)
            if not items or offset >= int(resp.get("total") or 0):
                break
        end = start + len(out)
        more = end < total
        return ObjectLsResult(buckets=out, total=total, truncated=more, next_cursor=str(end) if more else None)

    nc = await ctx.nc(params.account_name)
    await objstore.fetch_bucket(js, params.bucket)
    objects: list[ObjectSummary] = []
    next_seq: int | None = None
    more = False
    async for meta, pending in objstore.scan_meta(nc, js, params.bucket, start,
                                                  min(params.limit + 1, 1000)):
        if len(objects) >= params.limit:
            more = True
            break
        next_seq = meta.seq + 1
        more = pending != 0  # unknown (None) counts as "maybe"
        if meta.deleted and not params.show_deleted:
            continue
        objects.append(_summary(meta))
    return ObjectLsResult(bucket=params.bucket, objects=objects, truncated=more,
                          next_cursor=str(next_seq) if more and next_seq else None)


class BucketParams(ConfirmParams):
    bucket: BucketName


class ObjectDeleteBucketResult(Confirmable):
    bucket: str
    objects: int
    size: int = Field(description="Bytes the bucket held")


@operation("object_delete_bucket", cli="object del-bucket", aliases=("rm-bucket", "delete-bucket"),
           impact=Impact.DESTRUCTIVE, args=("bucket",))
async def object_delete_bucket(ctx: Context, params: BucketParams) -> ObjectDeleteBucketResult:
    """Delete an Object Store bucket with every object in it. Needs confirmation."""
    details = await _bucket_info(ctx, params.bucket, params.account_name)
    result = ObjectDeleteBucketResult(
        done=False, bucket=params.bucket, objects=details.objects, size=details.size,
        action=f"delete bucket {params.bucket} with {details.objects} objects ({details.size} bytes)",
    )
    if not check_confirmation(params.confirm, params.bucket):
        result.confirmation_required = True
        result.confirm_with = params.bucket
        return result
    js = await ctx.js(params.account_name)
    try:
        await js.request(f"STREAM.DELETE.{details.stream}", context=f"delete bucket {params.bucket}")
    except NatsopError as err:
        raise objstore.bucket_error(err, params.bucket) from None
    result.done = True
    return result


class ObjectSealResult(Confirmable):
    bucket: str
    sealed: bool


@operation("object_seal", cli="object seal", impact=Impact.DESTRUCTIVE, args=("bucket",))
async def object_seal(ctx: Context, params: BucketParams) -> ObjectSealResult:
    """Seal a bucket: no object can be added, changed or deleted, ever. Irreversible; needs confirmation."""
    js = await ctx.js(params.account_name)
    info = await objstore.fetch_bucket(js, params.bucket)
    cfg = dict(info.get("config") or {})
    if cfg.get("sealed"):
        return ObjectSealResult(done=True, bucket=params.bucket, sealed=True,
                                action=f"bucket {params.bucket} was already sealed; nothing to do")
    st = info.get("state") or {}
    result = ObjectSealResult(
        done=False, bucket=params.bucket, sealed=False,
        action=f"seal bucket {params.bucket} ({int(st.get('bytes') or 0)} bytes) permanently: "
               "no object can be added, replaced or deleted afterwards",
    )
    if not check_confirmation(params.confirm, params.bucket):
        result.confirmation_required = True
        result.confirm_with = params.bucket
        return result
    cfg["sealed"] = True
    try:
        await js.request(f"STREAM.UPDATE.{cfg['name']}", cfg, context=f"seal bucket {params.bucket}")
    except NatsopError as err:
        raise objstore.bucket_error(err, params.bucket) from None
    result.done = True
    result.sealed = True
    return result


# ---------------------------------------------------------------------------------------------
# Objects


class ObjectPutParams(Params):
    bucket: BucketName
    file: str | None = Field(default=None, max_length=4096,
                             description="File to store, relative to the files directory (which it may not leave)")
    name: str | None = Field(default=None, min_length=1, max_length=2048,
                             description="Object name; default: the file's name")
    data: str | None = Field(default=None, max_length=1_400_000,
                             description="Inline data instead of a file (at most 1 MiB once decoded)")
    data_encoding: Literal["utf-8", "base64"] = Field(default="utf-8", description="How `data` is written")
    description: str | None = Field(default=None, max_length=4096, description="What the object is")
    headers: dict[str, list[str]] | None = Field(default=None, description="Headers stored with the object")
    metadata: dict[str, str] | None = Field(default=None, description="Labels stored with the object")
    chunk_size: int = Field(default=objstore.DEFAULT_CHUNK_SIZE, ge=objstore.MIN_CHUNK_SIZE,
                            le=objstore.MAX_CHUNK_SIZE,
                            description="Bytes per chunk (default 128 KiB; at most the server's max_payload)")


class ObjectPutResult(Result):
    object: ObjectDetails
    replaced: bool = Field(description="True when an earlier version of the object was replaced")
    elapsed_s: float


def _open_source(ctx: Context, params: ObjectPutParams) -> tuple[str, BinaryIO, int]:
    if (params.file is None) == (params.data is None):
        raise UserError("give either file or data", code="invalid_argument",
                        hint="file stores a file from the files directory; data stores an inline value.")
    if params.data is not None:
        if not params.name:
            raise UserError("an inline object needs a name", code="invalid_argument", hint="Pass name=...")
        raw = decode_input(params.data, params.data_encoding)
        if len(raw) > MAX_INLINE_BYTES:
            raise UserError(f"inline data is {len(raw)} bytes; the limit is {MAX_INLINE_BYTES}",
                            code="inline_too_large", hint="Put larger objects from a file (file=...).")
        return params.name, io.BytesIO(raw), len(raw)
    assert params.file is not None
    path = ctx.local_path(params.file, must_exist=True)
    if not path.is_file():
        raise UserError(f"{params.file!r} is not a regular file", code="not_a_file")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UserError(f"cannot open {params.file!r}: {exc.strerror}", code="read_failed") from None
    return params.name or Path(params.file).name, handle, os.fstat(handle.fileno()).st_size


@operation("object_put", cli="object put", impact=Impact.WRITE, args=("bucket", "file"), timeout_s=TRANSFER_TIMEOUT_S)
async def object_put(ctx: Context, params: ObjectPutParams) -> ObjectPutResult:
    """Store a file (or inline data) as an object, streamed in chunks; replaces an object of the same name.

    The data is hashed as it is sent and the old version's chunks are removed only
    after the new version is complete. Progress is reported as bytes sent.
    """
    name, source, total = _open_source(ctx, params)
    nc = await ctx.nc(params.account_name)
    js = await ctx.js(params.account_name)
    meta = {"name": name, "description": params.description, "headers": params.headers,
            "metadata": params.metadata}

    async def progress(done: int, whole: int | None) -> None:
        await ctx.report(done, whole, f"{name}: {done} of {whole} bytes")

    started = time.monotonic()
    try:
        stored, previous = await objstore.put_object(nc, js, params.bucket, meta, source,
                                                     chunk_size=params.chunk_size, total=total, progress=progress)
    finally:
        source.close()
    return ObjectPutResult(object=_details(stored, params.bucket),
                           replaced=previous is not None and not previous.deleted,
                           elapsed_s=round(time.monotonic() - started, 3))


class ObjectGetParams(Params):
    bucket: BucketName
    name: ObjectName
    file: str | None = Field(default=None, max_length=4096,
                             description="Write the object to this file (relative to the files directory); "
                                         "omit to return it inline")
    overwrite: bool = Field(default=False, description="Replace the file if it exists")
    max_inline_bytes: int = Field(default=DEFAULT_INLINE_GET_BYTES, ge=0, le=MAX_INLINE_BYTES,
                                  description="Largest object returned inline (default 64 KiB, max 1 MiB)")


class ObjectGetResult(Result):
    object: ObjectDetails = Field(description="The object read (the link's target when a link was followed)")
    link_from: str | None = Field(default=None, description="bucket/name of the link that was followed")
    file: str | None = Field(default=None, description="Where the object was written")
    size: int = Field(description="Bytes read")
    digest_verified: bool
    payload: Payload | None = Field(default=None, description="The data, when returned inline")
    elapsed_s: float


async def _resolve_link(ctx: Context, bucket: str, meta: objstore.StoredMeta,
                        account_name: str | None) -> tuple[str, objstore.StoredMeta]:
    link = meta.link
    if link is None:
        return bucket, meta
    target_bucket, target_name = link
    if not target_name:
        raise UserError(f"{meta.name!r} is a link to the bucket {target_bucket!r}, not to an object",
                        code="link_to_bucket", hint=f"List it with object_ls bucket={target_bucket!r}.")
    target = await _live_meta(ctx, target_bucket, target_name, account_name)
    if target.link is not None:
        raise Conflict(f"{meta.name!r} links to {target_bucket}/{target_name}, which is itself a link",
                       code="link_to_link", hint="Links may point only at objects.")
    return target_bucket, target


@operation("object_get", cli="object get", args=("bucket", "name"), timeout_s=TRANSFER_TIMEOUT_S)
async def object_get(ctx: Context, params: ObjectGetParams) -> ObjectGetResult:
    """Read an object into a file (any size, streamed) or inline (small objects); the digest is verified.

    Links are followed to the object they point at. A file that exists is refused
    unless overwrite is set; a failed read leaves no partial file behind.
    """
    meta = await _live_meta(ctx, params.bucket, params.name, params.account_name)
    bucket, target = await _resolve_link(ctx, params.bucket, meta, params.account_name)
    link_from = f"{params.bucket}/{params.name}" if target is not meta else None
    nc = await ctx.nc(params.account_name)
    js = await ctx.js(params.account_name)

    async def progress(done: int, whole: int | None) -> None:
        await ctx.report(done, whole, f"{target.name}: {done} of {whole} bytes")

    started = time.monotonic()
    if params.file is None:
        if target.size > params.max_inline_bytes:
            raise UserError(
                f"object {target.name!r} is {target.size} bytes, more than max_inline_bytes "
                f"({params.max_inline_bytes})", code="object_too_large_inline",
                hint="Read it into a file with file=<path> (it is streamed, any size), "
                     "or raise max_inline_bytes (up to 1 MiB).")
        buf = io.BytesIO()
        size = await objstore.read_chunks(nc, js, bucket, target, buf.write, progress=progress)
        data = buf.getvalue()
        return ObjectGetResult(object=_details(target, bucket), link_from=link_from, size=size, digest_verified=True,
                               payload=payload_of(data, max(len(data), 1)),
                               elapsed_s=round(time.monotonic() - started, 3))

    path = ctx.local_path(params.file)
    if path.is_dir():
        raise UserError(f"{params.file!r} is a directory", code="is_a_directory", hint="Name a file.")
    if path.exists() and not params.overwrite:
        raise Conflict(f"{params.file!r} exists; nothing was read", code="file_exists",
                       hint="Pass overwrite=true to replace it, or choose another file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{objstore.new_nuid()}.part")
    try:
        with partial.open("wb") as out:
            size = await objstore.read_chunks(nc, js, bucket, target, out.write, progress=progress)
        if path.exists() and not params.overwrite:
            raise Conflict(f"{params.file!r} appeared while reading; it was left as it is", code="file_exists",
                           hint="Pass overwrite=true to replace it.")
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return ObjectGetResult(object=_details(target, bucket), link_from=link_from, file=str(path), size=size,
                           digest_verified=True, elapsed_s=round(time.monotonic() - started, 3))


class ObjectDelParams(ConfirmParams):
    bucket: BucketName
    name: ObjectName


class ObjectDelResult(Confirmable):
    bucket: str
    name: str
    size: int
    chunks: int


@operation("object_del", cli="object del", aliases=("rm",), impact=Impact.DESTRUCTIVE, args=("bucket", "name"))
async def object_del(ctx: Context, params: ObjectDelParams) -> ObjectDelResult:
    """Delete one object: its data is purged and a delete marker remains. Needs confirmation.

    To delete a whole bucket use object_delete_bucket.
    """
    meta = await _live_meta(ctx, params.bucket, params.name, params.account_name)
    what = "link" if meta.link else "object"
    key = f"{params.bucket}/{params.name}"
    result = ObjectDelResult(done=False, bucket=params.bucket, name=params.name, size=meta.size, chunks=meta.chunks,
                             action=f"delete {what} {params.name!r} ({meta.size} bytes in {meta.chunks} chunks) "
                                    f"from bucket {params.bucket}")
    if not check_confirmation(params.confirm, key):
        result.confirmation_required = True
        result.confirm_with = key
        return result
    nc = await ctx.nc(params.account_name)
    js = await ctx.js(params.account_name)
    marker = {k: v for k, v in meta.doc.items() if k not in ("size", "chunks", "digest", "mtime", "deleted")}
    marker.update({"size": 0, "mtime": objstore.ZERO_TIME, "chunks": 0, "deleted": True})
    await objstore.publish_meta(nc, params.bucket, marker)
    if meta.nuid:
        await objstore.purge_subject(js, params.bucket, objstore.chunk_subject(params.bucket, meta.nuid))
    result.done = True
    return result


class ObjectLinkParams(Params):
    bucket: BucketName
    name: ObjectName
    target_bucket: BucketName = Field(description="Bucket of the object (or the bucket) to link to")
    target_name: str | None = Field(default=None, min_length=1, max_length=2048,
                                    description="Object to link to; omit to link to the whole bucket")


class ObjectLinkResult(Result):
    object: ObjectDetails


@operation("object_link", cli="object link", impact=Impact.WRITE, idempotent=True,
           args=("bucket", "name", "target_bucket", "target_name"))
async def object_link(ctx: Context, params: ObjectLinkParams) -> ObjectLinkResult:
    """Create a link object that points at another object (or bucket), as nats.go's AddLink does.

    An existing link of that name is replaced; an existing object is not.
    """
    js = await ctx.js(params.account_name)
    nc = await ctx.nc(params.account_name)
    if params.target_name is not None:
        target = await _live_meta(ctx, params.target_bucket, params.target_name, params.account_name)
        if target.link is not None:
            raise Conflict(f"{params.target_bucket}/{params.target_name} is itself a link", code="link_to_link",
                           hint="Link to the object it points at.")
    else:
        await objstore.fetch_bucket(js, params.target_bucket)
    existing = await objstore.read_meta(js, params.bucket, params.name)
    if existing is not None and not existing.deleted and existing.link is None:
        raise Conflict(f"an object named {params.name!r} exists in bucket {params.bucket}", code="object_exists",
                       hint="Choose another name for the link, or delete the object first.")
    link: dict[str, Any] = {"bucket": params.target_bucket}
    if params.target_name is not None:
        link["name"] = params.target_name
    record = {"name": params.name, "options": {"link": link}, "bucket": params.bucket, "nuid": objstore.new_nuid(),
              "size": 0, "mtime": objstore.ZERO_TIME, "chunks": 0}
    seq = await objstore.publish_meta(nc, params.bucket, record)
    return ObjectLinkResult(object=_details(await objstore.read_meta_at(js, params.bucket, seq), params.bucket))


class ObjectWatchParams(Params):
    bucket: BucketName
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="Stop after this many seconds (max 300)")
    max_entries: int = Field(default=100, ge=1, le=10000, description="Stop after this many changes (max 10000)")
    include_current: bool = Field(default=False, description="Start with every object's current record")


class ObjectWatchResult(Result):
    bucket: str
    changes: list[ObjectChange]
    stopped_by: Literal["time", "count"] = Field(description="What ended the watch: the time or the entry limit")
    elapsed_s: float
    current_done: bool | None = Field(
        default=None, description="With include_current: True once every object's current record was seen")


# Records asked for per pull: the server sends no more than asked, however big the bucket.
_PULL_BATCH = 256


@operation("object_watch", cli="object watch", args=("bucket",), timeout_s=330.0)
async def object_watch(ctx: Context, params: ObjectWatchParams) -> ObjectWatchResult:
    """Watch a bucket for objects being put, replaced or deleted, for a time or a number of changes."""
    js = await ctx.js(params.account_name)
    changes: list[ObjectChange] = []
    started = time.monotonic()
    deadline = started + params.timeout_s
    stopped_by: Literal["time", "count"] = "time"
    current = 0
    config = objstore.meta_config(params.bucket, include_current=params.include_current)
    try:
        async with PullConsumer(js, objstore.stream_name(params.bucket), config) as pc:
            current = pc.num_pending if params.include_current else 0
            while len(changes) < params.max_entries:
                remaining = deadline - time.monotonic()
                if remaining <= 0.001:
                    break
                want = min(_PULL_BATCH, params.max_entries - len(changes))
                async with contextlib.aclosing(pc.fetch_msgs(want, expires_s=remaining)) as batch:
                    async for msg in batch:
                        meta, _pending = objstore.meta_of_delivery(msg)
                        changes.append(ObjectChange(name=meta.name, size=meta.size, deleted=meta.deleted,
                                                    modified=meta.time, digest=meta.digest, seq=meta.seq))
            if len(changes) >= params.max_entries:
                stopped_by = "count"
    except NatsopError as err:
        raise objstore.bucket_error(err, params.bucket) from None
    return ObjectWatchResult(bucket=params.bucket, changes=changes, stopped_by=stopped_by,
                             elapsed_s=round(time.monotonic() - started, 3),
                             current_done=len(changes) >= current if params.include_current else None)
