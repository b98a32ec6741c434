"""A real 3-node cluster on loopback: the server tools (rtt too) see every node, and R3 streams spread over them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import nats
import pytest_asyncio

from natsop import EmbeddedCluster, Toolkit
from natsop.api import settings_for_server
from natsop.settings import Settings

NODES = {"n1", "n2", "n3"}
ALL: dict[str, Any] = {"expected": 3, "timeout_s": 5.0}


@pytest_asyncio.fixture(loop_scope="session")
async def tk(cluster: EmbeddedCluster) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(cluster) as toolkit:
        yield toolkit


async def test_server_list_shows_the_three_nodes_of_the_cluster(tk: Toolkit, cluster: EmbeddedCluster) -> None:
    result: Any = await tk.call("server_list", **ALL)
    assert result.total == 3 and result.missing == 0
    assert [s.name for s in result.servers] == ["n1", "n2", "n3"]
    assert result.clusters == [cluster.cluster_name]
    assert all(s.cluster == cluster.cluster_name and s.jetstream for s in result.servers)
    assert all(s.routes == 2 for s in result.servers)
    page: Any = await tk.call("server_list", limit=2, **ALL)
    assert [s.name for s in page.servers] == ["n1", "n2"]
    assert page.truncated is True and page.next_offset == 2
    only: Any = await tk.call("server_list", cluster=cluster.cluster_name, **ALL)
    assert only.total == 3


async def test_list_and_ping_without_expected_wait_for_every_node(tk: Toolkit) -> None:
    result: Any = await tk.call("server_list", timeout_s=5.0)
    assert {s.name for s in result.servers} == NODES
    assert result.missing == 0  # the servers' own count of active servers
    ping: Any = await tk.call("server_ping", timeout_s=5.0)
    assert ping.count == 3 and ping.missing == 0


async def test_server_ping_gets_three_replies(tk: Toolkit) -> None:
    result: Any = await tk.call("server_ping", **ALL)
    assert result.count == 3 and result.missing == 0
    assert {r.name for r in result.replies} == NODES
    assert all(r.rtt_ms > 0 for r in result.replies)
    assert [r.rtt_ms for r in result.replies] == sorted(r.rtt_ms for r in result.replies)
    assert result.min_ms <= result.avg_ms <= result.max_ms


async def test_server_info_by_name_reaches_any_node(tk: Toolkit, cluster: EmbeddedCluster) -> None:
    info: Any = await tk.call("server_info", server="n3")
    assert info.name == "n3" and info.source == "varz"
    assert info.cluster == cluster.cluster_name
    assert info.routes and info.routes >= 2
    assert info.jetstream.meta_cluster_size == 3
    assert info.jetstream.meta_leader in NODES


async def test_r3_stream_has_a_leader_and_two_replicas_on_the_nodes(tk: Toolkit, uniq: str) -> None:
    await tk.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"], replicas=3)
    try:
        info: Any = await tk.call("stream_info", stream=uniq)
    finally:
        await tk.call("stream_delete", stream=uniq, confirm=uniq)
    assert info.config["num_replicas"] == 3
    leader = info.cluster.leader
    replicas = {r.name for r in info.cluster.replicas}
    assert leader in NODES
    assert len(info.cluster.replicas) == 2
    assert replicas == NODES - {leader}


async def test_reports_cover_every_node(tk: Toolkit, cluster: EmbeddedCluster, uniq: str) -> None:
    conns = [await nats.connect(s.url, user=cluster.app.user, password=cluster.app.password, name=f"{uniq}-{i}")
             for i, s in enumerate(cluster.servers)]
    try:
        report: Any = await tk.call("account_report_connections", account="APP", top=1000, **ALL)
        stats: Any = await tk.call("account_report_statistics", accounts=["APP"], **ALL)
    finally:
        for nc in conns:
            await nc.close()
    mine = {c.name: c.server for c in report.connections if c.name and c.name.startswith(uniq)}
    assert mine == {f"{uniq}-{i}": f"n{i + 1}" for i in range(3)}
    assert {s.server for s in report.servers} == NODES
    assert {s.name for s in stats.servers} == NODES
    (app,) = stats.accounts
    assert app.account == "APP" and app.servers == 3 and app.connections >= 3


async def test_rtt_reports_every_node_both_ways(tk: Toolkit, cluster: EmbeddedCluster) -> None:
    result: Any = await tk.call("rtt", iterations=3, timeout_s=5.0)
    (own,) = result.connections
    assert own.error is None and own.server_name in NODES
    assert [s.name for s in result.servers] == ["n1", "n2", "n3"]
    assert {s.url for s in result.servers} == set(cluster.urls)
    for s in result.servers:
        assert s.error is None, s
        assert s.cluster == cluster.cluster_name and s.id
        assert s.rtt_ms is not None and 0 < s.min_ms <= s.rtt_ms <= s.max_ms < 5000
        assert s.system_rtt_ms is not None and 0 < s.system_rtt_ms < 5000
    assert result.missing == 0 and result.note is None


async def test_rtt_without_system_account_finds_the_nodes_the_cluster_advertises(cluster: EmbeddedCluster) -> None:
    """Like `nats rtt`: one URL configured, the others learnt from the server, each timed directly."""
    first = settings_for_server(cluster).default
    settings = Settings(default=replace(first, servers=(cluster.urls[0],)))
    async with Toolkit(settings) as only_app:
        result: Any = await only_app.call("rtt", iterations=2, timeout_s=5.0)
    assert [s.name for s in result.servers] == ["n1", "n2", "n3"]
    assert all(s.error is None and s.rtt_ms is not None and s.system_rtt_ms is None for s in result.servers)
    assert "No system account" in result.note
