"""Read-only natsop does not join queue groups: a member takes messages away from the real workers.

`subscribe` is a read, and stays offered in read-only mode; its `queue` argument is not: it is
refused with a clear error before anything reaches the server, and the workers of the group
keep every message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

from natsop import EmbeddedServer, Toolkit
from natsop.api import settings_for_server
from natsop.errors import UserError
from natsop.runner import run_operation
from natsop.wire.context import Context
from tests.conftest import env_for
from tests.harness import clean_env, mcp_stdio


def _text(result: Any) -> str:
    return getattr(result.content[0], "text", "") if result.content else ""


async def test_read_only_mcp_refuses_to_join_a_queue_group(server: EmbeddedServer, tmp_path: Path,
                                                           uniq: str) -> None:
    subject = f"{uniq}.work"
    worker = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    got: list[bytes] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.data)

    try:
        await worker.subscribe(subject, queue="workers", cb=on_msg)
        await worker.flush()
        env = clean_env(tmp_path / "config", **env_for(server, tmp_path / "config"))
        async with mcp_stdio(env, "--read-only", "serve") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "subscribe" in tools and "refused when natsop is read-only" in str(tools["subscribe"].input_schema)
            joined = asyncio.create_task(client.call_tool("subscribe", {"subject": subject, "queue": "workers",
                                                                        "timeout_s": 1.5}))
            await asyncio.sleep(0.5)
            for i in range(20):
                await worker.publish(subject, f"m{i}".encode())
            await worker.flush()
            refused = await joined
            assert refused.is_error, _text(refused)
            assert "[read_only]" in _text(refused) and "queue group 'workers'" in _text(refused), _text(refused)
            # Watching the subject without a queue group is still a read, and still works.
            watched = await client.call_tool("subscribe", {"subject": subject, "timeout_s": 0.2})
            assert not watched.is_error, _text(watched)
        await asyncio.sleep(0.1)
        assert len(got) == 20  # the workers kept every message
    finally:
        await worker.close()


async def test_queue_is_refused_only_when_read_only(server: EmbeddedServer, uniq: str) -> None:
    from natsop.registry import get

    op = get("subscribe")
    args = {"subject": f"{uniq}.q", "queue": "workers", "timeout_s": 0.1}
    async with Toolkit.for_server(server) as tk:
        normal: Any = await tk.call("subscribe", **args)  # an operator may join a group on purpose
        assert normal.stopped_by == "timeout"
    ctx = Context(settings_for_server(server), read_only=True)
    try:
        try:
            await run_operation(ctx.with_progress(None), op, args)
        except UserError as err:
            assert err.code == "read_only" and "without `queue`" in err.hint
        else:
            raise AssertionError("a read-only context joined a queue group")
        assert ctx.connections._conns == {}  # refused before connecting
    finally:
        await ctx.close()


def test_read_only_cli_refuses_to_join_a_queue_group(cli: Any, uniq: str) -> None:
    refused = cli("--read-only", "--json", "sub", f"{uniq}.jobs", "--queue", "workers", "--timeout-s", "1",
                  read_only=True)
    assert refused.exit_code != 0
    assert "read-only" in refused.output and "read_only" in refused.output, refused.output
    # Without a queue group, read-only subscribe still works.
    plain = cli("--read-only", "--json", "sub", f"{uniq}.jobs", "--timeout-s", "0.2", read_only=True)
    assert plain.exit_code == 0, plain.output
