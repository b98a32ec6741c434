"""Shared by the benchmarks: statistics, timing, peak RSS of a child process, the machine.

Every benchmark writes one JSON document (see `write_result`) that carries its own
`machine` block, `timestamp` and `provenance` (the code it measured, when, and how busy
the machine was while it ran), so a result file says where, when and under what
conditions it was measured. The provenance clock starts when this module is imported,
which every benchmark does before it starts measuring.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import math
import os
import platform
import resource
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
        from natsop.embedded.server import find_server_binary

        out = subprocess.run([find_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
    except Exception:
        return None
    return out.stdout.strip().removeprefix("nats-server: ") or None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS, load, and the versions of everything measured."""
    mem_kib = _first("/proc/meminfo", "MemTotal")
    import natsop

    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_avg": load_avg(),
        "python": platform.python_version(),
        "nats_server": nats_server_version(),
        "natsop": natsop.__version__,
        "natsop_commit": git_commit(),
        "nats_py": _version("nats-py"),
        "mcp": _version("mcp"),
    }


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- provenance: which code, when, and how busy the machine was -------------------------------------

# Other processes may use at most this many cores on average (beyond the benchmark's own process
# tree) for a run to count as quiet. On the 2-core machine of the record that is an eighth of it.
QUIET_OTHER_CORES = 0.25


def _cpu_times() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    fields += [0] * (8 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _descendants_cpu(root: int) -> float:
    """CPU seconds of the live descendants of `root` (with the children they have reaped)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces
        try:
            ppid = int(rest[1])
            cpu[int(entry)] = sum(int(v) for v in rest[11:15]) / tick  # utime stime cutime cstime
        except (IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def own_cpu() -> float:
    """CPU seconds of this process and all its descendants, reaped or alive."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + _descendants_cpu(os.getpid())


def load_avg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


@dataclass
class Probe:
    """A point in time to measure the machine's load from: wall clock, machine CPU, our own CPU."""

    wall: float
    started: str
    load: list[float]
    busy_s: float
    steal_s: float
    own_s: float

    @classmethod
    def now(cls, own_s: float | None = None) -> Probe:
        busy, steal = _cpu_times()
        return cls(time.monotonic(), now_iso(), load_avg(), busy, steal, own_cpu() if own_s is None else own_s)

    def since(self, own_s: float | None = None) -> dict[str, Any]:
        """Start and end, load average before and after, and the CPU that other processes used meanwhile.

        `own_s` is our CPU now (default: this process tree's); what the machine spent beyond
        it is other work. Quiet means other processes used at most QUIET_OTHER_CORES on average.
        """
        end = Probe.now(own_s)
        wall = max(end.wall - self.wall, 1e-9)
        other = max(0.0, (end.busy_s - self.busy_s) - (end.own_s - self.own_s))
        other_cores = round(other / wall, 2) if self.busy_s else None
        return {
            "started": self.started, "finished": end.started, "seconds": round(wall, 1),
            "load_avg_before": self.load, "load_avg_after": end.load,
            "other_cpu_cores": other_cores,
            "steal_cores": round((end.steal_s - self.steal_s) / wall, 2) if self.busy_s else None,
            "quiet": None if other_cores is None else other_cores <= QUIET_OTHER_CORES,
            "quiet_rule": f"other processes used <= {QUIET_OTHER_CORES} cores on average during the run",
        }


# The clock of this benchmark process: it starts when a benchmark imports this module.
_START = Probe.now()


def git_state() -> dict[str, Any]:
    """The commit checked out and the files under src/ and bench/ that differ from it (uncommitted)."""
    out: dict[str, Any] = {"commit": git_commit(), "uncommitted": None}
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--", "src", "bench"], cwd=REPO,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return out
    if status.returncode == 0:
        out["uncommitted"] = sorted(line[3:] for line in status.stdout.splitlines()
                                    if line[3:] and not line[3:].startswith("bench/results/"))
    return out


def provenance(start: Probe | None = None) -> dict[str, Any]:
    """What a result was measured on: commit, uncommitted files, command, times and load (see Probe.since)."""
    return {**git_state(), "argv": [Path(sys.argv[0]).name, *sys.argv[1:]], **(start or _START).since()}


def write_result(name: str, data: dict[str, Any], output: str | Path | None = None) -> Path:
    """Write a benchmark's JSON (with machine and timestamp added) to `output` or bench/results/<name>.json."""
    path = Path(output) if output else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": name, "timestamp": now_iso(), "machine": machine(), "provenance": provenance(), **data}
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
