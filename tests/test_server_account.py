"""Server and account tools (info, ls, ping, rtt, account info/reports/tls) through the three faces."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsop import EmbeddedServer, Toolkit
from natsop.api import settings_for_server
from natsop.errors import ConfigError, NotFound, UserError
from natsop.settings import Settings, Target
from tests.conftest import CliFn, cli_json, mcp_client

# Small gather bounds: a single server answers in well under a millisecond.
FAST: dict[str, Any] = {"expected": 1, "timeout_s": 2.0}


@pytest_asyncio.fixture(loop_scope="session")
async def no_system(server: EmbeddedServer) -> AsyncIterator[Toolkit]:
    """A toolkit with the APP account only: no system account is configured."""
    async with Toolkit(Settings(default=settings_for_server(server).default)) as tk:
        yield tk


@pytest_asyncio.fixture(loop_scope="session")
async def busy_client(server: EmbeddedServer, uniq: str) -> AsyncIterator[nats.NATS]:
    """A named APP connection with three subscriptions that has published 25 messages."""
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password, name=uniq)
    try:
        for i in range(3):
            await nc.subscribe(f"{uniq}.sub{i}")
        for _ in range(25):
            await nc.publish(f"{uniq}.out", b"x" * 100)
        await nc.flush()
        yield nc
    finally:
        await nc.close()


def _no_secrets(data: Any, server: EmbeddedServer) -> None:
    text = json.dumps(data, default=str)
    assert server.app.password not in text
    assert server.system.password not in text


# -- server info


async def test_server_info_reports_the_connected_server_from_varz(toolkit: Toolkit, server: EmbeddedServer) -> None:
    info: Any = await toolkit.call("server_info")
    nc = await toolkit.context.nc()
    assert info.source == "varz"
    assert info.id == nc._server_info["server_id"]
    assert info.version and info.version.startswith("2.")
    assert info.max_payload == 1024 * 1024
    assert info.connections >= 2  # our APP connection and the system account's
    assert info.uptime_s is not None and info.uptime_s >= 0
    assert info.memory_bytes and info.memory_bytes > 0
    assert info.jetstream.enabled is True
    assert info.jetstream.sync_always is False
    assert info.jetstream.sync_interval_ns == 120 * 10**9
    assert info.jetstream.store_dir and str(server.store_dir) in info.jetstream.store_dir
    assert info.note is None
    again: Any = await toolkit.call("server_info", server=info.name)
    assert again.id == info.id


async def test_server_info_for_an_unknown_server_is_not_found(toolkit: Toolkit) -> None:
    with pytest.raises(NotFound) as exc:
        await toolkit.call("server_info", server="no-such-server", timeout_s=0.2)
    assert exc.value.code == "server_not_found"
    assert "server_list" in exc.value.hint


async def test_server_info_without_system_account_falls_back_to_connect_info(no_system: Toolkit) -> None:
    info: Any = await no_system.call("server_info")
    nc = await no_system.context.nc()
    assert info.source == "connect_info"
    assert info.id == nc._server_info["server_id"]
    assert info.version == nc._server_info["version"]
    assert info.max_payload == 1024 * 1024
    assert info.jetstream.enabled is True
    assert info.connections is None
    assert "system account" in info.note
    # Another server cannot be looked up without it.
    with pytest.raises(ConfigError) as exc:
        await no_system.call("server_info", server="elsewhere")
    assert exc.value.code == "no_system_account"


async def test_server_info_with_sync_always_says_so(tmp_path: Path) -> None:
    async with EmbeddedServer(store_dir=tmp_path / "store", sync_always=True) as srv, Toolkit.for_server(srv) as tk:
        info: Any = await tk.call("server_info")
    assert info.jetstream.sync_always is True


# -- server ls / ping


async def test_server_list_shows_the_one_server(toolkit: Toolkit) -> None:
    nc = await toolkit.context.nc()
    result: Any = await toolkit.call("server_list", **FAST)
    assert result.total == 1 and result.missing == 0 and result.truncated is False
    (row,) = result.servers
    assert row.name == nc._server_info["server_name"]
    assert row.jetstream is True
    assert row.connections >= 2
    assert result.connections == row.connections
    assert result.clusters == []
    empty: Any = await toolkit.call("server_list", offset=1, **FAST)
    assert empty.servers == [] and empty.total == 1


async def test_server_list_counts_missing_servers(toolkit: Toolkit) -> None:
    result: Any = await toolkit.call("server_list", expected=3, timeout_s=0.3)
    assert result.total == 1
    assert result.missing == 2


async def test_server_ping_times_each_reply(toolkit: Toolkit) -> None:
    result: Any = await toolkit.call("server_ping", **FAST)
    assert result.count == 1 and result.missing == 0
    (reply,) = result.replies
    assert 0 < reply.rtt_ms < 2000
    assert result.min_ms == result.avg_ms == result.max_ms == reply.rtt_ms


async def test_system_tools_without_system_account_say_what_to_configure(no_system: Toolkit) -> None:
    for tool in ("server_list", "server_ping"):
        with pytest.raises(ConfigError) as exc:
            await no_system.call(tool, **FAST)
        assert exc.value.code == "no_system_account"
        assert "NATSOP_SYSTEM_USER" in exc.value.hint


# -- rtt


async def test_rtt_times_the_connection_and_names_the_server(toolkit: Toolkit, server: EmbeddedServer) -> None:
    result: Any = await toolkit.call("rtt", iterations=4)
    (row,) = result.connections
    assert row.account_name == "default"
    assert len(row.samples_ms) == 4
    assert all(s > 0 for s in row.samples_ms)
    assert row.min_ms <= row.rtt_ms <= row.max_ms
    assert row.url == server.url
    assert row.server_id == (await toolkit.context.nc())._server_info["server_id"]
    # The one server, timed directly (as `nats rtt`) and over the system account.
    (srv,) = result.servers
    assert srv.id == row.server_id and srv.url == server.url and srv.error is None
    assert srv.rtt_ms is not None and srv.min_ms <= srv.rtt_ms <= srv.max_ms
    assert srv.system_rtt_ms is not None and srv.system_rtt_ms > 0
    assert result.missing == 0
    both: Any = await toolkit.call("rtt", iterations=1, all_accounts=True)
    assert [c.account_name for c in both.connections] == ["default", "system"]
    assert all(c.error is None and len(c.samples_ms) == 1 for c in both.connections)
    _no_secrets(both.model_dump(), server)


async def test_rtt_without_system_account_times_the_known_servers(no_system: Toolkit, server: EmbeddedServer) -> None:
    result: Any = await no_system.call("rtt", iterations=2)
    (srv,) = result.servers
    assert srv.url == server.url and srv.rtt_ms is not None and srv.system_rtt_ms is None
    assert "No system account" in result.note


async def test_rtt_bounds_iterations(toolkit: Toolkit) -> None:
    for bad in (0, 101):
        with pytest.raises(UserError):
            await toolkit.call("rtt", iterations=bad)


# -- account info


async def test_account_info_shows_user_and_jetstream_usage(toolkit: Toolkit, server: EmbeddedServer, uniq: str) -> None:
    await toolkit.call("stream_add", stream=uniq, subjects=[f"{uniq}.>"])
    try:
        info: Any = await toolkit.call("account_info")
    finally:
        await toolkit.call("stream_delete", stream=uniq, confirm=uniq)
    assert info.user.user == server.app.user
    assert info.user.account == "APP"
    assert info.jetstream_enabled is True
    assert info.jetstream.streams >= 1
    assert info.jetstream.limits["max_streams"] == -1
    assert info.jetstream.api_level and info.jetstream.api_level >= 1
    assert info.server.version.startswith("2.")
    assert info.notes == []
    _no_secrets(info.model_dump(), server)


async def test_account_info_of_the_system_account_has_no_jetstream(toolkit: Toolkit) -> None:
    info: Any = await toolkit.call("account_info", account_name="system")
    assert info.user.account == "SYS"
    assert info.jetstream_enabled is False and info.jetstream is None
    assert any("JetStream is not enabled" in n for n in info.notes)


# -- connections report


async def test_connections_report_finds_a_busy_connection(toolkit: Toolkit, server: EmbeddedServer,
                                                          busy_client: nats.NATS, uniq: str) -> None:
    report: Any = await toolkit.call("account_report_connections", account="APP", top=1000, subscriptions=True,
                                     **FAST)
    assert report.view == "system"
    mine = [c for c in report.connections if c.name == uniq]
    assert len(mine) == 1
    row = mine[0]
    assert row.account == "APP" and row.user == server.app.user
    assert row.subscriptions == 3
    assert sorted(row.subscriptions_list) == [f"{uniq}.sub{i}" for i in range(3)]
    assert row.in_msgs >= 25 and row.in_bytes >= 2500
    assert row.ip and row.ip.startswith("127.0.0.1:")
    assert row.rtt_ms is not None
    assert all(c.account == "APP" for c in report.connections)
    assert report.totals.connections == len(report.connections) == report.totals.shown
    assert report.servers[0].connections == report.totals.connections
    _no_secrets(report.model_dump(), server)


@pytest.mark.parametrize(("sort", "measure"), [
    ("subs", lambda c: c.subscriptions),
    ("in-msgs", lambda c: c.in_msgs),
    ("out-bytes", lambda c: c.out_bytes),
    ("bytes", lambda c: c.in_bytes + c.out_bytes),
])
async def test_connections_report_sorts_largest_first(toolkit: Toolkit, busy_client: nats.NATS, sort: str,
                                                      measure: Any) -> None:
    report: Any = await toolkit.call("account_report_connections", sort=sort, top=1000, **FAST)
    values = [measure(c) for c in report.connections]
    assert values == sorted(values, reverse=True)
    assert report.sort == sort
    assert {c.account for c in report.connections} >= {"APP", "SYS"}


async def test_connections_report_top_truncates_and_keeps_the_total(toolkit: Toolkit, busy_client: nats.NATS,
                                                                    uniq: str) -> None:
    await toolkit.context.nc()  # a third connection besides busy_client and the system account's
    report: Any = await toolkit.call("account_report_connections", sort="in-msgs", top=1, **FAST)
    assert len(report.connections) == 1
    assert report.truncated is True
    assert report.totals.connections >= 3 and report.totals.shown == 1
    by_subs: Any = await toolkit.call("account_report_connections", account="APP", sort="subs", top=1, **FAST)
    assert by_subs.connections[0].subscriptions >= 3


async def test_connections_report_pages_through_the_ranking(toolkit: Toolkit, server: EmbeddedServer,
                                                             busy_client: nats.NATS) -> None:
    await toolkit.context.nc()
    whole: Any = await toolkit.call("account_report_connections", sort="cid", top=1000, **FAST)
    assert len(whole.connections) >= 3 and whole.next_offset is None and not whole.truncated
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page: Any = await toolkit.call("account_report_connections", sort="cid", top=1, offset=offset, **FAST)
        assert page.offset == offset and len(page.connections) <= 1
        seen += [c.cid for c in page.connections]
        offset = page.next_offset
        assert len(seen) <= len(whole.connections) + 5, "paging does not end"
    # Connections come and go (each page is a new request), but the ones that stayed keep their order.
    steady = [cid for cid in seen if cid in {c.cid for c in whole.connections}]
    assert steady == sorted(steady) and len(steady) >= 3
    # Pages of a ranking full of ties (idle connections: no subscriptions) cover every connection once.
    idle = [await nats.connect(server.url, user=server.app.user, password=server.app.password) for _ in range(6)]
    try:
        everyone = {c.cid for c in (await toolkit.call("account_report_connections", sort="subs", top=1000,
                                                       **FAST)).connections}  # type: ignore[attr-defined]
        paged: list[int] = []
        offset = 0
        while offset is not None:
            page = await toolkit.call("account_report_connections", sort="subs", top=2, offset=offset, **FAST)
            paged += [c.cid for c in page.connections]  # type: ignore[attr-defined]
            offset = page.next_offset  # type: ignore[attr-defined]
        assert sorted(paged) == sorted(everyone) and len(everyone) >= 9
    finally:
        for nc in idle:
            await nc.close()
    beyond: Any = await toolkit.call("account_report_connections", sort="cid", offset=5000, **FAST)
    assert (beyond.connections, beyond.truncated, beyond.next_offset) == ([], False, None)
    with pytest.raises(UserError) as deep:
        await toolkit.call("account_report_connections", top=1000, offset=9500, **FAST)
    assert "10,000" in deep.value.message


async def test_connections_report_without_system_account_shows_own_account(no_system: Toolkit,
                                                                           busy_client: nats.NATS,
                                                                           uniq: str) -> None:
    report: Any = await no_system.call("account_report_connections", top=1000, **FAST)
    assert report.view == "account"
    assert "system account" in report.note
    assert report.connections and all(c.account == "APP" for c in report.connections)
    assert any(c.name == uniq for c in report.connections)
    other: Any = await no_system.call("account_report_connections", account="SYS", **FAST)
    assert other.connections == [] and other.totals.connections == 0


async def test_connections_report_refuses_bad_arguments(toolkit: Toolkit) -> None:
    for bad in ({"top": 0}, {"top": 1001}, {"sort": "name"}, {"account": "A B"}, {"timeout_s": 0}):
        with pytest.raises(UserError):
            await toolkit.call("account_report_connections", **bad)


# -- statistics report


async def test_statistics_report_per_server_and_account(toolkit: Toolkit, busy_client: nats.NATS) -> None:
    await toolkit.context.nc()
    report: Any = await toolkit.call("account_report_statistics", **FAST)
    assert report.view == "system"
    (srv,) = report.servers
    assert srv.connections >= 3 and srv.received_msgs >= 25
    accounts = {a.account: a for a in report.accounts}
    assert {"APP", "SYS"} <= set(accounts)
    assert accounts["APP"].connections >= 2
    assert accounts["APP"].received_msgs >= 25
    assert accounts["APP"].servers == 1
    assert report.totals.connections == sum(a.connections for a in report.accounts)
    only: Any = await toolkit.call("account_report_statistics", accounts=["APP"], **FAST)
    assert [a.account for a in only.accounts] == ["APP"]


async def test_statistics_report_pages_accounts(toolkit: Toolkit) -> None:
    first: Any = await toolkit.call("account_report_statistics", include_unused=True, limit=1, **FAST)
    assert first.accounts_total >= 3  # $G, APP, SYS
    assert len(first.accounts) == 1 and first.truncated is True and first.next_offset == 1
    second: Any = await toolkit.call("account_report_statistics", include_unused=True, limit=1,
                                     offset=first.next_offset, **FAST)
    assert second.accounts[0].account > first.accounts[0].account


async def test_statistics_report_without_system_account_shows_own_account(no_system: Toolkit) -> None:
    report: Any = await no_system.call("account_report_statistics", **FAST)
    assert report.view == "account"
    assert report.servers == []
    assert [a.account for a in report.accounts] == ["APP"]
    assert "system account" in report.note


# -- TLS


async def test_account_tls_without_tls_says_so(toolkit: Toolkit) -> None:
    result: Any = await toolkit.call("account_tls")
    assert result.tls is False
    assert result.certificates == [] and result.expiring is False
    assert "not encrypted" in result.note


def _write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost, valid for 10 days."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsop test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsop test server")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


async def test_account_tls_reads_the_chain_and_warns_before_expiry(tmp_path: Path) -> None:
    ca, cert, key = _write_tls_files(tmp_path / "tls")
    tls_block = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}'
    async with EmbeddedServer(store_dir=tmp_path / "store", extra_config=tls_block) as srv:
        target = Target(name="default", servers=(srv.url,), source="test", user=srv.app.user,
                        password=srv.app.password, tls_ca=str(ca))
        async with Toolkit(Settings(default=target)) as tk:
            result: Any = await tk.call("account_tls", expiring_within_days=5)
            warned: Any = await tk.call("account_tls", expiring_within_days=20)
    assert result.tls is True and result.tls_required is True
    assert result.version in ("TLSv1.2", "TLSv1.3") and result.cipher
    leaf = result.certificates[0]
    assert leaf.subject == "CN=natsop test server"
    assert leaf.issuer == "CN=natsop test CA"
    assert set(leaf.sans) == {"localhost", "127.0.0.1"}
    assert 9 < leaf.days_until_expiry <= 10
    assert leaf.is_ca is False and leaf.self_signed is False
    assert len(leaf.fingerprint_sha256.split(":")) == 32
    assert [c.subject for c in result.certificates][-1] == "CN=natsop test CA"
    assert result.expiring is False and result.warnings == []
    assert warned.expiring is True
    assert len(warned.warnings) == 1 and "natsop test server" in warned.warnings[0]


# -- MCP


async def test_mcp_server_and_account_tools(server_env: dict[str, str], server: EmbeddedServer) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("server_info", {}),
        ("server_list", FAST),
        ("server_ping", FAST),
        ("rtt", {"iterations": 2}),
        ("account_info", {}),
        ("account_report_connections", {"top": 5, **FAST}),
        ("account_report_statistics", FAST),
        ("account_tls", {}),
    ]
    async with mcp_client(server_env) as client:
        results = {name: await client.call_tool(name, args) for name, args in calls}
        bad = await client.call_tool("rtt", {"iterations": 1000})
        bad_sort = await client.call_tool("account_report_connections", {"sort": "nope"})
    for name, result in results.items():
        assert not result.is_error, (name, result.content)
        assert result.structured_content is not None, name
        _no_secrets(result.structured_content, server)
        _no_secrets([getattr(c, "text", "") for c in result.content], server)
    assert results["server_info"].structured_content["source"] == "varz"
    assert results["server_list"].structured_content["total"] == 1
    assert results["server_ping"].structured_content["count"] == 1
    assert len(results["rtt"].structured_content["connections"][0]["samples_ms"]) == 2
    assert results["account_info"].structured_content["user"]["account"] == "APP"
    assert results["account_report_connections"].structured_content["view"] == "system"
    assert results["account_report_statistics"].structured_content["servers"]
    assert results["account_tls"].structured_content["tls"] is False
    for result in (bad, bad_sort):
        assert result.is_error
        assert "[invalid_arguments]" in getattr(result.content[0], "text", "")


async def test_mcp_without_system_account(server_env: dict[str, str]) -> None:
    env = {k: v for k, v in server_env.items() if not k.startswith("NATSOP_SYSTEM_")}
    async with mcp_client(env) as client:
        listed = await client.call_tool("server_list", FAST)
        pinged = await client.call_tool("server_ping", FAST)
        info = await client.call_tool("server_info", {})
        conns = await client.call_tool("account_report_connections", FAST)
    for refused in (listed, pinged):
        assert refused.is_error
        text = getattr(refused.content[0], "text", "")
        assert "[no_system_account]" in text
        assert "no system account credentials are configured" in text
        assert "NATSOP_SYSTEM_USER" in text
    assert not info.is_error and info.structured_content is not None
    assert info.structured_content["source"] == "connect_info"
    assert not conns.is_error and conns.structured_content is not None
    assert conns.structured_content["view"] == "account"


# -- CLI


def test_cli_server_commands(cli: CliFn) -> None:
    info = cli("--json", "server", "info")
    assert info.exit_code == 0, info.output
    data = cli_json(info)
    assert data["source"] == "varz"
    by_name = cli("--json", "server", "info", data["name"])
    assert by_name.exit_code == 0 and cli_json(by_name)["id"] == data["id"]
    listed = cli("server", "ls", "1")
    assert listed.exit_code == 0, listed.output
    assert data["name"][:6] in listed.output and "Servers" in listed.output
    alias = cli("--json", "server", "list", "1", "--timeout-s", "1")
    assert alias.exit_code == 0 and cli_json(alias)["total"] == 1
    ping = cli("--json", "server", "ping", "1")
    assert ping.exit_code == 0 and cli_json(ping)["count"] == 1
    missing = cli("--json", "server", "info", "no-such-server", "--timeout-s", "0.2")
    assert missing.exit_code == 1
    assert cli_json(missing)["error"]["code"] == "server_not_found"


def test_cli_rtt(cli: CliFn, server: EmbeddedServer) -> None:
    result = cli("--json", "rtt", "--iterations", "3", "--all-accounts")
    assert result.exit_code == 0, result.output
    rows = cli_json(result)["connections"]
    assert [r["account_name"] for r in rows] == ["default", "system"]
    assert all(len(r["samples_ms"]) == 3 for r in rows)
    bad = cli("rtt", "--iterations", "0")
    assert bad.exit_code != 0
    text = cli("rtt").output
    assert "rtt ms" in text and server.app.password not in text


def test_cli_account_commands(cli: CliFn, server: EmbeddedServer) -> None:
    info = cli("--json", "account", "info")
    assert info.exit_code == 0, info.output
    assert cli_json(info)["user"]["user"] == server.app.user
    conns = cli("--json", "account", "report", "connections", "--sort", "in-msgs", "--top", "5",
                "--expected", "1")
    assert conns.exit_code == 0, conns.output
    data = cli_json(conns)
    assert data["sort"] == "in-msgs" and len(data["connections"]) <= 5
    # The command's own connection is the system account's.
    alias = cli("account", "report", "conns", "--account", "SYS", "--expected", "1")
    assert alias.exit_code == 0, alias.output
    assert "SYS" in alias.output and "Connections" in alias.output
    assert server.system.password not in alias.output
    stats = cli("--json", "account", "report", "statistics", "--accounts", "APP", "--include-unused",
                "--expected", "1")
    assert stats.exit_code == 0, stats.output
    assert [a["account"] for a in cli_json(stats)["accounts"]] == ["APP"]
    tls = cli("account", "tls")
    assert tls.exit_code == 0 and "not encrypted" in tls.output


def test_cli_without_system_account(cli: CliFn) -> None:
    env: Any = {"NATSOP_SYSTEM_USER": None, "NATSOP_SYSTEM_PASSWORD": None}
    refused = cli("server", "ls", "1", env=env)
    assert refused.exit_code == 1
    assert "no_system_account" in refused.output
    info = cli("--json", "server", "info", env=env)
    assert info.exit_code == 0 and cli_json(info)["source"] == "connect_info"
