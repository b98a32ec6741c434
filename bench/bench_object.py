"""Object Store put and get: natsop against nats-py's own ObjectStore, same server, same run.

For each size, a file of random (incompressible) bytes is stored and read back by
natsop's operations (`object_put` / `object_get` through `Toolkit`) and by raw
nats-py (`ObjectStore.put` from the open file / `ObjectStore.get(writeinto=file)`),
each transfer in a fresh subprocess so that its peak resident memory (VmHWM) is its
own. Every size is repeated (3 times by default, 1 GiB included), natsop and nats-py
interleaved and taking turns to go first. Reported: throughput in MiB/s (median, min
and max of the runs), the peak RSS of the process (the largest of the runs), with the
ratios natsop / nats-py (of the medians, and of each back-to-back pair). Both write to
one bucket (no compression, so the server's CPU is not what is measured) on an
embedded nats-server.

    python bench/bench_object.py [--sizes 10M,100M,1G] [--repeats 3] [--large-repeats 3] [--smoke]

Results go to bench/results/object.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import log, ratio, write_result
from natsop import EmbeddedServer, Toolkit

BUCKET = "BENCH"
MiB = 1024 * 1024
LARGE = 1024 * MiB

# Runs in a fresh interpreter: one transfer, timed from just before to just after the call.
_CHILD = r"""
import asyncio, json, os, sys, time

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0

async def natsop(mode, files, name, bucket):
    from natsop.api import Toolkit
    async with Toolkit.from_env(files_dir=files) as tk:
        await tk.call("object_info", bucket=bucket)
        base = status("VmRSS")
        t0 = time.perf_counter()
        if mode == "put":
            await tk.call("object_put", bucket=bucket, file="data.bin", name=name)
        else:
            await tk.call("object_get", bucket=bucket, name=name, file="out-natsop.bin", overwrite=True)
        return time.perf_counter() - t0, base

async def natspy(mode, files, name, bucket):
    import nats
    nc = await nats.connect(os.environ["NATS_URL"], user=os.environ["NATS_USER"],
                            password=os.environ["NATS_PASSWORD"])
    try:
        store = await nc.jetstream().object_store(bucket)
        base = status("VmRSS")
        t0 = time.perf_counter()
        if mode == "put":
            with open(os.path.join(files, "data.bin"), "rb") as f:
                await store.put(name, f)
        else:
            with open(os.path.join(files, "out-natspy.bin"), "wb") as f:
                await store.get(name, writeinto=f)
        return time.perf_counter() - t0, base
    finally:
        await nc.close()

client, mode, files, name, bucket = sys.argv[1:6]
run = natsop if client == "natsop" else natspy
seconds, base = asyncio.run(run(mode, files, name, bucket))
print(json.dumps({"seconds": seconds, "baseline_rss": base, "peak_rss": status("VmHWM")}))
"""


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def label(size: int) -> str:
    for unit, n in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= n and size % n == 0:
            return f"{size // n} {unit}"
    return f"{size} B"


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            left -= len(block)


async def child(env: dict[str, str], client: str, mode: str, files: Path, name: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, client, mode, str(files), name, BUCKET, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{client} {mode} failed:\n{err.decode()[-4000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


def summarize(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median throughput with its spread; peak RSS the largest of the runs."""
    seconds = statistics.median(r["seconds"] for r in runs)
    speeds = [size / MiB / r["seconds"] for r in runs]
    return {
        "seconds_median": round(seconds, 4),
        "mib_per_s": round(size / MiB / seconds, 1),
        "mib_per_s_min": round(min(speeds), 1),
        "mib_per_s_max": round(max(speeds), 1),
        "peak_rss_mib": round(max(r["peak_rss"] for r in runs) / MiB, 1),
        "rss_growth_mib": round(max(r["peak_rss"] - r["baseline_rss"] for r in runs) / MiB, 1),
        "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
    }


async def bench(sizes: list[int], repeats: int, large_repeats: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        async with EmbeddedServer(store_dir=Path(tmp) / "store") as server:
            env = {**os.environ, "NATS_URL": server.url, "NATS_USER": server.app.user,
                   "NATS_PASSWORD": server.app.password, "NATS_CONTEXT": "",
                   "XDG_CONFIG_HOME": str(Path(tmp) / "config")}
            async with Toolkit.for_server(server) as tk:
                await tk.call("object_add", bucket=BUCKET, compression=False,
                              description="bench: incompressible data, no compression")
                v = (await tk.context.nc()).connected_server_version
                version = f"{v.major}.{v.minor}.{v.patch}"
            for size in sizes:
                write_random(files / "data.bin", size)
                n = large_repeats if size >= LARGE else repeats
                runs: dict[str, list[dict[str, Any]]] = {}
                for i in range(n):
                    # natsop and nats-py take turns to go first, for the put and then for the get.
                    clients = ("natsop", "natspy") if i % 2 == 0 else ("natspy", "natsop")
                    for mode in ("put", "get"):
                        for client in clients:
                            r = await child(env, client, mode, files, f"obj-{client}")
                            runs.setdefault(f"{client}_{mode}", []).append(r)
                            log(f"  {label(size):>8} {client:6} {mode} #{i + 1}: {r['seconds']:.3f}s "
                                f"peak {r['peak_rss'] / MiB:.0f} MiB")
                    # Both clients verify the digest as they read; the sizes must match too.
                    for copy in ("out-natsop.bin", "out-natspy.bin"):
                        if (files / copy).stat().st_size != size:
                            raise SystemExit(f"{copy} has the wrong size")
                row: dict[str, Any] = {"size": size, "label": label(size), "repeats": n}
                for key, value in runs.items():
                    row[key] = summarize(size, value)
                for mode in ("put", "get"):
                    ours, theirs = row[f"natsop_{mode}"], row[f"natspy_{mode}"]
                    row[f"{mode}_throughput_ratio"] = ratio(ours["mib_per_s"], theirs["mib_per_s"])
                    row[f"{mode}_peak_rss_ratio"] = ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])
                    # natsop's and nats-py's runs of one repeat ran back to back: steadier under load.
                    row[f"{mode}_pair_ratios"] = [ratio(b["seconds"], a["seconds"]) for a, b in zip(
                        runs[f"natsop_{mode}"], runs[f"natspy_{mode}"], strict=True)]
                rows.append(row)
                for f in files.iterdir():
                    f.unlink()
    return {
        "benchmark": "object store put/get: natsop vs nats-py ObjectStore",
        "server": version,
        "python": platform.python_version(),
        "chunk_size": 128 * 1024,
        "bucket": "file storage, no compression, one replica",
        "results": rows,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| size | op | natsop MiB/s (min-max) | nats-py MiB/s (min-max) | ratio | natsop peak RSS (growth) "
        "| nats-py peak RSS (growth) | ratio | runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        for mode in ("put", "get"):
            ours, theirs = row[f"natsop_{mode}"], row[f"natspy_{mode}"]
            lines.append(
                f"| {row['label']} | {mode} | {ours['mib_per_s']} ({ours['mib_per_s_min']}-{ours['mib_per_s_max']}) "
                f"| {theirs['mib_per_s']} ({theirs['mib_per_s_min']}-{theirs['mib_per_s_max']}) "
                f"| {row[f'{mode}_throughput_ratio']} | {ours['peak_rss_mib']} MiB (+{ours['rss_growth_mib']}) "
                f"| {theirs['peak_rss_mib']} MiB (+{theirs['rss_growth_mib']}) "
                f"| {row[f'{mode}_peak_rss_ratio']} | {row['repeats']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=None, help="Object sizes, e.g. 10M,100M,1G (default 10M,100M,1G)")
    parser.add_argument("--repeats", type=int, default=None, help="Runs per size below 1 GiB (default 3; median)")
    parser.add_argument("--large-repeats", type=int, default=3, help="Runs per size of 1 GiB and more (median)")
    parser.add_argument("--smoke", action="store_true", help="1 MiB, 1 run: checks that the bench runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/object.json")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in (args.sizes or ("1M" if args.smoke else "10M,100M,1G")).split(",") if s.strip()]
    repeats = args.repeats or (1 if args.smoke else 3)
    report = asyncio.run(bench(sizes, max(1, repeats), max(1, args.large_repeats)))
    path = write_result("object", report, args.output)
    print(table(report))
    print("\nGrowth is the peak over the process's resident size just before the transfer.")
    print(f"server {report['server']}, Python {report['python']}; results in {path}")


if __name__ == "__main__":
    main()
