"""What a terminal shows while a command runs: a spinner with the time limit, or a progress bar."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from natsop.registry import Operation

WAIT_DELAY_S = 0.5  # quicker commands show nothing


def time_limit(op: Operation, arguments: dict[str, Any]) -> float:
    """The longest the command may run: its own `timeout_s` if it has one, else the operation's bound."""
    field = op.params.model_fields.get("timeout_s")
    if field is None:
        return op.timeout_s
    given = arguments.get("timeout_s", field.default)
    return float(given) if isinstance(given, (int, float)) else op.timeout_s


def waiting_text(op: Operation, elapsed_s: float, limit_s: float | None) -> str:
    """The status line while a command without progress reports runs: `kv watch: 3s of at most 30s`."""
    text = f"natsop {' '.join(op.cli)}: {elapsed_s:.0f}s"
    return f"{text} of at most {limit_s:g}s" if limit_s else text


def shows_activity(stderr_tty: bool, as_json: bool) -> bool:
    """A spinner or progress bar only for a person at a terminal; never with --json, never on stdout."""
    return stderr_tty and not as_json


class Activity:
    """Transient, on stderr: a progress bar once the operation reports progress; otherwise, after
    WAIT_DELAY_S, a spinner with the elapsed time and the limit."""

    def __init__(self, op: Operation, arguments: dict[str, Any]) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.op = op
        self.limit = time_limit(op, arguments)
        self.started = time.monotonic()
        self.live: Any = None  # the spinner
        self.spinner: Any = None
        self.bar: Any = None
        self.task: Any = None
        self.timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> Activity:
        self.timer = asyncio.get_running_loop().call_later(WAIT_DELAY_S, self._wait)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for display in (self.live, self.bar):
            if display is not None:
                display.stop()

    def __rich__(self) -> Any:
        self.spinner.update(text=waiting_text(self.op, time.monotonic() - self.started, self.limit))
        return self.spinner

    def _wait(self) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        if self.bar is not None:
            return
        self.spinner = Spinner("dots")
        self.live = Live(self, console=self.console, transient=True, refresh_per_second=8)
        self.live.start()

    async def report(self, done: float, total: float | None, message: str | None) -> None:
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            if self.live is not None:
                self.live.stop()
                self.live = None
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), transient=True, console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("", total=None)
        self.bar.update(self.task, completed=done, total=total, description=message or "")
