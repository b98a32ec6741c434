"""Throughput of the publish tool's batch path (count=N) against nats-py publishing the same N messages.

The `publish` tool takes `count`: it sends the same message N times in one call.
Two paths are measured, each the median of repeated runs on one embedded nats-server:

- core: no stream captures the subject; natsop publishes N times and flushes once.
  Baseline: nats-py `nc.publish` N times and one `flush`.
- JetStream: a stream captures the subject; natsop waits for each acknowledgement in
  turn. Baseline: nats-py `js.publish` N times, each awaited (the same semantics).

natsop is timed through its operations layer (`Toolkit.call`) and through MCP
(`mcp.Client` over stdio to `natsop serve`, one tool call per batch). Reported:
messages per second and the ratio natsop / nats-py.

    python bench/bench_publish.py [--count 10000] [--repeats 5] [--payload-bytes 128] [--quick] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from mcp import Client, StdioServerParameters

from natsop import EmbeddedServer, Toolkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import log, natsop_env, ratio, write_result

STREAM = "PUB"
CORE_SUBJECT = "bench.core"  # captured by no stream
JS_SUBJECT = "pub.js"


async def rate(run: Callable[[], Awaitable[Any]], count: int, repeats: int) -> dict[str, Any]:
    """Messages per second over repeated runs of a batch of `count` messages (median, min, max)."""
    await run()  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await run()
        rates.append(count / (time.perf_counter() - t0))
    rates.sort()
    return {"msgs_per_s": round(rates[len(rates) // 2]), "min": round(rates[0]), "max": round(rates[-1]),
            "runs": len(rates)}


async def bench(count: int, repeats: int, payload_bytes: int) -> dict[str, Any]:
    payload = b"x" * payload_bytes
    text = payload.decode()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as tmp:
        work = Path(tmp)
        async with EmbeddedServer(store_dir=work / "store") as server:
            nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
            js = nc.jetstream()
            params = StdioServerParameters(command=sys.executable, args=["-m", "natsop", "serve"],
                                           env=natsop_env(server, work / "config"))
            try:
                async with Toolkit.for_server(server) as tk, Client(params, read_timeout_seconds=300) as client:
                    await tk.call("stream_add", stream=STREAM, subjects=[f"{STREAM.lower()}.>"],
                                  max_msgs=1_000_000)

                    async def core_raw() -> None:
                        for _ in range(count):
                            await nc.publish(CORE_SUBJECT, payload)
                        await nc.flush(timeout=30)

                    async def js_raw() -> None:
                        for _ in range(count):
                            await js.publish(JS_SUBJECT, payload, timeout=30)

                    async def tool(subject: str, jetstream: bool) -> None:
                        res: Any = await tk.call("publish", subject=subject, payload=text, count=count,
                                                 jetstream=jetstream, timeout_s=30)
                        assert res.count == count and res.acked == jetstream, res

                    async def mcp(subject: str, jetstream: bool) -> None:
                        res = await client.call_tool("publish", {"subject": subject, "payload": text, "count": count,
                                                                 "jetstream": jetstream, "timeout_s": 30})
                        if res.is_error:
                            raise RuntimeError(f"publish over MCP failed: {res.content}")

                    for path, subject, raw in (("core", CORE_SUBJECT, core_raw), ("jetstream", JS_SUBJECT, js_raw)):
                        js_flag = path == "jetstream"

                        async def via_toolkit(s: str = subject, j: bool = js_flag) -> None:
                            await tool(s, j)

                        async def via_mcp(s: str = subject, j: bool = js_flag) -> None:
                            await mcp(s, j)

                        row: dict[str, Any] = {
                            "nats_py": await rate(raw, count, repeats),
                            "toolkit": await rate(via_toolkit, count, repeats),
                            "mcp": await rate(via_mcp, count, repeats),
                        }
                        base = row["nats_py"]["msgs_per_s"]
                        row["ratio_toolkit"] = ratio(row["toolkit"]["msgs_per_s"], base)
                        row["ratio_mcp"] = ratio(row["mcp"]["msgs_per_s"], base)
                        out[path] = row
                        log(f"{path}: nats-py {base:,}/s, toolkit {row['toolkit']['msgs_per_s']:,}/s, "
                            f"mcp {row['mcp']['msgs_per_s']:,}/s")
            finally:
                await nc.close()
    return {"count": count, "repeats": repeats, "payload_bytes": payload_bytes, "paths": out}


def table(result: dict[str, Any]) -> str:
    lines = ["| path | nats-py msgs/s | toolkit msgs/s | ratio | MCP msgs/s | ratio |", "|---|---:|---:|---:|---:|---:|"]
    for path, r in result["paths"].items():
        lines.append(f"| {path} | {r['nats_py']['msgs_per_s']:,} | {r['toolkit']['msgs_per_s']:,} "
                     f"| {r['ratio_toolkit']} | {r['mcp']['msgs_per_s']:,} | {r['ratio_mcp']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="Messages per batch (the tool allows 10,000)")
    parser.add_argument("--repeats", type=int, default=5, help="Timed batches per measurement (median reported)")
    parser.add_argument("--payload-bytes", type=int, default=128, help="Size of each message body")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="100 messages, 1 repeat: checks that the bench runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/publish.json")
    args = parser.parse_args(argv)
    count, repeats = args.count, max(1, args.repeats)
    if args.smoke:
        count, repeats = 100, 1
    elif args.quick:
        count, repeats = 2000, 3
    result = asyncio.run(bench(count, repeats, args.payload_bytes))
    path = write_result("publish", result, args.output)
    print(table(result))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
