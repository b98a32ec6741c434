"""Stream backup and restore: natsop against a bare snapshot-API loop, same server, same run.

A stream is filled with `--size-mb` of 64 KiB incompressible messages. Then, each in
a fresh subprocess (so that its peak resident memory is its own):

- natsop `stream_backup` (the operation through `Toolkit`), and a bare loop of the
  snapshot protocol written here with nats-py: subscribe, request, write each chunk,
  acknowledge it, stop at the empty message, fsync the file (both fsync: a backup
  still in the page cache is not taken yet);
- natsop `stream_restore` (by default it reads the whole archive before sending it;
  again with check_archive=false), and a bare restore loop: request, send 64 KiB
  chunks as requests, send the empty request, wait for the stream;
- natsop `backup_verify` (decodes the whole archive; no baseline).

Each measurement is repeated (--repeats, 3 by default), natsop and the bare loop
interleaved and taking turns to go first. Reported: throughput in MiB/s of snapshot
bytes over the wall time of the call (median, min and max of the runs, and each run),
the peak RSS (VmHWM) of the process (the largest of the runs), and the ratios natsop /
bare loop, both of the medians and of each pair of runs measured back to back.

Where the time goes in a backup: both the natsop child and the bare loop's child are
instrumented the same way, without changing natsop: the time spent waiting for the next
chunk (nats-py's `Subscription.next_msg`), publishing (the acks), writing the file,
fsync, and the process's CPU time. natsop's own snapshot loop is timed by wrapping
`natsop.ops.backup.snapshot_to_file` (and its file in a timing proxy); restore times
natsop's archive check (`_check_archive`). A wrapper that cannot be applied (a renamed
function) is left out and its counter missing.

    python bench/bench_backup.py [--size-mb 1024] [--repeats 3] [--smoke]

Results go to bench/results/backup.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from natsop import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import log, natsop_env, ratio, run_measured, write_result

STREAM = "BENCH"
MiB = 1024 * 1024
MSG_SIZE = 64 * 1024

# One transfer in a fresh interpreter; prints {"seconds", "bytes", "base_rss", "hwm"} as JSON.
_CHILD = r"""
import asyncio, json, os, resource, sys, time

TIMES = {}
COUNTS = {}
MISSING = []

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def add(key, dt):
    TIMES[key] = TIMES.get(key, 0.0) + dt
    COUNTS[key] = COUNTS.get(key, 0) + 1

class TimedFile:
    # Times write(); everything else goes to the file.
    def __init__(self, f):
        self._f = f
    def write(self, data):
        t = time.perf_counter()
        try:
            return self._f.write(data)
        finally:
            add("write", time.perf_counter() - t)
    def __getattr__(self, name):
        return getattr(self._f, name)

def instrument_nats():
    # The same counters for natsop and the bare loop: waiting for chunks, publishing, fsync.
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription
    next_msg, publish, fsync = Subscription.next_msg, Client.publish, os.fsync

    async def timed_next_msg(self, *a, **kw):
        t = time.perf_counter()
        try:
            return await next_msg(self, *a, **kw)
        finally:
            add("wait_for_chunks", time.perf_counter() - t)

    async def timed_publish(self, *a, **kw):
        t = time.perf_counter()
        try:
            return await publish(self, *a, **kw)
        finally:
            add("publish", time.perf_counter() - t)

    def timed_fsync(fd):
        t = time.perf_counter()
        try:
            return fsync(fd)
        finally:
            add("fsync", time.perf_counter() - t)

    Subscription.next_msg = timed_next_msg
    Client.publish = timed_publish
    os.fsync = timed_fsync

def instrument_natsop(tool):
    import natsop.ops.backup as b
    if tool == "stream_backup":
        orig = getattr(b, "snapshot_to_file", None)
        if orig is None:
            MISSING.append("natsop.ops.backup.snapshot_to_file")
            return
        async def timed_snapshot(nc, js, stream, out, *a, **kw):
            t = time.perf_counter()
            try:
                return await orig(nc, js, stream, TimedFile(out), *a, **kw)
            finally:
                add("snapshot_loop", time.perf_counter() - t)
        b.snapshot_to_file = timed_snapshot
    elif tool == "stream_restore":
        orig_check = getattr(b, "_check_archive", None)
        if orig_check is None:
            MISSING.append("natsop.ops.backup._check_archive")
            return
        async def timed_check(*a, **kw):
            t = time.perf_counter()
            try:
                return await orig_check(*a, **kw)
            finally:
                add("check_archive", time.perf_counter() - t)
        b._check_archive = timed_check

async def natsop_call(tool, files, **kw):
    from natsop.api import Toolkit
    instrument_natsop(tool)
    async with Toolkit.from_env(files_dir=files) as tk:
        await tk.call("stream_list")  # connect before timing
        base = status("VmRSS")
        TIMES.clear()
        COUNTS.clear()
        c0 = cpu()
        t0 = time.perf_counter()
        r = await tk.call(tool, **kw)
        dt = time.perf_counter() - t0
        TIMES["cpu"] = cpu() - c0
    size = getattr(r, "bytes", None) or getattr(r, "bytes_sent", None) or 0
    extra = {}
    if tool == "stream_restore":
        extra = {"verified": r.verified, "differences": r.differences[:5]}
    if tool == "backup_verify":
        size = r.backups[0].archive_bytes
        extra = {"ok": r.ok}
    return dt, size, base, extra

async def bare_backup(directory):
    import nats
    nc = await nats.connect(os.environ["NATS_URL"], user=os.environ["NATS_USER"],
                            password=os.environ["NATS_PASSWORD"])
    os.makedirs(directory, exist_ok=True)
    base = status("VmRSS")
    TIMES.clear()
    COUNTS.clear()
    c0 = cpu()
    t0 = time.perf_counter()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    resp = await nc.request("$JS.API.STREAM.SNAPSHOT.BENCH", json.dumps(
        {"deliver_subject": inbox, "chunk_size": 128 * 1024}).encode(), timeout=30)
    total = 0
    t_loop = time.perf_counter()
    with open(os.path.join(directory, "stream.tar.s2"), "wb") as raw:
        f = TimedFile(raw)
        while True:
            m = await sub.next_msg(timeout=30)
            if not m.data:
                break
            f.write(m.data)
            total += len(m.data)
            if m.reply:
                await nc.publish(m.reply, b"")
        f.flush()
        add("snapshot_loop", time.perf_counter() - t_loop)
        os.fsync(f.fileno())  # a backup is only taken once it is on disk (natsop does the same)
    doc = json.loads(resp.data)
    with open(os.path.join(directory, "backup.json"), "w") as f:
        json.dump({"config": doc["config"], "state": doc["state"]}, f, indent=2)
    dt = time.perf_counter() - t0
    TIMES["cpu"] = cpu() - c0
    await nc.close()
    return dt, total, base, {}

async def bare_restore(directory):
    import nats
    nc = await nats.connect(os.environ["NATS_URL"], user=os.environ["NATS_USER"],
                            password=os.environ["NATS_PASSWORD"])
    with open(os.path.join(directory, "backup.json")) as f:
        req = json.load(f)
    base = status("VmRSS")
    TIMES.clear()
    COUNTS.clear()
    c0 = cpu()
    t0 = time.perf_counter()
    resp = json.loads((await nc.request("$JS.API.STREAM.RESTORE.BENCH", json.dumps(req).encode(),
                                        timeout=30)).data)
    deliver = resp["deliver_subject"]
    total = 0
    with open(os.path.join(directory, "stream.tar.s2"), "rb") as f:
        while chunk := f.read(64 * 1024):
            await nc.request(deliver, chunk, timeout=30)
            total += len(chunk)
    final = json.loads((await nc.request(deliver, b"", timeout=600)).data)
    assert "error" not in final, final
    dt = time.perf_counter() - t0
    TIMES["cpu"] = cpu() - c0
    await nc.close()
    return dt, total, base, {}

async def main():
    mode, files, *rest = sys.argv[1:]
    if mode.endswith("-backup"):
        instrument_nats()
    if mode == "natsop-backup":
        out = await natsop_call("stream_backup", files, stream="BENCH", directory=rest[0])
    elif mode == "natsop-restore":
        out = await natsop_call("stream_restore", files, directory=rest[0], check_archive=rest[1] == "1")
    elif mode == "natsop-verify":
        out = await natsop_call("backup_verify", files, directory=rest[0])
    elif mode == "bare-backup":
        out = await bare_backup(os.path.join(files, rest[0]))
    else:
        out = await bare_restore(os.path.join(files, rest[0]))
    dt, size, base, extra = out
    times = {k + "_s": round(v, 4) for k, v in TIMES.items()}
    print(json.dumps({"seconds": dt, "bytes": size, "base_rss": base, "hwm": status("VmHWM"), "times": times,
                      "counts": COUNTS, "not_instrumented": MISSING, **extra}))

asyncio.run(main())
"""


async def _api(nc: Any, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b"",
                           timeout=60)
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _fill(server: EmbeddedServer, size_mb: int) -> dict[str, Any]:
    import nats

    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        resp = await _api(nc, f"STREAM.CREATE.{STREAM}", {"name": STREAM, "subjects": [f"{STREAM}.>"],
                                                          "max_msg_size": MSG_SIZE})
        assert "error" not in resp, resp
        js = nc.jetstream()
        count = size_mb * MiB // MSG_SIZE
        for i in range(count):
            data = os.urandom(MSG_SIZE)
            subject = f"{STREAM}.{i % 16}"
            if i % 256 == 255 or i == count - 1:
                await js.publish(subject, data, timeout=60)  # keep the server's inbound queue bounded
            else:
                await nc.publish(subject, data)
        info = await _api(nc, f"STREAM.INFO.{STREAM}")
        state: dict[str, Any] = info["state"]
        return state
    finally:
        await nc.close()


async def _delete(server: EmbeddedServer) -> None:
    import nats

    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    try:
        await _api(nc, f"STREAM.DELETE.{STREAM}")
        # nats-server tears the old store down in the background; give it a moment before restoring.
        await asyncio.sleep(1.0)
    finally:
        await nc.close()


def _child(env: dict[str, str], *args: str) -> dict[str, Any]:
    run = run_measured([sys.executable, "-c", _CHILD, *args], env=env, timeout_s=3600)
    if run.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{run.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    # VmHWM from inside the child: wait4's ru_maxrss also counts the parent's pages at fork time.
    out["peak_rss_bytes"] = int(out["hwm"])
    # What the transfer itself added on top of the interpreter and its imports.
    out["rss_growth_bytes"] = max(0, int(out["hwm"]) - int(out["base_rss"]))
    out["mib_per_s"] = out["bytes"] / MiB / out["seconds"] if out["seconds"] else None
    return out


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


# Counters of a backup child, in the order they are reported; "other" is the rest of the wall time.
BREAKDOWN = ("wait_for_chunks_s", "write_s", "publish_s", "fsync_s")


def breakdown(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Median seconds per counter over the runs, with what remains of the wall time ("other")."""
    if not runs or not all(r.get("times") for r in runs):
        return None
    out: dict[str, Any] = {"wall_s": round(_med(runs, "seconds"), 3)}
    for key in ("snapshot_loop_s", *BREAKDOWN, "check_archive_s", "cpu_s"):
        if all(key in r["times"] for r in runs):
            out[key] = round(float(statistics.median(r["times"][key] for r in runs)), 3)
    out["other_s"] = round(float(statistics.median(
        r["seconds"] - sum(r["times"].get(k, 0.0) for k in BREAKDOWN) for r in runs)), 3)
    for key, counter in (("chunks", "write"), ("fsyncs", "fsync")):
        counts = [r.get("counts", {}).get(counter) for r in runs]
        if all(counts):
            out[key] = int(statistics.median(c for c in counts if c))
    missing = sorted({m for r in runs for m in r.get("not_instrumented") or []})
    if missing:
        out["not_instrumented"] = missing
    return out


def row(runs: dict[str, list[dict[str, Any]]], name: str, ours: str, base: str | None) -> dict[str, Any]:
    """One operation: medians and spreads of natsop (and of its baseline), peak RSS the largest of the runs."""
    def side(prefix: str, key: str) -> dict[str, Any]:
        rs = runs[key]
        speeds = [r["mib_per_s"] for r in rs]
        return {f"{prefix}_mib_per_s": round(_med(rs, "mib_per_s"), 1),
                f"{prefix}_mib_per_s_min": round(min(speeds), 1),
                f"{prefix}_mib_per_s_max": round(max(speeds), 1),
                f"{prefix}_mib_per_s_runs": [round(v, 1) for v in speeds],
                f"{prefix}_peak_rss_mib": round(max(r["peak_rss_bytes"] for r in rs) / MiB, 1),
                f"{prefix}_rss_growth_mib": round(max(r["rss_growth_bytes"] for r in rs) / MiB, 1),
                f"{prefix}_breakdown": breakdown(rs)}

    r: dict[str, Any] = {"operation": name, "runs": len(runs[ours]), **side("natsop", ours)}
    if base:
        r.update(side("bare", base))
        r["throughput_ratio"] = ratio(r["natsop_mib_per_s"], r["bare_mib_per_s"])
        r["rss_ratio"] = ratio(r["natsop_peak_rss_mib"], r["bare_peak_rss_mib"])
        # Each repeat measures natsop and the bare loop back to back: their ratio is steadier under load.
        r["pair_ratios"] = [ratio(a["mib_per_s"], b["mib_per_s"]) for a, b in zip(runs[ours], runs[base],
                                                                                   strict=True)]
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=None, help="Stream size in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="Runs of each measurement, natsop and bare interleaved (default 3; median reported)")
    parser.add_argument("--smoke", action="store_true", help="A 4 MiB stream, 1 run: checks that the bench runs")
    parser.add_argument("--output", help="Result file (default bench/results/backup.json)")
    args = parser.parse_args()
    size_mb = args.size_mb or (4 if args.smoke else 1024)
    repeats = max(1, args.repeats or (1 if args.smoke else 3))

    work = Path(tempfile.mkdtemp(prefix="natsop-bench-backup-"))
    files = work / "files"
    files.mkdir()
    try:
        with EmbeddedServer(store_dir=work / "store") as server:
            env = natsop_env(server, work / "config")
            env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
            log(f"filling {STREAM} with {size_mb} MiB of {MSG_SIZE // 1024} KiB messages ...")
            t0 = time.perf_counter()
            state = asyncio.run(_fill(server, size_mb))
            log(f"  {state['messages']} messages, {state['bytes'] / MiB:.0f} MiB in {time.perf_counter() - t0:.1f}s")

            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (
                "natsop_backup", "bare_backup", "natsop_restore", "natsop_restore_no_check", "bare_restore",
                "natsop_verify")}
            for rep in range(repeats):
                log(f"repeat {rep + 1}/{repeats}")
                for d in ("n", "b"):
                    shutil.rmtree(files / d, ignore_errors=True)
                # Alternate which goes first: the second writer of 1 GiB meets the first one's dirty pages.
                order = [("natsop_backup", "natsop-backup", "n"), ("bare_backup", "bare-backup", "b")]
                for key, mode, d in order if rep % 2 == 0 else order[::-1]:
                    runs[key].append(_child(env, mode, str(files), d))
                    log(f"  {key}", _brief(runs[key][-1]))
                runs["natsop_verify"].append(_child(env, "natsop-verify", str(files), "n"))
                log("  natsop verify", _brief(runs["natsop_verify"][-1]))
                restores: list[tuple[str, str, tuple[str, ...]]] = [
                    ("natsop_restore", "natsop-restore", ("n", "1")),
                    ("natsop_restore_no_check", "natsop-restore", ("n", "0")),
                    ("bare_restore", "bare-restore", ("b",))]
                for key, mode, extra in restores if rep % 2 == 0 else restores[::-1]:
                    asyncio.run(_delete(server))
                    runs[key].append(_child(env, mode, str(files), *extra))
                    log(f"  {key}", _brief(runs[key][-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        row(runs, "stream_backup", "natsop_backup", "bare_backup"),
        row(runs, "stream_restore (check_archive, default)", "natsop_restore", "bare_restore"),
        row(runs, "stream_restore (check_archive=false)", "natsop_restore_no_check", "bare_restore"),
        row(runs, "backup_verify (decode + CRC, no server)", "natsop_verify", None),
    ]
    print(f"\nStream of {state['bytes'] / MiB:.0f} MiB ({state['messages']} messages of {MSG_SIZE // 1024} KiB, "
          f"incompressible), {repeats} run(s): median (min-max) MiB/s; peak RSS the largest of the runs:\n")
    print("| operation | natsop MiB/s | bare loop MiB/s | ratio | per-pair ratios | natsop peak RSS MiB (growth) "
          "| bare peak RSS MiB (growth) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        bare = (f"{r['bare_mib_per_s']} ({r['bare_mib_per_s_min']}-{r['bare_mib_per_s_max']})"
                if "bare_mib_per_s" in r else "-")
        bare_rss = f"{r['bare_peak_rss_mib']} ({r['bare_rss_growth_mib']})" if "bare_peak_rss_mib" in r else "-"
        print(f"| {r['operation']} | {r['natsop_mib_per_s']} ({r['natsop_mib_per_s_min']}-"
              f"{r['natsop_mib_per_s_max']}) | {bare} | {r.get('throughput_ratio', '-')} | "
              f"{', '.join(map(str, r.get('pair_ratios') or [])) or '-'} | {r['natsop_peak_rss_mib']} "
              f"({r['natsop_rss_growth_mib']}) | {bare_rss} |")
    for who in ("natsop", "bare"):
        b = rows[0].get(f"{who}_breakdown")
        if b:
            print(f"\nbackup, {who} (median s): " + ", ".join(f"{k} {v}" for k, v in b.items()))
    print("\nPeak RSS is VmHWM of the whole process; growth is the part above the process's RSS just before "
          "the call (interpreter and imports excluded).")
    path = write_result("backup", {
        "size_mb": size_mb, "message_bytes": MSG_SIZE, "stream_state": state, "repeats": repeats,
        "crc32c_accelerated": _has_crc32c(), "rows": rows, "runs": runs,
    }, args.output)
    log(f"\nwritten to {path}")


def _brief(run: dict[str, Any]) -> str:
    return (f"{run['mib_per_s']:.1f} MiB/s in {run['seconds']:.2f}s, peak {run['peak_rss_bytes'] / MiB:.0f} MiB"
            + (f", {run['times']}" if run.get("times") else ""))


def _has_crc32c() -> bool:
    from natsop.wire import s2

    return s2._FAST_CRC is not None


if __name__ == "__main__":
    main()
