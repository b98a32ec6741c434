"""Connections: one nats-py connection per account, opened lazily and reused.

A connection reconnects by itself; while it is reconnecting, calls fail fast with
`Unavailable` instead of waiting for a buffer to drain.

Before anything is sent, the files a target names (credentials, NKey seed, TLS) are
checked, so that a missing or malformed file is a clear `ConfigError` rather than a
network error (and so that nats-py never reads a creds file without a JWT, which it
would loop on forever). When TLS is asked for (a `tls://` URL, a CA or a client
certificate) the connection refuses to send credentials to a server that does not
use TLS, as nats.go does. A failed first connection says why: refused, timed out,
authorization, or which TLS step failed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats.errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natsop.errors import ConfigError, NatsopError, PermissionDenied, Unavailable, from_nats, scrub
from natsop.models import MultiValueHeaders, parse_header_block
from natsop.settings import SYSTEM, Settings, Target

__all__ = ["CONNECT_TIMEOUT_S", "Connections", "connect_options", "ensure_up", "server_version", "watch_lost"]

log = logging.getLogger("natsop.wire.connection")

#: Seconds to open the socket and to complete each step of the NATS handshake.
CONNECT_TIMEOUT_S = 3


class _QuietTlsEof(logging.Filter):
    """Drop asyncio's notice that nats-py's TLS stream ignores a half-close: it is printed at
    every TLS disconnect (so after every CLI command over TLS) and means nothing to a user."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


_asyncio_log = logging.getLogger("asyncio")
if not any(isinstance(f, _QuietTlsEof) for f in _asyncio_log.filters):
    _asyncio_log.addFilter(_QuietTlsEof())

_SEED = re.compile(r"^S[A-Z2-7]{50,}$")
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


class TlsNotOffered(nats_errors.Error):
    """The server did not switch to TLS although the target asks for it."""

    def __str__(self) -> str:
        return "nats: the server does not use TLS"


class _Client(NATS):
    """nats-py's client with guards.

    It refuses to send CONNECT (and so credentials) over plain TCP when TLS is required.
    And closing a socket whose TLS handshake failed waits at most `_CLOSE_WAIT_S`: nats-py
    waits for the plain stream to report its end, which never comes once the socket was
    handed to TLS, so a wrong CA would otherwise hang the connection attempt for good.
    It also keeps every value of a repeated header (nats-py keeps the last), see
    `models.MultiValueHeaders`, and survives the late answer to a flush that timed out.

    And it fails fast while the connection is down. nats-py buffers a request (or a flush)
    made while it reconnects, and keeps one in flight waiting for an answer that cannot come,
    each until its timeout. Here a request or flush started while reconnecting fails at once;
    when the connection drops, every request, flush and watcher in flight fails at once and
    what was still buffered is dropped, so that nothing reported as failed is sent later.
    """

    require_tls = False
    #: Where this client connects, for messages (no credentials).
    where = "the NATS server"

    def __init__(self) -> None:
        super().__init__()
        self._lost_watchers: set[Callable[[Unavailable], None]] = set()

    @property
    def is_down(self) -> bool:
        """True while the connection is lost and nats-py reconnects."""
        return self.is_reconnecting or (not self.is_connected and not self.is_closed)

    def down_error(self) -> Unavailable:
        """The error for a call made while the connection is down."""
        return Unavailable(f"the connection to {self.where} is down; natsop is reconnecting", code="not_connected",
                           hint="Retry shortly; the server may be restarting.")

    def lost_error(self) -> Unavailable:
        """The error for a call whose connection dropped while it waited for the answer."""
        return Unavailable(f"the connection to {self.where} was lost while waiting for the answer; natsop is "
                           "reconnecting", code="not_connected",
                           hint="Retry shortly; the server may be restarting. If it was a change, check whether "
                                "it took effect before repeating it.")

    def watch_lost(self, callback: Callable[[Unavailable], None]) -> Callable[[], None]:
        """Call `callback` with an error if the connection drops; returns the function that stops watching."""
        self._lost_watchers.add(callback)
        return lambda: self._lost_watchers.discard(callback)

    def fail_in_flight(self) -> None:
        """The connection dropped: fail every request, flush and watcher waiting on it; drop the buffer."""
        # A PUB still buffered would go out after the reconnection, after its caller was told it failed.
        self._pending = []
        self._pending_data_size = 0
        for fut in [*self._resp_map.values(), *self._pongs]:
            if not fut.done():
                fut.set_exception(self.lost_error())
                fut.exception()  # retrieved: nobody awaits the PINGs nats-py sends on its own
        for callback in list(self._lost_watchers):
            try:
                callback(self.lost_error())
            except Exception as exc:  # one watcher must not keep the others waiting
                log.debug("a lost-connection watcher failed: %s", type(exc).__name__)

    async def request(self, subject: str, payload: bytes = b"", timeout: float = 0.5, old_style: bool = False,
                      headers: dict[str, Any] | None = None) -> Msg:
        if self.is_down:
            raise self.down_error()
        return await super().request(subject, payload, timeout=timeout, old_style=old_style, headers=headers)

    async def flush(self, timeout: int = 10) -> None:
        if self.is_down:
            raise self.down_error()
        await super().flush(timeout)

    def _connect_command(self) -> bytes:
        if self.require_tls and _ssl_object(self) is None:
            raise TlsNotOffered()
        command: bytes = super()._connect_command()
        return command

    async def _connect_to_server(self, s: Any) -> None:
        try:
            await super()._connect_to_server(s)
        finally:
            _bound_wait_closed(self._transport)

    async def _process_pong(self) -> None:
        # A flush that timed out cancels its future but leaves it in line; nats-py then calls
        # set_result on it when the late PONG comes, and the InvalidStateError stops its read
        # loop while the connection still reports itself connected: every later call would time
        # out until the keep-alive pings noticed, minutes later. A PONG still answers the oldest
        # PING, so the line moves on either way.
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0

    async def _process_headers(self, headers: Any) -> Any:
        # nats-py keeps one value per header name; keep them all where a name repeats.
        parsed = await super()._process_headers(headers)
        if not parsed or not headers:
            return parsed
        raw = bytes(headers)
        if raw.count(b"\r\n") - 2 > len(parsed):  # more lines than names
            every = parse_header_block(raw)
            if every and any(len(values) > 1 for values in every.values()):
                return MultiValueHeaders(parsed, every)
        return parsed


def ensure_up(nc: NATS) -> None:
    """Raise `Unavailable` (not_connected) at once when the connection is down."""
    if isinstance(nc, _Client):
        if nc.is_down:
            raise nc.down_error()
    elif nc.is_reconnecting:
        raise Unavailable("the connection to the NATS server is down; it is reconnecting", code="not_connected",
                          hint="Retry shortly; the server may be restarting.")


def watch_lost(nc: NATS, callback: Callable[[Unavailable], None]) -> Callable[[], None]:
    """Have `callback` called with an error if `nc` drops (natsop's connections only); returns the unwatch."""
    if isinstance(nc, _Client):
        return nc.watch_lost(callback)
    return lambda: None


_CLOSE_WAIT_S = 0.5


def _bound_wait_closed(transport: Any) -> None:
    if transport is None or getattr(transport, "_natsop_bounded", False):
        return
    plain = transport.wait_closed

    async def wait_closed() -> None:
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await plain()
        except TimeoutError:
            log.debug("the closed socket did not report its end within %ss", _CLOSE_WAIT_S)

    setattr(transport, "wait_closed", wait_closed)  # noqa: B010
    setattr(transport, "_natsop_bounded", True)  # noqa: B010


def _ssl_object(nc: Any) -> Any:
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    get_extra = getattr(writer, "get_extra_info", None)
    return get_extra("ssl_object") if callable(get_extra) else None


def _wants_tls(t: Target) -> bool:
    return bool(t.tls_ca or t.tls_cert or t.tls_first or any(s.startswith("tls://") for s in t.servers))


def _where(t: Target) -> str:
    return f"account {t.name!r} ({t.source})"


def _read_file(path: str, what: str, t: Target, code: str) -> bytes:
    # Paths are shown through scrub(): a secret pasted where a path belongs must not be echoed.
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        if what == "NKey seed" and _SEED.match(path.strip()):
            raise ConfigError(
                f"the NKey setting of {_where(t)} holds a seed, not the path of a seed file",
                code=code, hint="Write the seed to a file readable only by you (chmod 600) and name that file.",
            ) from None
        raise ConfigError(f"the {what} file of {_where(t)} does not exist: {scrub(path)}", code=code,
                          hint="Check the path in NATS_CREDS / NATS_NKEY / NATS_CERT / NATS_KEY / NATS_CA "
                               "or in the natscli context.") from None
    except OSError as exc:
        raise ConfigError(f"the {what} file of {_where(t)} cannot be read ({type(exc).__name__}): {scrub(path)}",
                          code=code, hint="Check the file's permissions.") from None


def _valid_seed(seed: bytes) -> bool:
    try:
        import nkeys
    except ImportError:
        raise ConfigError("NKey and credentials-file authentication need the `nkeys` package",
                          code="nkeys_missing", hint="Install it: pip install nkeys") from None
    try:
        kp = nkeys.from_seed(bytearray(seed))
    except Exception:
        return False
    ok = bool(kp.public_key.startswith(b"U"))
    kp.wipe()
    return ok


def _check_creds(t: Target) -> None:
    assert t.creds is not None
    lines = [line.strip() for line in _read_file(t.creds, "credentials", t, "bad_creds_file").splitlines()]

    def after(marker: bytes) -> bytes | None:
        for i, line in enumerate(lines[:-1]):
            if marker in line:
                return lines[i + 1]
        return None

    jwt, seed = after(b"BEGIN NATS USER JWT"), after(b"BEGIN USER NKEY SEED")
    if jwt is None or not _JWT.match(jwt.decode("ascii", "replace")) or seed is None or not _valid_seed(seed):
        raise ConfigError(f"the credentials file of {_where(t)} does not hold a user JWT and a user NKey seed: "
                          f"{scrub(t.creds)}", code="bad_creds_file",
                          hint="Use the .creds file written by nsc (or your account's issuer), unmodified.")


def _check_nkey(t: Target) -> None:
    assert t.nkey is not None
    if not _valid_seed(_read_file(t.nkey, "NKey seed", t, "bad_nkey_file").strip()):
        raise ConfigError(f"the NKey seed file of {_where(t)} does not hold a user seed (SU...): {scrub(t.nkey)}",
                          code="bad_nkey_file", hint="The file must hold only the user's seed, as `nk -gen user` writes it.")


def _tls_context(t: Target) -> ssl.SSLContext | None:
    if not _wants_tls(t):
        return None
    if t.tls_key and not t.tls_cert:
        raise ConfigError(f"{_where(t)} names a TLS key but no certificate", code="bad_tls_files",
                          hint="Set both NATS_CERT and NATS_KEY (the context's cert and key), or neither.")
    for path, what in ((t.tls_ca, "TLS CA"), (t.tls_cert, "TLS certificate"), (t.tls_key, "TLS key")):
        if path:
            _read_file(path, what, t, "bad_tls_files")
    try:
        ctx = ssl.create_default_context(cafile=t.tls_ca) if t.tls_ca else ssl.create_default_context()
        if t.tls_cert:
            ctx.load_cert_chain(t.tls_cert, t.tls_key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load the TLS files of {_where(t)}: {type(exc).__name__}",
                          code="bad_tls_files", hint="Check that the cert, key and CA files are PEM and belong "
                                                     "together.") from None
    return ctx


def connect_options(t: Target) -> dict[str, Any]:
    """nats-py keyword arguments for a target (they hold secrets: never log them).

    Raises `ConfigError` when a file the target names is missing or malformed.
    """
    opts: dict[str, Any] = {
        "servers": list(t.servers),
        "name": "natsop",
        "connect_timeout": CONNECT_TIMEOUT_S,
        "reconnect_time_wait": 0.5,
        # Fail the first connection fast (two tries per server); reconnect forever once connected.
        "max_reconnect_attempts": 1,
        "allow_reconnect": True,
    }
    if t.user:
        opts["user"] = t.user
        opts["password"] = t.password or ""
    if t.token:
        opts["token"] = t.token
    if t.creds:
        _check_creds(t)
        opts["user_credentials"] = t.creds
    if t.nkey:
        _check_nkey(t)
        opts["nkeys_seed"] = t.nkey
    tls = _tls_context(t)
    if tls is not None:
        opts["tls"] = tls
        opts["tls_handshake_first"] = t.tls_first
    if t.inbox_prefix:
        opts["inbox_prefix"] = t.inbox_prefix
    return opts


def _connect_error(t: Target, final: BaseException, seen: list[BaseException]) -> NatsopError:
    """The most telling reason a first connection failed, from every attempt's error."""
    where = f"connecting to {t.describe()}"
    causes = [*seen, final]
    texts = [scrub(str(e)).lower() for e in causes]
    if any("authentication expired" in s for s in texts):
        return PermissionDenied(f"{where}: the server refused the credentials: they have expired",
                                code="authorization", hint="Renew the user's JWT (a new creds file).")
    if any(isinstance(e, nats_errors.AuthorizationError) or "authorization" in s or "authentication" in s
           for e, s in zip(causes, texts, strict=True)):
        return PermissionDenied(f"{where}: the server refused the credentials (authorization violation)",
                                code="authorization",
                                hint="Check the credentials of this account (user/password, token, nkey or creds file).")
    for e in causes:
        if isinstance(e, TlsNotOffered):
            return ConfigError(f"{where}: TLS is configured but the server does not use TLS; nothing was sent",
                               code="tls_not_offered",
                               hint="Use a nats:// URL without a CA or client certificate for a plain server, or "
                                    "enable TLS on the server.")
        if isinstance(e, ssl.SSLCertVerificationError):
            reason = e.verify_message or "certificate verify failed"
            return ConfigError(f"{where}: the server's TLS certificate is not trusted ({reason})",
                               code="tls_verify_failed",
                               hint="Set NATS_CA (--tlsca, or the context's ca) to the CA that signed the server's "
                                    "certificate, and connect with the name or address it was issued for.")
        if isinstance(e, ssl.SSLError):
            reason = e.reason or type(e).__name__
            return Unavailable(f"{where}: the TLS handshake failed ({reason})", code="tls_failed",
                               hint="The server may require a client certificate (NATS_CERT and NATS_KEY), or "
                                    "another TLS version.")
    if any(isinstance(e, (asyncio.TimeoutError, TimeoutError)) for e in causes):
        return Unavailable(f"{where}: the server did not complete the NATS handshake within {CONNECT_TIMEOUT_S}s",
                           code="connect_timeout",
                           hint="Check the address and port: something answers there but it does not speak NATS "
                                "(or is overloaded).")
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return Unavailable(f"{where}: connection refused", code="not_connected",
                           hint="Check that the NATS server is running and listening on that address and port.")
    if any(isinstance(e, (ConnectionResetError, BrokenPipeError)) or "empty response" in s
           for e, s in zip(causes, texts, strict=True)):
        return Unavailable(f"{where}: the server closed the connection during the handshake", code="not_connected",
                           hint="The server may require TLS with a client certificate, or limit connections.")
    for e in causes:
        if isinstance(e, OSError) and not isinstance(e, ssl.SSLError):
            reason = e.strerror or type(e).__name__
            return Unavailable(f"{where}: cannot reach the NATS server ({scrub(reason)})", code="not_connected")
    return from_nats(final, context=where)


def _system_context_names(name: str) -> tuple[str, ...]:
    """The contexts that may hold the system account of the deployment context `name` reaches."""
    return tuple(f"{name}{sep}{word}" for word in ("system", "sys") for sep in ("-", "_"))


def _endpoints(t: Target) -> set[tuple[str, int]]:
    """(host, port) of each server URL of a target, to tell whether two targets name the same servers."""
    out: set[tuple[str, int]] = set()
    for url in t.servers:
        rest = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
        host, port = rest, 4222
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else 4222
        elif rest.count(":") == 1:
            host, _, text = rest.partition(":")
            port = int(text) if text.isdigit() else 4222
        out.add((host.lower(), port))
    return out


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _server_id(nc: NATS) -> str | None:
    info = getattr(nc, "_server_info", None)
    sid = info.get("server_id") if isinstance(info, dict) else None
    return str(sid) if sid else None


class Connections:
    """The open connections, keyed by account name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conns: dict[str, NATS] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Whether the system account reaches the deployment of an account (by account name), once known.
        self._same_deployment: dict[str, bool] = {}

    async def get(self, account_name: str | None = None) -> tuple[NATS, Target]:
        target = self.settings.target(account_name)
        return await self._connect(target), target

    async def system(self, account_name: str | None = None) -> tuple[NATS, Target]:
        """The system account of the deployment `account_name` reaches (default: the default account's).

        Never another deployment's: when none is configured for that deployment, `no_system_account`.
        """
        target = await self.system_target(account_name)
        return await self._connect(target), target

    async def system_target(self, account_name: str | None = None) -> Target:
        """Which system credentials serve the deployment of `account_name`.

        In order: the account itself when it is a system context; a context named
        `<account>-system` (or `_system`, `-sys`, `_sys`); the configured system account
        (`settings.system_target()`) when it reaches the same deployment: it names one of the
        account's servers, or, asked over the system account, the server the account is
        connected to answers.
        """
        target = self.settings.target(account_name)
        accounts = self.settings.accounts
        if target.name == SYSTEM or any(target.name in _system_context_names(base) for base in accounts):
            return target
        for name in _system_context_names(target.name):
            if name in accounts:
                return accounts[name]
        system = self.settings.system_target()  # no system account at all: its error says what to configure
        if _endpoints(system) & _endpoints(target) or await self._reaches(system, target):
            return system
        raise ConfigError(
            f"no system account is configured for account {target.name!r} ({target.describe()}): the configured "
            f"system account ({system.describe()}) belongs to another deployment",
            code="no_system_account",
            hint=f"Create a natscli context named '{target.name}-system' with a user of the system account of "
                 f"the deployment {target.name!r} connects to.",
        )

    async def _reaches(self, system: Target, target: Target) -> bool:
        """Whether the system account answers for the server the account's connection is on."""
        known = self._same_deployment.get(target.name)
        if known is not None:
            return known
        nc = await self._connect(target)
        sys_nc = await self._connect(system)
        sid = _server_id(nc)
        if sid is None:
            return False
        if sid == _server_id(sys_nc):
            self._same_deployment[target.name] = True
            return True
        try:
            await sys_nc.request(f"$SYS.REQ.SERVER.{sid}.STATSZ", b"", timeout=2.0)
        except nats_errors.NoRespondersError:
            self._same_deployment[target.name] = False
            return False
        except (nats_errors.Error, TimeoutError, NatsopError) as exc:
            log.debug("cannot tell whether %s is in the system account's deployment: %s", target.name,
                      type(exc).__name__)
            return False
        self._same_deployment[target.name] = True
        return True

    async def open_direct(self, account_name: str | None, url: str, *, name: str = "natsop") -> NATS:
        """A connection of its own to exactly the server at `url`, with the account's credentials.

        No reconnecting: the caller measures that one server and closes the connection. A URL
        learnt from the cluster (an address) is checked against the TLS name of the account's
        configured server, as natscli's rtt does.
        """
        target = self.settings.target(account_name)
        probe = replace(target, servers=(url if "://" in url else f"nats://{url}",))
        opts = connect_options(probe)
        opts.update(name=name, allow_reconnect=False)  # max_reconnect_attempts stays 1: 0 would retry forever
        if "tls" in opts and target.servers:
            configured = _endpoints(replace(target, servers=target.servers[:1]))
            host = next(iter(configured))[0]
            if host and not _is_address(host):
                opts["tls_hostname"] = host
        seen: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            if len(seen) < 16:
                seen.append(exc)

        client = _Client()
        client.require_tls = _wants_tls(target)
        client.where = probe.describe()
        try:
            await client.connect(**opts, error_cb=on_error)
        except Exception as exc:
            raise _connect_error(probe, exc, seen) from None
        return client

    async def _connect(self, target: Target) -> NATS:
        nc = self._conns.get(target.name)
        if nc is not None and not nc.is_closed:
            if nc.is_reconnecting or not nc.is_connected:
                raise Unavailable(f"the connection to {target.describe()} is down; natsop is reconnecting",
                                  code="not_connected", hint="Retry shortly; the server may be restarting.")
            return nc
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:
            nc = self._conns.get(target.name)
            if nc is not None and not nc.is_closed:
                return nc
            opts = connect_options(target)
            seen: list[BaseException] = []
            connected = False

            async def on_error(exc: Exception) -> None:
                if not connected and len(seen) < 16:
                    seen.append(exc)
                # Errors of the first connection end up in the error raised; later ones are news.
                level = logging.DEBUG if isinstance(exc, OSError) or not connected else logging.WARNING
                log.log(level, "NATS connection %s: %s", target.name, scrub(str(exc)) or type(exc).__name__)

            client = _Client()
            client.require_tls = _wants_tls(target)
            client.where = target.describe()

            async def on_disconnected() -> None:
                client.fail_in_flight()

            try:
                await client.connect(**opts, error_cb=on_error, disconnected_cb=on_disconnected)
            except Exception as exc:
                raise _connect_error(target, exc, seen) from None
            connected = True
            client.options["max_reconnect_attempts"] = -1
            self._conns[target.name] = client
            return client

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for nc in conns.values():
            try:
                await nc.drain()
            except Exception:
                try:
                    await nc.close()
                except Exception as exc:  # closing must never hide the caller's error
                    log.debug("close failed: %s", type(exc).__name__)


def server_version(nc: Any) -> str:
    """The version the connected server announced in its INFO."""
    info = getattr(nc, "_server_info", None) or {}
    return str(info.get("version") or "")
