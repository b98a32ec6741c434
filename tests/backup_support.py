"""Helpers for the backup tests: filling streams and reading every message back cheaply.

Messages are read with batched Direct Get (a thousand per request), and each one is
reduced to (seq, subject, headers, sha256 of the payload, timestamp) so that two
streams of 100,000 messages compare in a few seconds and little memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

# Headers the Direct Get reply adds; everything else was stored with the message.
_DIRECT_HEADERS = {"Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Subject", "Nats-Num-Pending",
                   "Nats-Last-Sequence"}

MessageDigest = tuple[int, str, tuple[tuple[str, str], ...], str, str]


@asynccontextmanager
async def connect(server: Any) -> AsyncIterator[NATS]:
    """A nats-py connection to an EmbeddedServer or EmbeddedCluster's APP account."""
    urls = getattr(server, "urls", None) or [server.url]
    nc = await nats.connect(servers=urls, user=server.app.user, password=server.app.password)
    try:
        yield nc
    finally:
        await nc.close()


async def api(nc: NATS, subject: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b"",
                           timeout=timeout)
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def fill(nc: NATS, stream: str, count: int, *, seed: int = 1, big_every: int = 0) -> None:
    """Publish `count` messages of mixed sizes, a third of them with headers, over several subjects.

    All but the last are fire-and-forget; the last is acknowledged, and since one
    connection's messages are stored in order, its ack means all are stored.
    """
    rng = random.Random(seed)
    sizes = (0, 1, 16, 100, 300, 1000, 2500)
    topics = ("orders", "payments", "users", "events", "audit")
    js = nc.jetstream()
    for i in range(count):
        size = 16 * 1024 if big_every and i % big_every == 0 else rng.choice(sizes)
        subject = f"{stream}.{topics[i % len(topics)]}.{i % 13}"
        data = rng.randbytes(size)
        headers = {"X-Index": str(i), "X-Kind": topics[i % 3]} if i % 3 == 0 else None
        if i == count - 1:
            await js.publish(subject, data, headers=headers, timeout=30)
        else:
            await nc.publish(subject, data, headers=headers)


async def digest(nc: NATS, stream: str, batch: int = 1000) -> list[MessageDigest]:
    """Every message of `stream` (which needs allow_direct) as (seq, subject, headers, sha256, time)."""
    out: list[MessageDigest] = []
    batch_done: asyncio.Queue[tuple[str | None, int | None, int]] = asyncio.Queue()
    last: int | None = None
    pending = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal last, pending
        hdrs = dict(msg.headers or {})
        status = hdrs.get("Status")
        if status is not None:
            await batch_done.put((status, last, pending))
            return
        last = int(hdrs["Nats-Sequence"])
        pending = int(hdrs.get("Nats-Num-Pending") or 0)
        user = tuple(sorted((k, v) for k, v in hdrs.items() if k not in _DIRECT_HEADERS))
        out.append((last, hdrs["Nats-Subject"], user, hashlib.sha256(msg.data).hexdigest(), hdrs["Nats-Time-Stamp"]))

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_msg)
    seq = 1
    try:
        while True:
            last = None
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": seq, "batch": batch}).encode(),
                             reply=inbox)
            status, got_last, got_pending = await asyncio.wait_for(batch_done.get(), 10)
            if status == "404":
                return out
            assert status == "204", f"direct get answered {status}"
            if got_last is None or got_pending == 0:
                return out
            seq = got_last + 1
    finally:
        await sub.unsubscribe()
