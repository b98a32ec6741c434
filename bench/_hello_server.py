"""A bare MCP server over stdio, on the same SDK layer as natsop (the low-level `Server`).

One tool, `noop`, that answers at once with a short text and a small structured
result under an output schema (as natsop's tools do). It is the baseline for
start-up (an SDK hello server's initialize) and for per-call latency (what the MCP
transport costs when the tool does nothing).

    python bench/_hello_server.py                  # the SDK's stdio transport
    python bench/_hello_server.py --natsop-stdio   # natsop's (natsop.faces.stdio), as `natsop serve` uses
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

NOOP = types.Tool(
    name="noop",
    description="Answer at once.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": True},
    output_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    annotations=types.ToolAnnotations(read_only_hint=True),
)


async def list_tools(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[NOOP])


async def call_tool(_: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text="ok")], structured_content={"ok": True})


async def main() -> None:
    server: Server[Any] = Server("hello", version="0", on_list_tools=list_tools, on_call_tool=call_tool)
    if "--natsop-stdio" in sys.argv[1:]:
        from natsop.faces.stdio import stdio_transport

        async with stdio_transport() as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
