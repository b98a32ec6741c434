"""No secret ever leaves natsop: every registered tool, called through MCP and the CLI with
user/password, token, NKey seed, credentials file (JWT) and TLS client certificate configured,
never shows a password, token, seed, JWT or private key, in a result, an error, stderr or a
log line (the MCP server runs with NATSOP_LOG_LEVEL=DEBUG).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsop import Toolkit
from natsop.errors import NatsopError
from natsop.registry import Operation, operations
from tests.authworld import AuthWorld, auth_world
from tests.harness import NAMES, STREAM, clean_env, cli_args, mcp_stdio, minimal_args, run_cli

SEEDED_ACCOUNTS = ("alpha", "tok", "jwt", "tls")  # one context per distinct account
SWEPT_ACCOUNTS = ("alpha", "nk", "tok", "jwt", "tls")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthWorld]:
    with auth_world(tmp_path_factory.mktemp("secrets")) as w:
        yield w


@pytest.fixture(scope="module")
def home(world: AuthWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config_home = tmp_path_factory.mktemp("secrets-config")
    world.write_contexts(config_home)
    return config_home


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secrets-files")


def leaks(world: AuthWorld, text: str) -> list[str]:
    return [what for what, value in world.secrets().items() if value in text]


def _calls(op: Operation, account: str | None) -> list[dict[str, Any]]:
    base = minimal_args(op) if account is None else minimal_args(op, account_name=account)
    # Destructive tools: the dry run, and a wrong confirmation (an error path).
    return [base, base | {"confirm": "not-the-value"}] if op.destructive else [base]


@pytest.fixture(scope="module")
async def seeded(world: AuthWorld, home: Path, files_dir: Path) -> AuthWorld:
    """Objects the tools can find in every account, so that the sweep reads real data, not only errors."""
    async with Toolkit.from_env(env=clean_env(home, NATS_CONTEXT="alpha"), files_dir=files_dir) as tk:
        for account in SEEDED_ACCOUNTS:
            for tool, args in (
                ("stream_add", {"stream": STREAM, "subjects": ["hard.>"]}),
                ("publish", {"subject": NAMES["subject"], "payload": "p", "jetstream": True}),
                ("consumer_add", {"stream": STREAM, "consumer": NAMES["consumer"]}),
                ("kv_add", {"bucket": NAMES["bucket"]}),
                ("kv_put", {"bucket": NAMES["bucket"], "key": NAMES["key"], "value": "v"}),
                ("object_add", {"bucket": NAMES["bucket"]}),
                ("object_put", {"bucket": NAMES["bucket"], "name": NAMES["name"], "data": "d"}),
            ):
                await tk.call(tool, **args, account_name=account)
    return world


async def test_mcp_sweep_of_every_tool_shows_no_secret(seeded: AuthWorld, home: Path, files_dir: Path,
                                                       tmp_path: Path) -> None:
    world = seeded
    stderr_path = tmp_path / "serve-stderr.log"
    outputs: list[tuple[str, str]] = []
    succeeded: set[str] = set()
    sessions: list[tuple[dict[str, str], tuple[str | None, ...]]] = [
        # Contexts: alpha by default, the others as named accounts, `system` for system tools.
        (clean_env(home, NATS_CONTEXT="alpha", NATSOP_LOG_LEVEL="DEBUG"), SWEPT_ACCOUNTS),
        # The JWT server alone, with its system account's creds: connections reports list JWT users.
        (clean_env(home, NATSOP_LOG_LEVEL="DEBUG", **world.env("creds")), (None,)),
    ]
    with open(stderr_path, "w") as errlog:
        for env, accounts in sessions:
            if "NATS_URL" in env:  # no contexts for the second session
                env["XDG_CONFIG_HOME"] = str(tmp_path / "empty-config")
            async with mcp_stdio(env, "--files-dir", str(files_dir), "serve", errlog=errlog) as client:
                for account in accounts:
                    for op in operations():
                        for args in _calls(op, account):
                            result = await client.call_tool(op.tool, args)
                            outputs.append((f"{op.tool} @{account}", result.model_dump_json()))
                            if not result.is_error:
                                succeeded.add(f"{op.tool} @{account}")
                resources = await client.read_resource("nats://streams")
                outputs.append(("resource nats://streams", resources.model_dump_json()))
    stderr = stderr_path.read_text()
    assert "DEBUG" in stderr  # the log level took effect: there was something to search
    found = {where: leaks(world, text) for where, text in [*outputs, ("serve stderr", stderr)]}
    assert {where: what for where, what in found.items() if what} == {}
    # The sweep did real work in every account, including the reports where credentials could show.
    for account in SWEPT_ACCOUNTS:
        assert {f"stream_info @{account}", f"account_info @{account}", f"kv_info @{account}"} <= succeeded, account
    assert {"account_report_connections @None", "server_info @None", "account_info @None"} <= succeeded


def test_cli_sweep_of_every_tool_shows_no_secret(seeded: AuthWorld, home: Path, files_dir: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    world = seeded
    caplog.set_level(logging.DEBUG)
    texts: list[tuple[str, str]] = []
    modes = {
        "password": ("--json",),
        "token": ("--json",),
        "nkey": (),  # tables and key/value sections for people
        "creds": ("--json",),
        "tls": (),
    }
    ran = 0
    for mode, flags in modes.items():
        env = clean_env(home / "unused", **world.env(mode))
        for op in operations():
            for args in _calls(op, None):
                argv = cli_args(op, {k: v for k, v in args.items() if k != "confirm"})
                result = run_cli(env, *flags, *argv, files_dir=files_dir)
                ran += 1
                assert result.exit_code in (0, 1, 2), (mode, op.tool, result.output)
                texts.append((f"{op.tool} [{mode}]", result.output + result.stderr))
    texts.append(("log records", caplog.text))
    found = {where: leaks(world, text) for where, text in texts}
    assert {where: what for where, what in found.items() if what} == {}
    assert ran >= 5 * len(operations())


def test_settings_and_errors_never_format_secrets(world: AuthWorld, home: Path) -> None:
    from natsop.embedded.bootstrap import ConnectOptions
    from natsop.settings import load_settings

    settings = load_settings(context="alpha", env=clean_env(home, NATS_TOKEN=world.token, NATS_NKEY=world.nkey.seed))
    assert settings is not None
    shown = repr(settings) + repr(ConnectOptions(password=world.alice_pw, token=world.token))
    shown += " ".join(t.describe() for t in [settings.default, *settings.accounts.values()])
    assert leaks(world, shown) == []
    # Credentials in a URL are never shown either.
    url = f"nats://alice:{world.alice_pw}@127.0.0.1:4222,nats://{world.token}@127.0.0.1:4223"
    with_url = load_settings(server=url, env=clean_env(home))
    assert with_url is not None and leaks(world, with_url.default.describe()) == []


async def test_connection_errors_never_carry_secrets(world: AuthWorld, home: Path, tmp_path: Path) -> None:
    bad_url = f"nats://alice:{world.alice_pw}@127.0.0.1:1"
    seed_as_creds = tmp_path / world.nkey.seed
    cases = [
        {"NATS_URL": bad_url},
        {"NATS_URL": world.url("accounts"), "NATS_USER": "alice", "NATS_PASSWORD": world.alice_pw + "x"},
        {"NATS_URL": world.url("accounts"), "NATS_NKEY": world.nkey.seed},
        {"NATS_URL": world.url("jwt"), "NATS_CREDS": str(seed_as_creds)},
        {"NATS_URL": world.url("jwt"), "NATS_CREDS": world.operator.users["APP"].jwt if world.operator else ""},
    ]
    for env in cases:
        async with Toolkit.from_env(env=clean_env(home, **env)) as tk:
            with pytest.raises(NatsopError) as caught:
                await tk.call("stream_list")
        err = caught.value
        assert leaks(world, f"{err} {err.to_dict()}") == [], env
