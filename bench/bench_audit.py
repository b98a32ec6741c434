"""How does `audit` scale with the number of streams, and what does it cost over a bare listing?

On one embedded nats-server the account grows to each size (default 10, 100 and
1,000 streams; each stream holds a few messages and has one or two durable
consumers). At each size, `audit` runs through natsop's operations layer
(`Toolkit.call`, with the system account configured, as an operator would run it)
and reports wall time and the requests it made (the audit result's `requests`).
Baselines in the same run, with nats-py: a bare STREAM.LIST walk (the least any
audit must do), and that walk plus one CONSUMER.LIST per stream with consumers
(the data the consumer rules need). Also timed: the audit without the system
account, which skips the one VARZ scatter-gather (whose replies are awaited until
a short lull, a fixed cost).

    python bench/bench_audit.py [--sizes 10,100,1000] [--repeats 5] [--quick] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from natsop import EmbeddedServer, Toolkit
from natsop.api import Toolkit as _Toolkit
from natsop.settings import Settings, Target

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import log, ratio, summary, write_result


async def grow(nc: NATS, have: int, want: int, batch: int = 25) -> None:
    """Add streams have..want-1 (3 messages each, consumers: one on odd, two on even indexes)."""
    js = nc.jetstream()

    async def one(i: int) -> None:
        name = f"A{i:05d}"
        await js.add_stream(name=name, subjects=[f"audit.{i}.>"], max_msgs=1000, max_age=86400,
                            duplicate_window=60)
        for k in range(3):
            await js.publish(f"audit.{i}.m", f"message {k}".encode())
        for c in range(1 + (i % 2 == 0)):
            await js.add_consumer(name, durable_name=f"C{c}", ack_policy="explicit")

    for start in range(have, want, batch):
        await asyncio.gather(*(one(i) for i in range(start, min(want, start + batch))))


async def list_walk(nc: NATS, consumers: bool) -> int:
    """Walk STREAM.LIST (and CONSUMER.LIST per stream with consumers); the requests made."""
    requests, offset = 0, 0
    streams: list[dict[str, Any]] = []
    while True:
        msg = await nc.request("$JS.API.STREAM.LIST", json.dumps({"offset": offset}).encode(), timeout=30)
        requests += 1
        page = json.loads(msg.data)
        items = page.get("streams") or []
        streams.extend(items)
        offset += len(items)
        if not items or offset >= int(page.get("total") or 0):
            break
    if consumers:
        for s in streams:
            if int(s["state"].get("consumer_count") or 0):
                msg = await nc.request(f"$JS.API.CONSUMER.LIST.{s['config']['name']}", b'{"offset":0}', timeout=30)
                requests += 1
                json.loads(msg.data)
    return requests


async def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    out, last = [], None
    await fn()  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out, last


def app_only(server: EmbeddedServer) -> Toolkit:
    """A toolkit with the APP account only: no system account configured."""
    target = Target(name="default", servers=(server.url,), source="bench", user=server.app.user,
                    password=server.app.password)
    return _Toolkit(Settings(default=target, accounts={}, embedded=True))


async def bench(sizes: list[int], repeats: int) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as tmp:
        async with EmbeddedServer(store_dir=Path(tmp) / "store") as server:
            nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
            try:
                async with Toolkit.for_server(server) as tk, app_only(server) as tk_app:
                    have = 0
                    for n in sizes:
                        t0 = time.perf_counter()
                        await grow(nc, have, n)
                        have = n
                        log(f"{n} streams ready in {time.perf_counter() - t0:.1f}s")
                        reps = repeats if n < 1000 else max(1, repeats // 2 + 1)
                        audit_ms, res = await timed(lambda: tk.call("audit"), reps)
                        app_ms, res_app = await timed(lambda: tk_app.call("audit"), reps)
                        walk_ms, walk_req = await timed(lambda: list_walk(nc, consumers=False), reps)
                        full_ms, full_req = await timed(lambda: list_walk(nc, consumers=True), reps)
                        a, w, f, b = (summary(x, 2) for x in (audit_ms, walk_ms, full_ms, app_ms))
                        rows.append({
                            "streams": n,
                            "consumers": res.checked["consumers"],
                            "repeats": reps,
                            "audit_ms": a,
                            "audit_requests": res.requests,
                            "audit_findings": res.summary.model_dump(),
                            "audit_without_system_ms": b,
                            "audit_without_system_requests": res_app.requests,
                            "stream_list_walk_ms": w,
                            "stream_list_walk_requests": walk_req,
                            "list_and_consumers_ms": f,
                            "list_and_consumers_requests": full_req,
                            "ratio_audit_to_walk": ratio(a["median"], w["median"]),
                            "ratio_audit_to_list_and_consumers": ratio(a["median"], f["median"]),
                            "ratio_audit_without_system_to_list_and_consumers": ratio(b["median"], f["median"]),
                            "audit_ms_per_stream": round(a["median"] / n, 3),
                        })
                        log(f"{n} streams: audit {a['median']:.0f} ms ({res.requests} requests), "
                            f"walk {w['median']:.1f} ms ({walk_req})")
            finally:
                await nc.close()
    return {"sizes": sizes, "repeats": repeats, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = ["| streams | audit ms | requests | no-system ms | STREAM.LIST walk ms | requests | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['streams']:,} | {r['audit_ms']['median']:.1f} | {r['audit_requests']} "
                     f"| {r['audit_without_system_ms']['median']:.1f} | {r['stream_list_walk_ms']['median']:.1f} "
                     f"| {r['stream_list_walk_requests']} | {r['ratio_audit_to_walk']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="Stream counts, comma-separated, ascending")
    parser.add_argument("--repeats", type=int, default=5, help="Audits per size (median reported)")
    parser.add_argument("--quick", action="store_true", help="10 and 100 streams, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="10 streams, 1 repeat: checks that the bench runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/audit.json")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    repeats = max(1, args.repeats)
    if args.smoke:
        sizes, repeats = [10], 1
    elif args.quick:
        sizes, repeats = [10, 100], 3
    result = asyncio.run(bench(sizes, repeats))
    path = write_result("audit", result, args.output)
    print(table(result))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
