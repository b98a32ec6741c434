"""Every way of authenticating, and TLS, against a real nats-server configured for it.

Each mode does real work (stream_add, stream_info, account_info) through the Python face
and the CLI; natscli contexts carry each mode and are used as named accounts through MCP.
A misconfiguration fails at once with a clear error that names no secret.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsop import Toolkit
from natsop.errors import NatsopError
from tests.authworld import AuthWorld, auth_world
from tests.harness import clean_env, mcp_stdio, run_cli, stdout_json
from tests.natsjwt import creds_text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthWorld]:
    with auth_world(tmp_path_factory.mktemp("auth")) as w:
        yield w


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "config"


def _toolkit(env: dict[str, str], home: Path, **kwargs: Any) -> Toolkit:
    return Toolkit.from_env(env=clean_env(home, **env), **kwargs)


def _no_secret(world: AuthWorld, *texts: str) -> None:
    for text in texts:
        for what, value in world.secrets().items():
            assert value not in text, f"{what} leaked: {text[:300]}"


async def _work(tk: Toolkit, stream: str) -> Any:
    """Create a stream, publish to it through JetStream, read it back; the account info."""
    await tk.call("stream_add", stream=stream, subjects=[f"{stream.lower()}.>"])
    await tk.call("publish", subject=f"{stream.lower()}.a", payload="hello", jetstream=True)
    info: Any = await tk.call("stream_info", stream=stream)
    assert info.state.messages == 1
    got: Any = await tk.call("stream_get", stream=stream, seq=1)
    assert got.message.payload.data == "hello"
    return await tk.call("account_info")


# -- one test per mode, Python face and CLI


@pytest.mark.parametrize(("mode", "account"), [
    ("password", "ALPHA"), ("token", "$G"), ("nkey", "ALPHA"), ("creds", "APP"), ("tls", "APP"),
])
async def test_each_auth_mode_does_real_work(world: AuthWorld, home: Path, tmp_path: Path, mode: str,
                                             account: str) -> None:
    env = world.env(mode)
    stream = f"PY_{mode.upper()}"
    async with _toolkit(env, home) as tk:
        info = await _work(tk, stream)
    assert info.jetstream_enabled is True
    if info.user is not None:  # servers without a system account do not answer USER.INFO
        assert info.user.account_name == account or info.user.account == account or mode == "creds"
    if mode == "nkey":
        assert info.user is not None and info.user.user == world.nkey.public
    if mode == "creds":
        assert world.operator is not None
        assert info.user is not None and info.user.user == world.operator.users["APP"].nkey.public
        assert info.user.account == world.operator.accounts["APP"][0].public

    # The CLI, in a fresh process state, with the same settings from the environment.
    cli_env = clean_env(home, **env)
    made = await asyncio.to_thread(run_cli, cli_env, "--json", "stream", "add", f"CLI_{mode.upper()}",
                                   "--subjects", f"cli{mode}.>", files_dir=tmp_path)
    assert made.exit_code == 0, made.output
    listed = await asyncio.to_thread(run_cli, cli_env, "--json", "stream", "ls", files_dir=tmp_path)
    assert listed.exit_code == 0, listed.output
    names = {s["name"] for s in stdout_json(listed)["streams"]}
    assert {stream, f"CLI_{mode.upper()}"} <= names
    _no_secret(world, made.output, listed.output)


def test_cli_flags_carry_tls_files_and_credentials_files(world: AuthWorld, home: Path, tmp_path: Path) -> None:
    assert world.tls is not None
    env = clean_env(home, NATS_PASSWORD=world.tls_pw)
    tls = run_cli(env, "--json", "--server", world.url("tls"), "--user", "tlsuser", "--tlsca", str(world.tls.ca),
                  "--tlscert", str(world.tls.client_cert), "--tlskey", str(world.tls.client_key),
                  "account", "tls", files_dir=tmp_path)
    assert tls.exit_code == 0, tls.output
    assert stdout_json(tls)["tls"] is True
    creds = run_cli(clean_env(home), "--json", "--server", world.url("jwt"), "--creds", str(world.creds),
                    "account", "info", files_dir=tmp_path)
    assert creds.exit_code == 0, creds.output
    nkey = run_cli(clean_env(home), "--json", "--server", world.url("accounts"), "--nkey", str(world.seed_file),
                   "account", "info", files_dir=tmp_path)
    assert nkey.exit_code == 0, nkey.output
    assert stdout_json(nkey)["user"]["user"] == world.nkey.public


# -- TLS: server verification, client certificates, the chain and its expiry


def test_cli_over_tls_prints_only_its_result(world: AuthWorld, home: Path) -> None:
    """No asyncio notice on stderr at the end of a TLS connection; certificate text shown as it is."""
    env = clean_env(home, **world.env("tls"))
    as_json = subprocess.run([sys.executable, "-m", "natsop", "--json", "account", "tls"], env=env,
                             capture_output=True, timeout=60)
    assert as_json.returncode == 0 and as_json.stderr == b"", as_json.stderr
    certs = json.loads(as_json.stdout)["certificates"]
    table = subprocess.run([sys.executable, "-m", "natsop", "account", "tls"], env=env, capture_output=True,
                           timeout=60)
    assert table.returncode == 0 and table.stderr == b"", table.stderr
    shown = table.stdout.decode()
    assert all(c["fingerprint_sha256"] in shown for c in certs)


async def test_account_tls_reads_the_chain_on_the_tls_server(world: AuthWorld, home: Path) -> None:
    async with _toolkit(world.env("tls"), home) as tk:
        result: Any = await tk.call("account_tls", expiring_within_days=30)
        calm: Any = await tk.call("account_tls", expiring_within_days=5)
    assert result.tls is True and result.tls_required is True
    assert result.version == "TLSv1.3"
    subjects = [c.subject for c in result.certificates]
    assert subjects[0] == "CN=natsop hardening server" and subjects[-1] == "CN=natsop hardening CA"
    leaf = result.certificates[0]
    assert 19 < leaf.days_until_expiry <= 20
    assert set(leaf.sans) == {"localhost", "127.0.0.1"}
    assert result.expiring is True and any("natsop hardening server" in w for w in result.warnings)
    assert calm.expiring is False and calm.warnings == []


async def test_tls_a_plain_url_with_a_ca_still_uses_tls(world: AuthWorld, home: Path) -> None:
    env = world.env("tls") | {"NATS_URL": world.url("tls").replace("tls://", "nats://")}
    async with _toolkit(env, home) as tk:
        result: Any = await tk.call("account_tls")
    assert result.tls is True


async def _connect_error(env: dict[str, str], home: Path) -> NatsopError:
    started = time.monotonic()
    async with _toolkit(env, home) as tk:
        with pytest.raises(NatsopError) as caught:
            await tk.call("stream_list")
    assert time.monotonic() - started < 10, "a failed connection must fail fast"
    return caught.value


async def test_tls_refusals_say_which_step_failed(world: AuthWorld, home: Path) -> None:
    assert world.tls is not None
    env = world.env("tls")
    untrusted = await _connect_error(env | {"NATS_CA": str(world.tls.other_ca)}, home)
    assert untrusted.code == "tls_verify_failed", untrusted
    assert "NATS_CA" in untrusted.hint
    no_ca = await _connect_error({k: v for k, v in env.items() if k != "NATS_CA"}, home)
    assert no_ca.code == "tls_verify_failed", no_ca
    no_client_cert = await _connect_error({k: v for k, v in env.items() if k not in ("NATS_CERT", "NATS_KEY")}, home)
    assert no_client_cert.code in ("tls_failed", "not_connected"), no_client_cert
    assert "client certificate" in no_client_cert.hint
    # A tls:// URL to a server without TLS: refused before any credential is sent.
    plain = await _connect_error(world.env("password") | {"NATS_URL": world.url("accounts").replace("nats", "tls")},
                                 home)
    assert plain.code == "tls_not_offered", plain
    _no_secret(world, str(untrusted), str(no_ca), str(no_client_cert), str(plain))


async def test_tls_files_missing_or_wrong_are_configuration_errors(world: AuthWorld, home: Path,
                                                                   tmp_path: Path) -> None:
    assert world.tls is not None
    env = world.env("tls")
    missing = await _connect_error(env | {"NATS_CA": str(tmp_path / "nope.pem")}, home)
    assert missing.code == "bad_tls_files" and "nope.pem" in missing.message
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = await _connect_error(env | {"NATS_CERT": str(garbage)}, home)
    assert bad.code == "bad_tls_files"
    key_only = await _connect_error({k: v for k, v in env.items() if k != "NATS_CERT"}, home)
    assert key_only.code == "bad_tls_files"


# -- wrong credentials: fast, clear, and secret-free


async def test_wrong_credentials_are_refused_clearly(world: AuthWorld, home: Path, tmp_path: Path) -> None:
    wrong_pw = await _connect_error(world.env("password") | {"NATS_PASSWORD": "not-" + world.alice_pw}, home)
    assert wrong_pw.code == "authorization" and "refused the credentials" in wrong_pw.message
    wrong_token = await _connect_error(world.env("token") | {"NATS_TOKEN": "t" + world.token}, home)
    assert wrong_token.code == "authorization"
    # A valid seed of a user the server does not know.
    from tests.natsjwt import new_nkey

    stranger = tmp_path / "stranger.nk"
    stranger.write_text(new_nkey("user").seed)
    unknown_nkey = await _connect_error(world.env("nkey") | {"NATS_NKEY": str(stranger)}, home)
    assert unknown_nkey.code == "authorization"
    _no_secret(world, str(wrong_pw), str(wrong_token), str(unknown_nkey))
    assert "not-" + world.alice_pw not in str(wrong_pw) and "t" + world.token not in str(wrong_token)


async def test_broken_nkey_and_creds_files_fail_before_connecting(world: AuthWorld, home: Path,
                                                                   tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("hello\nworld\n")
    bad_seed = await _connect_error(world.env("nkey") | {"NATS_NKEY": str(garbage)}, home)
    assert bad_seed.code == "bad_nkey_file"
    # The seed itself where the path belongs: refused without echoing it.
    pasted = await _connect_error(world.env("nkey") | {"NATS_NKEY": world.nkey.seed}, home)
    assert pasted.code == "bad_nkey_file" and "holds a seed" in pasted.message
    # nats-py reads a creds file without a JWT marker forever: natsop must refuse it first.
    no_jwt = await _connect_error(world.env("creds") | {"NATS_CREDS": str(garbage)}, home)
    assert no_jwt.code == "bad_creds_file"
    assert world.operator is not None
    half = tmp_path / "half.creds"
    half.write_text(creds_text(world.operator.users["APP"].jwt, "SUNOTASEED"))
    half_err = await _connect_error(world.env("creds") | {"NATS_CREDS": str(half)}, home)
    assert half_err.code == "bad_creds_file"
    missing = await _connect_error(world.env("creds") | {"NATS_CREDS": str(tmp_path / "none.creds")}, home)
    assert missing.code == "bad_creds_file"
    _no_secret(world, str(bad_seed), str(pasted), str(no_jwt), str(half_err), str(missing))


def test_cli_reports_a_bad_creds_file_without_hanging(world: AuthWorld, home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.creds"
    garbage.write_text("no markers here\n")
    started = time.monotonic()
    result = run_cli(clean_env(home, **(world.env("creds") | {"NATS_CREDS": str(garbage)})), "stream", "ls",
                     files_dir=tmp_path)
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert "[bad_creds_file]" in result.stderr


# -- natscli contexts carrying each mode, as named accounts


async def test_contexts_carry_every_mode_through_mcp(world: AuthWorld, home: Path) -> None:
    world.write_contexts(home)
    env = clean_env(home, NATS_CONTEXT="alpha")
    async with mcp_stdio(env) as client:
        for ctx_name in ("alpha", "nk", "tok", "jwt", "tls"):
            stream = f"CTX_{ctx_name.upper()}"
            made = await client.call_tool("stream_add", {"stream": stream, "subjects": [f"ctx{ctx_name}.>"],
                                                         "account_name": ctx_name})
            assert not made.is_error, (ctx_name, made.content)
            info = await client.call_tool("stream_info", {"stream": stream, "account_name": ctx_name})
            assert not info.is_error and info.structured_content is not None
            assert info.structured_content["config"]["name"] == stream
            _no_secret(world, str(made.content), str(info.content))
        # Same server, other account: alpha's stream does not exist for beta.
        hidden = await client.call_tool("stream_info", {"stream": "CTX_ALPHA", "account_name": "beta"})
        assert hidden.is_error and "[stream_not_found]" in getattr(hidden.content[0], "text", "")
        tls = await client.call_tool("account_tls", {"account_name": "tls"})
        assert tls.structured_content is not None and tls.structured_content["tls"] is True
        # The system context serves the system tools.
        servers = await client.call_tool("server_list", {"timeout_s": 0.5})
        assert not servers.is_error, servers.content
        assert servers.structured_content is not None
        assert [s["name"] for s in servers.structured_content["servers"]] == ["hard-accounts"]
    # The Python face takes the same contexts.
    for ctx_name in ("alpha", "nk", "tok", "jwt", "tls"):
        async with Toolkit.from_env(env=clean_env(home), context=ctx_name) as tk:
            info: Any = await tk.call("stream_info", stream=f"CTX_{ctx_name.upper()}")
            assert info.config["name"] == f"CTX_{ctx_name.upper()}"
    # Each stream landed on the server of its context, and only there.
    async with _toolkit({"NATS_URL": world.url("token"), "NATS_TOKEN": world.token}, home) as tk:
        names = {s.name for s in (await tk.call("stream_list")).streams}  # type: ignore[attr-defined]
    assert "CTX_TOK" in names and "CTX_ALPHA" not in names and "CTX_JWT" not in names


def test_contexts_through_the_cli(world: AuthWorld, home: Path, tmp_path: Path) -> None:
    world.write_contexts(home)
    env = clean_env(home)
    for ctx_name in ("nk", "tok", "jwt", "tls"):
        stream = f"CLICTX_{ctx_name.upper()}"
        made = run_cli(env, "--context", ctx_name, "--json", "stream", "add", stream, "--subjects",
                       f"clictx{ctx_name}.>", files_dir=tmp_path)
        assert made.exit_code == 0, (ctx_name, made.output)
        info = run_cli(env | {"NATS_CONTEXT": ctx_name}, "--json", "stream", "info", stream, files_dir=tmp_path)
        assert info.exit_code == 0, (ctx_name, info.output)
        assert stdout_json(info)["config"]["name"] == stream
        _no_secret(world, made.output, info.output)
    # A context selected with context.txt, as `nats context select` writes it.
    (home / "nats" / "context.txt").write_text("jwt\n")
    selected = run_cli(env, "--json", "stream", "info", "CLICTX_JWT", files_dir=tmp_path)
    assert selected.exit_code == 0, selected.output


# -- several accounts at once


async def test_account_name_selects_exactly_that_accounts_connection(world: AuthWorld, home: Path) -> None:
    world.write_contexts(home)
    async with _toolkit({"NATS_CONTEXT": "alpha"}, home) as tk:
        await tk.call("stream_add", stream="ISO_ALPHA", subjects=["iso.alpha.>"])
        await tk.call("stream_add", stream="ISO_BETA", subjects=["iso.beta.>"], account_name="beta")
        # The same subjects in both accounts: accounts do not share subjects.
        await tk.call("stream_add", stream="ISO_SAME", subjects=["iso.same.>"])
        await tk.call("stream_add", stream="ISO_SAME", subjects=["iso.same.>"], account_name="beta")
        await tk.call("publish", subject="iso.same.x", payload="from alpha", jetstream=True)
        for _ in range(2):
            await tk.call("publish", subject="iso.same.x", payload="from beta", jetstream=True,
                          account_name="beta")

        # Interleaved, concurrent calls: each answers for its own account.
        calls = [tk.call("account_info", account_name=name) for name in ("alpha", "beta", None, "beta", "alpha")]
        infos: list[Any] = await asyncio.gather(*calls)
        assert [i.user.account for i in infos] == ["ALPHA", "BETA", "ALPHA", "BETA", "ALPHA"]

        alpha: Any = await tk.call("stream_list")
        beta: Any = await tk.call("stream_list", account_name="beta")
        alpha_names, beta_names = {s.name for s in alpha.streams}, {s.name for s in beta.streams}
        assert {"ISO_ALPHA", "ISO_SAME"} <= alpha_names and "ISO_BETA" not in alpha_names
        assert {"ISO_BETA", "ISO_SAME"} <= beta_names and "ISO_ALPHA" not in beta_names
        with pytest.raises(NatsopError) as hidden:
            await tk.call("stream_info", stream="ISO_ALPHA", account_name="beta")
        assert hidden.value.code == "stream_not_found"
        same_alpha: Any = await tk.call("stream_info", stream="ISO_SAME")
        same_beta: Any = await tk.call("stream_info", stream="ISO_SAME", account_name="beta")
        assert (same_alpha.state.messages, same_beta.state.messages) == (1, 2)
        got: Any = await tk.call("stream_get", stream="ISO_SAME", seq=1, account_name="beta")
        assert got.message.payload.data == "from beta"

        with pytest.raises(NatsopError) as unknown:
            await tk.call("stream_list", account_name="gamma")
        assert unknown.value.code == "unknown_account"
        assert "alpha" in unknown.value.hint and world.alice_pw not in str(unknown.value)
