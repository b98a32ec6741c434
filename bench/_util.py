"""Shared by the benchmarks: statistics, timing, peak RSS of a child process, the machine.

Every benchmark writes one JSON document (see `write_result`) that carries its own
`machine` block and `timestamp`, so a result file says where and when it was measured.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO = BENCH_DIR.parent


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(samples: Iterable[float], digits: int = 4) -> dict[str, Any]:
    """n, median, p95, min, max and mean of samples (rounded)."""
    data = list(samples)
    return {
        "n": len(data),
        "median": round(statistics.median(data), digits),
        "p95": round(percentile(data, 95), digits),
        "min": round(min(data), digits),
        "max": round(max(data), digits),
        "mean": round(statistics.fmean(data), digits),
    }


def ratio(a: float, b: float, digits: int = 2) -> float | None:
    """a / b, or None when b is zero."""
    return round(a / b, digits) if b else None


# --- timing --------------------------------------------------------------------------------------


async def time_calls(call: Callable[[], Awaitable[Any]], n: int, *, warmup: int = 0) -> list[float]:
    """Run `call` warmup times untimed, then n times; the duration of each timed call in ms."""
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


@dataclass
class ChildRun:
    """A finished child process: exit status, output, wall time and peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int


def run_measured(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 timeout_s: float | None = None, stdin: int | None = subprocess.DEVNULL) -> ChildRun:
    """Run argv to completion; its peak RSS (ru_maxrss of this child alone, via wait4) and wall time.

    Output goes to temporary files rather than pipes, so that we can reap the child
    with os.wait4 ourselves (a pipe reader would call waitpid first and lose the rusage).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=dict(env) if env is not None else None, cwd=cwd,
                                stdin=stdin, stdout=out, stderr=err)
        deadline = None if timeout_s is None else t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(returncode=proc.returncode, stdout=out.read().decode(errors="replace"),
                        stderr=err.read().decode(errors="replace"), wall_s=wall,
                        peak_rss_bytes=usage.ru_maxrss * 1024)  # Linux reports KiB


def status_bytes(key: str, pid: int | str = "self") -> int:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM, ...) in bytes; 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- environment ---------------------------------------------------------------------------------


def natsop_env(server: Any, config_home: str | Path, *, system: bool = True) -> dict[str, str]:
    """The process environment for a natsop child pointed at `server` (APP account; SYS as system).

    NATS_* settings from the machine running the benchmark are removed, and natscli
    contexts are hidden behind an empty XDG_CONFIG_HOME.
    """
    env = bare_env(config_home)
    env.update({"NATS_URL": server.url, "NATS_USER": server.app.user, "NATS_PASSWORD": server.app.password})
    if system:
        env.update({"NATSOP_SYSTEM_USER": server.system.user, "NATSOP_SYSTEM_PASSWORD": server.system.password})
    return env


def bare_env(config_home: str | Path) -> dict[str, str]:
    """This environment without any NATS or natsop settings and without natscli contexts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env["NATS_CONTEXT"] = ""
    return env


# --- the machine ---------------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def nats_server_version() -> str | None:
    try:
        from natsop.embedded import find_server_binary

        out = subprocess.run([find_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except Exception:
        return None
    return out.stdout.strip().removeprefix("nats-server: ") or None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS, load, and the versions of everything measured."""
    mem_kib = _first("/proc/meminfo", "MemTotal")
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    import natsop

    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_avg": load,
        "python": platform.python_version(),
        "nats_server": nats_server_version(),
        "natsop": natsop.__version__,
        "natsop_commit": git_commit(),
        "nats_py": _version("nats-py"),
        "mcp": _version("mcp"),
    }


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_result(name: str, data: dict[str, Any], output: str | Path | None = None) -> Path:
    """Write a benchmark's JSON (with machine and timestamp added) to `output` or bench/results/<name>.json."""
    path = Path(output) if output else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": name, "timestamp": now_iso(), "machine": machine(), **data}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def log(*parts: Any) -> None:
    """Progress to stderr (stdout is kept for the tables)."""
    print(*parts, file=sys.stderr, flush=True)


def run(coro: Awaitable[Any]) -> Any:
    """asyncio.run for a coroutine built by the caller."""
    async def main() -> Any:
        return await coro

    return asyncio.run(main())
