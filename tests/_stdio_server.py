"""A minimal MCP server on natsop's stdio transport, for tests/test_stdio.py.

Tools: `noisy` writes junk to stdout the ways a careless library or a child process
would, then answers; `size` answers with the length of its `text` argument;
`transport` says how stdin/stdout are served (loop, thread or sdk).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from natsop.faces.stdio import io_plan, stdio_transport

PLAN = "/".join(io_plan())  # decided before the transport takes fd 0 and 1: "loop/loop", "loop/thread", ...


def _tool(name: str) -> types.Tool:
    return types.Tool(name=name, input_schema={"type": "object", "properties": {}, "additionalProperties": True})


async def list_tools(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[_tool("noisy"), _tool("size"), _tool("transport")])


async def call_tool(_: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    if params.name == "noisy":
        print("junk from print", flush=True)
        os.write(1, b"junk from fd 1\n")
        subprocess.run([sys.executable, "-c", "print('junk from a child')"], check=True)
        text = "quiet"
    elif params.name == "size":
        text = str(len(str(args.get("text", ""))))
    else:
        text = PLAN
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


async def main() -> None:
    server: Server[Any] = Server("stdio-test", version="0", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_transport() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    # After the transport, fd 1 is the wire again.
    os.write(1, b'{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "bye"}}\n')


if __name__ == "__main__":
    anyio.run(main)
