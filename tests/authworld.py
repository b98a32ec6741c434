"""Real nats-servers, one per way of authenticating, with the secrets to reach them.

- `accounts`: accounts ALPHA (user/password and an NKey user), BETA (user/password) and SYS.
- `token`: a single token for the global account.
- `jwt`: operator mode (MEMORY resolver), accounts APP and SYS, users with .creds files.
- `tls`: TLS signed by a test CA, client certificates required (`verify: true`), user/password.

Every secret is random per run, so a test can search any output for it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.certs import TlsFiles, make_tls
from tests.harness import write_context
from tests.natsjwt import NKey, Operator, new_nkey, operator_setup
from tests.natsserver import ConfiguredServer


def _secret() -> str:
    return "s" + secrets.token_hex(16)


@dataclass
class AuthWorld:
    directory: Path
    alice_pw: str = field(default_factory=_secret)
    bob_pw: str = field(default_factory=_secret)
    sys_pw: str = field(default_factory=_secret)
    tls_pw: str = field(default_factory=_secret)
    token: str = field(default_factory=_secret)
    nkey: NKey = field(default_factory=lambda: new_nkey("user"))
    operator: Operator | None = None
    tls: TlsFiles | None = None
    servers: dict[str, ConfiguredServer] = field(default_factory=dict)

    @property
    def seed_file(self) -> Path:
        return self.directory / "user.nk"

    @property
    def creds(self) -> Path:
        assert self.operator is not None
        return self.operator.users["APP"].creds

    @property
    def system_creds(self) -> Path:
        assert self.operator is not None
        return self.operator.users["SYS"].creds

    def url(self, name: str) -> str:
        return self.servers[name].url

    def secrets(self) -> dict[str, str]:
        """Every secret in play, by what it is."""
        out = {"alice password": self.alice_pw, "bob password": self.bob_pw, "sys password": self.sys_pw,
               "tls password": self.tls_pw, "token": self.token, "nkey seed": self.nkey.seed}
        assert self.operator is not None and self.tls is not None
        for i, s in enumerate(self.operator.secrets()):
            out[f"jwt secret {i}"] = s
            if s.count(".") == 2:  # a JWT: its signature alone is as telling
                out[f"jwt signature {i}"] = s.rsplit(".", 1)[1]
        out["client key"] = self.tls.client_key.read_text().splitlines()[1]
        return out

    def env(self, mode: str) -> dict[str, str]:
        """NATS_* settings for one way in: password, token, nkey, creds or tls."""
        assert self.tls is not None
        if mode == "password":
            return {"NATS_URL": self.url("accounts"), "NATS_USER": "alice", "NATS_PASSWORD": self.alice_pw,
                    "NATSOP_SYSTEM_USER": "sys", "NATSOP_SYSTEM_PASSWORD": self.sys_pw}
        if mode == "token":
            return {"NATS_URL": self.url("token"), "NATS_TOKEN": self.token}
        if mode == "nkey":
            return {"NATS_URL": self.url("accounts"), "NATS_NKEY": str(self.seed_file)}
        if mode == "creds":
            return {"NATS_URL": self.url("jwt"), "NATS_CREDS": str(self.creds),
                    "NATSOP_SYSTEM_CREDS": str(self.system_creds)}
        if mode == "tls":
            return {"NATS_URL": self.url("tls"), "NATS_USER": "tlsuser", "NATS_PASSWORD": self.tls_pw,
                    "NATS_CA": str(self.tls.ca), "NATS_CERT": str(self.tls.client_cert),
                    "NATS_KEY": str(self.tls.client_key)}
        raise ValueError(mode)

    def write_contexts(self, config_home: Path) -> dict[str, Path]:
        """natscli contexts carrying each way in; `system` is the accounts server's system user."""
        assert self.tls is not None
        contexts: dict[str, dict[str, Any]] = {
            "alpha": {"url": self.url("accounts"), "user": "alice", "password": self.alice_pw},
            "beta": {"url": self.url("accounts"), "user": "bob", "password": self.bob_pw},
            "nk": {"url": self.url("accounts"), "nkey": str(self.seed_file)},
            "tok": {"url": self.url("token"), "token": self.token},
            "jwt": {"url": self.url("jwt"), "creds": str(self.creds)},
            "tls": {"url": self.url("tls"), "user": "tlsuser", "password": self.tls_pw, "ca": str(self.tls.ca),
                    "cert": str(self.tls.client_cert), "key": str(self.tls.client_key)},
            "system": {"url": self.url("accounts"), "user": "sys", "password": self.sys_pw},
        }
        return {name: write_context(config_home, name, **fields) for name, fields in contexts.items()}


def _accounts_config(w: AuthWorld) -> str:
    return f"""
accounts {{
  SYS {{ users: [ {{ user: sys, password: "{w.sys_pw}" }} ] }}
  ALPHA {{
    jetstream: enabled
    users: [ {{ user: alice, password: "{w.alice_pw}" }}, {{ nkey: {w.nkey.public} }} ]
  }}
  BETA {{
    jetstream: enabled
    users: [ {{ user: bob, password: "{w.bob_pw}" }} ]
  }}
}}
system_account: SYS
"""


def _tls_config(w: AuthWorld) -> str:
    assert w.tls is not None
    return f"""
tls {{
  cert_file: "{w.tls.server_cert}"
  key_file: "{w.tls.server_key}"
  ca_file: "{w.tls.ca}"
  verify: true
  timeout: 2
}}
accounts {{
  APP {{ jetstream: enabled, users: [ {{ user: tlsuser, password: "{w.tls_pw}" }} ] }}
}}
"""


@contextmanager
def auth_world(directory: Path, *, only: tuple[str, ...] = ("accounts", "token", "jwt", "tls")) -> Iterator[AuthWorld]:
    """Start the servers named in `only` (all four by default) and stop them afterwards."""
    w = AuthWorld(directory=directory)
    directory.mkdir(parents=True, exist_ok=True)
    w.seed_file.write_text(w.nkey.seed + "\n")
    w.seed_file.chmod(0o600)
    w.operator = operator_setup(directory / "jwt-keys")
    w.tls = make_tls(directory / "tls")
    configs = {
        "accounts": (_accounts_config(w), False),
        "token": (f'authorization {{ token: "{w.token}" }}', False),
        "jwt": (w.operator.server_config(), False),
        "tls": (_tls_config(w), True),
    }
    with ExitStack() as stack:
        for name in only:
            config, tls_url = configs[name]
            w.servers[name] = stack.enter_context(
                ConfiguredServer(directory / f"srv-{name}", config, name=f"hard-{name}", tls_url=tls_url))
        yield w
