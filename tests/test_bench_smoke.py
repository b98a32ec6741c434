"""The benchmarks still run: each bench/bench_<name>.py in its tiny --smoke mode (a few
calls against a real embedded server), and the report renders from what they wrote:
a provenance line under every section heading, the plots, and a header that claims only
what holds for every section.

The benchmarks run at once, as separate processes, to keep this test to a few seconds of wall time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
ALL = ("mcp_latency", "startup", "paging", "object", "backup", "audit", "publish")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    procs = {}
    for name in ALL:
        procs[name] = subprocess.Popen(
            [sys.executable, str(BENCH / f"bench_{name}.py"), "--smoke", "--output", str(out / f"{name}.json")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"bench_{name}.py --smoke exited {proc.returncode}:\n{err[-3000:]}")
    assert not failures, "\n\n".join(failures)
    return out


@pytest.fixture(scope="module")
def report() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import report as module  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    yield module


def load(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    assert data["bench"] == name
    assert data["machine"]["cores"] and data["machine"]["python"] and data["timestamp"]
    return data


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def is_ancestor(commit: str, of: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, of], cwd=REPO).returncode == 0


def test_every_result_records_its_provenance(smoke_results: Path) -> None:
    for name in ALL:
        p = load(smoke_results, name)["provenance"]
        # The commit checked out when it ran (others may have committed since).
        assert is_ancestor(p["commit"], "HEAD"), (name, p["commit"])
        assert isinstance(p["uncommitted"], list), name
        assert p["started"] <= p["finished"] and p["seconds"] > 0, name
        assert len(p["load_avg_before"]) == 3 and len(p["load_avg_after"]) == 3, name
        assert p["other_cpu_cores"] >= 0 and isinstance(p["quiet"], bool), name
        assert p["argv"][0] == f"bench_{name}.py" and "--smoke" in p["argv"], name


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


def test_paging_times_the_same_request_raw(smoke_results: Path) -> None:
    data = load(smoke_results, "paging")
    assert [r["size"] for r in data["rows"]] == [1000, 10000]
    for r in data["rows"]:
        for key in ("direct_get_middle_filtered_ms", "raw_batch_middle_ms", "raw_batch_middle_filtered_ms",
                    "raw_stream_info_ms", "msg_get_middle_filtered_ms"):
            assert r[key] > 0, key
        assert r["ratio_natsop_to_raw_middle_filtered"] == pytest.approx(
            r["direct_get_middle_filtered_ms"] / r["raw_batch_middle_filtered_ms"], abs=0.01)


def test_object_keeps_every_run(smoke_results: Path) -> None:
    data = load(smoke_results, "object")
    (row,) = data["results"]
    for key in ("natsop_put", "natsop_get", "natspy_put", "natspy_get"):
        r = row[key]
        assert len(r["runs"]) == row["repeats"] == 1
        assert r["mib_per_s_min"] <= r["mib_per_s"] <= r["mib_per_s_max"]
        assert r["peak_rss_mib"] == pytest.approx(max(x["peak_rss"] for x in r["runs"]) / 1024 / 1024, abs=0.06)
    assert len(row["put_pair_ratios"]) == 1


def test_backup_says_where_the_time_goes(smoke_results: Path) -> None:
    data = load(smoke_results, "backup")
    backup = data["rows"][0]
    assert backup["operation"] == "stream_backup" and backup["pair_ratios"]
    for who in ("natsop", "bare"):
        b = backup[f"{who}_breakdown"]
        # Every counter applied: natsop's snapshot loop was wrapped without changing natsop.
        assert "not_instrumented" not in b, b
        assert b["wait_for_chunks_s"] > 0 and b["write_s"] > 0 and b["fsync_s"] > 0 and b["cpu_s"] > 0, (who, b)
        assert b["snapshot_loop_s"] <= b["wall_s"] and b["chunks"] >= 1, (who, b)
    assert data["runs"]["natsop_restore"][0]["times"]["check_archive_s"] > 0


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


def sections(text: str) -> dict[str, str]:
    """Section title -> its text up to the next section."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)


def test_report_gives_provenance_and_plots(smoke_results: Path, report: ModuleType) -> None:
    text = report.render(smoke_results)
    found = sections(text)
    head = git_head()
    for name, (title, _script) in report.SECTIONS.items():
        commit = load(smoke_results, name)["provenance"]["commit"]
        first = found[title].strip().splitlines()[0]
        # One provenance line right under the heading: command, when, commit, load, conditions.
        assert first.startswith(f"<sub>Provenance: `bench/bench_{name}.py --smoke"), (title, first)
        assert f"commit {commit}" in first, (title, first)
        assert ("older code" in first) == (commit != head), (title, first)
        assert "load average" in first and "→" in first and "other processes used" in first, (title, first)
        assert re.search(rf"Code measured: [^\n]*commit {commit} for ", text), commit
    assert "*Not run" not in text and "*Failed" not in text
    # The header: no bench/run.py record here.
    assert "No `bench/run.py` record" in text
    blocks = mermaid_blocks(text)
    assert len(blocks) == 2, blocks
    for block in blocks:
        assert "xychart-beta" in block and "plotColorPalette" in block
        labels = re.search(r"x-axis .*\[(.*)\]", block)
        assert labels, block
        n = len(labels.group(1).split(","))
        series = re.findall(r"^\s+(?:line|bar) \[(.*)\]$", block, flags=re.M)
        assert series and all(len(s.split(",")) == n for s in series), block
    assert "stream_view page time by stream size" in blocks[1] and '["1k", "10k"]' in blocks[1]
    assert 'x-axis "tool" ["server_info", "stream_info", "stream_get", "kv_get", "publish"]' in blocks[0]
    paging = found["Paging: stream_view page time by stream size"]
    assert "raw filtered" in paging and "natsop / raw" in paging
    assert "### Where a backup's time goes" in text and "waiting for the next chunk" in text
    assert "| MCP per-call overhead over nats-py" in text


def oldest_commit() -> str:
    return subprocess.run(["git", "rev-list", "--max-parents=0", "--abbrev-commit", "HEAD"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split()[0]


def test_report_says_when_sections_differ(smoke_results: Path, report: ModuleType, tmp_path: Path) -> None:
    """Sections from an earlier run, older code or a busy machine are marked; the header claims nothing for all."""
    results = tmp_path / "results"
    shutil.copytree(smoke_results, results)
    old = oldest_commit()
    paging = json.loads((results / "paging.json").read_text())
    paging["provenance"]["commit"] = old
    (results / "paging.json").write_text(json.dumps(paging))
    backup = json.loads((results / "backup.json").read_text())
    backup["provenance"].update(other_cpu_cores=1.5, quiet=False)
    (results / "backup.json").write_text(json.dumps(backup))
    # A run.py record in which only mcp_latency ran; the others are reused from an earlier full run.
    latency = json.loads((results / "mcp_latency.json").read_text())["provenance"]
    run = {"mode": "quick", "started": latency["started"], "finished": latency["finished"], "seconds": 12.0,
           "machine": {}, "ran": ["mcp_latency"],
           "sections": {"mcp_latency": {"status": "ok", "mode": "quick", "args": ["--quick"],
                                        "finished": latency["finished"]},
                        **{name: {"status": "earlier", "mode": "full", "args": [],
                                  "finished": "2000-01-01T00:00:00Z"} for name in ALL if name != "mcp_latency"}}}
    (results / "run.json").write_text(json.dumps(run))
    text = report.render(results)
    found = sections(text)
    line = found["Paging: stream_view page time by stream size"].strip().splitlines()[0]
    assert f"commit {old}" in line and "**older code:" in line and f"older than this report's {git_head()}" in line
    assert "an earlier run (full), reused" in line
    assert "**a busy machine**" in found["Backup and restore"].strip().splitlines()[0]
    assert "this run (quick)" in found["MCP tool-call latency"].strip().splitlines()[0]
    assert "ran MCP latency; the other sections reuse results of earlier runs: start-up (full run, " in text
    assert "Measured on code older than this report's commit: paging" in text
    busy = re.search(r"\*\*busy\*\* for ([^;(]+)", text)
    assert busy and "backup/restore" in busy.group(1), text[:3000]
    assert "otherwise quiet machine" not in text


def test_paging_cause_needs_the_raw_request(report: ModuleType) -> None:
    """The report blames the server for a step only when the raw request shows it too."""
    def rows(ours: tuple[float, float], raw: tuple[float, float] | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for size, a, b in ((1000, ours[0], raw[0] if raw else None), (10_000_000, ours[1], raw[1] if raw else None)):
            row: dict[str, Any] = {"size": size, "direct_get_middle_filtered_ms": a}
            if b is not None:
                row["raw_batch_middle_filtered_ms"] = b
            out.append(row)
        return out

    key = "direct_get_middle_filtered"
    assert "not established" in report._paging_cause(rows((1.3, 2.6), None), key)
    assert "in the server" in report._paging_cause(rows((1.3, 2.6), (0.8, 2.1)), key)
    assert "growth is natsop's" in report._paging_cause(rows((1.3, 2.6), (0.8, 0.85)), key)
    assert "both grow" in report._paging_cause(rows((1.3, 3.6), (0.8, 1.5)), key)
