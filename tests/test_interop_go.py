"""Interoperability with nats.go, the reference Go client: the Object Store (ADR-20) and KV (ADR-8)
written by natsop are read by nats.go's ObjectStore and KeyValue, and what they write is read by natsop.

nats.go runs as a small Go program, tests/interop_go/main.go, one process per command, printing JSON.
It is built once per test session, offline, in GOPATH mode against the Debian packaged sources of
nats.go (golang-github-nats-io-go-nats-dev, nats.go 1.22.1 on Debian 12). Credentials reach it
through the environment only. A missing Go toolchain or missing sources fail the module rather
than skipping it.

Where nats.go 1.22.1 predates the current ADRs the tests pin what it does and say why.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError

GO_DIR = Path(__file__).resolve().parent / "interop_go"
GOCODE = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources
NATS_GO_SRC = GOCODE / "src" / "github.com" / "nats-io" / "nats.go"
DEBIAN_PACKAGES = "golang-go golang-github-nats-io-go-nats-dev"
MiB = 1024 * 1024
GO_TIMEOUT_S = 60.0
WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF


def _build(out_dir: Path) -> Path:
    """Compile tests/interop_go into out_dir, offline: GOPATH mode over the packaged sources only."""
    go = shutil.which("go")
    missing = []
    if go is None:
        missing.append("`go` is not on PATH")
    if not (NATS_GO_SRC / "object.go").is_file():
        missing.append(f"the nats.go sources are not in {NATS_GO_SRC}")
    if missing:
        pytest.fail(f"the nats.go interop tests need Go and nats.go's sources: {'; '.join(missing)}. "
                    f"Install them with `apt-get install -y --no-install-recommends {DEBIAN_PACKAGES}` "
                    "(scripts/install-test-deps does this)", pytrace=False)
    assert go is not None
    binary = out_dir / "interop-go"
    # Go's build cache is safe to share between concurrent builds; keeping it makes later runs quick.
    cache = Path(tempfile.gettempdir()) / f"natsop-interop-go-cache-{os.getuid()}"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOCODE), "GOFLAGS": "", "GOPROXY": "off",
           "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOCACHE": str(cache)}
    started = time.monotonic()
    done = subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_DIR, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"`go build` of {GO_DIR} failed ({done.returncode}):\n{done.stderr[-3000:]}\n"
                    f"Is {NATS_GO_SRC} complete? Reinstall {DEBIAN_PACKAGES}.", pytrace=False)
    print(f"go build {GO_DIR}: {time.monotonic() - started:.1f}s")
    return binary


@pytest.fixture(scope="session")
def natsgo_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Each test process builds into its own directory: concurrent runs never share a half-written binary.
    return _build(tmp_path_factory.mktemp("interop-go"))


class GoFailed(AssertionError):
    """A nats.go command that was expected to succeed failed."""


class NatsGo:
    """Runs the interop-go binary against the APP account of the session server."""

    def __init__(self, binary: Path, server: EmbeddedServer) -> None:
        self.binary = binary
        self.env = {**os.environ, "NATS_URL": server.url, "NATS_USER": server.app.user,
                    "NATS_PASSWORD": server.app.password}
        about = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=GO_TIMEOUT_S,
                               check=True)
        version = json.loads(about.stdout)["result"]
        self.version: str = version["version"]
        # ADR-20's object `metadata` came to nats.go after 1.22.1 (Debian 12's): an older nats.go
        # decodes records without it.
        self.knows_object_metadata: bool = version["object_metadata"]

    async def _run(self, args: tuple[Any, ...]) -> dict[str, Any]:
        argv = [str(a) for a in args]
        proc = await asyncio.create_subprocess_exec(
            str(self.binary), *argv, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), GO_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise AssertionError(f"interop-go {argv} did not finish in {GO_TIMEOUT_S}s") from None
        try:
            doc: dict[str, Any] = json.loads(out)
        except ValueError:
            raise AssertionError(f"interop-go {argv} exited {proc.returncode} without JSON:\n"
                                 f"stdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
        assert (proc.returncode == 0) == doc["ok"], (proc.returncode, doc, err)
        return doc

    async def ok(self, *args: Any) -> Any:
        doc = await self._run(args)
        if not doc["ok"]:
            raise GoFailed(f"interop-go {list(args)}: {doc['error']}")
        return doc["result"]

    async def fails(self, *args: Any) -> dict[str, Any]:
        doc = await self._run(args)
        assert not doc["ok"], f"interop-go {list(args)} succeeded: {doc['result']}"
        error: dict[str, Any] = doc["error"]
        return error

    async def obj(self, *args: Any) -> Any:
        return await self.ok("obj", *args)

    async def kv(self, *args: Any) -> Any:
        return await self.ok("kv", *args)


@pytest.fixture(scope="module")
def natsgo(natsgo_binary: Path, server: EmbeddedServer) -> Iterator[NatsGo]:
    yield NatsGo(natsgo_binary, server)


async def call(toolkit: Toolkit, tool: str, **kwargs: Any) -> Any:
    return await toolkit.call(tool, **kwargs)


async def _error(pending: Any) -> NatsopError:
    with pytest.raises(NatsopError) as info:
        await pending
    return info.value


def _random_file(path: Path, size: int) -> tuple[str, str]:
    """Write `size` random bytes; (sha256 hex, ADR-20 digest)."""
    data = os.urandom(size)
    path.write_bytes(data)
    raw = hashlib.sha256(data).digest()
    return raw.hex(), "SHA-256=" + base64.urlsafe_b64encode(raw).decode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_micros(text: str) -> datetime:
    """An RFC 3339 time with up to nanoseconds (Go's) as a datetime (microseconds, as natsop's)."""
    head, _, frac = text.removesuffix("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


async def test_the_go_program_runs_nats_go(natsgo: NatsGo) -> None:
    major, minor, _patch = (int(part) for part in natsgo.version.split("."))
    assert (major, minor) >= (1, 22), natsgo.version  # written against 1.22.1, Debian 12's
    if natsgo.version == "1.22.1":
        assert not natsgo.knows_object_metadata
    usage = await natsgo.fails("kv")
    assert usage["name"] == "Usage" and "usage:" in usage["message"]


# ---------------------------------------------------------------------------------------- Object Store


async def test_nats_go_reads_objects_natsop_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str,
                                                   tmp_path: Path) -> None:
    links = f"{uniq}_L"
    await call(toolkit, "object_add", bucket=uniq, description="written by natsop")
    await call(toolkit, "object_add", bucket=links)
    chunk = 100_003  # not natsop's default, not a power of two
    big_size = 3 * MiB + 5
    big_sha, big_digest = _random_file(tmp_path / "big.bin", big_size)
    big = (await call(toolkit, "object_put", bucket=uniq, file="big.bin", chunk_size=chunk,
                      metadata={"kind": "random"})).object
    assert big.size == big_size and big.digest == big_digest and big.chunks == math.ceil(big_size / chunk)
    text = "hello from natsop, ü\n"
    small_name = "notes/one two.txt"  # 17 bytes: its metadata subject is base64url with '=' padding
    small = (await call(toolkit,
        "object_put", bucket=uniq, name=small_name, data=text, description="a small text",
        headers={"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]},
        metadata={"owner": "ops", "n": "1"})).object
    await call(toolkit, "object_link", bucket=links, name="alias", target_bucket=uniq, target_name=small_name)
    await call(toolkit, "object_link", bucket=links, name="whole", target_bucket=uniq)

    status = await natsgo.obj("status", uniq)
    assert status["description"] == "written by natsop" and status["stream"] == f"OBJ_{uniq}"
    assert status["allow_direct"] and not status["sealed"]

    info = await natsgo.obj("info", uniq, "big.bin")
    assert (info["bucket"], info["size"], info["digest"], info["chunks"], info["nuid"]) == (
        uniq, big_size, big_digest, big.chunks, big.nuid)
    assert info["options"] == {"max_chunk_size": chunk} and info["deleted"] is False and info["is_link"] is False
    assert _to_micros(info["mtime"]) == datetime.fromisoformat(big.modified)
    if natsgo.knows_object_metadata:
        assert info["metadata"] == {"kind": "random"}
    else:
        # nats.go 1.22.1 predates ADR-20's `metadata`: it decodes the record without it. The record
        # itself keeps it (natsop reads it back below), but nats.go's own rewrites of a record
        # (UpdateMeta, and the delete marker) leave it out.
        assert "metadata" not in info
    info = await natsgo.obj("info", uniq, small_name)
    assert (info["size"], info["digest"], info["chunks"]) == (len(text.encode()), small.digest, 1)
    assert info["description"] == "a small text"
    assert info["headers"] == {"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]}
    assert (await call(toolkit, "object_info", bucket=uniq, name=small_name)).object.metadata == {
        "owner": "ops", "n": "1"}

    # nats.go checks the digest when the data ends; a mismatch fails the command (see the test below).
    got = await natsgo.obj("get", uniq, "big.bin", tmp_path / "big.go.out")
    assert (got["size"], got["sha256"]) == (big_size, big_sha)
    assert _sha((tmp_path / "big.go.out").read_bytes()) == big_sha
    got = await natsgo.obj("get", uniq, small_name, tmp_path / "small.go.out")
    assert (tmp_path / "small.go.out").read_bytes() == text.encode() and got["sha256"] == _sha(text.encode())

    # nats.go follows natsop's link (to another bucket) to the same bytes.
    link = await natsgo.obj("info", links, "alias")
    assert link["is_link"] and link["options"]["link"] == {"bucket": uniq, "name": small_name}
    assert link["nuid"] and link["size"] == 0 and "digest" not in link
    got = await natsgo.obj("get", links, "alias")
    assert got["sha256"] == _sha(text.encode()) and got["info"]["name"] == small_name
    # A link to a whole bucket: nats.go sees it and, as natsop does, refuses to read it as an object.
    whole = await natsgo.obj("info", links, "whole")
    assert whole["is_link"] and whole["options"]["link"] == {"bucket": uniq}
    refused = await natsgo.fails("obj", "get", links, "whole")
    assert "link to a bucket" in refused["message"], refused

    listed = await natsgo.obj("list", uniq)
    assert sorted((o["name"], o["size"], o["digest"]) for o in listed) == sorted([
        ("big.bin", big_size, big_digest), (small_name, len(text.encode()), small.digest)])
    assert sorted(o["name"] for o in await natsgo.obj("list", links)) == ["alias", "whole"]

    # nats.go deletes natsop's object: natsop sees the marker, and the chunks are gone.
    assert await natsgo.obj("delete", uniq, "big.bin") is None
    gone = await _error(call(toolkit, "object_get", bucket=uniq, name="big.bin"))
    assert gone.code == "object_deleted"
    marker = (await call(toolkit, "object_info", bucket=uniq, name="big.bin", show_deleted=True)).object
    assert marker.deleted and marker.size == 0 and marker.chunks == 0 and marker.digest is None
    assert marker.nuid == big.nuid and marker.max_chunk_size == chunk
    names = [o.name for o in (await call(toolkit, "object_ls", bucket=uniq)).objects]
    assert names == [small_name]
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.size < 4096, bucket  # only the two metadata records and one small chunk remain


async def test_natsop_reads_objects_nats_go_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str,
                                                   tmp_path: Path) -> None:
    status = await natsgo.obj("create", uniq, json.dumps({"description": "made by nats.go", "max_bytes": 16 * MiB}))
    assert status["bucket"] == uniq
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.description == "made by nats.go" and not bucket.sealed and bucket.max_bytes == 16 * MiB
    assert bucket.stream == f"OBJ_{uniq}" and bucket.ttl_s is None

    chunk = 40_000
    size = MiB + 333
    sha, digest = _random_file(tmp_path / "go-src.bin", size)
    name = "dir/from nats.go.bin"
    put = await natsgo.obj("put", uniq, tmp_path / "go-src.bin", json.dumps({
        "name": name, "description": "written by nats.go", "max_chunk_size": chunk,
        "headers": {"X-Origin": ["nats.go"], "X-Two": ["1", "2"]}}))
    assert put["digest"] == digest and put["chunks"] == math.ceil(size / chunk)

    obj = (await call(toolkit, "object_info", bucket=uniq, name=name)).object
    assert (obj.size, obj.chunks, obj.digest, obj.nuid) == (size, put["chunks"], digest, put["nuid"])
    assert obj.max_chunk_size == chunk and obj.description == "written by nats.go"
    assert obj.headers == {"X-Origin": ["nats.go"], "X-Two": ["1", "2"]}
    assert obj.metadata is None and obj.modified and not obj.deleted and obj.link is None
    info = await natsgo.obj("info", uniq, name)
    assert _to_micros(info["mtime"]) == datetime.fromisoformat(obj.modified)

    got = await call(toolkit, "object_get", bucket=uniq, name=name, file="copy.bin")
    assert got.digest_verified and got.size == size and Path(got.file) == tmp_path / "copy.bin"
    assert _sha((tmp_path / "copy.bin").read_bytes()) == sha

    # A small one and an empty one (nats.go stores no chunk for it, and the digest of no bytes).
    (tmp_path / "tiny.txt").write_text("tiny, ü", encoding="utf-8")
    await natsgo.obj("put", uniq, tmp_path / "tiny.txt", json.dumps({"name": "tiny.txt"}))
    (tmp_path / "empty").write_bytes(b"")
    empty = await natsgo.obj("put", uniq, tmp_path / "empty", json.dumps({"name": "empty"}))
    assert empty["chunks"] == 0 and empty["size"] == 0
    assert empty["digest"] == "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"").digest()).decode()
    got = await call(toolkit, "object_get", bucket=uniq, name="tiny.txt")
    assert got.digest_verified and got.payload.data == "tiny, ü" and got.payload.encoding == "utf-8"
    assert got.object.max_chunk_size == 128 * 1024  # nats.go writes its default chunk size into the record
    got = await call(toolkit, "object_get", bucket=uniq, name="empty")
    assert got.digest_verified and got.size == 0 and got.payload.data == ""

    # nats.go's links, to an object and to a whole bucket, are read by natsop.
    await natsgo.obj("link", uniq, "alias", uniq, "tiny.txt")
    alias = (await call(toolkit, "object_info", bucket=uniq, name="alias")).object
    assert alias.link is not None and alias.link.model_dump() == {"bucket": uniq, "name": "tiny.txt"}
    got = await call(toolkit, "object_get", bucket=uniq, name="alias")
    assert got.payload.data == "tiny, ü" and got.link_from == f"{uniq}/alias" and got.object.name == "tiny.txt"
    await natsgo.obj("link", uniq, "whole", uniq)
    whole = (await call(toolkit, "object_info", bucket=uniq, name="whole")).object
    assert whole.link is not None and whole.link.model_dump() == {"bucket": uniq, "name": None}
    refused = await _error(call(toolkit, "object_get", bucket=uniq, name="whole"))
    assert refused.code == "link_to_bucket"

    listed = await call(toolkit, "object_ls", bucket=uniq)
    assert sorted((o.name, o.size, o.link) for o in listed.objects) == [
        ("alias", 0, f"{uniq}/tiny.txt"), ("dir/from nats.go.bin", size, None), ("empty", 0, None),
        ("tiny.txt", len("tiny, ü".encode()), None), ("whole", 0, f"{uniq}/")]
    assert not listed.truncated

    # natsop deletes a nats.go object: nats.go sees it deleted.
    await call(toolkit, "object_del", bucket=uniq, name="tiny.txt", confirm=f"{uniq}/tiny.txt")
    info = await natsgo.obj("info", uniq, "tiny.txt")
    assert info["deleted"] is True and info["size"] == 0 and info["chunks"] == 0 and "digest" not in info
    assert await natsgo.obj("get", uniq, "tiny.txt") is None
    assert sorted(o["name"] for o in await natsgo.obj("list", uniq)) == [
        "alias", "dir/from nats.go.bin", "empty", "whole"]


async def test_both_clients_refuse_data_that_does_not_match_the_digest(
        toolkit: Toolkit, natsgo: NatsGo, server: EmbeddedServer, uniq: str, tmp_path: Path) -> None:
    """The digest checks the tests above rely on are real: a record whose digest is wrong is refused."""
    await call(toolkit, "object_add", bucket=uniq)
    (tmp_path / "data.bin").write_bytes(os.urandom(300_000))
    await call(toolkit, "object_put", bucket=uniq, file="data.bin", name="natsop")
    await natsgo.obj("put", uniq, tmp_path / "data.bin", json.dumps({"name": "nats.go"}))
    wrong = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        for name in ("natsop", "nats.go"):
            subject = f"$O.{uniq}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
            msg = await nc.jetstream().get_last_msg(f"OBJ_{uniq}", subject)
            record = json.loads(msg.data)
            record["digest"] = wrong
            await nc.jetstream().publish(subject, json.dumps(record).encode(), headers={"Nats-Rollup": "sub"})
    finally:
        await nc.close()
    for name in ("natsop", "nats.go"):
        refused = await natsgo.fails("obj", "get", uniq, name)
        assert refused["name"] == "ErrDigestMismatch", refused
        mismatch = await _error(call(toolkit, "object_get", bucket=uniq, name=name, file=f"{name}.out"))
        assert mismatch.code == "digest_mismatch"
        assert not (tmp_path / f"{name}.out").exists()


# ---------------------------------------------------------------------------------------------- KV


async def test_nats_go_reads_kv_natsop_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str) -> None:
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

    status = await natsgo.kv("status", uniq)
    assert status["history"] == 5 and status["description"] == "natsop's bucket" and status["allow_direct"]
    assert status["stream"] == f"KV_{uniq}" and status["values"] == 6  # a.b x2, fresh, gone x2, wiped's marker

    entry = await natsgo.kv("get", uniq, "a.b")
    assert (entry["value"], entry["revision"], entry["operation"], entry["delta"]) == ("two ü", r2, "PUT", 0)
    natsop_entry = await call(toolkit, "kv_get", bucket=uniq, key="a.b")
    assert _to_micros(entry["created"]) == natsop_entry.created
    assert (await natsgo.kv("get", uniq, "a.b", r1))["value"] == "one"
    assert (await natsgo.kv("get", uniq, "fresh"))["revision"] == r3
    # nats.go's Get answers "not found" for a DEL or PURGE marker (ErrKeyNotFound), at a revision too;
    # its watch shows the markers themselves.
    assert await natsgo.kv("get", uniq, "gone") is None
    assert await natsgo.kv("get", uniq, "gone", r_del) is None
    assert await natsgo.kv("get", uniq, "wiped") is None
    latest = {e["key"]: (e["operation"], e["revision"], e["length"]) for e in await natsgo.kv("watch", uniq)}
    assert latest == {"a.b": ("PUT", r2, len("two ü".encode())), "fresh": ("PUT", r3, 3),
                      "gone": ("DEL", r_del, 0), "wiped": ("PURGE", r_purge, 0)}

    # Histories agree entry by entry, deltas included.
    history = await natsgo.kv("history", uniq, "a.b")
    assert [(e["revision"], e["operation"], e["value"], e["delta"]) for e in history] == [
        (r1, "PUT", "one", 1), (r2, "PUT", "two ü", 0)]
    ours = (await call(toolkit, "kv_history", bucket=uniq, key="a.b")).entries
    assert [(e.revision, e.operation, e.value.data, e.delta) for e in ours] == [
        (e["revision"], e["operation"], e["value"], e["delta"]) for e in history]
    assert [(e["operation"], e["value"]) for e in await natsgo.kv("history", uniq, "gone")] == [
        ("PUT", "x"), ("DEL", "")]
    # The purge's rollup removed the earlier values: only its marker is left.
    assert [e["operation"] for e in await natsgo.kv("history", uniq, "wiped")] == ["PURGE"]
    assert await natsgo.kv("keys", uniq) == ["a.b", "fresh"]
    assert await natsgo.kv("keys", uniq, "a.*") == ["a.b"]

    # nats.go's create succeeds over natsop's delete marker and is refused over a live key.
    revived = await natsgo.kv("create", uniq, "gone", "back")
    assert (await call(toolkit, "kv_get", bucket=uniq, key="gone")).revision == revived
    refused = await natsgo.fails("kv", "create", uniq, "fresh", "no")
    assert refused["code"] == WRONG_LAST_SEQUENCE and refused["name"] == "ErrKeyExists", refused


async def test_natsop_reads_kv_nats_go_writes_and_cas_conflicts(toolkit: Toolkit, natsgo: NatsGo,
                                                                uniq: str) -> None:
    made = await natsgo.kv("create-bucket", uniq, json.dumps({
        "history": 4, "ttl_ms": 3_600_000, "max_bytes": MiB, "max_value_size": 4096,
        "description": "nats.go's bucket"}))
    assert (made["history"], made["ttl_ms"], made["max_bytes"], made["max_value_size"]) == (4, 3_600_000, MiB, 4096)
    info = await call(toolkit, "kv_info", bucket=uniq)
    assert (info.history, info.ttl_s, info.max_bytes, info.max_value_size) == (4, 3600, MiB, 4096)
    assert info.description == "nats.go's bucket" and info.stream == f"KV_{uniq}"
    assert info.allow_direct == made["allow_direct"] is True

    r1 = await natsgo.kv("put", uniq, "k1", "v1")
    r2 = await natsgo.kv("put", uniq, "k1", "v2 ü")
    await natsgo.kv("create", uniq, "k2", "x")
    await natsgo.kv("delete", uniq, "k2")
    await natsgo.kv("put", uniq, "k3", "y")
    await natsgo.kv("purge", uniq, "k3")

    got = await call(toolkit, "kv_get", bucket=uniq, key="k1")
    assert (got.revision, got.operation, got.value.data, got.delta) == (r2, "PUT", "v2 ü", 0)
    assert got.created == _to_micros((await natsgo.kv("get", uniq, "k1"))["created"])
    assert (await call(toolkit, "kv_get", bucket=uniq, key="k1", revision=r1)).value.data == "v1"
    deleted = await _error(call(toolkit, "kv_get", bucket=uniq, key="k2"))
    assert deleted.code == "key_deleted"
    purged = await _error(call(toolkit, "kv_get", bucket=uniq, key="k3"))
    assert purged.code == "key_deleted" and purged.details["operation"] == "PURGE"
    hist = await call(toolkit, "kv_history", bucket=uniq, key="k1")
    assert [(e.revision, e.operation, e.value.data) for e in hist.entries] == [(r1, "PUT", "v1"), (r2, "PUT", "v2 ü")]
    assert [e.operation for e in (await call(toolkit, "kv_history", bucket=uniq, key="k2")).entries] == ["PUT", "DEL"]
    assert [e.operation for e in (await call(toolkit, "kv_history", bucket=uniq, key="k3")).entries] == ["PURGE"]
    listed = await call(toolkit, "kv_ls", bucket=uniq)
    assert listed.keys == ["k1"] and listed.deleted_skipped == 2

    # Compare-and-set across the two clients, each refusing the other's stale revision.
    r3 = (await call(toolkit, "kv_update", bucket=uniq, key="k1", value="by natsop", revision=r2)).revision
    stale = await natsgo.fails("kv", "update", uniq, "k1", "by nats.go", r2)
    assert stale["code"] == WRONG_LAST_SEQUENCE and str(r3) in stale["message"], stale
    r4 = await natsgo.kv("update", uniq, "k1", "by nats.go", r3)
    conflict = await _error(call(toolkit, "kv_update", bucket=uniq, key="k1", value="late", revision=r3))
    assert isinstance(conflict, Conflict) and conflict.code == "stale_revision"
    assert conflict.details["current_revision"] == r4
    assert f"revision {r4}" in conflict.message
    assert (await natsgo.kv("get", uniq, "k1"))["value"] == "by nats.go"

    # natsop's create over nats.go's delete marker; nats.go reads it.
    created = await call(toolkit, "kv_create", bucket=uniq, key="k2", value="again")
    entry = await natsgo.kv("get", uniq, "k2")
    assert (entry["value"], entry["revision"], entry["operation"]) == ("again", created.revision, "PUT")
    assert await natsgo.kv("keys", uniq) == ["k1", "k2"]
