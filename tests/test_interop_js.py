"""Interoperability with nats.js, an independent client: the Object Store (ADR-20) and KV (ADR-8)
written by natsop are read by @nats-io/obj and @nats-io/kv, and what they write is read by natsop.

nats.js runs as small Node scripts in tests/interop_js (pinned in its package-lock.json), one
process per command, printing JSON. Credentials reach them through the environment only.
Node and npm are required: a missing toolchain fails the module rather than skipping it.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.errors import Conflict, NatsopError

JS_DIR = Path(__file__).resolve().parent / "interop_js"
MiB = 1024 * 1024
NODE_TIMEOUT_S = 60.0
WRONG_LAST_SEQUENCE = 10071  # JSStreamWrongLastSequenceErrF


def _install_once() -> None:
    """`npm ci` in tests/interop_js when node_modules is missing or older than package-lock.json."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.fail("the nats.js interop tests need Node.js and npm on PATH "
                    f"(node: {node or 'missing'}, npm: {npm or 'missing'}); install Node 20+ with npm",
                    pytrace=False)
    lock = JS_DIR / "package-lock.json"
    modules = JS_DIR / "node_modules"
    # npm writes node_modules/.package-lock.json at the end of an install: its age is the install's.
    # Other test runs may share this tree: one installs while the others wait.
    with (JS_DIR / "package.json").open("rb") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            stamp = modules / ".package-lock.json"
            if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
                return
            started = time.monotonic()
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=JS_DIR,
                                  capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                pytest.fail(f"`npm ci` in {JS_DIR} failed ({done.returncode}):\n{done.stderr[-3000:]}",
                            pytrace=False)
            print(f"npm ci in {JS_DIR}: {time.monotonic() - started:.1f}s")
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


class NodeFailed(AssertionError):
    """A nats.js command that was expected to succeed failed."""


class NatsJs:
    """Runs tests/interop_js/{kv,obj}.mjs against the APP account of the session server."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.env = {**os.environ, "NATS_URL": server.url, "NATS_USER": server.app.user,
                    "NATS_PASSWORD": server.app.password}

    async def _run(self, script: str, args: tuple[Any, ...]) -> dict[str, Any]:
        argv = [str(a) for a in args]
        proc = await asyncio.create_subprocess_exec(
            "node", script, *argv, cwd=JS_DIR, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise AssertionError(f"node {script} {argv} did not finish in {NODE_TIMEOUT_S}s") from None
        try:
            doc: dict[str, Any] = json.loads(out)
        except ValueError:
            raise AssertionError(f"node {script} {argv} exited {proc.returncode} without JSON:\n"
                                 f"stdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
        assert (proc.returncode == 0) == doc["ok"], (proc.returncode, doc, err)
        return doc

    async def ok(self, script: str, *args: Any) -> Any:
        doc = await self._run(script, args)
        if not doc["ok"]:
            raise NodeFailed(f"node {script} {list(args)}: {doc['error']}")
        return doc["result"]

    async def fails(self, script: str, *args: Any) -> dict[str, Any]:
        doc = await self._run(script, args)
        assert not doc["ok"], f"node {script} {list(args)} succeeded: {doc['result']}"
        error: dict[str, Any] = doc["error"]
        return error

    async def obj(self, *args: Any) -> Any:
        return await self.ok("obj.mjs", *args)

    async def kv(self, *args: Any) -> Any:
        return await self.ok("kv.mjs", *args)


@pytest.fixture(scope="module")
def natsjs(server: EmbeddedServer) -> Iterator[NatsJs]:
    _install_once()
    yield NatsJs(server)


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


# ---------------------------------------------------------------------------------------- Object Store


async def test_nats_js_reads_objects_natsop_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str,
                                                   tmp_path: Path) -> None:
    links = f"{uniq}_L"
    await call(toolkit, "object_add", bucket=uniq, description="written by natsop")
    await call(toolkit, "object_add", bucket=links)
    big_size = 3 * MiB + 5
    big_sha, big_digest = _random_file(tmp_path / "big.bin", big_size)
    big = (await call(toolkit, "object_put", bucket=uniq, file="big.bin", metadata={"kind": "random"})).object
    assert big.size == big_size and big.digest == big_digest and big.chunks == math.ceil(big_size / (128 * 1024))
    text = "hello from natsop, ü\n"
    # A name with '/' and a space, 17 bytes: its metadata subject is base64url ending in '=' padding.
    small_name = "notes/one two.txt"
    small = (await call(toolkit,
        "object_put", bucket=uniq, name=small_name, data=text, description="a small text",
        headers={"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]},
        metadata={"owner": "ops", "n": "1"})).object
    await call(toolkit, "object_link", bucket=links, name="alias", target_bucket=uniq, target_name=small_name)

    info = await natsjs.obj("info", uniq, "big.bin")
    assert (info["size"], info["digest"], info["chunks"], info["nuid"]) == (big_size, big_digest, big.chunks, big.nuid)
    assert info["metadata"] == {"kind": "random"} and info["deleted"] is False and info["is_link"] is False
    assert info["options"]["max_chunk_size"] == big.max_chunk_size == 128 * 1024
    info = await natsjs.obj("info", uniq, small_name)
    assert (info["size"], info["digest"], info["chunks"]) == (len(text.encode()), small.digest, 1)
    assert info["description"] == "a small text" and info["metadata"] == {"owner": "ops", "n": "1"}
    assert info["headers"] == {"Content-Type": ["text/plain"], "X-Multi": ["a", "b"]}

    # nats.js checks the digest while reading; a mismatch would fail the command.
    got = await natsjs.obj("get", uniq, "big.bin")
    assert (got["size"], got["sha256"]) == (big_size, big_sha) and got["blocks"] == big.chunks
    out = tmp_path / "small.js.out"
    got = await natsjs.obj("get", uniq, small_name, out)
    assert out.read_bytes() == text.encode() and got["sha256"] == _sha(text.encode())
    # nats.js follows natsop's link (to another bucket) to the same bytes.
    link = await natsjs.obj("info", links, "alias")
    assert link["is_link"] and link["options"]["link"] == {"bucket": uniq, "name": small_name}
    got = await natsjs.obj("get", links, "alias")
    assert got["sha256"] == _sha(text.encode()) and got["info"]["name"] == small_name

    listed = await natsjs.obj("list", uniq)
    assert sorted((o["name"], o["size"]) for o in listed) == sorted([("big.bin", big_size),
                                                                     (small_name, len(text.encode()))])

    # nats.js deletes natsop's object: natsop sees the marker, and the chunks are gone.
    purged = await natsjs.obj("delete", uniq, "big.bin")
    assert (purged["success"], purged["purged"]) == (True, big.chunks)
    gone = await _error(call(toolkit, "object_get", bucket=uniq, name="big.bin"))
    assert gone.code == "object_deleted"
    marker = (await call(toolkit, "object_info", bucket=uniq, name="big.bin", show_deleted=True)).object
    assert marker.deleted and marker.size == 0 and marker.chunks == 0
    names = [o.name for o in (await call(toolkit, "object_ls", bucket=uniq)).objects]
    assert names == [small_name]
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.size < 4096, bucket  # only the two metadata records and one small chunk remain


async def test_natsop_reads_objects_nats_js_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str,
                                                   tmp_path: Path) -> None:
    status = await natsjs.obj("create", uniq, json.dumps({"description": "made by nats.js"}))
    assert status["bucket"] == uniq
    bucket = (await call(toolkit, "object_info", bucket=uniq)).bucket_info
    assert bucket.description == "made by nats.js" and not bucket.sealed

    chunk = 40_000  # not a power of two, and not natsop's default
    size = MiB + 333
    sha, digest = _random_file(tmp_path / "js-src.bin", size)
    put = await natsjs.obj("put", uniq, tmp_path / "js-src.bin", json.dumps({
        "name": "dir/from nats.js.bin", "description": "written by nats.js", "max_chunk_size": chunk,
        "metadata": {"origin": "nats.js"}, "headers": {"X-Origin": ["nats.js"], "X-Two": ["1", "2"]}}))
    assert put["digest"] == digest and put["chunks"] == math.ceil(size / chunk)

    obj = (await call(toolkit, "object_info", bucket=uniq, name="dir/from nats.js.bin")).object
    assert (obj.size, obj.chunks, obj.digest, obj.nuid) == (size, put["chunks"], digest, put["nuid"])
    assert obj.max_chunk_size == chunk and obj.description == "written by nats.js"
    assert obj.metadata == {"origin": "nats.js"}
    assert obj.headers == {"X-Origin": ["nats.js"], "X-Two": ["1", "2"]}
    assert obj.modified and not obj.deleted and obj.link is None

    got = await call(toolkit, "object_get", bucket=uniq, name="dir/from nats.js.bin", file="copy.bin")
    assert got.digest_verified and got.size == size and Path(got.file) == tmp_path / "copy.bin"
    assert _sha((tmp_path / "copy.bin").read_bytes()) == sha

    # A small one and an empty one (nats.js stores no chunk for it), read inline.
    (tmp_path / "tiny.txt").write_text("tiny, ü", encoding="utf-8")
    await natsjs.obj("put", uniq, tmp_path / "tiny.txt", json.dumps({"name": "tiny.txt"}))
    (tmp_path / "empty").write_bytes(b"")
    empty = await natsjs.obj("put", uniq, tmp_path / "empty", json.dumps({"name": "empty"}))
    assert empty["chunks"] == 0 and empty["size"] == 0
    got = await call(toolkit, "object_get", bucket=uniq, name="tiny.txt")
    assert got.digest_verified and got.payload.data == "tiny, ü" and got.payload.encoding == "utf-8"
    got = await call(toolkit, "object_get", bucket=uniq, name="empty")
    assert got.digest_verified and got.size == 0 and got.payload.data == ""

    # nats.js's link record (no nuid, no size, no rollup header) is followed by natsop.
    await natsjs.obj("link", uniq, "alias", uniq, "tiny.txt")
    alias = (await call(toolkit, "object_info", bucket=uniq, name="alias")).object
    assert alias.link is not None and alias.link.model_dump() == {"bucket": uniq, "name": "tiny.txt"}
    got = await call(toolkit, "object_get", bucket=uniq, name="alias")
    assert got.payload.data == "tiny, ü" and got.link_from == f"{uniq}/alias" and got.object.name == "tiny.txt"

    listed = await call(toolkit, "object_ls", bucket=uniq)
    assert sorted((o.name, o.size, o.link) for o in listed.objects) == [
        ("alias", 0, f"{uniq}/tiny.txt"), ("dir/from nats.js.bin", size, None), ("empty", 0, None),
        ("tiny.txt", len("tiny, ü".encode()), None)]
    assert not listed.truncated

    # natsop deletes a nats.js object: nats.js sees it deleted.
    await call(toolkit, "object_del", bucket=uniq, name="tiny.txt", confirm=f"{uniq}/tiny.txt")
    info = await natsjs.obj("info", uniq, "tiny.txt")
    assert info["deleted"] is True and info["size"] == 0
    assert await natsjs.obj("get", uniq, "tiny.txt") is None
    assert sorted(o["name"] for o in await natsjs.obj("list", uniq)) == ["alias", "dir/from nats.js.bin", "empty"]


async def test_non_ascii_object_names_diverge_in_nats_js(toolkit: Toolkit, natsjs: NatsJs, uniq: str,
                                                         tmp_path: Path) -> None:
    """A known nats.js divergence, pinned so that an upgrade that fixes it is noticed.

    ADR-20 names the metadata subject by base64url of the name's bytes; nats.go, nats-py and natsop
    take the UTF-8 bytes. nats.js 3.x encodes the name with btoa(): Latin-1 bytes for U+0080-U+00FF
    (another subject), and an error above U+00FF. ASCII names interoperate (the tests above).
    """
    await call(toolkit, "object_add", bucket=uniq)
    await call(toolkit, "object_put", bucket=uniq, name="ü.txt", data="utf-8 name")
    assert await natsjs.obj("info", uniq, "ü.txt") is None  # nats.js looks on the Latin-1 subject
    (tmp_path / "v").write_text("latin-1 name")
    await natsjs.obj("put", uniq, tmp_path / "v", json.dumps({"name": "é.txt"}))
    listed = sorted(o.name for o in (await call(toolkit, "object_ls", bucket=uniq)).objects)
    assert listed == ["é.txt", "ü.txt"]  # the record's name is right; only its subject differs
    missing = await _error(call(toolkit, "object_info", bucket=uniq, name="é.txt"))
    assert missing.code == "object_not_found"
    refused = await natsjs.fails("obj.mjs", "put", uniq, tmp_path / "v", json.dumps({"name": "日本.txt"}))
    assert "Invalid character" in refused["message"], refused


# ---------------------------------------------------------------------------------------------- KV


async def test_nats_js_reads_kv_natsop_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str) -> None:
    await call(toolkit, "kv_add", bucket=uniq, history=5, description="natsop's bucket")
    r1 = (await call(toolkit, "kv_put", bucket=uniq, key="a.b", value="one")).revision
    r2 = (await call(toolkit, "kv_update", bucket=uniq, key="a.b", value="two ü", revision=r1)).revision
    r3 = (await call(toolkit, "kv_create", bucket=uniq, key="fresh", value="new")).revision
    await call(toolkit, "kv_put", bucket=uniq, key="gone", value="x")
    r_del = (await call(toolkit, "kv_del", bucket=uniq, key="gone")).revision
    await call(toolkit, "kv_put", bucket=uniq, key="wiped", value="y1")
    await call(toolkit, "kv_put", bucket=uniq, key="wiped", value="y2")
    await call(toolkit, "kv_purge", bucket=uniq, key="wiped", confirm="wiped")

    status = await natsjs.kv("status", uniq)
    assert status["history"] == 5 and status["description"] == "natsop's bucket" and status["allow_direct"]

    entry = await natsjs.kv("get", uniq, "a.b")
    assert (entry["value"], entry["revision"], entry["operation"]) == ("two ü", r2, "PUT")
    natsop_entry = await call(toolkit, "kv_get", bucket=uniq, key="a.b")
    assert datetime.fromisoformat(entry["created"]) == natsop_entry.created.replace(
        microsecond=natsop_entry.created.microsecond // 1000 * 1000)  # nats.js keeps milliseconds
    assert (await natsjs.kv("get", uniq, "a.b", r1))["value"] == "one"
    assert (await natsjs.kv("get", uniq, "fresh"))["revision"] == r3
    deleted = await natsjs.kv("get", uniq, "gone")
    assert (deleted["operation"], deleted["revision"], deleted["length"]) == ("DEL", r_del, 0)
    assert (await natsjs.kv("get", uniq, "wiped"))["operation"] == "PURGE"

    history = await natsjs.kv("history", uniq, "a.b")
    assert [(e["revision"], e["operation"], e["value"]) for e in history] == [(r1, "PUT", "one"),
                                                                            (r2, "PUT", "two ü")]
    assert [(e["operation"], e["value"]) for e in await natsjs.kv("history", uniq, "gone")] == [
        ("PUT", "x"), ("DEL", "")]
    # The purge's rollup removed the earlier values: only its marker is left.
    assert [e["operation"] for e in await natsjs.kv("history", uniq, "wiped")] == ["PURGE"]
    assert await natsjs.kv("keys", uniq) == ["a.b", "fresh"]
    assert await natsjs.kv("keys", uniq, "a.*") == ["a.b"]

    # nats.js's create succeeds over natsop's delete marker and is refused over a live key.
    revived = await natsjs.kv("create", uniq, "gone", "back")
    assert (await call(toolkit, "kv_get", bucket=uniq, key="gone")).revision == revived
    refused = await natsjs.fails("kv.mjs", "create", uniq, "fresh", "no")
    assert refused["code"] == WRONG_LAST_SEQUENCE


async def test_natsop_reads_kv_nats_js_writes_and_cas_conflicts(toolkit: Toolkit, natsjs: NatsJs,
                                                                uniq: str) -> None:
    made = await natsjs.kv("create-bucket", uniq, json.dumps({
        "history": 4, "ttl": 3_600_000, "max_bytes": MiB, "maxValueSize": 4096, "description": "nats.js's bucket"}))
    assert (made["history"], made["ttl_ms"], made["max_bytes"]) == (4, 3_600_000, MiB)
    info = await call(toolkit, "kv_info", bucket=uniq)
    assert (info.history, info.ttl_s, info.max_bytes, info.max_value_size) == (4, 3600, MiB, 4096)
    assert info.description == "nats.js's bucket" and info.stream == f"KV_{uniq}"
    assert info.allow_direct == made["allow_direct"]

    r1 = await natsjs.kv("put", uniq, "k1", "v1")
    r2 = await natsjs.kv("put", uniq, "k1", "v2 ü")
    await natsjs.kv("create", uniq, "k2", "x")
    await natsjs.kv("delete", uniq, "k2")
    await natsjs.kv("put", uniq, "k3", "y")
    await natsjs.kv("purge", uniq, "k3")

    got = await call(toolkit, "kv_get", bucket=uniq, key="k1")
    assert (got.revision, got.operation, got.value.data, got.delta) == (r2, "PUT", "v2 ü", 0)
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
    stale = await natsjs.fails("kv.mjs", "update", uniq, "k1", "by nats.js", r2)
    assert stale["code"] == WRONG_LAST_SEQUENCE and str(r3) in stale["message"], stale
    r4 = await natsjs.kv("update", uniq, "k1", "by nats.js", r3)
    conflict = await _error(call(toolkit, "kv_update", bucket=uniq, key="k1", value="late", revision=r3))
    assert isinstance(conflict, Conflict) and conflict.code == "stale_revision"
    assert conflict.details["current_revision"] == r4
    assert f"revision {r4}" in conflict.message
    assert (await natsjs.kv("get", uniq, "k1"))["value"] == "by nats.js"

    # natsop's create over nats.js's delete marker; nats.js reads it.
    created = await call(toolkit, "kv_create", bucket=uniq, key="k2", value="again")
    entry = await natsjs.kv("get", uniq, "k2")
    assert (entry["value"], entry["revision"], entry["operation"]) == ("again", created.revision, "PUT")
    assert await natsjs.kv("keys", uniq) == ["k1", "k2"]
