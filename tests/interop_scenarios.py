"""The interop scenarios natsop runs against each independent client, written once.

tests/test_interop_js.py (nats.js) and tests/test_interop_go.py (nats.go) run them through an
InteropClient: how that client's program is started, and the few things the client does
differently, each said with its reason in the subclass. What only one client can do stays a small
test in that client's file.

A client's program runs one process per command and prints one JSON document: {"ok": true,
"result": ...} and exit 0, or {"ok": false, "error": {...}} and exit 3. Credentials reach it through
the environment only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError

MiB = 1024 * 1024
DEFAULT_CHUNK = 128 * 1024  # natsop's, nats.js's and nats.go's default object chunk size
WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, as nats.go and natsop store an object record's `mtime`


class ClientFailed(AssertionError):
    """A client command that was expected to succeed failed."""


class InteropClient(ABC):
    """One independent client, run against the APP account of the session server.

    A subclass says how to start its program (`argv`) and sets what the client does differently.
    """

    name: ClassVar[str]  # "nats.js": in the names and values the client writes, and in messages
    timeout_s: ClassVar[float] = 60.0
    cwd: Path | None = None

    # What differs between the clients; each subclass sets these and says why.
    time_resolution: ClassVar[timedelta]  # of the times it prints: entry `created`, object `mtime`
    mtime_from_record: ClassVar[bool]  # an object's `mtime`: the record's own field, or its message's time
    kv_get_shows_markers: ClassVar[bool]  # KV get of a deleted or purged key: the marker, or "not found"
    key_exists_error: ClassVar[str]  # the error `name` when a KV create meets a live key
    digest_mismatch_error: ClassVar[str]  # the error `name` when an object's data does not match its digest
    bucket_link_refusal: ClassVar[str]  # in the message when asked to get a link to a whole bucket
    counts_blocks: ClassVar[bool]  # whether its object get says how many chunks it read (`blocks`)
    writes_object_metadata: ClassVar[bool]  # whether its object put can write ADR-20's `metadata`
    knows_object_metadata: bool  # whether it decodes ADR-20's `metadata` of an object

    def __init__(self, server: EmbeddedServer) -> None:
        self.env = {**os.environ, "NATS_URL": server.url, "NATS_USER": server.app.user,
                    "NATS_PASSWORD": server.app.password}

    @abstractmethod
    def argv(self, family: str) -> list[str]:
        """The command line that starts one `kv` or `obj` command; its arguments follow."""

    @abstractmethod
    def kv_bucket_options(self, *, description: str, history: int, ttl_ms: int, max_bytes: int,
                          max_value_size: int) -> dict[str, Any]:
        """The options of `kv create-bucket` as this client's program spells them."""

    @abstractmethod
    def deleted_reply(self, chunks: int) -> Any:
        """What `obj delete` prints for an object of `chunks` chunks."""

    def as_printed(self, when: datetime) -> datetime:
        """`when` cut to the resolution of the times this client prints."""
        step = self.time_resolution // timedelta(microseconds=1)
        return when.replace(microsecond=when.microsecond // step * step)

    async def _run(self, family: str, args: tuple[Any, ...]) -> dict[str, Any]:
        argv = [str(a) for a in args]
        what = f"{self.name} {family} {argv}"
        proc = await asyncio.create_subprocess_exec(
            *self.argv(family), *argv, cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise AssertionError(f"{what} did not finish in {self.timeout_s}s") from None
        try:
            doc: dict[str, Any] = json.loads(out)
        except ValueError:
            raise AssertionError(f"{what} exited {proc.returncode} without JSON:\n"
                                 f"stdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
        assert (proc.returncode == 0) == doc["ok"], (proc.returncode, doc, err)
        return doc

    async def _ok(self, family: str, args: tuple[Any, ...]) -> Any:
        doc = await self._run(family, args)
        if not doc["ok"]:
            raise ClientFailed(f"{self.name} {family} {list(args)}: {doc['error']}")
        return doc["result"]

    async def _fails(self, family: str, args: tuple[Any, ...]) -> dict[str, Any]:
        doc = await self._run(family, args)
        assert not doc["ok"], f"{self.name} {family} {list(args)} succeeded: {doc['result']}"
        error: dict[str, Any] = doc["error"]
        return error

    async def kv(self, *args: Any) -> Any:
        return await self._ok("kv", args)

    async def kv_fails(self, *args: Any) -> dict[str, Any]:
        return await self._fails("kv", args)

    async def obj(self, *args: Any) -> Any:
        return await self._ok("obj", args)

    async def obj_fails(self, *args: Any) -> dict[str, Any]:
        return await self._fails("obj", args)


async def call(toolkit: Toolkit, tool: str, **kwargs: Any) -> Any:
    return await toolkit.call(tool, **kwargs)


async def natsop_error(pending: Awaitable[Any]) -> NatsopError:
    with pytest.raises(NatsopError) as info:
        await pending
    return info.value


def random_file(path: Path, size: int) -> tuple[str, str]:
    """Write `size` random bytes; (sha256 hex, ADR-20 digest)."""
    data = os.urandom(size)
    path.write_bytes(data)
    return sha(data), adr20_digest(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def adr20_digest(data: bytes) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def printed_time(text: str) -> datetime:
    """An RFC 3339 UTC time as a client prints it (Go: up to nanoseconds) as a datetime (microseconds)."""
    head, _, frac = text.removesuffix("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


# ---------------------------------------------------------------------------------------- Object Store


async def client_reads_objects_natsop_writes(toolkit: Toolkit, client: InteropClient, uniq: str,
                                             tmp_path: Path, *, chunk_size: int | None = None) -> None:
    """natsop writes objects (chunk_size None: natsop's default), links and a bucket link; the client reads
    them, then deletes one, and natsop sees it deleted."""
    links = f"{uniq}_L"
    await call(toolkit, "object_add", bucket=uniq, description="written by natsop")
    await call(toolkit, "object_add", bucket=links)
    chunk = chunk_size or DEFAULT_CHUNK
    big_size = 3 * MiB + 5
    big_sha, big_digest = random_file(tmp_path / "big.bin", big_size)
    sized = {} if chunk_size is None else {"chunk_size": chunk_size}
    big = (await call(toolkit, "object_put", bucket=uniq, file="big.bin", metadata={"kind": "random"},
                      **sized)).object
    assert (big.size, big.digest, big.max_chunk_size) == (big_size, big_digest, chunk)
    assert big.chunks == math.ceil(big_size / chunk)
    text = "hello from natsop, ü\n"
    small_name = "notes/one two.txt"  # 17 bytes: its metadata subject is base64url with '=' padding
    small = (await call(
        toolkit, "object_put", bucket=uniq, name=small_name, data=text, description="a small text",
        headers={"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]},
        metadata={"owner": "ops", "n": "1"})).object
    await call(toolkit, "object_link", bucket=links, name="alias", target_bucket=uniq, target_name=small_name)
    await call(toolkit, "object_link", bucket=links, name="whole", target_bucket=uniq)

    status = await client.obj("status", uniq)
    assert status["description"] == "written by natsop" and not status["sealed"]

    info = await client.obj("info", uniq, "big.bin")
    assert (info["bucket"], info["size"], info["digest"], info["chunks"], info["nuid"]) == (
        uniq, big_size, big_digest, big.chunks, big.nuid)
    assert info["options"] == {"max_chunk_size": chunk} and info["deleted"] is False and info["is_link"] is False
    if client.mtime_from_record:
        # natsop, as nats.go, leaves the record's own `mtime` zero: an object's time is its message's.
        assert info["mtime"] == ZERO_TIME, info
    else:
        assert printed_time(info["mtime"]) == client.as_printed(datetime.fromisoformat(big.modified)), (
            info["mtime"], big.modified)
    if client.knows_object_metadata:
        assert info["metadata"] == {"kind": "random"}
    else:
        # A client that predates ADR-20's `metadata` (nats.go 1.22.1) decodes the record without it.
        # The record itself keeps it (natsop reads it back below), but that client's own rewrites of a
        # record (UpdateMeta, and the delete marker) leave it out.
        assert "metadata" not in info
    info = await client.obj("info", uniq, small_name)
    assert (info["size"], info["digest"], info["chunks"]) == (len(text.encode()), small.digest, 1)
    assert info["description"] == "a small text"
    assert info["headers"] == {"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]}
    if client.knows_object_metadata:
        assert info["metadata"] == {"owner": "ops", "n": "1"}
    assert (await call(toolkit, "object_info", bucket=uniq, name=small_name)).object.metadata == {
        "owner": "ops", "n": "1"}

    # The client checks the digest while reading; a mismatch fails the command (see
    # both_clients_refuse_data_that_does_not_match_the_digest).
    got = await client.obj("get", uniq, "big.bin", tmp_path / "big.client.out")
    assert (got["size"], got["sha256"]) == (big_size, big_sha)
    assert sha((tmp_path / "big.client.out").read_bytes()) == big_sha
    if client.counts_blocks:
        assert got["blocks"] == big.chunks
    got = await client.obj("get", uniq, small_name, tmp_path / "small.client.out")
    assert (tmp_path / "small.client.out").read_bytes() == text.encode() and got["sha256"] == sha(text.encode())

    # The client follows natsop's link (to another bucket) to the same bytes.
    link = await client.obj("info", links, "alias")
    assert link["is_link"] and link["options"]["link"] == {"bucket": uniq, "name": small_name}
    assert link["nuid"] and link["size"] == 0 and "digest" not in link
    got = await client.obj("get", links, "alias")
    assert got["sha256"] == sha(text.encode()) and got["info"]["name"] == small_name
    # A link to a whole bucket: the client sees it and, as natsop does, refuses to read it as an object.
    whole = await client.obj("info", links, "whole")
    assert whole["is_link"] and whole["options"]["link"] == {"bucket": uniq}
    refused = await client.obj_fails("get", links, "whole")
    assert client.bucket_link_refusal in refused["message"], refused

    listed = await client.obj("list", uniq)
    assert sorted((o["name"], o["size"], o["digest"]) for o in listed) == sorted([
        ("big.bin", big_size, big_digest), (small_name, len(text.encode()), small.digest)])
    assert sorted(o["name"] for o in await client.obj("list", links)) == ["alias", "whole"]

    # The client deletes natsop's object: natsop sees the marker, and the chunks are gone.
    deleted = await client.obj("delete", uniq, "big.bin")
    assert deleted == client.deleted_reply(big.chunks), deleted
    gone = await natsop_error(call(toolkit, "object_get", bucket=uniq, name="big.bin"))
    assert gone.code == "object_deleted"
    marker = (await call(toolkit, "object_info", bucket=uniq, name="big.bin", show_deleted=True)).object
    assert marker.deleted and marker.size == 0 and marker.chunks == 0 and marker.digest is None
    assert marker.nuid == big.nuid and marker.max_chunk_size == chunk
    names = [o.name for o in (await call(toolkit, "object_ls", bucket=uniq)).objects]
    assert names == [small_name]
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.size < 4096, bucket  # only the two metadata records and one small chunk remain


async def natsop_reads_objects_client_writes(toolkit: Toolkit, client: InteropClient, uniq: str,
                                             tmp_path: Path) -> None:
    """The client makes a bucket and writes objects and a link; natsop reads them, then deletes one,
    and the client sees it deleted."""
    status = await client.obj("create", uniq, json.dumps({"description": f"made by {client.name}",
                                                          "max_bytes": 16 * MiB}))
    assert status["bucket"] == uniq
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.description == f"made by {client.name}" and not bucket.sealed
    assert bucket.max_bytes == 16 * MiB and bucket.stream == f"OBJ_{uniq}" and bucket.ttl_s is None

    chunk = 40_000  # not a power of two, and not natsop's default
    size = MiB + 333
    src = tmp_path / "client-src.bin"
    digest_hex, digest = random_file(src, size)
    name = f"dir/from {client.name}.bin"
    meta: dict[str, Any] = {"name": name, "description": f"written by {client.name}", "max_chunk_size": chunk,
                            "headers": {"X-Origin": [client.name], "X-Two": ["1", "2"]}}
    if client.writes_object_metadata:
        meta["metadata"] = {"origin": client.name}
    put = await client.obj("put", uniq, src, json.dumps(meta))
    assert put["digest"] == digest and put["chunks"] == math.ceil(size / chunk)

    obj = (await call(toolkit, "object_info", bucket=uniq, name=name)).object
    assert (obj.size, obj.chunks, obj.digest, obj.nuid) == (size, put["chunks"], digest, put["nuid"])
    assert obj.max_chunk_size == chunk and obj.description == f"written by {client.name}"
    assert obj.headers == {"X-Origin": [client.name], "X-Two": ["1", "2"]}
    assert obj.metadata == ({"origin": client.name} if client.writes_object_metadata else None)
    assert obj.modified and not obj.deleted and obj.link is None
    info = await client.obj("info", uniq, name)
    modified = datetime.fromisoformat(obj.modified)  # the time of the record's message
    if client.mtime_from_record:
        # The client stamped the record with its own clock just before publishing it.
        assert abs(printed_time(info["mtime"]) - modified) < timedelta(seconds=60), (
            info["mtime"], obj.modified)
    else:
        assert printed_time(info["mtime"]) == client.as_printed(modified), (info["mtime"], obj.modified)

    got = await call(toolkit, "object_get", bucket=uniq, name=name, file="copy.bin")
    assert got.digest_verified and got.size == size and Path(got.file) == tmp_path / "copy.bin"
    assert sha((tmp_path / "copy.bin").read_bytes()) == digest_hex

    # A small one and an empty one (the client stores no chunk for it, and the digest of no bytes).
    (tmp_path / "tiny.txt").write_text("tiny, ü", encoding="utf-8")
    await client.obj("put", uniq, tmp_path / "tiny.txt", json.dumps({"name": "tiny.txt"}))
    (tmp_path / "empty").write_bytes(b"")
    empty = await client.obj("put", uniq, tmp_path / "empty", json.dumps({"name": "empty"}))
    assert empty["chunks"] == 0 and empty["size"] == 0 and empty["digest"] == adr20_digest(b"")
    got = await call(toolkit, "object_get", bucket=uniq, name="tiny.txt")
    assert got.digest_verified and got.payload.data == "tiny, ü" and got.payload.encoding == "utf-8"
    # The client writes its default chunk size into the record.
    assert got.object.max_chunk_size == DEFAULT_CHUNK
    got = await call(toolkit, "object_get", bucket=uniq, name="empty")
    assert got.digest_verified and got.size == 0 and got.payload.data == ""

    # The client's link record (nats.js's has no nuid, no size and no rollup header) is followed by natsop.
    await client.obj("link", uniq, "alias", uniq, "tiny.txt")
    alias = (await call(toolkit, "object_info", bucket=uniq, name="alias")).object
    assert alias.link is not None and alias.link.model_dump() == {"bucket": uniq, "name": "tiny.txt"}
    got = await call(toolkit, "object_get", bucket=uniq, name="alias")
    assert got.payload.data == "tiny, ü" and got.link_from == f"{uniq}/alias" and got.object.name == "tiny.txt"

    listed = await call(toolkit, "object_ls", bucket=uniq)
    assert sorted((o.name, o.size, o.link) for o in listed.objects) == [
        ("alias", 0, f"{uniq}/tiny.txt"), (name, size, None), ("empty", 0, None),
        ("tiny.txt", len("tiny, ü".encode()), None)]
    assert not listed.truncated

    # natsop deletes the client's object: the client sees it deleted.
    await call(toolkit, "object_del", bucket=uniq, name="tiny.txt", confirm=f"{uniq}/tiny.txt")
    info = await client.obj("info", uniq, "tiny.txt")
    assert info["deleted"] is True and info["size"] == 0 and info["chunks"] == 0 and "digest" not in info
    assert await client.obj("get", uniq, "tiny.txt") is None
    assert sorted(o["name"] for o in await client.obj("list", uniq)) == sorted(["alias", "empty", name])


async def both_clients_refuse_data_that_does_not_match_the_digest(
        toolkit: Toolkit, client: InteropClient, server: EmbeddedServer, uniq: str, tmp_path: Path) -> None:
    """The digest checks the scenarios rely on are real: a record whose digest is wrong is refused,
    whoever wrote the object and whoever reads it."""
    await call(toolkit, "object_add", bucket=uniq)
    (tmp_path / "data.bin").write_bytes(os.urandom(300_000))
    await call(toolkit, "object_put", bucket=uniq, file="data.bin", name="natsop")
    await client.obj("put", uniq, tmp_path / "data.bin", json.dumps({"name": client.name}))
    wrong = adr20_digest(b"other bytes")
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        for name in ("natsop", client.name):
            subject = f"$O.{uniq}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
            msg = await nc.jetstream().get_last_msg(f"OBJ_{uniq}", subject)
            assert msg.data is not None
            record = json.loads(msg.data)
            record["digest"] = wrong
            await nc.jetstream().publish(subject, json.dumps(record).encode(), headers={"Nats-Rollup": "sub"})
    finally:
        await nc.close()
    for name in ("natsop", client.name):
        refused = await client.obj_fails("get", uniq, name)
        assert refused["name"] == client.digest_mismatch_error, refused
        assert "digests do not match" in refused["message"], refused
        mismatch = await natsop_error(call(toolkit, "object_get", bucket=uniq, name=name, file=f"{name}.out"))
        assert mismatch.code == "digest_mismatch"
        assert not (tmp_path / f"{name}.out").exists()


# ---------------------------------------------------------------------------------------------- KV


async def client_reads_kv_natsop_writes(toolkit: Toolkit, client: InteropClient, uniq: str) -> None:
    """natsop writes, updates, creates, deletes and purges keys; the client reads values, markers and
    histories, and its create meets natsop's delete marker and a live key."""
    await call(toolkit, "kv_add", bucket=uniq, history=5, description="natsop's bucket")
    r1 = (await call(toolkit, "kv_put", bucket=uniq, key="a.b", value="one")).revision
    r2 = (await call(toolkit, "kv_update", bucket=uniq, key="a.b", value="two ü", revision=r1)).revision
    r3 = (await call(toolkit, "kv_create", bucket=uniq, key="fresh", value="new")).revision
    await call(toolkit, "kv_put", bucket=uniq, key="gone", value="x")
    r_del = (await call(toolkit, "kv_del", bucket=uniq, key="gone")).revision
    await call(toolkit, "kv_put", bucket=uniq, key="wiped", value="y1")
    await call(toolkit, "kv_put", bucket=uniq, key="wiped", value="y2")
    await call(toolkit, "kv_purge", bucket=uniq, key="wiped", confirm="wiped")
    r_purge = (await call(toolkit, "kv_history", bucket=uniq, key="wiped")).entries[-1].revision

    status = await client.kv("status", uniq)
    assert status["history"] == 5 and status["description"] == "natsop's bucket" and status["allow_direct"]
    assert status["stream"] == f"KV_{uniq}" and status["values"] == 6  # a.b x2, fresh, gone x2, wiped's marker

    entry = await client.kv("get", uniq, "a.b")
    assert (entry["value"], entry["revision"], entry["operation"], entry["delta"]) == ("two ü", r2, "PUT", 0)
    natsop_entry = await call(toolkit, "kv_get", bucket=uniq, key="a.b")
    assert printed_time(entry["created"]) == client.as_printed(natsop_entry.created)
    assert (await client.kv("get", uniq, "a.b", r1))["value"] == "one"
    assert (await client.kv("get", uniq, "fresh"))["revision"] == r3
    if client.kv_get_shows_markers:
        deleted = await client.kv("get", uniq, "gone")
        assert (deleted["operation"], deleted["revision"], deleted["length"]) == ("DEL", r_del, 0)
        purged = await client.kv("get", uniq, "wiped")
        assert (purged["operation"], purged["revision"], purged["length"]) == ("PURGE", r_purge, 0)
    else:
        # "not found" for a DEL or PURGE marker, at a revision too; the client's watch shows the markers.
        assert await client.kv("get", uniq, "gone") is None
        assert await client.kv("get", uniq, "gone", r_del) is None
        assert await client.kv("get", uniq, "wiped") is None
        latest = {e["key"]: (e["operation"], e["revision"], e["length"]) for e in await client.kv("watch", uniq)}
        assert latest == {"a.b": ("PUT", r2, len("two ü".encode())), "fresh": ("PUT", r3, 3),
                          "gone": ("DEL", r_del, 0), "wiped": ("PURGE", r_purge, 0)}

    # Histories agree entry by entry, deltas included.
    history = await client.kv("history", uniq, "a.b")
    assert [(e["revision"], e["operation"], e["value"], e["delta"]) for e in history] == [
        (r1, "PUT", "one", 1), (r2, "PUT", "two ü", 0)]
    ours = (await call(toolkit, "kv_history", bucket=uniq, key="a.b")).entries
    assert [(e.revision, e.operation, e.value.data, e.delta) for e in ours] == [
        (e["revision"], e["operation"], e["value"], e["delta"]) for e in history]
    assert [(e["operation"], e["value"]) for e in await client.kv("history", uniq, "gone")] == [
        ("PUT", "x"), ("DEL", "")]
    # The purge's rollup removed the earlier values: only its marker is left.
    assert [e["operation"] for e in await client.kv("history", uniq, "wiped")] == ["PURGE"]
    assert await client.kv("keys", uniq) == ["a.b", "fresh"]
    assert await client.kv("keys", uniq, "a.*") == ["a.b"]

    # The client's create succeeds over natsop's delete marker and is refused over a live key.
    revived = await client.kv("create", uniq, "gone", "back")
    assert (await call(toolkit, "kv_get", bucket=uniq, key="gone")).revision == revived
    refused = await client.kv_fails("create", uniq, "fresh", "no")
    assert refused["code"] == WRONG_LAST_SEQUENCE and refused["name"] == client.key_exists_error, refused


async def natsop_reads_kv_client_writes_and_cas_conflicts(toolkit: Toolkit, client: InteropClient,
                                                          uniq: str) -> None:
    """The client makes a bucket and writes, deletes and purges keys; natsop reads them. Then
    compare-and-set across the two, each refusing the other's stale revision."""
    options = client.kv_bucket_options(description=f"{client.name}'s bucket", history=4, ttl_ms=3_600_000,
                                       max_bytes=MiB, max_value_size=4096)
    made = await client.kv("create-bucket", uniq, json.dumps(options))
    assert (made["history"], made["ttl_ms"], made["max_bytes"], made["max_value_size"]) == (
        4, 3_600_000, MiB, 4096)
    info = await call(toolkit, "kv_info", bucket=uniq)
    assert (info.history, info.ttl_s, info.max_bytes, info.max_value_size) == (4, 3600, MiB, 4096)
    assert info.description == f"{client.name}'s bucket" and info.stream == f"KV_{uniq}"
    assert info.allow_direct == made["allow_direct"] is True

    r1 = await client.kv("put", uniq, "k1", "v1")
    r2 = await client.kv("put", uniq, "k1", "v2 ü")
    await client.kv("create", uniq, "k2", "x")
    await client.kv("delete", uniq, "k2")
    await client.kv("put", uniq, "k3", "y")
    await client.kv("purge", uniq, "k3")

    got = await call(toolkit, "kv_get", bucket=uniq, key="k1")
    assert (got.revision, got.operation, got.value.data, got.delta) == (r2, "PUT", "v2 ü", 0)
    assert client.as_printed(got.created) == printed_time((await client.kv("get", uniq, "k1"))["created"])
    assert (await call(toolkit, "kv_get", bucket=uniq, key="k1", revision=r1)).value.data == "v1"
    deleted = await natsop_error(call(toolkit, "kv_get", bucket=uniq, key="k2"))
    assert deleted.code == "key_deleted"
    purged = await natsop_error(call(toolkit, "kv_get", bucket=uniq, key="k3"))
    assert purged.code == "key_deleted" and purged.details["operation"] == "PURGE"
    hist = await call(toolkit, "kv_history", bucket=uniq, key="k1")
    assert [(e.revision, e.operation, e.value.data) for e in hist.entries] == [(r1, "PUT", "v1"), (r2, "PUT", "v2 ü")]
    assert [e.operation for e in (await call(toolkit, "kv_history", bucket=uniq, key="k2")).entries] == ["PUT", "DEL"]
    assert [e.operation for e in (await call(toolkit, "kv_history", bucket=uniq, key="k3")).entries] == ["PURGE"]
    listed = await call(toolkit, "kv_ls", bucket=uniq)
    assert listed.keys == ["k1"] and listed.deleted_skipped == 2

    # Compare-and-set across the two clients, each refusing the other's stale revision.
    r3 = (await call(toolkit, "kv_update", bucket=uniq, key="k1", value="by natsop", revision=r2)).revision
    stale = await client.kv_fails("update", uniq, "k1", f"by {client.name}", r2)
    assert stale["code"] == WRONG_LAST_SEQUENCE and str(r3) in stale["message"], stale
    r4 = await client.kv("update", uniq, "k1", f"by {client.name}", r3)
    conflict = await natsop_error(call(toolkit, "kv_update", bucket=uniq, key="k1", value="late", revision=r3))
    assert isinstance(conflict, Conflict) and conflict.code == "stale_revision"
    assert conflict.details["current_revision"] == r4
    assert f"revision {r4}" in conflict.message
    assert (await client.kv("get", uniq, "k1"))["value"] == f"by {client.name}"

    # natsop's create over the client's delete marker; the client reads it.
    created = await call(toolkit, "kv_create", bucket=uniq, key="k2", value="again")
    entry = await client.kv("get", uniq, "k2")
    assert (entry["value"], entry["revision"], entry["operation"]) == ("again", created.revision, "PUT")
    assert await client.kv("keys", uniq) == ["k1", "k2"]
