"""Does a page of `stream_view` cost the page, not the stream?

Fills streams of each size (default 1,000 and 1,000,000 messages) on an embedded
nats-server, then times `stream_view` through the operations layer: the first page,
a page from the middle, and a subject-filtered page from the middle, each the median
of repeated calls, on both read paths (batched Direct Get, then the MSG.GET fallback
after turning allow_direct off). The ratio page_time(largest) / page_time(smallest)
near 1 shows that no page reads the stream.

Baselines with raw nats-py, measured in the same run and interleaved call by call with
natsop's pages (so that both see the same moment of the machine):

- the very request natsop sends for a Direct Get page: one batched Direct Get
  (`$JS.API.DIRECT.GET.<stream>` with `{"batch", "max_bytes", "seq"}`, plus
  `"next_by_subj"` for a subject-filtered page) to a fresh inbox, reading the replies
  until the end-of-batch status, for the middle page unfiltered and filtered. If a
  step with the stream's size shows in the raw request too, it is the server's; if
  only natsop shows it, it is natsop's;
- `$JS.API.STREAM.INFO.<stream>`, which natsop asks before every page;
- one Direct Get of a single message.

    python bench/bench_paging.py [--sizes 1000,1000000] [--limit 20] [--repeats 31] [--smoke]

Results go to bench/results/paging.json and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import log, write_result
from natsop import EmbeddedServer, Toolkit

SUBJECTS = 16
# What natsop's stream_view puts in a batched Direct Get (src/natsop/ops/stream_read.py, PAGE_BUDGET_BYTES).
PAGE_BUDGET_BYTES = 8 * 1024 * 1024


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


async def interleaved_ms(calls: dict[str, Callable[[], Awaitable[Any]]], repeats: int,
                         warmup: int = 3) -> dict[str, float]:
    """Median ms of each call, timed round-robin: one of each per round, so all see the same moments."""
    for _ in range(warmup):
        for call in calls.values():
            await call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            await call()
            times[key].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


async def raw_batch(nc: NATS, stream: str, body: dict[str, Any], timeout: float = 10.0) -> int:
    """natsop's Direct Get page request made with nats-py: the messages received before the end status."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await nc.subscribe(nc.new_inbox(), cb=on_msg)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), reply=sub.subject)
        received = 0
        while True:
            msg = await asyncio.wait_for(queue.get(), timeout)
            status = (msg.headers or {}).get("Status")
            if status is None:
                received += 1
            elif status in ("204", "404"):
                return received
            else:
                raise RuntimeError(f"Direct Get answered {status} {(msg.headers or {}).get('Description', '')}")
    finally:
        await sub.unsubscribe()


async def measure(tk: Toolkit, nc: NATS, stream: str, n: int, limit: int, repeats: int) -> dict[str, Any]:
    middle = n // 2
    subject = f"{stream}.s3"
    js = nc.jetstream()
    row: dict[str, Any] = {"size": n}

    async def page(**kwargs: Any) -> Any:
        res: Any = await tk.call("stream_view", stream=stream, limit=limit, max_payload_bytes=64, **kwargs)
        assert len(res.messages) == limit, (kwargs, len(res.messages))
        return res

    def raw(**extra: Any) -> Callable[[], Awaitable[None]]:
        body = {"batch": limit, "max_bytes": PAGE_BUDGET_BYTES, "seq": middle, **extra}

        async def call() -> None:
            got = await raw_batch(nc, stream, body)
            assert got == limit, (body, got)
        return call

    async def info() -> None:
        await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=10)

    async def one() -> None:
        await js.get_msg(stream, seq=middle, direct=True)

    for path, allow_direct in (("direct_get", True), ("msg_get", False)):
        await tk.call("stream_update", stream=stream, allow_direct=allow_direct)
        first: Any = await page()
        assert first.method == path and first.messages[0].seq == 1
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            f"{path}_first": lambda: page(),
            f"{path}_middle": lambda: page(start_seq=middle),
            f"{path}_middle_filtered": lambda: page(start_seq=middle, subject=subject),
        }
        if allow_direct:  # the raw requests need Direct Get on; measure them beside natsop's Direct Get pages
            calls.update({"raw_batch_middle": raw(), "raw_batch_middle_filtered": raw(next_by_subj=subject),
                          "raw_stream_info": info, "raw_direct_get_one": one})
        for key, value in (await interleaved_ms(calls, repeats)).items():
            row[f"{key}_ms"] = value
    for kind in ("middle", "middle_filtered"):
        row[f"ratio_natsop_to_raw_{kind}"] = round(row[f"direct_get_{kind}_ms"] / row[f"raw_batch_{kind}_ms"], 2)
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
                    log(f"filled {stream}: {n:,} messages in {fill_s:.1f}s")
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
        "title": "stream_view paging",
        "limit": limit,
        "repeats": repeats,
        "payload_bytes": payload_bytes,
        "interleaved": True,
        "rows": rows,
        "ratio_largest_to_smallest": ratios,
    }


COLUMNS = ["raw_direct_get_one_ms", "raw_stream_info_ms", "raw_batch_middle_ms", "raw_batch_middle_filtered_ms",
           "direct_get_first_ms", "direct_get_middle_ms", "direct_get_middle_filtered_ms",
           "msg_get_first_ms", "msg_get_middle_ms", "msg_get_middle_filtered_ms"]


def table(result: dict[str, Any]) -> str:
    head = "| messages | " + " | ".join(c.removesuffix("_ms").replace("_", " ") + " (ms)" for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for row in result["rows"]:
        lines.append(f"| {row['size']:,} | " + " | ".join(f"{row[c]:.2f}" for c in COLUMNS) + " |")
    ratios = result["ratio_largest_to_smallest"]
    lines.append("| ratio | " + " | ".join(f"{ratios[c.removesuffix('_ms')]:.2f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=None, help="Stream sizes, comma-separated (default 1000,1000000)")
    parser.add_argument("--limit", type=int, default=20, help="Messages per page")
    parser.add_argument("--repeats", type=int, default=None, help="Timed calls per measurement (default 31; median)")
    parser.add_argument("--payload-bytes", type=int, default=64, help="Size of each message body")
    parser.add_argument("--smoke", action="store_true", help="1,000 and 10,000 messages, 3 calls: checks that it runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/paging.json")
    args = parser.parse_args()
    sizes_arg = args.sizes or ("1000,10000" if args.smoke else "1000,1000000")
    sizes = sorted(int(s.replace("_", "")) for s in sizes_arg.split(",") if s.strip())
    # A filtered page from the middle must fill up: one subject in SUBJECTS holds the limit after the middle.
    smallest = 2 * SUBJECTS * args.limit + 2 * SUBJECTS
    if len(sizes) < 2 or sizes[0] < smallest:
        parser.error(f"give at least two sizes, the smallest at least {smallest}")
    repeats = args.repeats or (3 if args.smoke else 31)
    result = asyncio.run(run(sizes, args.limit, repeats, args.payload_bytes))
    path = write_result("paging", result, args.output)
    print(table(result))
    print(f"\npage_time({sizes[-1]:,}) / page_time({sizes[0]:,}): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["ratio_largest_to_smallest"].items()))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
