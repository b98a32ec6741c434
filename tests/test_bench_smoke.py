"""The benchmarks still run: each of bench/bench_{mcp_latency,startup,audit,publish}.py in its
tiny --smoke mode (a few calls against a real embedded server), and the report renders
from what they wrote, saying "not run" for the sections that have no results.

The four run at once, as separate processes, to keep this test to a few seconds of wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MINE = ("mcp_latency", "startup", "audit", "publish")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    procs = {}
    for name in MINE:
        procs[name] = subprocess.Popen(
            [sys.executable, str(BENCH / f"bench_{name}.py"), "--smoke", "--output", str(out / f"{name}.json")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"bench_{name}.py --smoke exited {proc.returncode}:\n{err[-3000:]}")
    assert not failures, "\n\n".join(failures)
    return out


def load(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    assert data["bench"] == name
    assert data["machine"]["cores"] and data["machine"]["python"] and data["timestamp"]
    return data


def test_mcp_latency_measures_every_layer(smoke_results: Path) -> None:
    data = load(smoke_results, "mcp_latency")
    assert set(data["ops"]) == {"server_info", "stream_info", "stream_get", "kv_get", "publish"}
    for op, r in data["ops"].items():
        for layer in ("nats_py", "toolkit", "mcp"):
            assert r[layer]["n"] == data["calls"] and r[layer]["median"] > 0, (op, layer)
        assert r["overhead_ms"] == pytest.approx(r["mcp"]["median"] - r["nats_py"]["median"], abs=1e-3)
        assert r["requests_per_call"]["nats_py"] >= 1 and r["requests_per_call"]["toolkit"] >= 1
    assert data["mcp_noop"]["median"] > 0
    # The smoke run profiles the server too, so that path is exercised.
    assert data["profile"]["tool_calls"] > 0 and data["profile"]["areas"]


def test_startup_times_every_kind_of_start(smoke_results: Path) -> None:
    data = load(smoke_results, "startup")
    for key in ("python_pass", "sdk_hello_initialize", "natsop_external_initialize",
                "natsop_embedded_initialize", "natsop_embedded_fresh_initialize", "embedded_server_start"):
        assert data["seconds"][key]["median"] > 0, key
    assert data["seconds"]["python_pass"]["median"] < data["seconds"]["natsop_external_initialize"]["median"]
    assert data["importtime_cli"]["modules"] > 10 and "natsop" in data["importtime_cli"]["by_package_ms"]
    assert data["profile_serve"]["shares"]


def test_audit_counts_requests_against_the_baseline(smoke_results: Path) -> None:
    data = load(smoke_results, "audit")
    (row,) = data["rows"]
    assert row["streams"] == 10 and row["consumers"] == 15
    assert row["stream_list_walk_requests"] == 1
    assert row["list_and_consumers_requests"] == 11
    assert row["audit_requests"] > row["list_and_consumers_requests"]


def test_publish_reports_both_paths(smoke_results: Path) -> None:
    data = load(smoke_results, "publish")
    for path in ("core", "jetstream"):
        r = data["paths"][path]
        assert r["nats_py"]["msgs_per_s"] > 0 and r["toolkit"]["msgs_per_s"] > 0 and r["mcp"]["msgs_per_s"] > 0


def test_report_renders_and_says_not_run(smoke_results: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    text = report.render(smoke_results)
    for title in ("MCP tool-call latency", "Start-up", "Audit", "Publish throughput"):
        assert f"## {title}" in text
    # No paging/object/backup results in the smoke directory: those sections say so.
    assert text.count("*Not run") == 3
    assert "| MCP per-call overhead over nats-py" in text
