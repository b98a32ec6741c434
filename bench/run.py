"""Run natsop's benchmarks and regenerate docs/benchmarks.md.

    python bench/run.py [--quick] [--only NAME,...] [--no-10m] [--report-only]

Each benchmark runs as its own process (bench/bench_<name>.py with its command-line
flags) and writes bench/results/<name>.json; its output goes to
bench/results/<name>.log. A benchmark whose script is not in the repository is
reported as "not run"; one that fails is reported with the end of its log, and the
others still run. With --only, the other sections of the report keep the results of
an earlier run (marked as such, with that run's time, mode and conditions). The full
run is the one recorded in docs/benchmarks.md; --quick uses small sizes and finishes
in a few minutes.

For each section run, results/run.json records its mode, start and end, the load
average before and after, and how much CPU other processes used meanwhile (the
machine's busy time minus this process tree's); each results file records the same
about itself (see _util.provenance), with the commit it measured.

Sections: mcp_latency, startup, paging, object, backup, audit, publish.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import BENCH_DIR, RESULTS_DIR, Probe, machine, now_iso, run_measured
from report import DOC, SECTIONS, render


@dataclass
class Plan:
    """How run.py calls one benchmark script in each mode."""

    quick: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)
    timeout_s: float = 3600


PAGING_FULL = "1000,100000,1000000,10000000"
PLANS: dict[str, Plan] = {
    "mcp_latency": Plan(quick=["--quick"], full=["--profile"], timeout_s=1800),
    "startup": Plan(quick=["--quick"], full=[], timeout_s=1800),
    # Filling 10M messages took about 45 s on the 2-core machine of the record: part of the full run.
    "paging": Plan(quick=["--sizes", "1000,100000", "--repeats", "11"], full=["--sizes", PAGING_FULL]),
    # Full runs repeat every size 3 times, 1 GiB included (medians, not single runs).
    "object": Plan(quick=["--sizes", "10M", "--repeats", "1"], full=["--repeats", "3", "--large-repeats", "3"]),
    "backup": Plan(quick=["--size-mb", "64", "--repeats", "1"], full=["--repeats", "3"]),
    "audit": Plan(quick=["--quick"], full=[]),
    "publish": Plan(quick=["--quick"], full=[]),
}


def _offers(script: Path, flags: list[str]) -> list[str]:
    """The flags (with their values) that the script's --help mentions."""
    out = run_measured([sys.executable, str(script), "--help"], timeout_s=60)
    kept: list[str] = []
    i = 0
    while i < len(flags):
        flag = flags[i]
        value = [flags[i + 1]] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else []
        if flag in out.stdout:
            kept += [flag, *value]
        i += 1 + len(value)
    return kept


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_section(name: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    script = BENCH_DIR / SECTIONS[name][1]
    if not script.exists():
        print(f"== {name}: not run ({script.name} is not in the repository)", flush=True)
        return {"status": "missing"}
    plan = PLANS[name]
    args = _offers(script, (plan.quick if quick else plan.full) + extra)
    result = RESULTS_DIR / f"{name}.json"
    started = time.time()
    print(f"== {name}: {script.name} {' '.join(args)}", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    probe = Probe.now()
    run = run_measured([sys.executable, str(script), *args], env=env, cwd=BENCH_DIR.parent,
                       timeout_s=plan.timeout_s / (4 if quick else 1))
    load = probe.since()
    (RESULTS_DIR / f"{name}.log").write_text(run.stdout + "\n--- stderr ---\n" + run.stderr)
    fresh = result.exists() and result.stat().st_mtime >= started
    status: dict[str, Any] = {
        "args": args, "mode": "quick" if quick else "full", "seconds": round(run.wall_s, 1),
        "started": load["started"], "finished": load["finished"],
        **{k: load[k] for k in ("load_avg_before", "load_avg_after", "other_cpu_cores", "quiet")}}
    if run.returncode != 0 or not fresh:
        why = f"exit status {run.returncode}" if run.returncode != 0 else "no results file written"
        print(f"   failed ({why}); log: {RESULTS_DIR / (name + '.log')}", flush=True)
        return {**status, "status": "failed", "tail": f"{why}\n{_tail(run.stderr or run.stdout)}"}
    print(f"   ok in {run.wall_s:.0f} s", flush=True)
    return {**status, "status": "ok"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes: the whole run takes a few minutes")
    parser.add_argument("--only", help=f"Comma-separated sections to run (of {', '.join(SECTIONS)})")
    parser.add_argument("--no-10m", action="store_true", help="Full run: page a 1M-message stream at most")
    parser.add_argument("--report-only", action="store_true", help="Regenerate docs/benchmarks.md, run nothing")
    parser.add_argument("--out", default=str(DOC), help="Where to write the report")
    args = parser.parse_args(argv)
    only = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    meta_path = RESULTS_DIR / "run.json"
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not args.report_only:
        started = time.time()
        meta: dict[str, Any] = {"mode": "quick" if args.quick else "full", "started": now_iso(),
                                "machine": machine(), "notes": []}
        sections: dict[str, Any] = {}
        for name in SECTIONS:
            if name not in only:
                old = (previous.get("sections") or {}).get(name)
                if old:
                    # Kept as it was measured: its own time, mode and conditions, marked as earlier.
                    mode = old.get("mode") or (previous.get("mode") if old.get("status") == "ok" else None)
                    sections[name] = {**old, "mode": mode,
                                      "status": "earlier" if old.get("status") == "ok" else old["status"]}
                continue
            extra: list[str] = []
            if name == "paging" and not args.quick and args.no_10m:
                extra = ["--sizes", PAGING_FULL.rsplit(",", 1)[0]]
            sections[name] = run_section(name, args.quick, extra)
        if not args.quick and args.no_10m and "paging" in only:
            meta["notes"].append("Paging was run without the 10M-message stream (--no-10m).")
        meta.update(sections=sections, ran=[n for n in SECTIONS if n in only], finished=now_iso(),
                    seconds=round(time.time() - started, 1), load_avg_end=[round(v, 2) for v in os.getloadavg()])
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(RESULTS_DIR))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
