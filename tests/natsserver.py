"""A nats-server started from a configuration written by the test (auth modes EmbeddedServer has not).

    with ConfiguredServer(tmp_path, "authorization { token: ... }") as srv:
        srv.url  # nats://127.0.0.1:PORT

The server listens on 127.0.0.1 with free client and monitoring ports, has JetStream
(unless `jetstream=False`) and its store under `directory`.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from natsop.embedded.server import find_server_binary
from tests.harness import stop_process


class ConfiguredServer:
    def __init__(self, directory: Path, config: str, *, jetstream: bool = True, name: str = "natsop-test",
                 tls_url: bool = False) -> None:
        self.directory = directory
        self.config = config
        self.jetstream = jetstream
        self.name = name
        self.tls_url = tls_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.monitor_port = 0

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls_url else 'nats'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> ConfiguredServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = f"127.0.0.1:{self.port}" if self.port else "127.0.0.1:-1"
        lines = [f"server_name: {self.name}", f"listen: {listen}", "http: 127.0.0.1:-1",
                 f'ports_file_dir: "{self.directory}"']
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.directory / "js"}" }}')
        conf = self.directory / "server.conf"
        conf.write_text("\n".join(lines) + "\n" + self.config + "\n")
        conf.chmod(0o600)
        with open(self.directory / "server.log", "ab") as log:
            self.proc = subprocess.Popen([find_server_binary(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited ({self.proc.returncode}):\n{self.log[-3000:]}")
            if self._ready():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not become ready:\n{self.log[-3000:]}")

    def _ready(self) -> bool:
        assert self.proc is not None
        for candidate in self.directory.glob(f"*_{self.proc.pid}.ports"):
            try:
                ports = json.loads(candidate.read_text())
                self.port = urlsplit(ports["nats"][0]).port or 0
                self.monitor_port = urlsplit(ports["monitoring"][0]).port or 0
            except (OSError, ValueError, KeyError, IndexError):
                return False
        if not self.monitor_port:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc)
        for candidate in self.directory.glob(f"*_{proc.pid}.ports"):
            candidate.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would; `start()` brings it back on the same port and store."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for candidate in self.directory.glob(f"*_{proc.pid}.ports"):
                candidate.unlink(missing_ok=True)

    def __enter__(self) -> ConfiguredServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
