"""System-scope tools follow `account_name` to its deployment's system account, never another's.

Two separate servers: srvA is the default deployment (its APP user, its SYS user as the system
account); the context `other` reaches srvB. Asked with account_name="other", the system tools
must show srvB (through srvB's own system account when one is configured for it) or say plainly
that srvB has none; they must never show srvA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from natsop import EmbeddedServer, Toolkit
from natsop.api import settings_for_server
from natsop.errors import ConfigError
from natsop.settings import SYSTEM, Settings, Target, load_settings
from natsop.wire.connection import Connections
from tests.test_settings import write_context

GATHER: dict[str, Any] = {"timeout_s": 2.0}


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    a = EmbeddedServer(store_dir=tmp_path_factory.mktemp("srvA"), server_name="srvA")
    b = EmbeddedServer(store_dir=tmp_path_factory.mktemp("srvB"), server_name="srvB")
    a.start_sync()
    try:
        b.start_sync()
        try:
            yield a, b
        finally:
            b.stop_sync()
    finally:
        a.stop_sync()


def _user(srv: EmbeddedServer, name: str, *, system: bool = False, url: str | None = None) -> Target:
    creds = srv.system if system else srv.app
    return Target(name=name, servers=(url or srv.url,), source=f"context {name}", user=creds.user,
                  password=creds.password)


def _settings(a: EmbeddedServer, b: EmbeddedServer, **extra: Target) -> Settings:
    base = settings_for_server(a)
    return Settings(default=base.default, accounts={**base.accounts, "other": _user(b, "other"), **extra})


@pytest_asyncio.fixture(loop_scope="session")
async def without_b_system(two: tuple[EmbeddedServer, EmbeddedServer]) -> AsyncIterator[Toolkit]:
    a, b = two
    async with Toolkit(_settings(a, b)) as tk:
        yield tk


@pytest_asyncio.fixture(loop_scope="session")
async def with_b_system(two: tuple[EmbeddedServer, EmbeddedServer]) -> AsyncIterator[Toolkit]:
    a, b = two
    async with Toolkit(_settings(a, b, **{"other-system": _user(b, "other-system", system=True)})) as tk:
        yield tk


async def test_without_a_system_account_for_its_deployment_other_says_so(without_b_system: Toolkit) -> None:
    tk = without_b_system
    for tool in ("server_list", "server_ping"):
        with pytest.raises(ConfigError) as err:
            await tk.call(tool, account_name="other", **GATHER)
        assert err.value.code == "no_system_account", tool
        assert "'other'" in err.value.message and "another deployment" in err.value.message
        assert "other-system" in err.value.hint
    # The tools that can say something without the system account say it about srvB, from srvB.
    info: Any = await tk.call("server_info", account_name="other")
    assert info.source == "connect_info" and info.name == "srvB"
    conns: Any = await tk.call("account_report_connections", account_name="other", **GATHER)
    assert conns.view == "account" and {s.server for s in conns.servers} == {"srvB"}
    assert {c.server for c in conns.connections} <= {"srvB"}
    stats: Any = await tk.call("account_report_statistics", account_name="other", **GATHER)
    assert stats.view == "account" and stats.servers == []
    # The default account still uses srvA's system account.
    listed: Any = await tk.call("server_list", **GATHER)
    assert [s.name for s in listed.servers] == ["srvA"]


async def test_with_its_own_system_context_other_sees_its_deployment_only(with_b_system: Toolkit) -> None:
    tk = with_b_system
    listed: Any = await tk.call("server_list", account_name="other", **GATHER)
    assert [s.name for s in listed.servers] == ["srvB"]
    ping: Any = await tk.call("server_ping", account_name="other", **GATHER)
    assert [r.name for r in ping.replies] == ["srvB"]
    info: Any = await tk.call("server_info", account_name="other")
    assert info.source == "varz" and info.name == "srvB"
    conns: Any = await tk.call("account_report_connections", account_name="other", **GATHER)
    assert conns.view == "system" and {s.server for s in conns.servers} == {"srvB"}
    stats: Any = await tk.call("account_report_statistics", account_name="other", **GATHER)
    assert stats.view == "system" and [s.name for s in stats.servers] == ["srvB"]
    rtt: Any = await tk.call("rtt", account_name="other", iterations=1)
    assert [s.name for s in rtt.servers] == ["srvB"]
    # ... and the system context itself is a system account: it does not look for another.
    own: Any = await tk.call("server_list", account_name="other-system", **GATHER)
    assert [s.name for s in own.servers] == ["srvB"]
    # The default deployment is unchanged.
    mine: Any = await tk.call("server_list", **GATHER)
    assert [s.name for s in mine.servers] == ["srvA"]
    ping_a: Any = await tk.call("server_ping", **GATHER)
    assert [r.name for r in ping_a.replies] == ["srvA"]


async def test_a_system_context_elsewhere_is_not_the_defaults(two: tuple[EmbeddedServer, EmbeddedServer]) -> None:
    """The configured system account reaches srvB only: the default account (srvA) has none."""
    a, b = two
    base = settings_for_server(a)
    settings = Settings(default=base.default, accounts={SYSTEM: _user(b, SYSTEM, system=True),
                                                        "other": _user(b, "other")})
    async with Toolkit(settings) as tk:
        with pytest.raises(ConfigError) as err:
            await tk.call("server_list", **GATHER)
        assert err.value.code == "no_system_account"
        listed: Any = await tk.call("server_list", account_name="other", **GATHER)
        assert [s.name for s in listed.servers] == ["srvB"]


async def test_the_same_deployment_under_another_address_is_recognised(two: tuple[EmbeddedServer, EmbeddedServer],
                                                                       ) -> None:
    """`alias` names srvA as localhost: asked over the system account, srvA answers, so it is srvA's."""
    a, b = two
    port = a.url.rsplit(":", 1)[1]
    alias = _user(a, "alias", url=f"nats://localhost:{port}")
    async with Toolkit(_settings(a, b, alias=alias)) as tk:
        listed: Any = await tk.call("server_list", account_name="alias", **GATHER)
        assert [s.name for s in listed.servers] == ["srvA"]
        with pytest.raises(ConfigError):
            await tk.call("server_list", account_name="other", **GATHER)


async def test_unknown_account_is_refused_before_any_system_request(without_b_system: Toolkit) -> None:
    with pytest.raises(ConfigError) as err:
        await without_b_system.call("server_list", account_name="nope", **GATHER)
    assert err.value.code == "unknown_account"


async def test_which_system_account_serves_which_context(tmp_path: Path) -> None:
    """Resolved from the configuration alone where it can be (nothing here is reachable)."""
    write_context(tmp_path, "prod", url="nats://prod-1:4222,nats://prod-2:4222", user="u", password="p")
    write_context(tmp_path, "prod_sys", url="nats://prod-2:4222", user="admin", password="p")
    write_context(tmp_path, "staging", url="nats://staging:4222", user="u", password="p")
    write_context(tmp_path, "system", url="nats://STAGING:4222", user="admin", password="p")
    settings = load_settings(context="prod", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert settings is not None
    conns = Connections(settings)
    assert (await conns.system_target()).name == "prod_sys"
    assert (await conns.system_target("prod")).name == "prod_sys"
    assert (await conns.system_target("prod_sys")).name == "prod_sys"
    assert (await conns.system_target("staging")).name == SYSTEM
    assert (await conns.system_target(SYSTEM)).name == SYSTEM
