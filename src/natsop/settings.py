"""Where natsop connects, with which credentials: natscli's conventions.

Order, as natscli does it: explicit options (`--server`, `--creds`, ...), then the
environment (`NATS_URL`, `NATS_CREDS`, `NATS_NKEY`, `NATS_USER`/`NATS_PASSWORD`,
`NATS_TOKEN`, `NATS_CERT`/`NATS_KEY`/`NATS_CA`), then a natscli context (ADR-21:
`~/.config/nats/context/<name>.json`, selected by `--context`, `NATS_CONTEXT` or
`context.txt`). When none of these says anything, natsop runs its embedded server.

Every natscli context is also a named account: `account_name="prod"` uses the
context `prod`. The system account is the context named by `NATSOP_SYSTEM_CONTEXT`,
else a context called `system` or `sys`, else `NATSOP_SYSTEM_CREDS` or
`NATSOP_SYSTEM_USER`/`NATSOP_SYSTEM_PASSWORD` against the default servers.

Secrets are held in fields excluded from `repr` so they never reach a log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from natsop.errors import ConfigError

__all__ = ["SYSTEM", "Settings", "Target", "context_dir", "embedded_settings", "load_settings"]

SYSTEM = "system"


@dataclass(frozen=True)
class Target:
    """One way to connect: servers plus one identity. Secrets are hidden from repr."""

    name: str
    servers: tuple[str, ...]
    source: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None
    nkey: str | None = field(default=None, repr=False)  # a path, but a pasted seed must not be printed
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_first: bool = False
    jetstream_domain: str | None = None
    jetstream_api_prefix: str | None = None
    inbox_prefix: str | None = None

    @property
    def api_prefix(self) -> str:
        if self.jetstream_api_prefix:
            return self.jetstream_api_prefix.rstrip(".")
        if self.jetstream_domain:
            return f"$JS.{self.jetstream_domain}.API"
        return "$JS.API"

    def describe(self) -> str:
        """Safe to print: servers without user info, and where the settings came from."""
        return f"{', '.join(_strip_userinfo(s) for s in self.servers)} ({self.source})"


@dataclass(frozen=True)
class Settings:
    """The default target, the named ones, and the local policies."""

    default: Target
    accounts: Mapping[str, Target] = field(default_factory=dict)
    embedded: bool = False

    def target(self, account_name: str | None) -> Target:
        if not account_name or account_name == self.default.name:
            return self.default
        try:
            return self.accounts[account_name]
        except KeyError:
            known = sorted({self.default.name, *self.accounts})
            raise ConfigError(
                f"no account named {account_name!r} is configured",
                code="unknown_account",
                hint=f"Known accounts: {', '.join(known)}. Add a natscli context of that name to use it.",
            ) from None

    def system_target(self) -> Target:
        if SYSTEM in self.accounts:
            return self.accounts[SYSTEM]
        raise ConfigError(
            "this needs the system account, and no system account credentials are configured",
            code="no_system_account",
            hint="Create a natscli context named 'system' (or set NATSOP_SYSTEM_CONTEXT, or NATSOP_SYSTEM_CREDS / "
            "NATSOP_SYSTEM_USER and NATSOP_SYSTEM_PASSWORD) with a user of the system account.",
        )


def _strip_userinfo(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def context_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nats" / "context"


def _split_servers(url: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in url.split(",") if u.strip())


def _read_context(path: Path, name: str) -> Target:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"natscli context {name!r} does not exist ({path})", code="unknown_context",
                          hint="List contexts with `nats context ls`, or create one with `nats context add`.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"natscli context {name!r} cannot be read: {type(exc).__name__}", code="bad_context",
                          hint=f"Fix or remove {path}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"natscli context {name!r} is not a JSON object", code="bad_context")

    def s(key: str) -> str | None:
        v = data.get(key)
        return str(v) if v not in (None, "") else None

    def p(key: str) -> str | None:
        v = s(key)
        return os.path.expanduser(v) if v else None

    return Target(
        name=name,
        servers=_split_servers(s("url") or "nats://127.0.0.1:4222"),
        source=f"context {name}",
        user=s("user"),
        password=s("password"),
        token=s("token"),
        creds=p("creds"),
        nkey=p("nkey"),
        tls_cert=p("cert"),
        tls_key=p("key"),
        tls_ca=p("ca"),
        tls_first=bool(data.get("tls_first")),
        jetstream_domain=s("jetstream_domain"),
        jetstream_api_prefix=s("jetstream_api_prefix"),
        inbox_prefix=s("inbox_prefix"),
    )


def _contexts(cdir: Path) -> dict[str, Target]:
    out: dict[str, Target] = {}
    if cdir.is_dir():
        for path in sorted(cdir.glob("*.json")):
            try:
                out[path.stem] = _read_context(path, path.stem)
            except ConfigError:
                continue  # a broken context that is never used must not stop natsop
    return out


_ENV_KEYS = ("NATS_URL", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CERT",
             "NATS_KEY", "NATS_CA")


def load_settings(
    *,
    context: str | None = None,
    server: str | None = None,
    creds: str | None = None,
    nkey: str | None = None,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings | None:
    """Resolve the configured targets; None means nothing is configured (use the embedded server)."""
    env = os.environ if env is None else env
    cdir = context_dir(env)
    contexts = _contexts(cdir)
    ctx_name = context or env.get("NATS_CONTEXT")
    if not ctx_name:
        selected = cdir.parent / "context.txt"
        if selected.is_file():
            ctx_name = selected.read_text().strip() or None

    base: Target | None = None
    if ctx_name:
        base = contexts.get(ctx_name) or _read_context(cdir / f"{ctx_name}.json", ctx_name)

    overrides = {
        "servers": server or env.get("NATS_URL"),
        "creds": creds or env.get("NATS_CREDS"),
        "nkey": nkey or env.get("NATS_NKEY"),
        "user": user or env.get("NATS_USER"),
        "password": password or env.get("NATS_PASSWORD"),
        "token": token or env.get("NATS_TOKEN"),
        "tls_cert": tls_cert or env.get("NATS_CERT"),
        "tls_key": tls_key or env.get("NATS_KEY"),
        "tls_ca": tls_ca or env.get("NATS_CA"),
    }
    if base is None and not any(overrides.values()):
        return None
    if base is None:
        given = {"command line": any((server, creds, nkey, user, password, token, tls_cert, tls_key, tls_ca)),
                 "environment": any(env.get(k) for k in _ENV_KEYS)}
        source = " and ".join(where for where, used in given.items() if used)
        base = Target(name="default", servers=("nats://127.0.0.1:4222",), source=source)
    changes: dict[str, object] = {k: v for k, v in overrides.items() if v}
    if "servers" in changes:
        changes["servers"] = _split_servers(str(changes["servers"]))
    default = replace(base, **changes) if changes else base  # type: ignore[arg-type]

    accounts = dict(contexts)
    system_ctx = env.get("NATSOP_SYSTEM_CONTEXT")
    system: Target | None = None
    if system_ctx:
        system = accounts.get(system_ctx) or _read_context(cdir / f"{system_ctx}.json", system_ctx)
    elif "system" in accounts:
        system = accounts["system"]
    elif "sys" in accounts:
        system = accounts["sys"]
    elif env.get("NATSOP_SYSTEM_CREDS") or env.get("NATSOP_SYSTEM_USER"):
        system = Target(
            name=SYSTEM,
            servers=default.servers,
            source="NATSOP_SYSTEM_*",
            creds=env.get("NATSOP_SYSTEM_CREDS"),
            user=env.get("NATSOP_SYSTEM_USER"),
            password=env.get("NATSOP_SYSTEM_PASSWORD"),
            tls_cert=default.tls_cert,
            tls_key=default.tls_key,
            tls_ca=default.tls_ca,
        )
    if system is not None:
        accounts[SYSTEM] = replace(system, name=SYSTEM)
    return Settings(default=default, accounts=accounts)


def embedded_settings(servers: tuple[str, ...], app: tuple[str, str], system: tuple[str, str]) -> Settings:
    """Settings for natsop's embedded server: its APP user by default, its SYS user as `system`."""
    default = Target(name="default", servers=servers, source="embedded", user=app[0], password=app[1])
    sys_target = Target(name=SYSTEM, servers=servers, source="embedded", user=system[0], password=system[1])
    return Settings(default=default, accounts={SYSTEM: sys_target}, embedded=True)
