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

Reported: throughput in MiB/s of snapshot bytes over the wall time of the call, and
peak RSS (VmHWM) of the process, with the ratios natsop / bare loop.

    python bench/bench_backup.py [--size-mb 1024] [--repeats 1]

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
import asyncio, json, os, sys, time

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

async def natsop_call(tool, files, **kw):
    from natsop.api import Toolkit
    async with Toolkit.from_env(files_dir=files) as tk:
        await tk.call("stream_list")  # connect before timing
        base = status("VmRSS")
        t0 = time.perf_counter()
        r = await tk.call(tool, **kw)
        dt = time.perf_counter() - t0
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
    t0 = time.perf_counter()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    resp = await nc.request("$JS.API.STREAM.SNAPSHOT.BENCH", json.dumps(
        {"deliver_subject": inbox, "chunk_size": 128 * 1024}).encode(), timeout=30)
    total = 0
    with open(os.path.join(directory, "stream.tar.s2"), "wb") as f:
        while True:
            m = await sub.next_msg(timeout=30)
            if not m.data:
                break
            f.write(m.data)
            total += len(m.data)
            if m.reply:
                await nc.publish(m.reply, b"")
        f.flush()
        os.fsync(f.fileno())  # a backup is only taken once it is on disk (natsop does the same)
    doc = json.loads(resp.data)
    with open(os.path.join(directory, "backup.json"), "w") as f:
        json.dump({"config": doc["config"], "state": doc["state"]}, f, indent=2)
    dt = time.perf_counter() - t0
    await nc.close()
    return dt, total, base, {}

async def bare_restore(directory):
    import nats
    nc = await nats.connect(os.environ["NATS_URL"], user=os.environ["NATS_USER"],
                            password=os.environ["NATS_PASSWORD"])
    with open(os.path.join(directory, "backup.json")) as f:
        req = json.load(f)
    base = status("VmRSS")
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
    await nc.close()
    return dt, total, base, {}

async def main():
    mode, files, *rest = sys.argv[1:]
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
    print(json.dumps({"seconds": dt, "bytes": size, "base_rss": base, "hwm": status("VmHWM"), **extra}))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="Stream size in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each measurement (median reported)")
    parser.add_argument("--output", help="Result file (default bench/results/backup.json)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="natsop-bench-backup-"))
    files = work / "files"
    files.mkdir()
    try:
        with EmbeddedServer(store_dir=work / "store") as server:
            env = natsop_env(server, work / "config")
            env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
            log(f"filling {STREAM} with {args.size_mb} MiB of {MSG_SIZE // 1024} KiB messages ...")
            t0 = time.perf_counter()
            state = asyncio.run(_fill(server, args.size_mb))
            log(f"  {state['messages']} messages, {state['bytes'] / MiB:.0f} MiB in {time.perf_counter() - t0:.1f}s")

            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (
                "natsop_backup", "bare_backup", "natsop_restore", "natsop_restore_no_check", "bare_restore",
                "natsop_verify")}
            for rep in range(args.repeats):
                log(f"repeat {rep + 1}/{args.repeats}")
                for d in ("n", "b"):
                    shutil.rmtree(files / d, ignore_errors=True)
                # Alternate which goes first: the second writer of 1 GiB meets the first one's dirty pages.
                order = [("natsop_backup", "natsop-backup", "n"), ("bare_backup", "bare-backup", "b")]
                for key, mode, d in order if rep % 2 == 0 else order[::-1]:
                    runs[key].append(_child(env, mode, str(files), d))
                    log(f"  {key}", runs[key][-1])
                runs["natsop_verify"].append(_child(env, "natsop-verify", str(files), "n"))
                log("  natsop verify", runs["natsop_verify"][-1])
                restores: list[tuple[str, str, tuple[str, ...]]] = [
                    ("natsop_restore", "natsop-restore", ("n", "1")),
                    ("natsop_restore_no_check", "natsop-restore", ("n", "0")),
                    ("bare_restore", "bare-restore", ("b",))]
                for key, mode, extra in restores if rep % 2 == 0 else restores[::-1]:
                    asyncio.run(_delete(server))
                    runs[key].append(_child(env, mode, str(files), *extra))
                    log(f"  {key}", runs[key][-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, ours: str, base: str | None) -> dict[str, Any]:
        r: dict[str, Any] = {"operation": name,
                             "natsop_mib_per_s": round(_med(runs[ours], "mib_per_s"), 1),
                             "natsop_peak_rss_mib": round(_med(runs[ours], "peak_rss_bytes") / MiB, 1),
                             "natsop_rss_growth_mib": round(_med(runs[ours], "rss_growth_bytes") / MiB, 1)}
        if base:
            r["bare_rss_growth_mib"] = round(_med(runs[base], "rss_growth_bytes") / MiB, 1)
            r["bare_mib_per_s"] = round(_med(runs[base], "mib_per_s"), 1)
            r["bare_peak_rss_mib"] = round(_med(runs[base], "peak_rss_bytes") / MiB, 1)
            r["throughput_ratio"] = ratio(r["natsop_mib_per_s"], r["bare_mib_per_s"])
            r["rss_ratio"] = ratio(r["natsop_peak_rss_mib"], r["bare_peak_rss_mib"])
        return r

    rows = [
        row("stream_backup", "natsop_backup", "bare_backup"),
        row("stream_restore (check_archive, default)", "natsop_restore", "bare_restore"),
        row("stream_restore (check_archive=false)", "natsop_restore_no_check", "bare_restore"),
        row("backup_verify (decode + CRC, no server)", "natsop_verify", None),
    ]
    print(f"\nStream of {state['bytes'] / MiB:.0f} MiB ({state['messages']} messages of {MSG_SIZE // 1024} KiB, "
          f"incompressible), {args.repeats} run(s), median:\n")
    print("| operation | natsop MiB/s | bare loop MiB/s | ratio | natsop peak RSS MiB (growth) "
          "| bare peak RSS MiB (growth) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        bare_rss = (f"{r['bare_peak_rss_mib']} ({r['bare_rss_growth_mib']})" if "bare_peak_rss_mib" in r else "-")
        print(f"| {r['operation']} | {r['natsop_mib_per_s']} | {r.get('bare_mib_per_s', '-')} | "
              f"{r.get('throughput_ratio', '-')} | {r['natsop_peak_rss_mib']} ({r['natsop_rss_growth_mib']}) | "
              f"{bare_rss} | {r.get('rss_ratio', '-')} |")
    print("\nPeak RSS is VmHWM of the whole process; growth is the part above the process's RSS just before "
          "the call (interpreter and imports excluded).")
    path = write_result("backup", {
        "size_mb": args.size_mb, "message_bytes": MSG_SIZE, "stream_state": state, "repeats": args.repeats,
        "crc32c_accelerated": _has_crc32c(), "rows": rows, "runs": runs,
    }, args.output)
    log(f"\nwritten to {path}")


def _has_crc32c() -> bool:
    from natsop import s2

    return s2._FAST_CRC is not None


if __name__ == "__main__":
    main()
