"""How long from starting `natsop serve` to a completed MCP initialize, and where the time goes?

Each figure is the median of repeated cold starts, timed by a real MCP client
(`mcp.Client` over stdio: spawn, then the initialize handshake):

- natsop with the embedded server: a bare environment (no NATS_* settings,
  NATSOP_DATA_DIR in a temporary directory) - first start on a fresh data directory,
  and later starts on one that already holds the store and credentials;
- natsop with an external server (NATS_URL to a running EmbeddedServer);
- baselines: `python -c pass`, and a bare MCP SDK hello server's initialize.

Where the time goes: `python -c "import natsop.faces.cli"` and `python -X importtime`
(self time per top-level package, and the slowest modules), for `import natsop.faces.cli`
and for the whole `natsop serve` path; and EmbeddedServer.start in process.
Target: <= 0.8 s with the embedded server.

    python bench/bench_startup.py [--repeats 10] [--quick] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from natsop import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import (
    BENCH_DIR,
    bare_env,
    log,
    natsop_env,
    ratio,
    run_measured,
    summary,
    write_result,
)

TARGET_S = 0.8


async def initialize_s(params: StdioServerParameters) -> float:
    """Seconds from spawning the server to the end of the initialize handshake."""
    t0 = time.perf_counter()
    async with Client(params, read_timeout_seconds=60) as client:
        elapsed = time.perf_counter() - t0
        if client.server_info is None:
            raise RuntimeError("the server did not identify itself")
    return elapsed


def natsop_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "natsop", "serve"], env=env)


def process_s(argv: list[str], env: dict[str, str]) -> float:
    run = run_measured(argv, env=env, timeout_s=60)
    if run.returncode != 0:
        raise RuntimeError(f"{argv} failed: {run.stderr[-2000:]}")
    return run.wall_s


def importtime(argv: list[str], env: dict[str, str], top: int = 12, tries: int = 3) -> dict[str, Any]:
    """The least noisy of a few `-X importtime` runs (smallest total), parsed."""
    runs = [_importtime(argv, env, top) for _ in range(tries)]
    return min(runs, key=lambda r: float(r["total_ms"]))


def _importtime(argv: list[str], env: dict[str, str], top: int) -> dict[str, Any]:
    """Parse -X importtime: total, self time by top-level package, and the slowest modules (cumulative)."""
    run = run_measured([sys.executable, "-X", "importtime", *argv], env=env, timeout_s=60)
    rows = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        # "import time:    <self us> | <cumulative us> | <two spaces per nesting level><module>"
        self_part, cum_part, name = line.removeprefix("import time:").split("|", 2)
        name = name.rstrip().removeprefix(" ")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), int(self_part), int(cum_part), depth))
    by_package: dict[str, int] = {}
    for name, self_us, _cum, _depth in rows:
        root = name.split(".")[0]
        by_package[root] = by_package.get(root, 0) + self_us
    total_us = sum(self_us for _n, self_us, _c, _d in rows)
    return {
        "command": " ".join(["python", "-X", "importtime", *argv]),
        "total_ms": round(total_us / 1000, 1),
        "modules": len(rows),
        "by_package_ms": {k: round(v / 1000, 1) for k, v in
                          sorted(by_package.items(), key=lambda kv: -kv[1])[:top]},
        "slowest_cumulative_ms": {name: round(cum / 1000, 1) for name, _s, cum, _d in
                                  sorted(rows, key=lambda r: -r[2])[:top]},
    }


# Functions whose cumulative time is a stage of `natsop serve` starting (file suffix, function name).
_STAGES = {
    "import the mcp SDK (mcp/__init__, client included)": ("mcp/__init__.py", "<module>"),
    "build the CLI (build_cli: loads every operation module)": ("natsop/cli.py", "build_cli"),
    "  of which: load the operations (registry._load)": ("natsop/registry.py", "_load"),
    "MCP tool definitions (build_server: model_json_schema per tool)": ("natsop/mcp_server.py", "build_server"),
}


def startup_profile(env: dict[str, str], work: Path) -> dict[str, Any]:
    """cProfile `natsop serve` from start to exit (stdin at EOF): share of each start-up stage."""
    out = work / "start.prof"
    run = run_measured([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "natsop", "serve"], env=env,
                       timeout_s=60)
    if run.returncode != 0 or not out.exists():
        return {"error": run.stderr[-1000:]}
    stats = pstats.Stats(str(out))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    imports = max((v[3] for (f, _l, n), v in raw.items() if n == "_find_and_load"), default=0.0)
    stages = {"all imports (incl. the operation modules)": imports}
    for label, (suffix, name) in _STAGES.items():
        stages[label] = sum(v[3] for (f, _l, n), v in raw.items() if f.endswith(suffix) and n == name)
    return {
        "profiled_total_s": round(total, 3),
        "shares": {k: round(v / total, 3) for k, v in stages.items()},
        "note": "cProfile slows Python code; read the shares, not the times.",
    }


async def server_start_s(work: Path, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        server = EmbeddedServer(store_dir=work / f"start-{i}")
        t0 = time.perf_counter()
        await server.start()
        out.append(time.perf_counter() - t0)
        await server.stop()
    return out


async def bench(repeats: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as tmp:
        work = Path(tmp)
        plain = bare_env(work / "config")
        hello = StdioServerParameters(command=sys.executable, args=[str(BENCH_DIR / "_hello_server.py")], env=plain)
        # Later starts reuse the data directory of the first fresh start (store and credentials exist).
        reused = {**plain, "NATSOP_DATA_DIR": str(work / "data-fresh-0")}
        async with EmbeddedServer(store_dir=work / "external") as server:
            external = natsop_env(server, work / "config")
            for i in range(repeats):
                # Interleaved, so that load from elsewhere falls on every kind of start alike.
                add("python_pass", process_s([sys.executable, "-c", "pass"], plain))
                add("import_natsop_cli", process_s([sys.executable, "-c", "import natsop.faces.cli"], plain))
                add("sdk_hello_initialize", await initialize_s(hello))
                add("natsop_external_initialize", await initialize_s(natsop_params(external)))
                fresh = {**plain, "NATSOP_DATA_DIR": str(work / f"data-fresh-{i}")}
                add("natsop_embedded_fresh_initialize", await initialize_s(natsop_params(fresh)))
                add("natsop_embedded_initialize", await initialize_s(natsop_params(reused)))
                log(f"start-up round {i + 1}/{repeats}")
            serve_imports = importtime(["-m", "natsop", "serve"], external, tries=min(3, repeats))
            profile = startup_profile(external, work)
        for s in await server_start_s(work, repeats):
            add("embedded_server_start", s)
        cli_imports = importtime(["-c", "import natsop.faces.cli"], plain, tries=min(3, repeats))

    stats = {k: summary(v) for k, v in samples.items()}
    med = {k: v["median"] for k, v in stats.items()}
    embedded = med["natsop_embedded_initialize"]
    return {
        "repeats": repeats,
        "target_s": TARGET_S,
        "seconds": stats,
        "ratios": {
            "natsop_embedded_to_sdk_hello": ratio(embedded, med["sdk_hello_initialize"]),
            "natsop_external_to_sdk_hello": ratio(med["natsop_external_initialize"], med["sdk_hello_initialize"]),
            "natsop_embedded_to_python_pass": ratio(embedded, med["python_pass"]),
        },
        "breakdown_s": {
            "python interpreter (python -c pass)": med["python_pass"],
            "imports (import natsop.faces.cli - python -c pass)": round(med["import_natsop_cli"] - med["python_pass"], 4),
            "embedded nats-server start (EmbeddedServer.start)": med["embedded_server_start"],
            "rest of the external-server start (serve imports, connect, handshake)":
                round(med["natsop_external_initialize"] - med["import_natsop_cli"], 4),
        },
        "importtime_cli": cli_imports,
        "importtime_serve": serve_imports,
        "profile_serve": profile,
        "target_met": embedded <= TARGET_S,
        "target_met_fresh": med["natsop_embedded_fresh_initialize"] <= TARGET_S,
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| start | median s | p95 s |", "|---|---:|---:|"]
    for key, s in result["seconds"].items():
        lines.append(f"| {key} | {s['median']:.3f} | {s['p95']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="Starts of each kind (median reported)")
    parser.add_argument("--quick", action="store_true", help="3 starts of each kind")
    parser.add_argument("--smoke", action="store_true", help="1 start of each kind: checks that the bench runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/startup.json")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else 3 if args.quick else max(1, args.repeats)
    result = asyncio.run(bench(repeats))
    path = write_result("startup", result, args.output)
    print(table(result))
    print(f"imports of natsop.faces.cli: {result['importtime_cli']['total_ms']} ms "
          f"(by package: {result['importtime_cli']['by_package_ms']})")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
