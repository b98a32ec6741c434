"""trace: message tracing on a real server and across a real 3-node cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from natsop import EmbeddedCluster, EmbeddedServer, Toolkit
from natsop.errors import Unsupported, UserError
from natsop.ops.trace import _unreported, check_trace_support
from natsop.registry import Impact, get
from natsop.settings import Settings, Target, embedded_settings
from tests.conftest import CliFn, cli_json, mcp_client
from tests.natsserver import ConfiguredServer


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("trace-store"),
                        app_account_config='mappings { "tmap.*": "tmapped.$1" }') as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tk(traced_server: EmbeddedServer) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(traced_server) as toolkit:
        yield toolkit


@pytest_asyncio.fixture(loop_scope="session")
async def listener(traced_server: EmbeddedServer) -> AsyncIterator[NATS]:
    nc = await nats.connect(traced_server.url, user=traced_server.app.user, password=traced_server.app.password,
                            name="listener")
    try:
        yield nc
    finally:
        await nc.close()


async def _trace(tk: Toolkit, subject: str, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = (await tk.call("trace", subject=subject, **kwargs)).model_dump()
    return result


async def _subscribed(nc: NATS) -> None:
    """Make sure the server has the subscriptions made on `nc`.

    nats-py's flush() writes its PING straight to the socket while a SUB may still wait
    in the pending buffer, so one flush can return before the server saw the SUB; after
    the first round trip the buffer has been written, and the second PING follows it.
    """
    await nc.flush()
    await nc.flush()


def _only(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [e for e in events if e["type"] == kind]
    assert len(matching) == 1, events
    return matching[0]


async def _nothing_delivered_before_sentinel(tk: Toolkit, received: asyncio.Queue[Any], subject: str) -> None:
    """natsop's connection publishes in order: if the traced message had been delivered, it would come first."""
    nc = await tk.context.nc()
    await nc.publish(subject, b"sentinel")
    first = await asyncio.wait_for(received.get(), 5)
    assert first.data == b"sentinel"


async def test_trace_shows_ingress_and_egress_with_the_subscription(
    tk: Toolkit, listener: NATS, traced_server: EmbeddedServer
) -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()
    await listener.subscribe("tsub.>", queue="workers", cb=received.put)
    await _subscribed(listener)
    result = await _trace(tk, "tsub.a", payload="hello")
    assert result["trace_only"] is True and result["complete"] is True
    assert [h["hop"] for h in result["hops"]] == [""]
    ingress = _only(result["events"], "ingress")
    assert (ingress["kind"], ingress["account"], ingress["subject"]) == ("CLIENT", "APP", "tsub.a")
    egress = _only(result["events"], "egress")
    assert (egress["kind"], egress["name"], egress["subscription"], egress["queue"]) == \
        ("CLIENT", "listener", "tsub.>", "workers")
    assert "Trace only" in result["note"]
    await _nothing_delivered_before_sentinel(tk, received, "tsub.sentinel")

    delivered = await _trace(tk, "tsub.b", payload="for real", deliver=True)
    assert delivered["trace_only"] is False
    assert _only(delivered["events"], "egress")["subscription"] == "tsub.>"
    msg = await asyncio.wait_for(received.get(), 5)
    assert (msg.subject, msg.data) == ("tsub.b", b"for real")


async def test_trace_into_a_stream_shows_jetstream_and_stores_nothing(tk: Toolkit, uniq: str) -> None:
    await tk.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    result = await _trace(tk, f"{uniq}.order")
    js = _only(result["events"], "jetstream")
    assert (js["stream"], js["subject"], js["no_interest"]) == (uniq, f"{uniq}.order", None)
    state = (await tk.call("stream_state", stream=uniq)).model_dump()["state"]
    assert state["messages"] == 0
    await _trace(tk, f"{uniq}.order", deliver=True)
    state = (await tk.call("stream_state", stream=uniq)).model_dump()["state"]
    assert state["messages"] == 1


async def test_trace_shows_the_subject_mapping(tk: Toolkit, listener: NATS) -> None:
    await listener.subscribe("tmapped.>")
    await _subscribed(listener)
    result = await _trace(tk, "tmap.k")
    assert [e["type"] for e in result["events"]] == ["ingress", "subject_mapping", "egress"]
    assert _only(result["events"], "subject_mapping")["to"] == "tmapped.k"
    assert _only(result["events"], "egress")["subscription"] == "tmapped.>"


async def test_trace_without_interest_says_nothing_receives_it(tk: Toolkit) -> None:
    result = await _trace(tk, "nobody.listens.here", headers={"X-Probe": ["1"]})
    assert [e["type"] for e in result["events"]] == ["ingress"]
    assert result["complete"] is True
    assert "Nothing would receive" in result["note"]


async def test_trace_shows_a_service_import_into_another_account(tk: Toolkit) -> None:
    # Every account imports $SYS.REQ.USER.INFO from the system account.
    result = await _trace(tk, "$SYS.REQ.USER.INFO")
    imported = _only(result["events"], "service_import")
    assert (imported["account"], imported["from_subject"], imported["to"]) == \
        ("SYS", "$SYS.REQ.USER.INFO", "$SYS.REQ.USER.APP.INFO")
    assert "goes on into account SYS" in result["note"]
    assert "Nothing would receive" not in result["note"]


_ACCOUNTS = """
accounts {{
  SYS {{ users: [{{user: sys, password: syspw}}] }}
  ORDERS {{ users: [{{user: o, password: opw}}], exports: [{{stream: "shipped.>"}}] }}
  BILLING {{ users: [{{user: b, password: bpw}}]
            imports: [{{stream: {{account: ORDERS, subject: "shipped.>"}}, to: "billing.shipped.>",
                        allow_trace: {allow}}}] }}
}}
system_account: SYS
"""


@pytest.mark.parametrize("allow_trace", [True, False])
async def test_trace_follows_a_stream_export_into_the_importing_account(tmp_path: Path, allow_trace: bool) -> None:
    srv = ConfiguredServer(tmp_path, _ACCOUNTS.format(allow=str(allow_trace).lower()), jetstream=False).start()
    try:
        billing = await nats.connect(srv.url, user="b", password="bpw")
        try:
            await billing.subscribe("billing.shipped.>")
            await billing.flush()
            target = Target(name="default", servers=(srv.url,), source="test", user="o", password="opw")
            async with Toolkit(Settings(default=target)) as tk:
                result = await _trace(tk, "shipped.7")
        finally:
            await billing.close()
    finally:
        srv.stop()
    exported = _only(result["events"], "stream_export")
    assert exported["account"] == "BILLING"
    if allow_trace:  # the trace goes on to the importing account's subscriber
        assert _only(result["events"], "egress")["account"] == "BILLING"
        assert "goes on into account" not in result["note"]
    else:  # it stops at the boundary and says why
        assert not [e for e in result["events"] if e["type"] == "egress"]
        assert "goes on into account BILLING" in result["note"] and "stream import" in result["note"]


async def test_trace_refuses_bad_input(tk: Toolkit) -> None:
    with pytest.raises(UserError) as err:
        await tk.call("trace", subject="a.b", headers={"Nats-Trace-Dest": ["x"]})
    assert err.value.code == "invalid_header"
    for bad in ({"subject": "a.*"}, {"subject": "a.b", "timeout_s": 11}, {"subject": "a.b", "max_hops": 0}):
        with pytest.raises(UserError) as err:
            await tk.call("trace", **bad)
        assert err.value.code in ("invalid_arguments", "invalid_subject")


def test_trace_needs_a_2_11_server() -> None:
    with pytest.raises(Unsupported) as err:
        check_trace_support("2.10.22")
    assert err.value.code == "trace_unsupported" and "2.11" in err.value.message
    check_trace_support("2.11.0")
    check_trace_support("2.15.1")


def _report(hop: str, forwarded: int) -> dict[str, Any]:
    header = {"Nats-Trace-Hop": [hop]} if hop else {}
    return {"server": {"name": f"s{hop}"}, "request": {"header": header}, "hops": forwarded}


def test_trace_waits_for_the_origin_and_every_forwarded_hop_in_any_order() -> None:
    # The far server's report can arrive before the origin's: one report is not a complete trace.
    assert _unreported([_report("1", 0)]) == 1
    assert _unreported([_report("1", 0), _report("", 1)]) == 0
    # The origin forwards to two servers, the second forwards once more.
    assert _unreported([_report("", 2), _report("2", 1)]) == 2
    assert _unreported([_report("", 2), _report("2", 1), _report("2.1", 0), _report("1", 0)]) == 0


# --- across a cluster


async def _await_interest(cluster: EmbeddedCluster, received: asyncio.Queue[Any], subject: str) -> None:
    """Wait until node 1 knows node 2's subscription: probes from node 1 start arriving."""
    probe = await nats.connect(cluster.servers[0].url, user=cluster.app.user, password=cluster.app.password)
    try:
        for _ in range(100):
            await probe.publish(subject, b"probe")
            try:
                await asyncio.wait_for(received.get(), 0.1)
                return
            except TimeoutError:
                continue
        raise AssertionError("node 2's subscription never reached node 1")
    finally:
        await probe.close()


async def test_trace_through_a_cluster_shows_hops_on_several_servers(cluster: EmbeddedCluster) -> None:
    node1, node2 = cluster.servers[0], cluster.servers[1]
    sub_nc = await nats.connect(node2.url, user=cluster.app.user, password=cluster.app.password, name="far-sub")
    received: asyncio.Queue[Any] = asyncio.Queue()
    try:
        await sub_nc.subscribe("cl.>", cb=received.put)
        await _subscribed(sub_nc)
        await _await_interest(cluster, received, "cl.probe")
        settings = embedded_settings((node1.url,), (cluster.app.user, cluster.app.password),
                                     (cluster.system.user, cluster.system.password))
        async with Toolkit(settings) as tk:
            result = await _trace(tk, "cl.order", timeout_s=5)
    finally:
        await sub_nc.close()
    assert result["complete"] is True
    assert [(h["server"], h["hop"]) for h in result["hops"]] == [("n1", ""), ("n2", "1")]
    assert result["hops"][0]["forwarded"] == 1
    by_server = {name: [e for e in result["events"] if e["server"] == name] for name in ("n1", "n2")}
    n1_out = _only(by_server["n1"], "egress")
    assert (n1_out["kind"], n1_out["name"], n1_out["next_hop"]) == ("ROUTER", "n2", "1")
    n2_in = _only(by_server["n2"], "ingress")
    assert (n2_in["kind"], n2_in["name"], n2_in["subject"]) == ("ROUTER", "n1", "cl.order")
    n2_out = _only(by_server["n2"], "egress")
    assert (n2_out["kind"], n2_out["name"], n2_out["subscription"]) == ("CLIENT", "far-sub", "cl.>")
    assert result["elapsed_s"] < 5  # it returns once every hop has reported, not at the end of the window


# --- the faces (session server)


async def test_mcp_trace(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["trace"].annotations is not None
        assert tools["trace"].annotations.read_only_hint is False
        assert tools["trace"].annotations.destructive_hint is False
        out = await client.call_tool("trace", {"subject": "mcp.trace.nobody", "payload": "x"})
        assert not out.is_error, out.content
        assert out.structured_content is not None
        assert out.structured_content["events"][0]["type"] == "ingress"
        assert out.structured_content["events"][0]["subject"] == "mcp.trace.nobody"
        bad = await client.call_tool("trace", {"subject": "a.b", "timeout_s": 60})
        assert bad.is_error
        assert "invalid_arguments" in getattr(bad.content[0], "text", "")


def test_cli_trace(cli: CliFn) -> None:
    out = cli("--json", "trace", "cli.trace.nobody", "some payload")
    assert out.exit_code == 0, out.output
    data = cli_json(out)
    assert data["trace_only"] is True and data["events"][0]["kind"] == "CLIENT"
    text = cli("trace", "cli.trace.nobody", "--deliver")
    assert text.exit_code == 0, text.output
    assert "ingress" in text.output and "cli.trace.nobody" in text.output
    # It publishes a message, so read-only mode does not offer it.
    assert get("trace").impact is Impact.WRITE
    refused = cli("trace", "cli.trace.nobody", read_only=True)
    assert refused.exit_code != 0
