"""The MCP face: a server named `nats` whose tools are generated from the registry.

Each tool's input schema is its params model's JSON schema, its output schema the
result model's, and its annotations come from the operation's impact. A call
validates the arguments by building the params model, runs the operation, and
returns structured content plus a short text rendering. Every failure is a
result with `isError` set, never a crash of the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from natsop import __version__
from natsop.context import Context
from natsop.errors import NatsopError, UserError, scrub
from natsop.registry import Operation, operations
from natsop.render import error_text, to_text
from natsop.runner import run_operation

__all__ = ["build_server", "tool_definition"]

log = logging.getLogger("natsop.mcp")

INSTRUCTIONS = (
    "natsop operates NATS: core messaging, JetStream streams and consumers, Key-Value and Object Store. "
    "Read-only tools are safe to call freely. Destructive tools only report what they would do until "
    "called again with confirm set to the value they return in confirm_with. Listings are paged: when "
    "a result says truncated, call again with the offset or cursor it gives."
)


def tool_definition(op: Operation) -> types.Tool:
    """The MCP tool for an operation."""
    return types.Tool(
        name=op.tool,
        title=op.summary.rstrip("."),
        description=op.description,
        input_schema=op.params.model_json_schema(),
        output_schema=op.result.model_json_schema(),
        annotations=types.ToolAnnotations(
            title=op.summary.rstrip("."),
            read_only_hint=op.read_only,
            destructive_hint=op.destructive,
            idempotent_hint=op.idempotent,
            open_world_hint=False,
        ),
    )


def build_server(ctx: Context, *, read_only: bool = False) -> Server[Any]:
    """An MCP server over `ctx`, offering every registered tool (only read-only ones if asked)."""
    ops = {op.tool: op for op in operations(read_only=read_only)}
    tools = [tool_definition(op) for op in ops.values()]

    async def list_tools(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(rctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        op = ops.get(params.name)
        if op is None:
            err = UserError(f"no tool named {params.name!r}", code="unknown_tool",
                            hint="List the tools; in read-only mode only read-only tools exist.")
            return _error_result(err)

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await rctx.session.report_progress(done, total, message)

        try:
            result = await run_operation(ctx.with_progress(progress), op, params.arguments)
        except NatsopError as err:
            return _error_result(err)
        except Exception as exc:  # the server must survive anything an operation does
            log.exception("unexpected failure in %s", op.tool)
            return _error_result(NatsopError(f"internal error in {op.tool}: {type(exc).__name__}: {scrub(str(exc))}",
                                             code="internal"))
        data = result.model_dump(mode="json")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=to_text(result))],
            structured_content=data,
        )

    return Server(
        "nats",
        version=__version__,
        title="natsop",
        description="NATS operator's toolkit",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _error_result(err: NatsopError) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=error_text(err))],
        structured_content=None,
        is_error=True,
        meta={"natsop/error": json.loads(json.dumps(err.to_dict(), default=str))},
    )
