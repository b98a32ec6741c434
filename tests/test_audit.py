"""audit: every rule planted on a real server, with a clean twin that must not be flagged."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
import pytest_asyncio

from natsop import EmbeddedCluster, EmbeddedServer, Toolkit
from natsop.logic.audit_rules import Observed, run_rules
from natsop.logic.envelope import uuid7
from tests.conftest import CliFn, env_for, mcp_client

NS = 1_000_000_000



@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def lax() -> AsyncIterator[EmbeddedServer]:
    """A server with the default sync_interval and an account used only by these tests."""
    async with EmbeddedServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def strict() -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(sync_always=True) as server:
        yield server


async def js_request(nc: Any, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(f"$JS.API.{subject}", json.dumps(body or {}).encode(), timeout=30)  # R3 creation on a loaded machine can be slow
    data: dict[str, Any] = json.loads(msg.data)
    assert "error" not in data, data
    return data


async def add_stream(nc: Any, name: str, **cfg: Any) -> None:
    cfg.setdefault("subjects", [f"{name.lower()}.>"])
    await js_request(nc, f"STREAM.CREATE.{name}", {"name": name, **cfg})


async def add_consumer(nc: Any, stream: str, name: str | None, **cfg: Any) -> None:
    config = {"ack_policy": "explicit", **cfg}
    if name:
        config["durable_name"] = name
        await js_request(nc, f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
    else:
        await js_request(nc, f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})


async def connect(server: Any) -> Any:
    urls = getattr(server, "urls", None) or [server.url]
    return await nats.connect(urls, user=server.app.user, password=server.app.password)


async def findings(server: Any, **params: Any) -> list[Any]:
    async with Toolkit.for_server(server) as tk:
        result: Any = await tk.call("audit", **params)
    return list(result.findings)


def about(found: list[Any], rule: str, obj: str) -> list[Any]:
    return [f for f in found if f.rule == rule and f.object == obj]


async def test_stream_and_consumer_rules(lax: EmbeddedServer) -> None:
    nc = await connect(lax)
    try:
        for i in range(5):
            await add_stream(nc, f"CUST_{1000 + i}")
        for i in range(3):
            await add_stream(nc, f"SHOP_{2000 + i}")
        await add_stream(nc, "BILLING_EVENTS")
        await add_stream(nc, "AUDIT_EVENTS", deny_delete=True, deny_purge=True, description="immutable log")
        await add_stream(nc, "WORK", description="work queue for tests")
        await add_consumer(nc, "WORK", "fire_and_forget", ack_policy="none")
        await add_consumer(nc, "WORK", "careful")
        await add_consumer(nc, "WORK", None, inactive_threshold=3600 * NS)
        await add_consumer(nc, "WORK", "picky", filter_subjects=[f"work.{i}" for i in range(301)])
        await add_stream(nc, "TUNED", discard="new", max_msgs_per_subject=5)
        await add_stream(nc, "TUNED_OK", discard="new", description="discard new: producers must see back-pressure")
        await add_stream(nc, "DEDUP", max_age=600 * NS, duplicate_window=600 * NS, description="d")
        await add_stream(nc, "DEDUP_OK", max_age=600 * NS, description="d")
        # Names that say nothing, subjects that differ only in an id: one stream per order.
        for i, word in enumerate(("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")):
            await add_stream(nc, f"ORDERS_{word}", subjects=[f"orders.{1132 + i}.>"], description="o")
        # Domains are not entities: neither one word each, nor words under a shared prefix.
        for word in ("billing", "shipping", "catalog", "payments", "accounts", "inventory"):
            await add_stream(nc, f"DOMAIN_{word}", subjects=[f"{word}.>"], description="d")
            await add_stream(nc, f"APP_{word}", subjects=[f"app.{word}.>"], description="d")
    finally:
        await nc.close()
    found = await findings(lax, thresholds={"consumer-not-durable.age_s": 0})
    assert about(found, "stream-per-entity", "streams CUST_#")[0].observed["streams"] == 5
    assert not about(found, "stream-per-entity", "streams SHOP_#")
    by_subject = about(found, "stream-per-entity", "streams on orders.*.>")
    assert by_subject and by_subject[0].observed == {
        "streams": 6, "examples": ["ORDERS_alpha", "ORDERS_bravo", "ORDERS_charlie", "ORDERS_delta", "ORDERS_echo"]}
    # The CUST_# streams are one finding (by name), not a second one for their subjects cust_1000.> ...
    assert [f.object for f in found if f.rule == "stream-per-entity"] == ["streams CUST_#", "streams on orders.*.>"]
    assert about(found, "event-stream-mutable", "stream BILLING_EVENTS")[0].observed == {
        "deny_delete": False, "deny_purge": False}
    assert not about(found, "event-stream-mutable", "stream AUDIT_EVENTS")
    assert about(found, "consumer-ack-none", "consumer WORK/fire_and_forget")
    assert not about(found, "consumer-ack-none", "consumer WORK/careful")
    ephemeral = [f for f in found if f.rule == "consumer-not-durable"]
    assert len(ephemeral) == 1 and ephemeral[0].object.startswith("consumer WORK/")
    assert about(found, "consumer-many-filters", "consumer WORK/picky")[0].observed == {"filter_subjects": 301}
    assert not about(found, "consumer-many-filters", "consumer WORK/careful")
    tuned = about(found, "undocumented-defaults", "stream TUNED")
    assert tuned and tuned[0].observed["changed"] == {"discard": "new", "max_msgs_per_subject": 5}
    assert not about(found, "undocumented-defaults", "stream TUNED_OK")
    assert about(found, "duplicate-window", "stream DEDUP")
    assert not about(found, "duplicate-window", "stream DEDUP_OK")
    # Each finding says why and what to do.
    assert all(f.why and f.do and f.severity in ("critical", "warning", "info") for f in found)


async def test_consumer_state_rules(lax: EmbeddedServer) -> None:
    nc = await connect(lax)
    try:
        await add_stream(nc, "LAGGY", description="lag tests")
        js = nc.jetstream()
        for i in range(20):
            await js.publish("laggy.x", str(i).encode())
        await add_consumer(nc, "LAGGY", "behind", max_ack_pending=10, description="tuned for the test")
        await add_consumer(nc, "LAGGY", "calm", description="tuned for the test")
        sub = await js.pull_subscribe("laggy.x", durable="behind", stream="LAGGY")
        await sub.fetch(10, timeout=5)  # ten delivered, none acknowledged
        calm = await js.pull_subscribe("laggy.x", durable="calm", stream="LAGGY")
        for m in await calm.fetch(20, timeout=5):
            await m.ack_sync()
        await add_consumer(nc, "LAGGY", "napping", description="paused in the test")
        until = datetime(2099, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        await js_request(nc, "CONSUMER.PAUSE.LAGGY.napping", {"pause_until": until})
        await add_stream(nc, "CHURN", description="churn")
        for i in range(6):
            await add_consumer(nc, "CHURN", f"c{i}", description="x")
        await add_stream(nc, "STEADY", description="steady")
        await add_consumer(nc, "STEADY", "only", description="x")
    finally:
        await nc.close()
    found = await findings(lax, thresholds={"consumer-lag.messages": 5, "consumer-churn.min_created": 6,
                                            "stream-many-consumers.near_default_limit": 6})
    assert about(found, "ack-pending-saturated", "consumer LAGGY/behind")[0].observed == {
        "num_ack_pending": 10, "max_ack_pending": 10}
    assert not about(found, "ack-pending-saturated", "consumer LAGGY/calm")
    assert about(found, "consumer-lag", "consumer LAGGY/behind")[0].observed == {"num_pending": 10}
    assert not about(found, "consumer-lag", "consumer LAGGY/calm")
    paused = about(found, "consumer-paused", "consumer LAGGY/napping")
    assert paused and paused[0].severity == "warning"
    assert not about(found, "consumer-paused", "consumer LAGGY/calm")
    assert about(found, "consumer-churn", "stream CHURN")[0].observed["created_recently"] == 6
    assert not about(found, "consumer-churn", "stream STEADY")
    assert about(found, "stream-many-consumers", "stream CHURN")[0].observed == {"consumers": 6}
    assert not about(found, "stream-many-consumers", "stream STEADY")


async def test_kv_and_message_rules(lax: EmbeddedServer) -> None:
    nc = await connect(lax)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="unguarded")
        await kv.put("k", b"v")
        await js.create_key_value(bucket="guarded", max_bytes=1024 * 1024)
        await js.create_key_value(bucket="huge", max_bytes=10 * 1024 * 1024, max_value_size=2 * 1024 * 1024)
        bulky = await js.create_key_value(bucket="bulky", max_bytes=10 * 1024 * 1024)
        for i in range(4):
            await bulky.put(f"k{i}", b"x" * 4000)  # no max_value_size: only the observed sizes tell
        # A bucket built from a stream (sourced) is not the only copy of its data; it also holds an entry.
        await js_request(nc, "STREAM.CREATE.KV_replica", {"name": "KV_replica", "subjects": ["$KV.replica.>"],
                                                           "sources": [{"name": "KV_unguarded"}],
                                                           "max_bytes": 1024 * 1024})
        await js.publish("$KV.replica.k", b"v")
        unguarded_bytes = (await js_request(nc, "STREAM.INFO.KV_unguarded"))["state"]["bytes"]
        bulky_state = (await js_request(nc, "STREAM.INFO.KV_bulky"))["state"]
        await add_stream(nc, "IDS4", description="ids", max_bytes=10**9)
        await add_stream(nc, "IDS7", description="ids", max_bytes=10**9)
        for _ in range(10):
            await js.publish("ids4.x", b"{}", headers={"Nats-Msg-Id": str(uuid.uuid4())})
            await js.publish("ids7.x", b"{}", headers={"Nats-Msg-Id": uuid7()})
        await add_stream(nc, "RAW", description="no limits")
        await add_stream(nc, "RAW_OK", description="limited", max_bytes=10**9, compression="s2")
        for _ in range(5):
            await js.publish("raw.x", b"x" * 100)
            await js.publish("raw_ok.x", b"x" * 100)
        raw_bytes = (await js_request(nc, "STREAM.INFO.RAW"))["state"]["bytes"]
        # A projection that says which stream it is built from.
        projection = await js.create_key_value(bucket="projected", description="rebuilt from IDS7",
                                               max_bytes=1024 * 1024)
        await projection.put("k", b"v")
    finally:
        await nc.close()
    found = await findings(lax, thresholds={"stream-unbounded.warn_bytes": 100, "no-compression.min_bytes": 100,
                                            "kv-large-values.avg_value_bytes": 3000})
    assert about(found, "kv-no-size-guard", "bucket unguarded")[0].observed == {"max_bytes": -1,
                                                                                "bytes": unguarded_bytes}
    assert unguarded_bytes > 0
    assert not about(found, "kv-no-size-guard", "bucket guarded")
    assert about(found, "kv-large-values", "bucket huge")[0].observed["max_value_size"] == 2 * 1024 * 1024
    assert about(found, "kv-large-values", "bucket bulky")[0].observed == {
        "max_value_size": -1, "average_entry_bytes": bulky_state["bytes"] // bulky_state["messages"]}
    assert 4000 < bulky_state["bytes"] // bulky_state["messages"] < 4200
    assert not about(found, "kv-large-values", "bucket guarded")
    assert not about(found, "kv-large-values", "bucket unguarded")
    assert about(found, "kv-only-copy", "bucket unguarded")[0].observed == {"sources": 0, "mirror": False}
    assert not about(found, "kv-only-copy", "bucket replica")
    assert not about(found, "kv-only-copy", "bucket projected")
    v4 = about(found, "msg-id-uuid4", "stream IDS4")
    assert v4 and v4[0].observed["uuid_v4"] == 10
    assert not about(found, "msg-id-uuid4", "stream IDS7")
    assert about(found, "stream-unbounded", "stream RAW")[0].severity == "warning"
    assert not about(found, "stream-unbounded", "stream RAW_OK")
    assert about(found, "no-compression", "stream RAW")[0].observed == {"bytes": raw_bytes}
    assert raw_bytes >= 500
    assert not about(found, "no-compression", "stream RAW_OK")


async def test_sync_interval_rule(lax: EmbeddedServer, strict: EmbeddedServer) -> None:
    for server in (lax, strict):
        nc = await connect(server)
        try:
            await add_stream(nc, "LEDGER", description="money", metadata={"critical": "true"}, num_replicas=1)
            await add_stream(nc, "SCRATCH", description="r1 file stream")
        finally:
            await nc.close()
    found = await findings(lax)
    ledger = about(found, "sync-interval", "stream LEDGER")
    assert ledger and ledger[0].severity == "critical"
    assert ledger[0].observed["sync_interval_ns"] == 120 * NS
    assert about(found, "sync-interval", "stream SCRATCH")[0].severity == "warning"
    assert not [f for f in await findings(strict) if f.rule == "sync-interval"]


async def test_sync_interval_rule_sees_async_persistence_and_accepted_risks(lax: EmbeddedServer,
                                                                           strict: EmbeddedServer) -> None:
    nc = await connect(strict)
    try:
        # persist_mode async acks before storing: sync_interval always on the server does not help.
        await add_stream(nc, "LEDGER_ASYNC", description="money", metadata={"critical": "true"},
                         persist_mode="async")
        await add_stream(nc, "SCRATCH_ASYNC", description="r1, async", persist_mode="async")
        await add_stream(nc, "SCRATCH_ASYNC_OK", description="r1, async",
                         metadata={"sync_risk": "rebuilt from upstream in minutes"}, persist_mode="async")
    finally:
        await nc.close()
    found = await findings(strict)
    assert about(found, "sync-interval", "stream LEDGER_ASYNC")[0].severity == "critical"
    scratch = about(found, "sync-interval", "stream SCRATCH_ASYNC")
    assert scratch and scratch[0].severity == "warning"
    assert scratch[0].observed == {"persist_mode": "async", "replicas": 1}
    assert "sync_risk" in scratch[0].do
    assert not about(found, "sync-interval", "stream SCRATCH_ASYNC_OK")

    nc = await connect(lax)
    try:
        # An R1 bucket is an R1 stream: on a lax server it is at risk too, unless the risk is recorded.
        js = nc.jetstream()
        await js.create_key_value(bucket="settings_r1", max_bytes=1024 * 1024)
        await add_stream(nc, "SCRATCH_ACCEPTED", description="r1", metadata={"sync_risk": "cache only"})
    finally:
        await nc.close()
    found = await findings(lax)
    assert about(found, "sync-interval", "bucket settings_r1")[0].severity == "warning"
    assert not about(found, "sync-interval", "stream SCRATCH_ACCEPTED")


async def test_without_system_account_the_audit_says_what_it_skipped(lax: EmbeddedServer) -> None:
    from natsop.settings import Settings, Target

    app = Target(name="default", servers=(lax.url,), source="test", user=lax.app.user, password=lax.app.password)
    async with Toolkit(Settings(default=app)) as tk:
        result: Any = await tk.call("audit")
    assert any("not checked" in n for n in result.notes)
    assert not [f for f in result.findings if f.rule in ("sync-interval", "server-version")]


def test_server_version_rule() -> None:
    # The running server is current; old versions cannot be started here, so the rule is fed their VARZ.
    observed = Observed(now=datetime.now(UTC), servers=[
        {"server_name": "old", "version": "2.10.22"}, {"server_name": "mid", "version": "2.12.2"},
        {"server_name": "new", "version": "2.12.3"}, {"server_name": "newer", "version": "2.14.1"}])
    found = {f.object: f.severity for f in run_rules(observed) if f.rule == "server-version"}
    assert found == {"server old": "critical", "server mid": "warning"}


async def test_replica_rules_on_a_cluster(cluster: EmbeddedCluster) -> None:
    nc = await connect(cluster)
    try:
        await add_stream(nc, "SOLO", num_replicas=1, description="r")
        await add_stream(nc, "PAIR", num_replicas=2, description="r")
        await add_stream(nc, "TRIO", num_replicas=3, description="r")
    finally:
        await nc.close()
    found = await findings(cluster)
    assert about(found, "r1-on-cluster", "stream SOLO")[0].observed == {"replicas": 1}
    assert not about(found, "r1-on-cluster", "stream TRIO")
    assert about(found, "even-replicas", "stream PAIR")[0].observed == {"replicas": 2}
    assert not about(found, "even-replicas", "stream TRIO")


async def test_audit_is_read_only(lax: EmbeddedServer) -> None:
    async def snapshot() -> Any:
        nc = await connect(lax)
        try:
            streams = (await js_request(nc, "STREAM.LIST", {}))["streams"]
            out = {}
            for s in streams:
                name = s["config"]["name"]
                cons = (await js_request(nc, f"CONSUMER.LIST.{name}", {}))["consumers"]
                out[name] = (s["config"], s["state"]["messages"], s["state"]["last_seq"],
                             sorted((c["name"], c["delivered"]["stream_seq"], c["ack_floor"]["stream_seq"],
                                     c["num_ack_pending"]) for c in cons))
            return out
        finally:
            await nc.close()

    before = await snapshot()
    assert before  # the other tests left plenty to look at
    await findings(lax)
    assert await snapshot() == before


async def test_audit_faces(lax: EmbeddedServer, tmp_path: Any) -> None:
    env = env_for(lax, tmp_path)
    async with mcp_client(env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["audit"].annotations is not None and tools["audit"].annotations.read_only_hint
        result = await client.call_tool("audit", {"fail_on": "critical"})
        assert not result.is_error and result.structured_content is not None
        summary = result.structured_content["summary"]
        assert summary["warning"] >= 1 and result.structured_content["requests"] > 0
        rules = await client.call_tool("audit_rules", {})
        assert rules.structured_content is not None and len(rules.structured_content["rules"]) >= 20
        skipped = await client.call_tool("audit", {"skip": ["no-such-rule"]})
        assert skipped.is_error


def test_audit_cli_fail_on(lax: EmbeddedServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from natsop.faces.cli import build_cli

    for k, v in env_for(lax, tmp_path).items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    table = runner.invoke(build_cli(read_only=False), ["audit"])
    assert table.exit_code == 0 and "stream-per-entity" in table.output
    failing = runner.invoke(build_cli(read_only=False), ["audit", "--fail-on", "warning"])
    assert failing.exit_code == 2
    rules = runner.invoke(build_cli(read_only=False), ["audit-rules"])
    assert rules.exit_code == 0 and "sync-interval" in rules.output


def _varz(name: str, *, sync_always: bool, tags: tuple[str, ...] = (), cluster: str = "east") -> dict[str, Any]:
    return {"server_name": name, "version": "2.15.1", "tags": list(tags), "cluster": {"name": cluster},
            "jetstream": {"config": {"sync_always": sync_always, "sync_interval": 120 * NS}}}


def _stream(name: str, *, holders: tuple[str, ...] = (), placement: dict[str, Any] | None = None,
            **cfg: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"config": {"name": name, "subjects": [f"{name.lower()}.>"], "storage": "file",
                                       "num_replicas": max(1, len(holders)), **cfg},
                            "state": {"messages": 1, "bytes": 10, "consumer_count": 0}}
    if placement:
        info["config"]["placement"] = placement
    if holders:
        info["cluster"] = {"name": "east", "leader": holders[0],
                           "replicas": [{"name": h, "current": True} for h in holders[1:]]}
    return info


def test_sync_interval_looks_only_at_the_servers_holding_the_stream() -> None:
    # Two servers tagged sync:always with sync_interval always, one lax server: the recommended setup.
    servers = [_varz("safe1", sync_always=True, tags=("sync:always",)),
               _varz("safe2", sync_always=True, tags=("sync:always",)), _varz("lax1", sync_always=False)]
    critical = {"metadata": {"critical": "true"}, "description": "money"}
    observed = Observed(now=datetime.now(UTC), servers=servers, clustered=True, streams=[
        # Placed on the sync:always servers; the info names them as leader and replica.
        _stream("LEDGER", holders=("safe1", "safe2"), placement={"tags": ["sync:always"]}, **critical),
        # Placed by tags only, no replica information (e.g. no leader right now): the tags decide.
        _stream("LEDGER_TAGGED", placement={"tags": ["sync:always"]}, **critical),
        # The twins: one replica on the lax server, and a placement the lax server satisfies.
        _stream("LEDGER_MIXED", holders=("safe1", "lax1"), **critical),
        _stream("LEDGER_ANYWHERE", placement={"cluster": "east"}, **critical),
    ])
    found = {f.object: f for f in run_rules(observed) if f.rule == "sync-interval"}
    assert set(found) == {"stream LEDGER_MIXED", "stream LEDGER_ANYWHERE"}
    assert found["stream LEDGER_MIXED"].severity == "critical"
    assert found["stream LEDGER_MIXED"].observed == {"servers_without_sync_always": ["lax1"],
                                                     "sync_interval_ns": 120 * NS, "replicas": 2}
    assert found["stream LEDGER_ANYWHERE"].observed["servers_without_sync_always"] == ["lax1"]


def test_stream_per_entity_by_subject_only_for_id_like_tokens() -> None:
    def streams(subjects: list[str]) -> Observed:
        return Observed(now=datetime.now(UTC), streams=[
            {"config": {"name": f"S_{'abcdefghij'[i]}", "subjects": [subj]}, "state": {}}
            for i, subj in enumerate(subjects)])

    def objects(o: Observed, **thresholds: float) -> list[str]:
        return [f.object for f in run_rules(o, thresholds={f"stream-per-entity.{k}": v for k, v in thresholds.items()})
                if f.rule == "stream-per-entity"]

    uuids = [str(uuid.uuid4()) for _ in range(5)]
    assert objects(streams([f"tenant.{u}.orders.*" for u in uuids])) == ["streams on tenant.*.orders.*"]
    assert objects(streams([f"dev.{h}.>" for h in ("9f3a1c", "77b0e2", "a1b2c3", "00ff12", "c0ffee1")])) == [
        "streams on dev.*.>"]
    assert objects(streams([f"{w}.>" for w in ("orders", "payments", "users", "shipping", "audit", "billing")])) == []
    assert objects(streams([f"app.{w}.>" for w in ("orders", "payments", "users", "shipping", "audit")])) == []
    assert objects(streams([f"orders.{i}.>" for i in range(4)])) == []  # below min_streams
    # Plain words that vary across many streams under one prefix are entities too (customers by name).
    names = [f"cust.{w}.>" for w in ("acme", "globex", "initech", "umbrella", "hooli")]
    assert objects(streams(names), min_streams_by_word=5) == ["streams on cust.*.>"]
    assert objects(streams(names)) == []


async def test_server_derived_values_are_defaults(lax: EmbeddedServer) -> None:
    nc = await connect(lax)
    try:
        # The server sets duplicate_window to min(2m, max_age) itself: not a change.
        await add_stream(nc, "AGED", max_age=60 * NS)
        await add_stream(nc, "AGED_TUNED", max_age=600 * NS, duplicate_window=60 * NS)
        # A sourcing stream gets no window at all.
        await add_stream(nc, "AGED_COPY", sources=[{"name": "AGED"}])
        # A backoff sets ack_wait; the stream's consumer limits set max_ack_pending.
        await add_consumer(nc, "AGED", "retrying", backoff=[1 * NS, 5 * NS])
        await add_consumer(nc, "AGED", "slow", ack_wait=5 * NS)
        await add_stream(nc, "CAPPED", description="consumers capped", consumer_limits={"max_ack_pending": 50})
        await add_consumer(nc, "CAPPED", "plain")
        await add_consumer(nc, "CAPPED", "narrow", max_ack_pending=10)
    finally:
        await nc.close()
    found = await findings(lax)
    assert not about(found, "undocumented-defaults", "stream AGED")
    assert about(found, "undocumented-defaults", "stream AGED_TUNED")[0].observed == {
        "changed": {"duplicate_window": 60 * NS}}
    assert not about(found, "undocumented-defaults", "stream AGED_COPY")
    assert not about(found, "undocumented-defaults", "consumer AGED/retrying")
    assert about(found, "undocumented-defaults", "consumer AGED/slow")[0].observed == {"changed": {"ack_wait": 5 * NS}}
    assert not about(found, "undocumented-defaults", "consumer CAPPED/plain")
    assert about(found, "undocumented-defaults", "consumer CAPPED/narrow")[0].observed == {
        "changed": {"max_ack_pending": 10}}


async def test_unknown_thresholds_are_refused_with_the_valid_names(lax: EmbeddedServer) -> None:
    from natsop.errors import UserError
    from natsop.ops.audit import AuditParams

    with pytest.raises(UserError) as err:
        await findings(lax, thresholds={"consumer-lag.mesages": 5})
    assert err.value.code == "unknown_threshold"
    assert "consumer-lag.mesages" in err.value.message
    assert err.value.hint and "consumer-lag.messages" in err.value.hint and "stream-per-entity.min_streams" in \
        err.value.hint
    # The help's example is JSON the CLI accepts as it is.
    help_text = AuditParams.model_fields["thresholds"].description or ""
    example = re.search(r"\{.*?\}", help_text)
    assert example and json.loads(example.group(0)) == {"consumer-lag.messages": 500}
    with pytest.raises(ValueError, match="unknown threshold"):
        run_rules(Observed(now=datetime.now(UTC)), thresholds={"nope.x": 1})


def test_many_consumers_critical_above_100k() -> None:
    observed = Observed(now=datetime.now(UTC), streams=[
        {"config": {"name": name, "max_consumers": limit}, "state": {"consumer_count": n}}
        for name, n, limit in (("HUGE", 100_001, -1), ("BIG", 100_000, -1), ("NEAR", 950, -1), ("FINE", 10, -1),
                               # A limit set on purpose: judged against that limit, not the default's.
                               ("RAISED", 950, 5000), ("TIGHT", 95, 100),
                               # An exclusive work queue: one consumer by design.
                               ("EXCLUSIVE", 1, 1))])
    found = {f.object: (f.severity, f.observed) for f in run_rules(observed) if f.rule == "stream-many-consumers"}
    assert found == {"stream HUGE": ("critical", {"consumers": 100_001}),
                     "stream BIG": ("warning", {"consumers": 100_000}),
                     "stream NEAR": ("warning", {"consumers": 950}),
                     "stream TIGHT": ("warning", {"consumers": 95, "max_consumers": 100})}


def test_event_streams_are_recognised_by_whole_words() -> None:
    def stream(name: str, subject: str) -> dict[str, Any]:
        return {"config": {"name": name, "subjects": [subject]}, "state": {}}

    observed = Observed(now=datetime.now(UTC), streams=[
        stream("PREVENTION", "prevention.>"), stream("ADVENTURES", "adventures.>"),
        stream("OrderEvents", "shop.>"), stream("SHOP", "shop.event.>"), stream("LOG", "log.events")])
    found = sorted(f.object for f in run_rules(observed) if f.rule == "event-stream-mutable")
    assert found == ["stream LOG", "stream OrderEvents", "stream SHOP"]


async def test_ordered_consumers_and_watchers_are_not_flagged(lax: EmbeddedServer) -> None:
    nc = await connect(lax)
    try:
        js = nc.jetstream()
        await add_stream(nc, "FEED", description="read by ordered consumers", max_bytes=10**6)
        await js.publish("feed.x", b"1")
        kv = await js.create_key_value(bucket="watched", max_bytes=10**6)
        await kv.put("k", b"v")
        watcher = await kv.watchall()
        ordered = await js.subscribe("feed.x", ordered_consumer=True)
        await ordered.next_msg(timeout=5)
        # The twin: an ephemeral consumer without acks on file storage is a mistake, not a reader.
        await add_consumer(nc, "FEED", None, ack_policy="none", inactive_threshold=3600 * NS)
        found = await findings(lax, thresholds={"consumer-not-durable.age_s": 0})
        await watcher.stop()
        await ordered.unsubscribe()
    finally:
        await nc.close()
    flagged = sorted((f.rule, f.object.split("/")[0]) for f in found
                     if f.rule in ("consumer-ack-none", "consumer-not-durable")
                     and f.object.startswith(("consumer FEED/", "consumer KV_watched/")))
    assert flagged == [("consumer-ack-none", "consumer FEED"), ("consumer-not-durable", "consumer FEED")]


def _cell(lines: list[str], header: int, row: int, title: str) -> str:
    """The text of one column of a wrapped table row: its lines from the title's position, joined."""
    start = lines[header].index(title)
    following = re.search(r"\S", lines[header][start + len(title):])  # the next column's title
    stop = start + len(title) + following.start() if following else None
    ends = [i for i in range(row + 1, len(lines)) if not lines[i].strip() or lines[i][:1].strip()]
    end = ends[0] if ends else len(lines)
    return " ".join(" ".join(line[start:stop].split()) for line in lines[row:end]).strip()


def test_findings_render_as_a_table(cli: CliFn) -> None:
    name = f"EV{uuid.uuid4().hex[:6]}_EVENTS"
    assert cli("stream", "add", name, "--subjects", f"{name.lower()}.>").exit_code == 0
    out = cli("audit")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    header = next(i for i, line in enumerate(lines)
                  if re.match(r"^rule\s+severity\s+object\s+observed\s+why it matters\s+what to do\s*$", line))
    row = [i for i, line in enumerate(lines) if re.match(rf"^event-stream-mutable\s+warning\s+stream {name}\s", line)]
    assert len(row) == 1
    # The observed numbers wrap inside their column, one per line, and so do the reason and the advice.
    first, second = lines[row[0]], lines[row[0] + 1]
    assert "deny delete: no" in first and "deny purge: no" in second
    assert "append-only truth" in _cell(lines, header, row[0], "why it matters")
    # People get the command to run, not the MCP call.
    assert f"natsop stream edit {name} --deny-delete --deny-purge" in _cell(lines, header, row[0], "what to do")
    assert not any(line.startswith("why") for line in lines)  # no key/value sections per finding
    summary = lines.index("Summary")
    assert re.match(r"^critical\s+\d+", lines[summary + 1]) and re.match(r"^warning\s+\d+", lines[summary + 2])


def test_mcp_text_of_findings_is_a_bounded_table() -> None:
    from natsop.faces.render import MAX_TEXT, to_text
    from natsop.ops.audit import AuditResult, AuditSummary, FindingModel

    finding = FindingModel(rule="sync-interval", severity="critical", object="stream LEDGER",
                           observed={"servers_without_sync_always": ["n1", "n2"], "sync_interval_ns": 120 * NS,
                                     "replicas": 3},
                           why="Writes are fsynced every 2 minutes.",
                           do="Set jetstream { sync_interval: always } on the servers holding it, or place it on "
                              "servers tagged sync:always.")
    result = AuditResult(summary=AuditSummary(critical=1000), findings=[finding] * 1000, checked={"streams": 1000},
                         requests=3)
    text = to_text(result)
    lines = text.splitlines()
    assert len(text) <= MAX_TEXT and max(len(line) for line in lines) <= 100
    header = next(i for i, line in enumerate(lines) if line.startswith("rule"))
    assert re.match(r"^rule\s+severity\s+object\s+observed\s+why it matters\s+what to do$", lines[header])
    assert re.match(r"^sync-interval\s+critical\s+stream LEDGER\s+servers without\s.*\sSet jetstream",
                    lines[header + 2])
    assert _cell(lines, header, header + 2, "why it matters") == "Writes are fsynced every 2 minutes."
    end = next(i for i in range(header + 3, len(lines)) if lines[i].startswith("sync-interval"))
    observed = _cell(lines[:end], header, header + 2, "observed")
    assert "n1, n2" in observed and "sync interval: 2m" in observed and "replicas: 3" in observed
    assert re.search(r"… \d+ more rows", text)
