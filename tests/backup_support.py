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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natsop import Toolkit
from natsop.settings import Settings, Target

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


async def make_stream(nc: NATS, name: str, **extra: Any) -> None:
    cfg = {"name": name, "subjects": [f"{name}.>"], "storage": "file", "allow_direct": True, **extra}
    resp = await api(nc, f"STREAM.CREATE.{name}", cfg)
    assert "error" not in resp, resp


async def stream_state(nc: NATS, name: str) -> dict[str, Any] | None:
    """The stream's state, or None when it does not exist."""
    resp = await api(nc, f"STREAM.INFO.{name}")
    if resp.get("error"):
        assert resp["error"]["code"] == 404, resp
        return None
    state: dict[str, Any] = resp["state"]
    return state


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
    unanswered = 0
    try:
        while True:
            last = None
            await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": seq, "batch": batch}).encode(),
                             reply=inbox)
            status, got_last, got_pending = await asyncio.wait_for(batch_done.get(), 10)
            if status == "503" and not got_last and unanswered < 50:
                # A new stream on a cluster: no replica's interest has reached this server yet.
                unanswered += 1
                await asyncio.sleep(0.1)
                continue
            if status == "404":
                return out
            assert status == "204", f"direct get answered {status}"
            if got_last is None or got_pending == 0:
                return out
            seq = got_last + 1
    finally:
        await sub.unsubscribe()


# ---------------------------------------------------------------------------------------------
# A JetStream API prefix in front of the real one, for making a real server's transfers misbehave

Handler = Callable[[Msg], Awaitable[None]]


class ApiProxy:
    """Answers the JetStream API on `prefix` by forwarding every request to `$JS.API` and relaying the answer.

    A test overrides one endpoint (`on["STREAM.SNAPSHOT"] = handler`) to cut a transfer
    short, drop acknowledgements, or answer as an older server does; everything else
    reaches the real server unchanged. natsop is pointed at it with
    `jetstream_api_prefix`, so what it talks to is a real nats-server throughout.
    """

    def __init__(self, nc: NATS, prefix: str) -> None:
        self.nc = nc
        self.prefix = prefix
        self.on: dict[str, Handler] = {}

    async def start(self) -> None:
        await self.nc.subscribe(f"{self.prefix}.>", cb=self._dispatch)
        await self.nc.flush()

    def endpoint(self, msg: Msg) -> str:
        return msg.subject[len(self.prefix) + 1:]

    async def _dispatch(self, msg: Msg) -> None:
        endpoint = self.endpoint(msg)
        for verb, handler in self.on.items():
            if endpoint.startswith(verb + "."):
                await handler(msg)
                return
        await self.relay(msg)

    async def forward(self, msg: Msg, body: dict[str, Any] | None = None) -> Msg:
        data = json.dumps(body).encode() if body is not None else msg.data
        return await self.nc.request(f"$JS.API.{self.endpoint(msg)}", data, timeout=10)

    async def relay(self, msg: Msg, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Forward the request and send the real answer back; returns that answer."""
        answer = await self.forward(msg, body)
        await self.nc.publish(msg.reply, answer.data, headers=answer.headers)
        decoded: dict[str, Any] = json.loads(answer.data) if answer.data else {}
        return decoded


@asynccontextmanager
async def proxied_toolkit(server: Any, files_dir: Any, name: str) -> AsyncIterator[tuple[Toolkit, ApiProxy]]:
    """A Toolkit whose JetStream API goes through an ApiProxy to `server`'s APP account."""
    prefix = f"proxy.{name}.API"
    async with connect(server) as nc:
        proxy = ApiProxy(nc, prefix)
        await proxy.start()
        target = Target(name="default", servers=(server.url,), source="test", user=server.app.user,
                        password=server.app.password, jetstream_api_prefix=prefix)
        async with Toolkit(Settings(default=target), files_dir=files_dir) as tk:
            yield tk, proxy
