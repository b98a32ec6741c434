"""The stdio transport for `natsop serve`, on the event loop's own pipe I/O.

The MCP SDK's `stdio_server` reads and writes through `anyio.wrap_file`, which hands
every line read, every write and every flush to a worker thread: about a dozen thread
round trips per tool call, the largest single cost natsop's MCP layer measured
(`docs/benchmarks.md`). When stdin and stdout are pipes or sockets, as they are
whenever an MCP client starts natsop, they can be read and written by the event loop
directly instead. natsop still runs the SDK's `stdio_server` for the protocol side
(message parsing, the session streams); only the byte I/O underneath it changes.

Anything else (a terminal, a regular file, the null device) goes through threads, as in the
SDK, with one difference: stdin is read by a daemon thread of natsop's own, so that a read
blocked on a terminal never holds up the end of the session (SIGTERM stops `natsop serve`
in order) or the exit of the process. Terminals stay off the event loop because it would
make their shared file description non-blocking, stderr included.

Like the SDK, natsop takes fd 0 and 1 for the wire while it serves: fd 0 then reads
the null device and fd 1 goes to stderr, so stray prints or child processes cannot
corrupt the JSON-RPC stream. Both are restored on exit.

On Windows natsop uses the SDK's transport as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

__all__ = ["fast_stdio_possible", "io_plan", "stdio_transport"]

# One JSON-RPC message per line; object_put sends base64 payloads, so lines can be large.
# The reader buffers only what has arrived; the limit only bounds a runaway line.
MAX_LINE_BYTES = 1 << 30


Way = Literal["loop", "thread", "sdk"]


def _on_the_loop(fd: int) -> bool:
    """Whether `fd` is served on the event loop: a pipe or a socket."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def io_plan() -> tuple[Way, Way]:
    """How stdin and stdout will be served: on the event loop, through threads, or by the SDK (Windows)."""
    if sys.platform == "win32":
        return "sdk", "sdk"
    return ("loop" if _on_the_loop(0) else "thread"), ("loop" if _on_the_loop(1) else "thread")


def fast_stdio_possible() -> bool:
    """True when stdin and stdout are both served on the event loop."""
    return io_plan() == ("loop", "loop")


class _Lines:
    """`async for line in ...` over a pipe, as text, like the SDK's wrapped stdin."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            if not end.partial:
                raise StopAsyncIteration from None
            line = end.partial  # a last line without a newline
        return line.decode("utf-8", "replace")


class _ThreadLines:
    """`async for line in ...` over a descriptor read by a daemon thread.

    The thread owns `fd` and closes it at end of input. Waiting for a line can be cancelled
    at any time; a read still blocked (a terminal nobody types in) is left to the thread,
    which as a daemon does not keep the process alive. Lines queue up to `_QUEUED` at most.
    """

    _QUEUED = 16

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue(self._QUEUED)
        threading.Thread(target=self._pump, args=(fd,), name="natsop stdin", daemon=True).start()

    def _put(self, item: bytes | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(self._lines.put(item), self._loop).result()
        except (RuntimeError, asyncio.CancelledError):  # the loop is closed: nobody reads any more
            return False
        return True

    def _pump(self, fd: int) -> None:
        pending = bytearray()
        try:
            while chunk := os.read(fd, 1 << 16):
                searched = len(pending)
                pending += chunk
                while (end := pending.find(b"\n", searched)) >= 0:
                    if not self._put(bytes(pending[: end + 1])):
                        return
                    del pending[: end + 1]
                    searched = 0
                if len(pending) > MAX_LINE_BYTES:
                    break
            if pending:
                self._put(bytes(pending))  # a last line without a newline
        except OSError:
            pass
        finally:
            os.close(fd)
            self._put(None)

    def __aiter__(self) -> _ThreadLines:
        return self

    async def __anext__(self) -> str:
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # stays at the end for any later reader
            raise StopAsyncIteration
        return line.decode("utf-8", "replace")


class _WriteFlow(asyncio.Protocol):
    """Write-side protocol: remembers back-pressure and a lost connection."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or BrokenPipeError("stdout closed")
        self.writable.set()
        self.closed.set()


class _Writer:
    """`write` and `flush` as the SDK calls them on its wrapped stdout."""

    def __init__(self, transport: asyncio.WriteTransport, flow: _WriteFlow) -> None:
        self._transport = transport
        self._flow = flow

    async def write(self, text: str) -> int:
        if self._flow.lost is not None:
            raise self._flow.lost
        data = text.encode("utf-8")
        self._transport.write(data)
        return len(text)

    async def flush(self) -> None:
        # The transport writes at once and buffers the rest; wait only under back-pressure.
        await self._flow.writable.wait()
        if self._flow.lost is not None:
            raise self._flow.lost


@contextlib.contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Take fd 0 and 1 for the wire: yields private duplicates; meanwhile fd 0 reads /dev/null, fd 1 goes to stderr.

    On exit fd 0 and 1 point at the wire again, in the blocking mode they had.
    """
    saved = [os.dup(0), os.dup(1)]
    blocking = [os.get_blocking(0), os.get_blocking(1)]
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        # The event loop's transports own (and close) these; `saved` keeps the wire for the restore.
        # (os.dup's descriptors are not inherited by child processes.)
        yield os.dup(saved[0]), os.dup(saved[1])
    finally:
        for std, fd, was_blocking in zip((0, 1), saved, blocking, strict=True):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, was_blocking)  # the loop made the shared description non-blocking
                os.dup2(fd, std)
            os.close(fd)


@contextlib.asynccontextmanager
async def stdio_transport() -> AsyncIterator[tuple[Any, Any]]:
    """The MCP session streams over stdin/stdout, on the event loop where the descriptors allow it."""
    import anyio
    from mcp.server.stdio import stdio_server

    way_in, way_out = io_plan()
    if way_in == "sdk":
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    with _claimed_std_fds() as (wire_in, wire_out), contextlib.ExitStack() as files:
        read_transport: asyncio.BaseTransport | None = None
        write_transport: asyncio.WriteTransport | None = None
        flow: _WriteFlow | None = None
        try:
            # The SDK only iterates stdin and calls write/flush on stdout: these stand in for its wrapped files.
            lines: Any
            writer: Any
            if way_in == "loop":
                reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
                read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                                 os.fdopen(wire_in, "rb", buffering=0))
                lines = _Lines(reader)
            else:
                lines = _ThreadLines(wire_in)
            if way_out == "loop":
                write_transport, flow = await loop.connect_write_pipe(_WriteFlow,
                                                                      os.fdopen(wire_out, "wb", buffering=0))
                writer = _Writer(write_transport, flow)
            else:
                text_out = files.enter_context(io.TextIOWrapper(os.fdopen(wire_out, "wb"), encoding="utf-8"))
                writer = anyio.wrap_file(text_out)
            async with stdio_server(stdin=cast(Any, lines), stdout=cast(Any, writer)) as streams:
                yield streams
        finally:
            if read_transport is not None:
                read_transport.close()
            if write_transport is not None and flow is not None:
                write_transport.close()  # writes out what is still buffered, then closes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flow.closed.wait(), 5)
