"""Interoperability with nats.go, the reference Go client: the Object Store (ADR-20) and KV (ADR-8)
written by natsop are read by nats.go's ObjectStore and KeyValue, and what they write is read by natsop.

The scenarios are shared with the nats.js tests (tests/interop_scenarios.py); NatsGo says how to run
nats.go and where it differs. What only nats.go does here (its version, its links to a whole bucket,
its object bucket status) is tested in this file.

nats.go runs as a small Go program, tests/interop_go/main.go, one process per command, printing JSON.
It is built once per test session, offline, in GOPATH mode against the Debian packaged sources of
nats.go (golang-github-nats-io-go-nats-dev, nats.go 1.22.1 on Debian 12). Credentials reach it
through the environment only. A missing Go toolchain or missing sources fail the module rather
than skipping it.

Where nats.go 1.22.1 predates the current ADRs the tests pin what it does and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from natsop import EmbeddedServer, Toolkit
from tests import interop_scenarios as scenario
from tests.interop_scenarios import InteropClient, call, natsop_error

GO_DIR = Path(__file__).resolve().parent / "interop_go"
GOCODE = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources
NATS_GO_SRC = GOCODE / "src" / "github.com" / "nats-io" / "nats.go"
DEBIAN_PACKAGES = "golang-go golang-github-nats-io-go-nats-dev"


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


class NatsGo(InteropClient):
    """Runs the interop-go binary against the APP account of the session server."""

    name = "nats.go"
    time_resolution = timedelta(microseconds=1)  # it prints nanoseconds; natsop keeps microseconds
    mtime_from_record = False  # an object's `mtime` is the time of its metadata message
    # nats.go's KeyValue.Get answers ErrKeyNotFound for a DEL or PURGE marker (at a revision too);
    # its watch shows the markers themselves.
    kv_get_shows_markers = False
    key_exists_error = "ErrKeyExists"
    digest_mismatch_error = "ErrDigestMismatch"
    bucket_link_refusal = "link to a bucket"
    counts_blocks = False  # the program reads an object as one stream
    # nats.go 1.22.1's ObjectMeta has no `metadata`, so the program's put takes none.
    writes_object_metadata = False

    def __init__(self, binary: Path, server: EmbeddedServer) -> None:
        super().__init__(server)
        self.binary = binary
        about = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=self.timeout_s,
                               check=True)
        version = json.loads(about.stdout)["result"]
        self.version: str = version["version"]
        # ADR-20's object `metadata` came to nats.go after 1.22.1 (Debian 12's): an older nats.go
        # decodes records without it.
        self.knows_object_metadata = version["object_metadata"]

    def argv(self, family: str) -> list[str]:
        return [str(self.binary), family]

    def kv_bucket_options(self, *, description: str, history: int, ttl_ms: int, max_bytes: int,
                          max_value_size: int) -> dict[str, Any]:
        return {"description": description, "history": history, "ttl_ms": ttl_ms, "max_bytes": max_bytes,
                "max_value_size": max_value_size}

    def deleted_reply(self, chunks: int) -> Any:
        return None  # ObjectStore.Delete returns only an error


@pytest.fixture(scope="module")
def natsgo(natsgo_binary: Path, server: EmbeddedServer) -> Iterator[NatsGo]:
    yield NatsGo(natsgo_binary, server)


async def test_the_go_program_runs_nats_go(natsgo: NatsGo) -> None:
    major, minor, _patch = (int(part) for part in natsgo.version.split("."))
    assert (major, minor) >= (1, 22), natsgo.version  # written against 1.22.1, Debian 12's
    if natsgo.version == "1.22.1":
        assert not natsgo.knows_object_metadata
    usage = await natsgo.kv_fails()
    assert usage["name"] == "Usage" and "usage:" in usage["message"]


# ---------------------------------------------------------------------------------------- Object Store


async def test_nats_go_reads_objects_natsop_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str,
                                                   tmp_path: Path) -> None:
    # A chunk size that is neither natsop's default nor a power of two.
    await scenario.client_reads_objects_natsop_writes(toolkit, natsgo, uniq, tmp_path, chunk_size=100_003)
    # nats.go's bucket status says more than the scripts' nats.js status shows.
    status = await natsgo.obj("status", uniq)
    assert status["description"] == "written by natsop" and status["stream"] == f"OBJ_{uniq}"
    assert status["allow_direct"] and not status["sealed"]


async def test_natsop_reads_objects_nats_go_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str,
                                                   tmp_path: Path) -> None:
    await scenario.natsop_reads_objects_client_writes(toolkit, natsgo, uniq, tmp_path)


async def test_natsop_reads_bucket_links_nats_go_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str,
                                                        tmp_path: Path) -> None:
    """nats.go's link to a whole bucket (the nats.js script links to objects only) is read by natsop."""
    await natsgo.obj("create", uniq)
    (tmp_path / "tiny.txt").write_text("tiny, ü", encoding="utf-8")
    await natsgo.obj("put", uniq, tmp_path / "tiny.txt", json.dumps({"name": "tiny.txt"}))
    await natsgo.obj("link", uniq, "whole", uniq)
    whole = (await call(toolkit, "object_info", bucket=uniq, name="whole")).object
    assert whole.link is not None and whole.link.model_dump() == {"bucket": uniq, "name": None}
    refused = await natsop_error(call(toolkit, "object_get", bucket=uniq, name="whole"))
    assert refused.code == "link_to_bucket"
    listed = await call(toolkit, "object_ls", bucket=uniq)
    assert sorted((o.name, o.size, o.link) for o in listed.objects) == [
        ("tiny.txt", len("tiny, ü".encode()), None), ("whole", 0, f"{uniq}/")]
    assert not listed.truncated
    assert sorted(o["name"] for o in await natsgo.obj("list", uniq)) == ["tiny.txt", "whole"]


async def test_both_clients_refuse_data_that_does_not_match_the_digest(
        toolkit: Toolkit, natsgo: NatsGo, server: EmbeddedServer, uniq: str, tmp_path: Path) -> None:
    await scenario.both_clients_refuse_data_that_does_not_match_the_digest(toolkit, natsgo, server, uniq,
                                                                            tmp_path)


# ---------------------------------------------------------------------------------------------- KV


async def test_nats_go_reads_kv_natsop_writes(toolkit: Toolkit, natsgo: NatsGo, uniq: str) -> None:
    await scenario.client_reads_kv_natsop_writes(toolkit, natsgo, uniq)


async def test_natsop_reads_kv_nats_go_writes_and_cas_conflicts(toolkit: Toolkit, natsgo: NatsGo,
                                                                uniq: str) -> None:
    await scenario.natsop_reads_kv_client_writes_and_cas_conflicts(toolkit, natsgo, uniq)
