"""Does a page of `stream_view` cost the page, not the stream?

Fills streams of each size (default 1,000 and 1,000,000 messages) on an embedded
nats-server, then times `stream_view` through the operations layer: the first page,
a page from the middle, and a subject-filtered page from the middle, each the median
of repeated calls, on both read paths (batched Direct Get, then the MSG.GET fallback
after turning allow_direct off). The ratio page_time(largest) / page_time(smallest)
near 1 shows that no page reads the stream. The baseline, measured in the same run,
is one raw nats-py Direct Get of a single message.

    python bench/bench_paging.py [--sizes 1000,1000000] [--limit 20] [--repeats 31]

Results go to bench/results/paging.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from natsop import EmbeddedServer, Toolkit

SUBJECTS = 16
RESULTS = Path(__file__).resolve().parent / "results" / "paging.json"


async def _messages(nc: NATS, stream: str) -> int:
    msg = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=10)
    return int(json.loads(msg.data)["state"]["messages"])


async def fill(nc: NATS, stream: str, n: int, payload: bytes, chunk: int = 20_000) -> float:
    """Core-publish n messages in chunks, waiting after each chunk until the stream has stored it.

    No per-message acknowledgement is awaited; waiting per chunk keeps the server's
    ingest queue short, so nothing is dropped. Returns the seconds taken.
    """
    started = time.perf_counter()
    published = 0
    while published < n:
        k = min(chunk, n - published)
        for i in range(published, published + k):
            await nc.publish(f"{stream}.s{i % SUBJECTS}", payload)
        await nc.flush(timeout=30)
        published += k
        deadline = time.monotonic() + 30
        while (stored := await _messages(nc, stream)) < published:
            if time.monotonic() > deadline:
                # Dropped under pressure: publish the shortfall again.
                for i in range(published - stored):
                    await nc.publish(f"{stream}.s{i % SUBJECTS}", payload)
                await nc.flush(timeout=30)
                deadline = time.monotonic() + 30
            await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def median_ms(call: Callable[[], Awaitable[Any]], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def measure(tk: Toolkit, nc: NATS, stream: str, n: int, limit: int, repeats: int) -> dict[str, Any]:
    middle = n // 2
    js = nc.jetstream()
    row: dict[str, Any] = {"size": n}

    async def page(**kwargs: Any) -> Any:
        res: Any = await tk.call("stream_view", stream=stream, limit=limit, max_payload_bytes=64, **kwargs)
        assert len(res.messages) == min(limit, n), (kwargs, len(res.messages))
        return res

    row["raw_direct_get_one_ms"] = await median_ms(
        lambda: js.get_msg(stream, seq=middle, direct=True), repeats)
    for path, allow_direct in (("direct_get", True), ("msg_get", False)):
        await tk.call("stream_update", stream=stream, allow_direct=allow_direct)
        first: Any = await page()
        assert first.method == path and first.messages[0].seq == 1
        row[f"{path}_first_ms"] = await median_ms(lambda: page(), repeats)
        row[f"{path}_middle_ms"] = await median_ms(lambda: page(start_seq=middle), repeats)
        row[f"{path}_middle_filtered_ms"] = await median_ms(
            lambda: page(start_seq=middle, subject=f"{stream}.s3"), repeats)
    return row


async def run(sizes: list[int], limit: int, repeats: int, payload_bytes: int) -> dict[str, Any]:
    payload = b"x" * payload_bytes
    rows = []
    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as store:
        async with EmbeddedServer(store_dir=store) as server, Toolkit.for_server(server) as tk:
            nc = await nats.connect(server.url, user=server.app.user, password=server.app.password,
                                    pending_size=256 * 1024 * 1024)
            try:
                for n in sizes:
                    stream = f"BENCH_{n}"
                    await tk.call("stream_add", stream=stream, subjects=[f"{stream}.>"], allow_direct=True)
                    fill_s = await fill(nc, stream, n, payload)
                    print(f"filled {stream}: {n:,} messages in {fill_s:.1f}s", file=sys.stderr)
                    row = await measure(tk, nc, stream, n, limit, repeats)
                    row["fill_s"] = round(fill_s, 2)
                    rows.append(row)
            finally:
                await nc.close()
    small, large = rows[0], rows[-1]
    ratios = {
        key.removesuffix("_ms"): round(large[key] / small[key], 2)
        for key in large if key.endswith("_ms")
    }
    return {
        "bench": "stream_view paging",
        "limit": limit,
        "repeats": repeats,
        "payload_bytes": payload_bytes,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
        "ratio_largest_to_smallest": ratios,
    }


def table(result: dict[str, Any]) -> str:
    cols = ["raw_direct_get_one_ms", "direct_get_first_ms", "direct_get_middle_ms", "direct_get_middle_filtered_ms",
            "msg_get_first_ms", "msg_get_middle_ms", "msg_get_middle_filtered_ms"]
    head = "| messages | " + " | ".join(c.removesuffix("_ms").replace("_", " ") + " (ms)" for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for row in result["rows"]:
        lines.append(f"| {row['size']:,} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    ratios = result["ratio_largest_to_smallest"]
    lines.append("| ratio | " + " | ".join(f"{ratios[c.removesuffix('_ms')]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,1000000", help="Stream sizes, comma-separated (smallest first)")
    parser.add_argument("--limit", type=int, default=20, help="Messages per page")
    parser.add_argument("--repeats", type=int, default=31, help="Timed calls per measurement (median reported)")
    parser.add_argument("--payload-bytes", type=int, default=64, help="Size of each message body")
    args = parser.parse_args()
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    if len(sizes) < 2 or sizes[0] < args.limit * 2:
        parser.error(f"give at least two sizes, the smallest at least {args.limit * 2}")
    result = asyncio.run(run(sizes, args.limit, args.repeats, args.payload_bytes))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\npage_time({sizes[-1]:,}) / page_time({sizes[0]:,}): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["ratio_largest_to_smallest"].items()))
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
