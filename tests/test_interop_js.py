"""Interoperability with nats.js, an independent client: the Object Store (ADR-20) and KV (ADR-8)
written by natsop are read by @nats-io/obj and @nats-io/kv, and what they write is read by natsop.

The scenarios are shared with the nats.go tests (tests/interop_scenarios.py); NatsJs says how to run
nats.js and where it differs, and the non-ASCII object names that only nats.js gets wrong are tested
here.

nats.js runs as small Node scripts in tests/interop_js (pinned in its package-lock.json), one
process per command, printing JSON. Credentials reach them through the environment only.
Node and npm are required: a missing toolchain fails the module rather than skipping it.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from natsop import EmbeddedServer, Toolkit
from tests import interop_scenarios as scenario
from tests.interop_scenarios import InteropClient, call, natsop_error

JS_DIR = Path(__file__).resolve().parent / "interop_js"


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


class NatsJs(InteropClient):
    """Runs tests/interop_js/{kv,obj}.mjs against the APP account of the session server."""

    name = "nats.js"
    cwd = JS_DIR
    time_resolution = timedelta(milliseconds=1)  # JavaScript's Date
    # @nats-io/obj shows the `mtime` stored in the record, and stores its own clock's time there.
    mtime_from_record = True
    kv_get_shows_markers = True  # @nats-io/kv's get returns a DEL or PURGE marker as an entry
    key_exists_error = "JetStreamApiError"  # the server's error as it is; nats.js has no KeyExists error
    digest_mismatch_error = "Error"  # a plain Error: "received a corrupt object, digests do not match"
    bucket_link_refusal = "link is a bucket"
    counts_blocks = True  # obj.mjs reads the object's chunks one by one
    writes_object_metadata = True  # @nats-io/obj implements ADR-20's `metadata`
    knows_object_metadata = True

    def argv(self, family: str) -> list[str]:
        return ["node", f"{family}.mjs"]

    def kv_bucket_options(self, *, description: str, history: int, ttl_ms: int, max_bytes: int,
                          max_value_size: int) -> dict[str, Any]:
        return {"description": description, "history": history, "ttl": ttl_ms, "max_bytes": max_bytes,
                "maxValueSize": max_value_size}

    def deleted_reply(self, chunks: int) -> Any:
        # The stream's purge response: the object's chunks, purged.
        return {"type": "io.nats.jetstream.api.v1.stream_purge_response", "success": True, "purged": chunks}


@pytest.fixture(scope="module")
def natsjs(server: EmbeddedServer) -> Iterator[NatsJs]:
    _install_once()
    yield NatsJs(server)


# ---------------------------------------------------------------------------------------- Object Store


async def test_nats_js_reads_objects_natsop_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str,
                                                   tmp_path: Path) -> None:
    await scenario.client_reads_objects_natsop_writes(toolkit, natsjs, uniq, tmp_path)


async def test_natsop_reads_objects_nats_js_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str,
                                                   tmp_path: Path) -> None:
    await scenario.natsop_reads_objects_client_writes(toolkit, natsjs, uniq, tmp_path)


async def test_both_clients_refuse_data_that_does_not_match_the_digest(
        toolkit: Toolkit, natsjs: NatsJs, server: EmbeddedServer, uniq: str, tmp_path: Path) -> None:
    await scenario.both_clients_refuse_data_that_does_not_match_the_digest(toolkit, natsjs, server, uniq,
                                                                            tmp_path)


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
    missing = await natsop_error(call(toolkit, "object_info", bucket=uniq, name="é.txt"))
    assert missing.code == "object_not_found"
    refused = await natsjs.obj_fails("put", uniq, tmp_path / "v", json.dumps({"name": "日本.txt"}))
    assert "Invalid character" in refused["message"], refused


# ---------------------------------------------------------------------------------------------- KV


async def test_nats_js_reads_kv_natsop_writes(toolkit: Toolkit, natsjs: NatsJs, uniq: str) -> None:
    await scenario.client_reads_kv_natsop_writes(toolkit, natsjs, uniq)


async def test_natsop_reads_kv_nats_js_writes_and_cas_conflicts(toolkit: Toolkit, natsjs: NatsJs,
                                                                uniq: str) -> None:
    await scenario.natsop_reads_kv_client_writes_and_cas_conflicts(toolkit, natsjs, uniq)
