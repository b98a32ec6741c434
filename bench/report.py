"""Render docs/benchmarks.md from the JSON the benchmarks wrote (bench/results/*.json).

    python bench/report.py [--results DIR] [--out FILE]

bench/run.py calls `render()` after running the benchmarks; this entry point
re-renders from existing results without running anything. A section whose results
file is missing says "not run"; one whose run failed says so with the log's tail.

Under every section heading a one-line provenance says where its figures come from:
the run (this one, or an earlier one reused), the commit the code was at (and whether it
is older than the commit the report is rendered at), when, the load average before and
after and whether other work shared the machine. The header claims only what holds for
every section. Curves are drawn as Mermaid `xychart-beta` blocks, which GitHub renders.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import QUIET_OTHER_CORES, REPO, RESULTS_DIR

DOC = REPO / "docs" / "benchmarks.md"
MB = 1_000_000
MiB = 1024 * 1024
PAGING_TARGET = 1.2
OBJECT_THROUGHPUT_TARGET = 0.9
RSS_TARGET_MB = 100

# How the header names a section in its lists.
SHORT = {"mcp_latency": "MCP latency", "startup": "start-up", "paging": "paging", "object": "object store",
         "backup": "backup/restore", "audit": "audit", "publish": "publish"}
# Section name -> (title, script). The order is the report's.
SECTIONS: dict[str, tuple[str, str]] = {
    "mcp_latency": ("MCP tool-call latency", "bench_mcp_latency.py"),
    "startup": ("Start-up", "bench_startup.py"),
    "paging": ("Paging: stream_view page time by stream size", "bench_paging.py"),
    "object": ("Object Store transfer", "bench_object.py"),
    "backup": ("Backup and restore", "bench_backup.py"),
    "audit": ("Audit", "bench_audit.py"),
    "publish": ("Publish throughput (count=N)", "bench_publish.py"),
}


# --- formatting ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    right = right or [i > 0 for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "**met**" if ok else "**missed**"


def num(v: float | int | None) -> str:
    return "-" if v is None else f"{v:,}"


# --- sections ------------------------------------------------------------------------------------

class Targets(list[tuple[str, str, bool | None]]):
    """(target, measured, met) rows for the summary, notes on where the time goes, and figures of one run."""

    def __init__(self) -> None:
        super().__init__()
        self.findings: list[str] = []
        self.single_runs: list[str] = []


# --- plots ---------------------------------------------------------------------------------------

# xychart-beta draws no legend: the colours are fixed here and named in a line under each chart.
PALETTE: list[tuple[str, str]] = [("blue", "#1f77b4"), ("orange", "#ff7f0e"), ("green", "#2ca02c"),
                                  ("red", "#d62728"), ("purple", "#9467bd"), ("grey", "#7f7f7f")]


@dataclass
class Series:
    kind: str  # "line" or "bar"
    label: str
    values: list[float]


def _plain(v: float) -> str:
    """A number as Mermaid reads it: no exponent, no thousands separator."""
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _axis_top(v: float) -> float:
    """A round number at or above v (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten)."""
    if v <= 0:
        return 1.0
    e = 10.0 ** math.floor(math.log10(v))
    return next(round(m * e, 12) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * e >= v * (1 - 1e-9))


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def xychart(title: str, x_title: str, labels: Sequence[str], y_title: str, series: Sequence[Series]) -> str:
    """A Mermaid xychart-beta block (GitHub renders it) and a legend line naming each series' colour."""
    series = [s for s in series if len(s.values) == len(labels)]
    if not series or not labels:
        return ""
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    top = _axis_top(max(max(s.values) for s in series) * 1.1)
    block = ["```mermaid", "---", "config:", "  themeVariables:", "    xyChart:",
             f"      plotColorPalette: {_quote(', '.join(code for _, code in colors))}", "---",
             "xychart-beta", f"  title {_quote(title)}",
             f"  x-axis {_quote(x_title)} [{', '.join(_quote(label) for label in labels)}]",
             f"  y-axis {_quote(y_title)} 0 --> {_plain(top)}"]
    block += [f"  {s.kind} [{', '.join(_plain(v) for v in s.values)}]" for s in series]
    block.append("```")
    bars = sum(1 for s in series if s.kind == "bar")
    legend = ("*" + ("Bars of one tool are drawn over one another, the first listed at the back. " if bars > 1 else "")
              + "; ".join(f"{name} {s.kind}: {s.label}" for (name, _), s in zip(colors, series, strict=True)) + ".*")
    return "\n".join(block) + "\n\n" + legend


def size_label(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n:,}"


def mcp_latency(d: dict[str, Any], targets: Targets) -> str:
    ops = d["ops"]
    rows = []
    for op, r in ops.items():
        req = r["requests_per_call"]
        rows.append([
            f"`{op}`", f"{ms(r['nats_py']['median'])} ({ms(r['nats_py']['p95'])})",
            f"{ms(r['toolkit']['median'])} ({ms(r['toolkit']['p95'])})",
            f"{ms(r['mcp']['median'])} ({ms(r['mcp']['p95'])})",
            f"{r['overhead_ms']:+.3f}", x(r["ratio_mcp_to_nats_py"]), f"{r['ops_layer_ms']:+.3f}",
            f"{r['mcp_layer_ms']:+.3f}", _signed(r.get("beyond_sdk_floor_ms")),
            f"{req['toolkit']:g} / {req['nats_py']:g}", verdict(r["target_met"])])
    worst = max(ops.items(), key=lambda kv: kv[1]["overhead_ms"])
    best = min(ops.items(), key=lambda kv: kv[1]["overhead_ms"])
    met = sum(1 for r in ops.values() if r["target_met"])
    targets.append((f"MCP per-call overhead over nats-py ≤ {d['target_ms']} ms (median)",
                    f"{met} of {len(ops)} tools; {best[0]} {best[1]['overhead_ms']:+.2f} ms … "
                    f"{worst[0]} {worst[1]['overhead_ms']:+.2f} ms", d["all_targets_met"]))
    noop = d["mcp_noop"]
    noop_ours = d.get("mcp_noop_natsop_stdio")
    prof = d.get("profile") or {}
    if not d["all_targets_met"]:
        note = (f"MCP call overhead: the bare SDK's own stdio round trip is {ms(noop['median'])} ms; "
                f"natsop's operations layer adds {min(r['ops_layer_ms'] for r in ops.values()):+.2f} to "
                f"{max(r['ops_layer_ms'] for r in ops.values()):+.2f} ms over nats-py")
        stages = prof.get("stages") or {}
        if stages:
            top = max(stages.items(), key=lambda kv: kv[1]["share"])
            note += f"; in the server, {top[0]} takes {top[1]['share']:.0%} of the CPU per call"
        if all("to_text_ms" in r for r in ops.values()):
            note += (f" (to_text alone: {min(r['to_text_ms'] for r in ops.values()):.1f} to "
                     f"{max(r['to_text_ms'] for r in ops.values()):.1f} ms per result)")
        targets.findings.append(note + ".")
    out = [
        f"{d['calls']} timed calls per tool and layer after {d['warmup']} warm-up calls, in {d['rounds']} "
        "interleaved rounds; median (p95) in ms. *nats-py*: the same request made directly with nats-py "
        "in the benchmark process (the floor). *toolkit*: natsop's operations layer in process "
        "(`Toolkit.call`). *mcp*: a real MCP client over stdio to `python -m natsop serve`. "
        "*overhead* = mcp - nats-py; *ops layer* = toolkit - nats-py; *MCP layer* = mcp - toolkit (the SDK on "
        "both sides, stdio, JSON, and natsop's text rendering of the result); *beyond SDK floor* = overhead "
        "minus a bare SDK server's round trip on the same stdio transport (the noop tool below): what natsop "
        "itself adds. "
        "*requests*: messages each call sends, counted on the connections.",
        "",
        table(["tool", "nats-py", "toolkit", "mcp", "overhead ms", "mcp / nats-py", "ops layer ms",
               "MCP layer ms", "beyond SDK floor ms", "requests natsop / nats-py",
               f"≤ {d['target_ms']} ms"], rows, [False] + [True] * 9 + [False]),
        "",
        f"The MCP transport on its own — the same client calling a bare SDK server whose tool does "
        f"nothing (`bench/_hello_server.py`) — costs **{ms(noop['median'])} ms** median "
        f"(p95 {ms(noop['p95'])} ms) per call"
        + (f", more than the {d['target_ms']} ms target by itself" if noop["median"] > d["target_ms"] else "")
        + "."
        + (f" On natsop's stdio transport (`natsop.faces.stdio`: the event loop reads and writes the pipes, where the "
           f"SDK hands each read, write and flush to a worker thread), the same bare server costs "
           f"**{ms(noop_ours['median'])} ms** (p95 {ms(noop_ours['p95'])} ms); that is the floor *beyond SDK "
           f"floor* subtracts, since `natsop serve` uses that transport." if noop_ours else "")
        + " The client's own revalidation of each structured result "
        "against the tool's output schema (part of every *mcp* figure) costs "
        + ", ".join(f"{op} {ms(r['client_validation_ms'])}" for op, r in ops.items()) + " ms.",
    ]
    tools = list(ops)
    out += ["", "Median latency per tool and layer:", "",
            xychart("MCP tool-call latency per tool", "tool", tools, "ms (median)", [
                Series("bar", "mcp (a real MCP client over stdio to natsop serve)",
                       [ops[t]["mcp"]["median"] for t in tools]),
                Series("bar", "toolkit (natsop's operations layer in process)",
                       [ops[t]["toolkit"]["median"] for t in tools]),
                Series("bar", "nats-py (the same request directly: the floor)",
                       [ops[t]["nats_py"]["median"] for t in tools]),
                Series("line", f"the target for mcp: nats-py + {d['target_ms']} ms",
                       [ops[t]["nats_py"]["median"] + d["target_ms"] for t in tools])])]
    if all("to_text_ms" in r for r in ops.values()):
        out += ["", "Turning a result into MCP content, measured in process (median ms per call): the text "
                "block (`natsop.faces.render.to_text`, plain text) and the structured content (`model_dump`).", "",
                table(["tool", "to_text ms", "text chars", "model_dump ms", "MCP layer ms (above)",
                       "beyond SDK floor ms (above)"],
                      [[f"`{op}`", ms(r["to_text_ms"]), num(r["text_chars"]), ms(r["model_dump_ms"]),
                        _signed(r["mcp_layer_ms"]), _signed(r.get("beyond_sdk_floor_ms"))]
                       for op, r in ops.items()])]
    if prof:
        out += ["", "### Where the server's time goes", "",
                f"`natsop serve` profiled with cProfile during {prof['tool_calls']} further calls (all five "
                f"tools alike): {ms(prof['cpu_ms_per_call'])} ms of CPU per call under the profiler, which "
                "inflates Python code several-fold — read the shares.", "",
                table(["stage (cumulative)", "share of server CPU"],
                      [[k, f"{v['share']:.0%}"] for k, v in prof["stages"].items()], [False, True]),
                "",
                table(["package (self time)", "share"],
                      [[k, f"{v['share']:.0%}"] for k, v in prof["areas"].items()], [False, True]),
                "",
                "Top functions by self time:", "",
                table(["function", "calls", "self ms"],
                      [[f"`{f['function']}`", num(f["calls"]), ms(f["self_ms"])] for f in prof["top_self"][:10]],
                      [False, True, True])]
    return "\n".join(out)


def startup(d: dict[str, Any], targets: Targets) -> str:
    s = d["seconds"]
    hello = s["sdk_hello_initialize"]["median"]
    labels = {
        "python_pass": "`python -c pass` (baseline)",
        "sdk_hello_initialize": "bare MCP SDK hello server: spawn → initialize (baseline)",
        "import_natsop_cli": "`python -c \"import natsop.faces.cli\"`",
        "natsop_external_initialize": "natsop serve, external server (NATS_URL)",
        "natsop_embedded_initialize": "natsop serve, embedded server (data dir exists)",
        "natsop_embedded_fresh_initialize": "natsop serve, embedded server (first start: fresh data dir)",
        "embedded_server_start": "EmbeddedServer.start() in process",
    }
    rows = [[labels.get(k, k), f"{v['median']:.3f}", f"{v['p95']:.3f}", x(v["median"] / hello if hello else None)]
            for k, v in s.items()]
    emb = s["natsop_embedded_initialize"]["median"]
    targets.append((f"start-up with the embedded server ≤ {d['target_s']} s",
                    f"{emb:.2f} s (first start on a fresh data dir "
                    f"{s['natsop_embedded_fresh_initialize']['median']:.2f} s; SDK hello {hello:.2f} s)",
                    d["target_met"]))
    imp = d["importtime_serve"]
    cli = d["importtime_cli"]
    shares = (d.get("profile_serve") or {}).get("shares") or {}
    if not d["target_met"]:
        b = d["breakdown_s"]
        server_s = next((v for k, v in b.items() if "EmbeddedServer" in k), None)
        note = (f"Start-up: the bare SDK hello server alone needs {hello:.2f} s to initialize; "
                f"the embedded nats-server starts in {ms((server_s or 0) * 1000)} ms")
        if shares:
            note += "; of natsop's own start (profiled): " + ", ".join(
                f"{k.strip()} {v:.0%}" for k, v in shares.items() if not k.startswith(" "))
        targets.findings.append(note + ".")
    out = [
        f"Median of {d['repeats']} starts of each kind, interleaved; process start to a completed MCP "
        "initialize, timed by a real MCP client over stdio.", "",
        table(["start", "median s", "p95 s", "x SDK hello"], rows, [False, True, True, True]),
        "", "Where the time goes (medians):", "",
        table(["part", "s"], [[k, f"{v:.3f}"] for k, v in d["breakdown_s"].items()], [False, True]),
        "",
        f"`{imp['command']}`: {imp['total_ms']:.0f} ms of imports over {imp['modules']} modules "
        f"(`import natsop.faces.cli` alone: {cli['total_ms']:.0f} ms). Self time by top-level package:", "",
        table(["package", "ms"], [[f"`{k}`", f"{v:.0f}"] for k, v in imp["by_package_ms"].items()],
              [False, True]),
    ]
    prof = d.get("profile_serve") or {}
    if "shares" in prof:
        out += ["", "`natsop serve` under cProfile, start to exit with stdin at EOF (external server); share "
                "of the profiled time:", "",
                table(["stage", "share"], [[k, f"{v:.0%}"] for k, v in prof["shares"].items()], [False, True])]
    return "\n".join(out)


_PAGING_COLS = [
    ("direct_get_first_ms", "Direct Get: first page"),
    ("direct_get_middle_ms", "Direct Get: middle"),
    ("direct_get_middle_filtered_ms", "Direct Get: middle, filtered"),
    ("msg_get_first_ms", "MSG.GET: first page"),
    ("msg_get_middle_ms", "MSG.GET: middle"),
    ("msg_get_middle_filtered_ms", "MSG.GET: middle, filtered"),
]
# natsop's page -> the same request made raw with nats-py in the same run (bench_paging).
_RAW_OF = {"direct_get_middle": "raw_batch_middle", "direct_get_middle_filtered": "raw_batch_middle_filtered"}


def _step(rows: list[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """(largest / smallest, largest - smallest in ms) of a column, or None when it was not measured."""
    a, b = rows[0].get(key + "_ms"), rows[-1].get(key + "_ms")
    return (b / a, b - a) if a and b is not None else None


def _paging_cause(rows: list[dict[str, Any]], key: str) -> str:
    """Where a page's growth with the stream lies, judged against the raw request of the same run."""
    raw_key = _RAW_OF.get(key)
    ours = _step(rows, key)
    raw = _step(rows, raw_key) if raw_key else None
    label = key.replace("_", " ")
    if ours is None:
        return ""
    if raw is None:
        return (f"{label}: {ours[0]:.2f}x ({ours[1]:+.2f} ms). These results have no raw baseline making the same "
                "request, so whether that step is the server's or natsop's is not established here.")
    same = abs(ours[1] - raw[1]) <= max(0.25 * abs(raw[1]), 0.15)
    head = (f"{label}: natsop {ours[0]:.2f}x ({ours[1]:+.2f} ms) from {rows[0]['size']:,} to "
            f"{rows[-1]['size']:,} messages; the same Direct Get request made raw with nats-py in the same run "
            f"{raw[0]:.2f}x ({raw[1]:+.2f} ms)")
    if raw[0] > PAGING_TARGET and same:
        return head + " - the step is in the server's answer to that request, not in natsop, which adds about the " \
                      "same time at every size."
    if raw[0] <= PAGING_TARGET:
        return head + " - the raw request stays flat, so the growth is natsop's."
    return head + f" - both grow; natsop by {ours[1] - raw[1]:+.2f} ms more than the raw request."


def paging(d: dict[str, Any], targets: Targets) -> str:
    rows_in = d["rows"]
    cols = [c for c in _PAGING_COLS if c[0] in rows_in[0]]
    rows = [[f"{r['size']:,}", *(ms(r.get(k)) for k, _ in cols), f"{r.get('fill_s', '-')}"] for r in rows_in]
    ratios = {k.removesuffix("_ms"): rows_in[-1][k] / rows_in[0][k]
              for k in rows_in[0] if k.endswith("_ms") and rows_in[0][k] and rows_in[-1].get(k) is not None}
    rows.append([f"**{rows_in[-1]['size']:,} / {rows_in[0]['size']:,}**",
                 *(x(ratios.get(k.removesuffix("_ms"))) for k, _ in cols), ""])
    if len(rows_in) >= 3:
        second = rows_in[-2]
        rows.append([f"**{rows_in[-1]['size']:,} / {second['size']:,}**",
                     *(x(rows_in[-1][k] / second[k] if second.get(k) else None) for k, _ in cols), ""])
    paged = {k.removesuffix("_ms"): ratios[k.removesuffix("_ms")] for k, _ in cols}
    over_cols = [k for k, v in paged.items() if v > PAGING_TARGET]
    if over_cols:
        causes = [_paging_cause(rows_in, k) for k in over_cols]
        note = "Paging over the target: " + " ".join(c for c in causes if c)
        if len(rows_in) >= 3:
            prev = rows_in[-2]
            growth = {k: rows_in[-1][k + "_ms"] / prev[k + "_ms"] for k in over_cols}
            note += (f" Over the last step ({prev['size']:,} to {rows_in[-1]['size']:,} messages) the same pages "
                     "change by " + ", ".join(f"{v:.2f}x" for v in growth.values())
                     + (": flat there, so the cost does not keep growing with the stream." if
                        all(v <= PAGING_TARGET for v in growth.values()) else
                        ": not flat in this run either (noise or growth: run `python bench/run.py --only paging` "
                        "again to tell)."))
        targets.findings.append(note)
    worst = max(paged.items(), key=lambda kv: kv[1]) if paged else None
    if worst:
        targets.append((f"page time at {rows_in[-1]['size']:,} messages ≤ {PAGING_TARGET} x at "
                        f"{rows_in[0]['size']:,}",
                        f"worst {worst[0].replace('_', ' ')} {worst[1]:.2f}x"
                        + (f" (over: {', '.join(o.replace('_', ' ') for o in over_cols)})" if over_cols else ""),
                        not over_cols))
    out = [
        f"`stream_view` through the operations layer, {d.get('limit', '?')} messages a page, "
        f"{d.get('payload_bytes', '?')}-byte bodies on 16 subjects, median of {d.get('repeats', '?')} calls, in ms; "
        "both read paths (batched Direct Get, and MSG.GET after allow_direct is turned off). Every page also asks "
        "STREAM.INFO first. The last column is the time it took to fill the stream.", "",
        table(["messages", *(label for _, label in cols), "fill s"], rows),
    ]
    raw = "raw_batch_middle_filtered_ms" in rows_in[0]
    if raw:
        out += ["", "The same Direct Get page requests made raw with nats-py — the very body natsop sends "
                "(`batch`, `max_bytes`, `seq`, and `next_by_subj` for the filtered page) to a fresh inbox, read up "
                "to the end-of-batch status — timed call by call in turn with natsop's pages"
                + (" (interleaved)" if d.get("interleaved") else "") + ", and the STREAM.INFO natsop asks first:", "",
                table(["messages", "natsop middle", "raw middle", "natsop / raw", "natsop filtered", "raw filtered",
                       "natsop / raw", "raw STREAM.INFO", "raw: one Direct Get"],
                      [[f"{r['size']:,}", ms(r["direct_get_middle_ms"]), ms(r["raw_batch_middle_ms"]),
                        x(r["direct_get_middle_ms"] / r["raw_batch_middle_ms"]),
                        ms(r["direct_get_middle_filtered_ms"]), ms(r["raw_batch_middle_filtered_ms"]),
                        x(r["direct_get_middle_filtered_ms"] / r["raw_batch_middle_filtered_ms"]),
                        ms(r.get("raw_stream_info_ms")), ms(r.get("raw_direct_get_one_ms"))] for r in rows_in])]
    else:
        out += ["", "*These results predate the raw baseline of the page request itself: the only raw figure is "
                f"one unfiltered Direct Get of a single message ({', '.join(ms(r.get('raw_direct_get_one_ms')) for r in rows_in)} ms).*"]
    labels = [size_label(r["size"]) for r in rows_in]
    series = [Series("line", "natsop Direct Get page, middle", [r["direct_get_middle_ms"] for r in rows_in]),
              Series("line", "natsop Direct Get page, middle, filtered",
                     [r["direct_get_middle_filtered_ms"] for r in rows_in])]
    if raw:
        series += [Series("line", "raw batch request, middle", [r["raw_batch_middle_ms"] for r in rows_in]),
                   Series("line", "raw batch request, middle, filtered",
                          [r["raw_batch_middle_filtered_ms"] for r in rows_in])]
    if "msg_get_middle_filtered_ms" in rows_in[0]:
        series.append(Series("line", "natsop MSG.GET page, middle, filtered",
                             [r["msg_get_middle_filtered_ms"] for r in rows_in]))
    steps = [f"x{b['size'] / a['size']:g}" for a, b in itertools.pairwise(rows_in)]
    scale = ("each step is " + steps[0] + ", so the x axis is a log scale" if len(set(steps)) == 1 else
             f"the steps are {', '.join(steps)}, so read it as ordered sizes, close to a log scale")
    out += ["", "Page time against stream size (one evenly spaced step per size measured: xychart-beta has no numeric "
            f"axis; {scale}):", "",
            xychart("stream_view page time by stream size", "messages in the stream", labels, "ms (median)", series)]
    return "\n".join(out)


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.0f}-{max(values):.0f})" if len(values) > 1 \
        else f"{values[0]:.1f}"


def object_store(d: dict[str, Any], targets: Targets) -> str:
    rows = []
    worst_tp: tuple[str, float] | None = None
    large_rss: list[tuple[str, float]] = []
    single: list[str] = []
    for r in d["results"]:
        for mode in ("put", "get"):
            ours, theirs = r[f"natsop_{mode}"], r[f"natspy_{mode}"]
            mb = r["size"] / MiB
            our_runs, their_runs = ours.get("runs") or [], theirs.get("runs") or []
            our_speeds = [mb / run["seconds"] for run in our_runs] or [ours["mib_per_s"]]
            their_speeds = [mb / run["seconds"] for run in their_runs] or [theirs["mib_per_s"]]
            pairs = [b["seconds"] / a["seconds"] for a, b in zip(our_runs, their_runs, strict=False)]
            # The largest peak of the runs (older results kept one figure, already the largest).
            our_rss = max((run["peak_rss"] for run in our_runs), default=ours["peak_rss_mib"] * MiB) / MiB
            their_rss = max((run["peak_rss"] for run in their_runs), default=theirs["peak_rss_mib"] * MiB) / MiB
            tp = r[f"{mode}_throughput_ratio"]
            if worst_tp is None or tp < worst_tp[1]:
                worst_tp = (f"{r['label']} {mode}", tp)
            if r["size"] >= 1024 * MiB:
                large_rss.append((f"{r['label']} {mode}", our_rss * MiB / MB))
            n = len(our_runs) or r.get("repeats", 1)
            if n < 2:
                single.append(f"{r['label']} {mode}")
            rows.append([r["label"], mode, _spread(our_speeds), _spread(their_speeds), x(tp),
                         ", ".join(f"{v:.2f}" for v in pairs) or "-", f"{our_rss:.0f}", f"{their_rss:.0f}",
                         x(our_rss / their_rss if their_rss else None), n])
    if worst_tp:
        targets.append((f"object put/get ≥ {OBJECT_THROUGHPUT_TARGET} x nats-py throughput",
                        f"worst {worst_tp[0]} {worst_tp[1]:.2f}x", worst_tp[1] >= OBJECT_THROUGHPUT_TARGET))
    if large_rss:
        peak = max(large_rss, key=lambda kv: kv[1])
        targets.append((f"object peak RSS ≤ {RSS_TARGET_MB} MB for a 1 GiB object",
                        f"{peak[1]:.0f} MB ({peak[0]})", peak[1] <= RSS_TARGET_MB))
    else:
        targets.append((f"object peak RSS ≤ {RSS_TARGET_MB} MB for a 1 GiB object", "1 GiB not measured", None))
    if single:
        targets.single_runs.append(f"the object rows {', '.join(single)} (one run each)")
    out = [
        f"Each transfer in a fresh process (its peak RSS is its own), random bytes, {d.get('bucket', '')}; "
        "natsop = `object_put`/`object_get` through `Toolkit`, nats-py = its ObjectStore `put`/`get`. "
        "Throughput: median (min-max) of the runs in MiB/s; *ratio* = natsop / nats-py of the medians; "
        "*per-pair ratios*: each run of natsop against the nats-py run next to it. Peak RSS: the largest of the "
        "runs.", "",
        table(["size", "op", "natsop MiB/s", "nats-py MiB/s", "ratio", "per-pair ratios", "natsop peak RSS MiB",
               "nats-py peak RSS MiB", "RSS ratio", "runs"], rows, [False, False] + [True] * 8),
    ]
    if single:
        out += ["", f"*{', '.join(single)}: one run each, not a median of repeated runs.*"]
    return "\n".join(out)


def _scalars(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_scalars(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def generic(d: dict[str, Any], targets: Targets) -> str:
    """Any results document: its list of rows (or its scalars) as a table."""
    skip = {"bench", "benchmark", "timestamp", "machine", "python", "server"}
    rows = next((v for k, v in d.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
    if rows:
        flat = [_scalars(r) for r in rows]
        keys = [k for k in flat[0] if not k.endswith("runs")]
        return table(keys, [[r.get(k, "-") for k in keys] for r in flat])
    scalars = _scalars({k: v for k, v in d.items() if k not in skip})
    return table(["figure", "value"], [[f"`{k}`", v] for k, v in scalars.items()], [False, True])


# Report row -> (natsop runs, bare loop runs) in backup.json's "runs".
_BACKUP_RUNS = {
    "stream_backup": ("natsop_backup", "bare_backup"),
    "stream_restore (check_archive, default)": ("natsop_restore", "bare_restore"),
    "stream_restore (check_archive=false)": ("natsop_restore_no_check", "bare_restore"),
    "backup_verify (decode + CRC, no server)": ("natsop_verify", None),
}
_BREAKDOWN_LABELS = [
    ("wall_s", "wall time of the call"),
    ("snapshot_loop_s", "snapshot loop (request to last chunk)"),
    ("wait_for_chunks_s", "waiting for the next chunk (`next_msg`)"),
    ("write_s", "writing chunks to the file"),
    ("publish_s", "publishing (acks, requests)"),
    ("fsync_s", "fsync"),
    ("other_s", "the rest (Python per chunk, setup, JSON, rename)"),
    ("cpu_s", "CPU time of the process"),
    ("chunks", "chunks"),
    ("fsyncs", "fsync calls"),
]


def _backup_breakdown(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median of each counter over runs that carry them (bench_backup's instrumented children)."""
    timed = [r for r in runs if r.get("times")]
    if not timed:
        return {}
    out: dict[str, float] = {"wall_s": statistics.median(r["seconds"] for r in timed)}
    for key in {k for r in timed for k in r["times"]}:
        if all(key in r["times"] for r in timed):
            out[key] = statistics.median(r["times"][key] for r in timed)
    parts = ("wait_for_chunks_s", "write_s", "publish_s", "fsync_s")
    out["other_s"] = statistics.median(r["seconds"] - sum(r["times"].get(k, 0.0) for k in parts) for r in timed)
    for key, counter in (("chunks", "write"), ("fsyncs", "fsync")):
        if all((r.get("counts") or {}).get(counter) for r in timed):
            out[key] = statistics.median(r["counts"][counter] for r in timed)
    return out


def backup(d: dict[str, Any], targets: Targets) -> str:
    all_runs: dict[str, list[dict[str, Any]]] = d.get("runs") or {}
    rows = []
    per_run = []
    worst_tp: tuple[str, float, list[float], list[float], list[float]] | None = None
    worst_rss: tuple[str, float] | None = None
    for r in d["rows"]:
        op = r["operation"]
        ours_key, base_key = _BACKUP_RUNS.get(op, (None, None))
        ours = all_runs.get(ours_key or "", [])
        base = all_runs.get(base_key or "", [])
        our_speeds = [run["mib_per_s"] for run in ours] or [r["natsop_mib_per_s"]]
        base_speeds = [run["mib_per_s"] for run in base] or ([r["bare_mib_per_s"]] if "bare_mib_per_s" in r else [])
        pairs = [a / b for a, b in zip(our_speeds, base_speeds, strict=False)] if base and ours else []
        our_rss = max((run["peak_rss_bytes"] for run in ours), default=r["natsop_peak_rss_mib"] * MiB) / MiB
        base_rss = (max((run["peak_rss_bytes"] for run in base), default=(r.get("bare_peak_rss_mib") or 0) * MiB)
                    / MiB) or None
        tp = r.get("throughput_ratio")
        if tp is not None and (worst_tp is None or tp < worst_tp[1]):
            worst_tp = (op, tp, pairs, our_speeds, base_speeds)
        if worst_rss is None or our_rss * MiB / MB > worst_rss[1]:
            worst_rss = (op, our_rss * MiB / MB)
        rows.append([op, _spread(our_speeds), _spread(base_speeds) if base_speeds else "-", x(tp),
                     ", ".join(f"{v:.2f}" for v in pairs) or "-", f"{our_rss:.0f}", _opt(base_rss),
                     x(our_rss / base_rss if base_rss else None), _opt(r.get("natsop_rss_growth_mib")),
                     _opt(r.get("bare_rss_growth_mib")), len(ours) or d.get("repeats", "?")])
        if len(ours) > 1:
            per_run.append(f"- {op}: natsop {', '.join(f'{v:.0f}' for v in our_speeds)}"
                           + (f"; bare loop {', '.join(f'{v:.0f}' for v in base_speeds)}" if base else "")
                           + " MiB/s")
    size = d.get("size_mb", 0)
    large = size >= 1024
    if worst_tp:
        op, tp, pairs, ours_s, base_s = worst_tp
        extra = f"; per-pair ratios {', '.join(f'{v:.2f}' for v in pairs)}" if len(pairs) > 1 else ""
        targets.append((f"backup/restore ≥ {OBJECT_THROUGHPUT_TARGET} x the bare snapshot loop",
                        f"worst {op} {tp:.2f}x ({size:,} MiB stream{extra})", tp >= OBJECT_THROUGHPUT_TARGET))
        if tp < OBJECT_THROUGHPUT_TARGET:
            targets.findings.append(_backup_finding(d, op, tp, pairs, ours_s, base_s))
    if worst_rss:
        targets.append((f"backup/restore peak RSS ≤ {RSS_TARGET_MB} MB (1 GiB stream)",
                        f"{worst_rss[1]:.0f} MB ({worst_rss[0]}, {size:,} MiB stream)",
                        worst_rss[1] <= RSS_TARGET_MB if large else None))
    if any(row[-1] == 1 for row in rows):
        targets.single_runs.append("the backup rows (one run each)")
    st = d.get("stream_state") or {}
    out = [
        f"A stream of {size:,} MiB ({num(st.get('messages'))} messages of {d.get('message_bytes', 0) // 1024} KiB, "
        "incompressible), each transfer in a fresh process; natsop's operations through `Toolkit` against a "
        "bare snapshot-API loop written with nats-py. Throughput in MiB/s of snapshot bytes over the call's "
        f"wall time: median (min-max) of {d.get('repeats', '?')} run(s), natsop and the bare loop taking turns to go "
        "first; *ratio* = natsop / bare of the medians; *per-pair ratios*: each natsop run against the bare run of "
        "the same repeat. Peak RSS is the process's VmHWM, the largest of the runs; growth is what the transfer "
        "added to the process after start-up.", "",
        table(["operation", "natsop MiB/s", "bare loop MiB/s", "ratio", "per-pair ratios", "natsop peak RSS MiB",
               "bare peak RSS MiB", "RSS ratio", "natsop growth MiB", "bare growth MiB", "runs"], rows,
              [False] + [True] * 10),
    ]
    if per_run:
        out += ["", "Each run, in the order measured:", "", *per_run]
    out += ["", "### Where a backup's time goes", ""]
    ours_b = _backup_breakdown(all_runs.get("natsop_backup", []))
    bare_b = _backup_breakdown(all_runs.get("bare_backup", []))
    if ours_b and bare_b:
        out += ["Both children are instrumented alike, without changing natsop: nats-py's `Subscription.next_msg` "
                "(waiting for a chunk, including nats-py reading it), `Client.publish`, `os.fsync`, and the file's "
                "`write` (natsop's through a wrapper around `natsop.ops.backup.snapshot_to_file`). Median seconds "
                "per run:", "",
                table(["", "natsop stream_backup", "bare loop", "natsop - bare"],
                      [[label, _fig(ours_b.get(k), count=not k.endswith("_s")),
                        _fig(bare_b.get(k), count=not k.endswith("_s")),
                        _fig(ours_b[k] - bare_b[k], signed=True, count=not k.endswith("_s"))
                        if k in ours_b and k in bare_b else "-"]
                       for k, label in _BREAKDOWN_LABELS if k in ours_b or k in bare_b],
                      [False, True, True, True])]
        missing = sorted({m for run in all_runs.get("natsop_backup", []) for m in run.get("not_instrumented") or []})
        if missing:
            out += ["", f"*Not instrumented (renamed in natsop?): {', '.join(missing)}.*"]
    else:
        out.append("*Not measured in these results: bench_backup gained its counters after this run; "
                   "`python bench/run.py --only backup` measures them.*")
    return "\n".join(out)


def _fig(v: float | None, signed: bool = False, count: bool = False) -> str:
    """Seconds to the millisecond, counts whole."""
    if v is None:
        return "-"
    if count:
        return f"{v:+,.0f}" if signed else f"{v:,.0f}"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _backup_finding(d: dict[str, Any], op: str, tp: float, pairs: list[float], ours: list[float],
                    base: list[float]) -> str:
    """What the results can honestly say about a missed backup/restore throughput target."""
    parts = [f"Backup: {op} reaches {tp:.2f}x the bare loop (ratio of the medians)."]
    if len(ours) > 1 and len(base) > 1:
        overlap = min(ours) <= max(base) and min(base) <= max(ours)
        spread = max((max(v) - min(v)) / statistics.median(v) for v in (ours, base))
        parts.append(f"Over {len(ours)} runs natsop made {min(ours):.0f}-{max(ours):.0f} MiB/s and the bare loop "
                     f"{min(base):.0f}-{max(base):.0f} MiB/s (a spread of up to {spread:.0%} of the median)"
                     + ("; the two ranges overlap, so these runs do not separate natsop from the bare loop" if overlap
                        else "") + ".")
        if pairs:
            parts.append(f"Run against run, natsop / bare = {', '.join(f'{v:.2f}' for v in pairs)} "
                         f"(median {statistics.median(pairs):.2f}).")
    else:
        parts.append("One run each: no spread to judge it by.")
    runs = d.get("runs") or {}
    ours_b, bare_b = _backup_breakdown(runs.get("natsop_backup", [])), _backup_breakdown(runs.get("bare_backup", []))
    if op == "stream_backup" and ours_b and bare_b:
        diffs = {label: ours_b[k] - bare_b[k] for k, label in _BREAKDOWN_LABELS
                 if k in ours_b and k in bare_b and k.endswith("_s") and k not in ("wall_s", "cpu_s",
                                                                                  "snapshot_loop_s")}
        top = max(diffs.items(), key=lambda kv: kv[1])
        parts.append(f"Of the {ours_b['wall_s'] - bare_b['wall_s']:+.3f} s natsop takes over the bare loop (medians), "
                     f"the largest part is {top[0]} ({top[1]:+.3f} s); waiting for chunks is "
                     f"{ours_b.get('wait_for_chunks_s', 0):.3f} s against {bare_b.get('wait_for_chunks_s', 0):.3f} s, "
                     f"CPU {ours_b.get('cpu_s', 0):.3f} s against {bare_b.get('cpu_s', 0):.3f} s.")
    elif op == "stream_backup":
        parts.append("Where the time goes was not measured in these results (see the backup section).")
    return " ".join(parts)


def _opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def audit(d: dict[str, Any], targets: Targets) -> str:
    rows = []
    for r in d["rows"]:
        rows.append([f"{r['streams']:,}", num(r["consumers"]), ms(r["audit_ms"]["median"]), num(r["audit_requests"]),
                     ms(r["audit_without_system_ms"]["median"]), ms(r["stream_list_walk_ms"]["median"]),
                     num(r["stream_list_walk_requests"]), x(r["ratio_audit_to_walk"]),
                     ms(r["list_and_consumers_ms"]["median"]), num(r["list_and_consumers_requests"]),
                     x(r["ratio_audit_without_system_to_list_and_consumers"]),
                     f"{r['audit_findings']['critical']}/{r['audit_findings']['warning']}/{r['audit_findings']['info']}"])
    last = d["rows"][-1]
    extra = last["audit_ms"]["median"] - last["audit_without_system_ms"]["median"]
    targets.findings.append(
        f"Audit at {last['streams']:,} streams: {ms(last['audit_ms']['median'])} ms and {last['audit_requests']:,} "
        f"requests; {ms(extra)} ms of it is the VARZ scatter-gather over the system account, which waits "
        "for a lull after the last reply (the same audit without the system account takes "
        f"{ms(last['audit_without_system_ms']['median'])} ms, "
        f"{x(last['ratio_audit_without_system_to_list_and_consumers'])} a sequential walk + consumer lists).")
    return "\n".join([
        "`audit` through the operations layer, median of the runs in ms. *audit*: as an operator runs it, "
        "with the system account configured (it adds one VARZ scatter-gather, whose replies are awaited "
        "until a 0.3 s lull). *no system*: the same audit with the application account only. Baselines "
        "with nats-py: a bare STREAM.LIST walk, and the walk plus one CONSUMER.LIST per stream with "
        "consumers. Each stream holds 3 messages and has 1 or 2 durable consumers.", "",
        table(["streams", "consumers", "audit ms", "requests", "no system ms", "STREAM.LIST walk ms",
               "requests", "audit / walk", "walk + consumer lists ms", "requests",
               "no-system audit / (walk + lists)", "findings c/w/i"], rows),
    ])


def publish(d: dict[str, Any], targets: Targets) -> str:
    rows = []
    for path, r in d["paths"].items():
        rows.append([path, num(r["nats_py"]["msgs_per_s"]), num(r["toolkit"]["msgs_per_s"]), x(r["ratio_toolkit"]),
                     num(r["mcp"]["msgs_per_s"]), x(r["ratio_mcp"])])
    return "\n".join([
        f"One `publish` call with count={d['count']:,} ({d['payload_bytes']}-byte body) against nats-py "
        "publishing the same messages one by one; median msgs/s of "
        f"{d['repeats']} batches. *core*: no stream captures the subject (publish, one flush at the end). "
        "*jetstream*: a stream captures it; each acknowledgement is awaited before the next message, "
        "in natsop and in the baseline alike (`js.publish` in a loop).", "",
        table(["path", "nats-py msgs/s", "toolkit msgs/s", "toolkit / nats-py", "MCP msgs/s", "MCP / nats-py"],
              rows, [False] + [True] * 5),
    ])


RENDERERS: dict[str, Callable[[dict[str, Any], Targets], str]] = {
    "mcp_latency": mcp_latency, "startup": startup, "paging": paging, "object": object_store,
    "backup": backup, "audit": audit, "publish": publish,
}


# --- the document --------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- provenance ----------------------------------------------------------------------------------


@cache
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _full(commit: str | None) -> str | None:
    return _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") if commit else None


def head_commit() -> str | None:
    return _git("rev-parse", "--short", "HEAD")


def commit_at(when: str) -> str | None:
    """The commit HEAD had at a time (by the committer dates of this branch's history)."""
    return _git("rev-list", "-1", "--abbrev-commit", f"--before={when}", "HEAD") or None


def older_than(commit: str | None, reference: str | None) -> str | None:
    """How `commit` is older than `reference` (commits between, src/natsop files changed), or None if it is not."""
    a, b = _full(commit), _full(reference)
    if not a or not b or a == b:
        return None
    if _git("merge-base", "--is-ancestor", a, b) is None:
        return f"commit {commit} is not in the history of {reference}"
    count = _git("rev-list", "--count", f"{a}..{b}")
    changed = _git("diff", "--name-only", a, b, "--", "src/natsop")
    files = len(changed.splitlines()) if changed else 0
    return (f"{count} commits older than this report's {reference}; src/natsop changed in {files} "
            f"file{'s' if files != 1 else ''} since")


@dataclass
class Provenance:
    """Where one section's figures come from."""

    name: str
    title: str
    origin: str
    when: str | None
    commit: str | None
    inferred: bool
    uncommitted_src: list[str] | None
    load_before: list[float]
    load_after: list[float]
    other_cores: float | None
    quiet: bool | None
    conditions: str
    command: str
    seconds: float | None
    machine: dict[str, Any] = field(default_factory=dict)
    older: str | None = None


def provenance(name: str, data: dict[str, Any], st: dict[str, Any], cores: int, report_commit: str | None,
               run_seen: bool) -> Provenance:
    """The provenance of a section from its results file, falling back on run.json and git for older files."""
    p = data.get("provenance") or {}
    m = data["machine"] if isinstance(data.get("machine"), dict) else {}
    when = p.get("finished") or data.get("timestamp") or st.get("finished")
    commit, inferred = p.get("commit") or m.get("natsop_commit"), False
    if not commit and when:
        commit, inferred = commit_at(str(when)), True
    uncommitted = p.get("uncommitted")
    before = p.get("load_avg_before") or st.get("load_avg_before") or []
    # Older files carry one load average, taken when the result was written: at the end.
    after = p.get("load_avg_after") or st.get("load_avg_after") or m.get("load_avg") or []
    other = p.get("other_cpu_cores", st.get("other_cpu_cores"))
    if other is not None:
        quiet: bool | None = other <= QUIET_OTHER_CORES
        conditions = (f"other processes used {other:.2f} cores on average: "
                      + ("quiet" if quiet else "**a busy machine**, expect noise"))
        if quiet and before and before[0] > cores:
            conditions += f" during the run, though the machine was busy just before (load average {before[0]:g})"
    elif before or after:
        peak = max(v[0] for v in (before, after) if v)
        which = "at the end" if not before else "before/after"
        if peak > cores:
            quiet, conditions = False, (f"1-min load average {peak:g} {which} on {cores} cores: **a busy machine**, "
                                        "expect noise")
        elif peak <= cores / 2:
            quiet, conditions = True, (f"1-min load average {peak:g} {which}, the benchmark's own work included: "
                                       "quiet")
        else:
            quiet, conditions = None, f"1-min load average {peak:g} {which}; other work not measured"
    else:
        quiet, conditions = None, "load not recorded"
    status = st.get("status")
    finished = st.get("finished")
    mode = f" ({st['mode']})" if st.get("mode") else ""
    by_run = True
    if status == "ok" and when and finished and str(when) > str(finished):
        origin, by_run = "a later run of the script on its own", False
    elif status == "ok":
        origin = f"this run{mode}"
    elif status in ("earlier", "failed"):
        origin = f"an earlier run{mode}, reused" + (" (the last run failed)" if status == "failed" else "")
    else:
        origin, by_run = ("the script run on its own" if not run_seen else
                          "a run of the script outside bench/run.py"), False
    script = SECTIONS[name][1]
    args = st.get("args") if by_run else None
    if args is None:
        args = (p.get("argv") or [script])[1:]
    src = [f for f in uncommitted or [] if f.startswith("src/")] if uncommitted is not None else None
    seconds = p.get("seconds") or st.get("seconds")
    return Provenance(name=name, title=SECTIONS[name][0], origin=origin, when=str(when) if when else None,
                      commit=commit, inferred=inferred, uncommitted_src=src, load_before=before, load_after=after,
                      other_cores=other, quiet=quiet, conditions=conditions,
                      command=" ".join([f"bench/{script}", *args]), seconds=seconds, machine=m,
                      older=older_than(commit, report_commit))


def provenance_line(pv: Provenance) -> str:
    """One line under a section heading: which run, which code, when, under what load."""
    if pv.commit:
        code = f"commit {pv.commit}" + (" (not recorded in the results: HEAD at that time, by git log)"
                                        if pv.inferred else "")
    else:
        code = "commit not recorded"
    if pv.uncommitted_src:
        code += f" + uncommitted changes in {len(pv.uncommitted_src)} file(s) under src/"
    if pv.older:
        code += f" — **older code: {pv.older}**"
    load = ""
    if pv.load_before and pv.load_after:  # older results recorded one, at the end: the conditions give it
        load = f"load average {pv.load_before[0]:g} → {pv.load_after[0]:g} (1 min, before → after) · "
    took = f", {pv.seconds:.0f} s" if isinstance(pv.seconds, (int, float)) else ""
    return (f"<sub>Provenance: `{pv.command}` · {pv.origin}, {pv.when or 'time unknown'}{took} · {code} · "
            f"{load}{pv.conditions}</sub>")


def _names(items: Iterable[Provenance]) -> str:
    return ", ".join(SHORT.get(pv.name, pv.title) for pv in items)


def _machine_table(run_machine: dict[str, Any], pvs: list[Provenance]) -> str:
    """The machine, from every section's own record; a figure that differs between sections says so."""
    fields: list[tuple[str, Callable[[dict[str, Any]], str | None]]] = [
        ("CPU", lambda m: f"{m['cpu']} x {m['cores']} cores" if m.get("cpu") else None),
        ("memory", lambda m: f"{m['memory_gib']} GiB" if m.get("memory_gib") else None),
        ("OS", lambda m: m.get("os")),
        ("Python", lambda m: m.get("python")),
        ("nats-server", lambda m: m.get("nats_server")),
        ("natsop", lambda m: m.get("natsop")),
        ("nats-py / mcp SDK", lambda m: f"{m.get('nats_py')} / {m.get('mcp')}" if m.get("nats_py") else None),
    ]
    recorded = [pv for pv in pvs if pv.machine]
    rows: list[list[Any]] = []
    for label, get in fields:
        seen: dict[str, list[str]] = {}
        for pv in recorded:
            value = get(pv.machine)
            if value:
                seen.setdefault(value, []).append(pv.title)
        if not seen and get(run_machine):
            seen[str(get(run_machine))] = []
        if len(seen) <= 1:
            rows.append([label, next(iter(seen), "?")])
        else:
            rows.append([label, "; ".join(f"{v} ({', '.join(t)})" for v, t in seen.items())])
    missing = [pv for pv in pvs if not pv.machine]
    out = table(["", ""], rows, [False, False])
    if missing:
        out += f"\n\n*Not recorded in the results of: {_names(missing)} (older result files).*"
    return out


def _mode_prefix(st: dict[str, Any]) -> str:
    return f"{st['mode']} run, " if st.get("mode") else ""


def _header(run: dict[str, Any], pvs: list[Provenance], report_commit: str | None, targets: Targets) -> list[str]:
    """What holds for the whole report: which run produced which section, the commits, the conditions."""
    by_title = {pv.name: pv for pv in pvs}
    lines: list[str] = []
    if run:
        sections = run.get("sections") or {}
        ran = run.get("ran") or [n for n, st in sections.items() if st.get("status") in ("ok", "failed")]
        reused = [by_title[n] for n in sections if n not in ran and n in by_title]
        minutes = f"{run.get('seconds', 0) / 60:.1f} min"
        lines.append(
            f"The last `python bench/run.py{' --quick' if run.get('mode') == 'quick' else ''}` ({run.get('mode', '?')} "
            f"run, {run.get('started', '?')} to {run.get('finished', '?')}, {minutes}) ran "
            + (", ".join(SHORT[n] for n in ran if n in SHORT) or "no section")
            + (("; the other sections reuse results of earlier runs: "
                + ", ".join(f"{SHORT[pv.name]} ({_mode_prefix(sections[pv.name])}{pv.when or 'time unknown'})"
                            for pv in reused)) if reused else "")
            + ".")
        later = [pv for pv in pvs if pv.origin.startswith("a later run")]
        if later:
            lines[-1] += f" Re-run on their own since: {_names(later)}."
    else:
        lines.append("No `bench/run.py` record (results/run.json) here: every section comes from its benchmark "
                     "script run on its own.")
    commits: dict[str, list[Provenance]] = {}
    for pv in pvs:
        key = (f"{pv.commit} (not recorded; HEAD at that time by git log)" if pv.inferred else str(pv.commit)) \
            if pv.commit else "not recorded"
        commits.setdefault(key, []).append(pv)
    older = [pv for pv in pvs if pv.older]
    dirty = [pv for pv in pvs if pv.uncommitted_src]
    lines.append(
        "Rendered from `bench/results/` at "
        + (f"commit {report_commit}" if report_commit else "an unknown commit (git is not available)")
        + ". Code measured: "
        + "; ".join(f"commit {c} for {_names(items)}" if c != "not recorded" else f"commit not recorded for "
                    f"{_names(items)}" for c, items in commits.items()) + "."
        + (f" Measured on code older than this report's commit: {_names(older)} (see the line under each "
           "heading)." if older else "")
        + (f" With uncommitted changes under src/: {_names(dirty)}." if dirty else ""))
    quiet = [pv for pv in pvs if pv.quiet is True]
    busy = [pv for pv in pvs if pv.quiet is False]
    unknown = [pv for pv in pvs if pv.quiet is None]
    if pvs and len(quiet) == len(pvs):
        cond = "Every section was measured on an otherwise quiet machine"
    else:
        cond = "; ".join(part for part in (
            f"quiet for {_names(quiet)}" if quiet else "",
            f"**busy** for {_names(busy)}" if busy else "",
            f"not known for {_names(unknown)}" if unknown else "") if part)
        cond = "Conditions differ by section: " + cond if cond else "No section has results"
    lines.append(
        cond + f" (quiet: other processes used at most {QUIET_OTHER_CORES} cores on average during the run; for "
        "older results that did not measure that, a 1-minute load average of at most half the cores)."
        + (" In the busy sections expect noise in the absolute figures; ratios within a row are measured side by "
           "side and are steadier." if busy else ""))
    lines.append(
        "Every figure is set against a baseline measured in the same run (raw nats-py, the bare MCP SDK, or a bare "
        "API loop); times are medians of repeated runs"
        + (f", except {'; '.join(targets.single_runs)}" if targets.single_runs else "") + ".")
    return [line for item in lines for line in (item, "")]


def render(results: Path = RESULTS_DIR) -> str:
    """The whole report, from results/*.json and results/run.json (statuses of the last run)."""
    run = _load(results / "run.json") or {}
    statuses: dict[str, dict[str, Any]] = run.get("sections") or {}
    run_machine = run.get("machine") or {}
    report_commit = head_commit()
    targets = Targets()
    parts: list[str] = []
    pvs: list[Provenance] = []
    for name, (title, script) in SECTIONS.items():
        st = statuses.get(name) or {}
        data = _load(results / f"{name}.json")
        parts.append(f"## {title}")
        status = st.get("status")
        where = f"`bench/{script}`"
        if status == "missing" or (data is None and not (REPO / "bench" / script).exists()):
            parts.append(f"*Not run: {where} is not in the repository yet.*")
            continue
        if status == "failed":
            parts.append(f"*Failed in the last run ({where}, {st.get('seconds', '?')} s):*\n\n```\n"
                         f"{st.get('tail', '').strip()}\n```")
            if data is not None:
                parts.append("Results from an earlier run follow.")
        if data is None:
            parts.append(f"*Not run* ({where}; run `python bench/run.py --only {name}`).")
            continue
        cores = int((data.get("machine") or {}).get("cores") or run_machine.get("cores") or 1) \
            if isinstance(data.get("machine"), dict) else int(run_machine.get("cores") or 1)
        pv = provenance(name, data, st, cores, report_commit, bool(run))
        pvs.append(pv)
        try:
            body = RENDERERS[name](data, targets)
        except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError) as exc:
            body = f"*The results file has a layout this report does not know ({type(exc).__name__}: {exc}):*\n\n" \
                   + generic(data, targets)
        parts.append(provenance_line(pv) + "\n\n" + body)
    head = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python bench/run.py`; edits here are overwritten. -->",
        "",
        *_header(run, pvs, report_commit, targets),
        "### Machine",
        "",
        _machine_table(run_machine, pvs),
        "",
        "## Targets",
        "",
    ]
    if targets:
        head.append(table(["target", "measured", "result"], [[t, m, verdict(ok)] for t, m, ok in targets],
                          [False, False, False]))
    else:
        head.append("*No results yet.*")
    if targets.findings:
        head += ["", "Where the time goes:", "", *[f"- {f}" for f in targets.findings]]
    notes = run.get("notes") or []
    if notes:
        head += ["", *[f"- {n}" for n in notes]]
    return "\n".join([*head, "", *("\n\n".join(parts).splitlines())]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS_DIR), help="Directory of the results JSON files")
    parser.add_argument("--out", default=str(DOC), help="Where to write the markdown")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(Path(args.results)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
