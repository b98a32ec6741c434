"""Backups across topologies: an R3 stream of a 3-node cluster restored into a single
server, and a single server's stream restored into the cluster as R3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from natsop import EmbeddedCluster, EmbeddedServer, Toolkit
from natsop.errors import NatsopError
from natsop.ops.backup import StreamBackupResult
from natsop.ops.backup import StreamRestoreResult as Restored
from tests.backup_support import api, connect, digest, fill


@pytest_asyncio.fixture(loop_scope="session")
async def on_cluster(cluster: EmbeddedCluster, tmp_path: Path) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(cluster, files_dir=tmp_path) as tk:
        yield tk


async def _fetch(psub: Any, n: int) -> list[Any]:
    """nats-py's fetch, waiting out the moment after a consumer's creation when its interest has not yet
    reached this server (the cluster answers the pull with 503 no responders: ServiceUnavailableError)."""
    import nats.js.errors

    for _ in range(50):
        try:
            return list(await psub.fetch(n, timeout=10))
        except nats.js.errors.ServiceUnavailableError:
            await asyncio.sleep(0.1)
    raise AssertionError("the consumer never answered a pull")


async def _all_replicas_current(nc: Any, stream: str, replicas: int, timeout_s: float = 20.0) -> dict[str, Any]:
    """Stream info once the leader and every follower are current (followers serve Direct Get too)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info = await api(nc, f"STREAM.INFO.{stream}")
        cl = info.get("cluster") or {}
        peers = cl.get("replicas") or []
        if cl.get("leader") and len(peers) == replicas - 1 and all(p.get("current") for p in peers):
            return info
        assert loop.time() < deadline, f"replicas of {stream} did not catch up: {cl}"
        await asyncio.sleep(0.1)


async def test_r3_backup_from_the_cluster_restores_into_a_single_server(
        cluster: EmbeddedCluster, server: EmbeddedServer, on_cluster: Toolkit, toolkit: Toolkit,
        uniq: str) -> None:
    async with connect(cluster) as nc:
        resp = await api(nc, f"STREAM.CREATE.{uniq}", {"name": uniq, "subjects": [f"{uniq}.>"], "num_replicas": 3,
                                                        "allow_direct": True})
        assert "error" not in resp, resp
        await fill(nc, uniq, 5000)
        for seq in range(100, 5000, 100):
            assert (await api(nc, f"STREAM.MSG.DELETE.{uniq}", {"seq": seq})).get("success")
        psub = await nc.jetstream().pull_subscribe(f"{uniq}.>", durable="W", stream=uniq)
        for m in await _fetch(psub, 120):
            await m.ack_sync()
        await psub.unsubscribe()
        source_floor = (await api(nc, f"CONSUMER.INFO.{uniq}.W"))["ack_floor"]
        await _all_replicas_current(nc, uniq, 3)
        source = await digest(nc, uniq)

    backup = await on_cluster.call("stream_backup", stream=uniq, directory="r3")
    assert isinstance(backup, StreamBackupResult)
    assert backup.messages == 5000 - 49 and backup.consumers == 1

    # A single server cannot hold three replicas: a clear error, and nothing left behind.
    with pytest.raises(NatsopError) as refused:
        await toolkit.call("stream_restore", directory="r3")
    assert "replicas" in refused.value.message.lower()
    async with connect(server) as nc1:
        assert (await api(nc1, f"STREAM.INFO.{uniq}")).get("error", {}).get("code") == 404

        restored = await toolkit.call("stream_restore", directory="r3", replicas=1)
        assert isinstance(restored, Restored)
        assert restored.verified, restored.differences
        assert await digest(nc1, uniq) == source
        info = await api(nc1, f"STREAM.INFO.{uniq}")
        assert info["config"]["num_replicas"] == 1
        floor = (await api(nc1, f"CONSUMER.INFO.{uniq}.W"))["ack_floor"]
        assert (floor["consumer_seq"], floor["stream_seq"]) == (source_floor["consumer_seq"],
                                                                source_floor["stream_seq"])
        await api(nc1, f"STREAM.DELETE.{uniq}")
    async with connect(cluster) as nc:
        await api(nc, f"STREAM.DELETE.{uniq}")


async def test_single_server_backup_restores_into_the_cluster_as_r3(
        cluster: EmbeddedCluster, server: EmbeddedServer, on_cluster: Toolkit, toolkit: Toolkit,
        uniq: str) -> None:
    async with connect(server) as nc1:
        resp = await api(nc1, f"STREAM.CREATE.{uniq}", {"name": uniq, "subjects": [f"{uniq}.>"],
                                                         "allow_direct": True})
        assert "error" not in resp, resp
        await fill(nc1, uniq, 3000, big_every=100)
        await nc1.jetstream().add_consumer(uniq, durable_name="D", ack_policy="explicit")
        source = await digest(nc1, uniq)
        backup = await toolkit.call("stream_backup", stream=uniq, directory="r1")
        assert isinstance(backup, StreamBackupResult)
        await api(nc1, f"STREAM.DELETE.{uniq}")

    restored = await on_cluster.call("stream_restore", directory="r1", replicas=3)
    assert isinstance(restored, Restored)
    assert restored.verified, restored.differences
    async with connect(cluster) as nc:
        info = await _all_replicas_current(nc, uniq, 3)
        assert info["config"]["num_replicas"] == 3
        assert await digest(nc, uniq) == source
        consumer = await api(nc, f"CONSUMER.INFO.{uniq}.D")
        assert consumer["config"]["durable_name"] == "D"
        await api(nc, f"STREAM.DELETE.{uniq}")
