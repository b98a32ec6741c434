"""Decentralised auth for tests: NKeys, and operator/account/user JWTs signed here.

A JWT is base64url(header) . base64url(claims) . base64url(ed25519 signature of the first
two parts), with the header `{"typ":"JWT","alg":"ed25519-nkey"}` and the claims of
nats-io/jwt v2: `jti iat iss sub name` and a `nats` object whose `type` is operator,
account or user and `version` 2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

_PREFIX = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "account": nkeys.PREFIX_BYTE_ACCOUNT,
           "user": nkeys.PREFIX_BYTE_USER}
UNLIMITED_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
             "conn": -1, "leaf": -1}


@dataclass(frozen=True)
class NKey:
    """An NKey pair: the seed (secret) and the public key."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(kp.sign(data))
        finally:
            kp.wipe()


def new_nkey(kind: str) -> NKey:
    seed = nkeys.encode_seed(os.urandom(32), _PREFIX[kind])
    kp = nkeys.from_seed(bytearray(seed))
    public = kp.public_key.decode()
    kp.wipe()
    return NKey(seed=seed.decode(), public=public)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(*, subject: str, name: str, issuer: NKey, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims = {"jti": base64.b32encode(digest).decode().rstrip("="), **claims, "nats": {**nats, "version": 2}}
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


def creds_text(jwt: str, seed: str) -> str:
    """A .creds file as nsc writes it."""
    return (f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
            "*************************************************************\n")


@dataclass(frozen=True)
class User:
    """A user of an account: its key, its JWT and the creds file holding both."""

    account: str
    nkey: NKey
    jwt: str
    creds: Path


@dataclass(frozen=True)
class Operator:
    """An operator with a system account and application accounts, each with one user."""

    key: NKey
    jwt: str
    accounts: dict[str, tuple[NKey, str]]
    users: dict[str, User]

    def server_config(self) -> str:
        """The nats-server settings for operator mode with a MEMORY resolver holding every account."""
        preload = "\n".join(f"  {key.public}: {jwt}" for key, jwt in self.accounts.values())
        return (f"operator: {self.jwt}\nsystem_account: {self.accounts['SYS'][0].public}\n"
                f"resolver: MEMORY\nresolver_preload: {{\n{preload}\n}}\n")

    def secrets(self) -> list[str]:
        out = [self.key.seed]
        out += [key.seed for key, _ in self.accounts.values()]
        for user in self.users.values():
            out += [user.nkey.seed, user.jwt]
        return out


def operator_setup(directory: Path, accounts: tuple[str, ...] = ("APP",)) -> Operator:
    """An operator, the SYS account and `accounts` (JetStream enabled), one user each with a creds file."""
    directory.mkdir(parents=True, exist_ok=True)
    op = new_nkey("operator")
    acct_keys = {name: new_nkey("account") for name in ("SYS", *accounts)}
    op_jwt = encode_jwt(subject=op.public, name="natsop-test-operator", issuer=op,
                        nats={"type": "operator", "system_account": acct_keys["SYS"].public})
    account_jwts: dict[str, tuple[NKey, str]] = {}
    users: dict[str, User] = {}
    for name, key in acct_keys.items():
        limits = dict(UNLIMITED) if name == "SYS" else {**UNLIMITED, **UNLIMITED_JETSTREAM}
        account_jwts[name] = (key, encode_jwt(subject=key.public, name=name, issuer=op,
                                              nats={"type": "account", "limits": limits,
                                                    "default_permissions": {"pub": {}, "sub": {}}}))
        user_key = new_nkey("user")
        user_jwt = encode_jwt(subject=user_key.public, name=f"{name.lower()}-user", issuer=key,
                              nats={"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        path = directory / f"{name.lower()}.creds"
        path.write_text(creds_text(user_jwt, user_key.seed))
        path.chmod(0o600)
        users[name] = User(account=name, nkey=user_key, jwt=user_jwt, creds=path)
    return Operator(key=op, jwt=op_jwt, accounts=account_jwts, users=users)
