"""Target selection as natscli does it: options, environment, contexts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from natsop.errors import ConfigError
from natsop.settings import SYSTEM, load_settings


def write_context(config_home: Path, name: str, **fields: object) -> None:
    cdir = config_home / "nats" / "context"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"{name}.json").write_text(json.dumps(fields))


def test_nothing_configured_means_embedded(tmp_path: Path) -> None:
    assert load_settings(env={"XDG_CONFIG_HOME": str(tmp_path)}) is None


def test_environment_variables(tmp_path: Path) -> None:
    s = load_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "NATS_URL": "nats://a:4222,nats://b:4222",
                           "NATS_USER": "u", "NATS_PASSWORD": "secret-pw"})
    assert s is not None
    assert s.default.servers == ("nats://a:4222", "nats://b:4222")
    assert s.default.user == "u" and s.default.password == "secret-pw"
    assert "secret-pw" not in repr(s) and "secret-pw" not in s.default.describe()
    assert s.default.source == "environment"


def test_errors_say_where_the_target_came_from(tmp_path: Path) -> None:
    home = {"XDG_CONFIG_HOME": str(tmp_path)}
    flag = load_settings(server="nats://a:4222", env=home)
    assert flag is not None and flag.default.source == "command line"
    assert "(command line)" in flag.default.describe()
    both = load_settings(server="nats://a:4222", env={**home, "NATS_USER": "u"})
    assert both is not None and both.default.source == "command line and environment"


def test_selected_context_and_named_accounts(tmp_path: Path) -> None:
    write_context(tmp_path, "prod", url="nats://prod:4222", creds="~/prod.creds", jetstream_domain="hub")
    write_context(tmp_path, "system", url="nats://prod:4222", user="admin", password="pw")
    (tmp_path / "nats" / "context.txt").write_text("prod\n")
    s = load_settings(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s is not None
    assert s.default.name == "prod" and s.default.servers == ("nats://prod:4222",)
    assert s.default.creds is not None and s.default.creds.endswith("prod.creds")
    assert s.default.api_prefix == "$JS.hub.API"
    assert s.system_target().user == "admin"
    assert s.target("system").name == SYSTEM
    with pytest.raises(ConfigError) as err:
        s.target("nope")
    assert err.value.code == "unknown_account"
    assert "prod" in err.value.hint


def test_explicit_options_override_the_context(tmp_path: Path) -> None:
    write_context(tmp_path, "dev", url="nats://dev:4222", user="dev")
    s = load_settings(context="dev", server="nats://other:4222", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s is not None
    assert s.default.servers == ("nats://other:4222",) and s.default.user == "dev"


def test_missing_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(context="ghost", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert err.value.code == "unknown_context"


def test_no_system_account_says_how_to_configure_one(tmp_path: Path) -> None:
    s = load_settings(env={"XDG_CONFIG_HOME": str(tmp_path), "NATS_URL": "nats://x:4222"})
    assert s is not None
    with pytest.raises(ConfigError) as err:
        s.system_target()
    assert err.value.code == "no_system_account"
    assert "NATSOP_SYSTEM" in err.value.hint


def test_cli_says_a_password_from_the_environment_came_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from natsop import EmbeddedServer
    from natsop.faces.cli import build_cli

    with EmbeddedServer(store_dir=tmp_path / "store") as srv:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        monkeypatch.setenv("NATS_URL", srv.url)
        monkeypatch.setenv("NATS_USER", srv.app.user)
        monkeypatch.setenv("NATS_PASSWORD", "not-the-password")
        wrong = CliRunner().invoke(build_cli(read_only=False), ["--json", "stream", "ls"])
        assert wrong.exit_code == 1
        message = json.loads(wrong.output)["error"]["message"]
        assert "(environment)" in message and "command line" not in message, message
        assert "not-the-password" not in wrong.output
        # The password still completes a user given on the command line.
        monkeypatch.setenv("NATS_PASSWORD", srv.app.password)
        monkeypatch.delenv("NATS_USER")
        right = CliRunner().invoke(build_cli(read_only=False), ["--json", "stream", "ls", "--user", srv.app.user])
        assert right.exit_code == 0, right.output
