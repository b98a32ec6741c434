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
from natsop.errors import NatsopError, UserError, scrub
from natsop.faces.render import error_text, to_text
from natsop.registry import Operation, operations
from natsop.runner import run_operation
from natsop.skill import DOCS, read_doc
from natsop.wire.context import Context

__all__ = ["build_server", "tool_definition"]

log = logging.getLogger("natsop.mcp")

INSTRUCTIONS = (
    "natsop operates NATS: core messaging, JetStream streams and consumers, Key-Value and Object Store. "
    "Read-only tools are safe to call freely. Destructive tools only report what they would do until "
    "called again with confirm set to the value they return in confirm_with (stream_update applies a change "
    "that removes nothing at once, and asks only before one that would remove messages or seal). "
    "Listings are paged: when "
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
    ctx.read_only = ctx.read_only or read_only  # read-only tools refuse their acting arguments too
    tools: list[types.Tool] = []

    async def list_tools(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        # Schemas are built when first asked for, not before `initialize` is answered.
        if not tools:
            tools.extend(tool_definition(op) for op in ops.values())
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
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=lambda rctx, p: read_resource(ctx, ops, p),
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


# --- Resources: the skill documents, and live read-only views bounded like the tools.

_DOC_URI = "nats://skill/"
# uri template -> (tool behind it, the argument the {variable} fills)
_VIEWS: dict[str, tuple[str, str | None, str]] = {
    "nats://streams": ("stream_list", None, "The account's streams (first page)"),
    "nats://stream/{name}": ("stream_info", "stream", "A stream's configuration and state"),
    "nats://kv": ("kv_ls", None, "The account's Key-Value buckets (first page)"),
    "nats://kv/{bucket}": ("kv_info", "bucket", "A Key-Value bucket's configuration and state"),
    "nats://consumers/{stream}": ("consumer_report", "stream", "Lag of every consumer of a stream"),
}


async def list_resources(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None
                         ) -> types.ListResourcesResult:
    docs = [types.Resource(name=name, uri=_DOC_URI + name, mime_type="text/markdown",
                           description=f"natsop skill document {name}") for name in DOCS]
    live = [types.Resource(name=uri.removeprefix("nats://"), uri=uri, mime_type="application/json",
                           description=desc) for uri, (_t, arg, desc) in _VIEWS.items() if arg is None]
    return types.ListResourcesResult(resources=docs + live)


async def list_resource_templates(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None
                                  ) -> types.ListResourceTemplatesResult:
    templates = [types.ResourceTemplate(name=uri.removeprefix("nats://").split("/")[0] + "_view", uri_template=uri,
                                        mime_type="application/json", description=desc)
                 for uri, (_t, arg, desc) in _VIEWS.items() if arg is not None]
    return types.ListResourceTemplatesResult(resource_templates=templates)


async def read_resource(ctx: Context, ops: dict[str, Operation], params: types.ReadResourceRequestParams
                        ) -> types.ReadResourceResult:
    from mcp.shared.exceptions import MCPError

    uri = str(params.uri)
    if uri.startswith(_DOC_URI):
        try:
            text = read_doc(uri.removeprefix(_DOC_URI))
        except NatsopError as err:
            raise MCPError(code=types.INVALID_PARAMS, message=err.message) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type="text/markdown",
                                                                             text=text)])
    for template, (tool, arg, _desc) in _VIEWS.items():
        prefix = template.split("{")[0]
        if (arg is None and uri == template) or (arg is not None and uri.startswith(prefix) and len(uri) > len(prefix)):
            op = ops.get(tool)
            if op is None:
                break
            arguments = {arg: uri.removeprefix(prefix)} if arg else {}
            try:
                result = await run_operation(ctx, op, arguments)
            except NatsopError as err:
                raise MCPError(code=types.INVALID_PARAMS, message=error_text(err)) from None
            return types.ReadResourceResult(contents=[types.TextResourceContents(
                uri=uri, mime_type="application/json", text=result.model_dump_json(indent=2))])
    raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource {uri}")


# --- Prompts: the common jobs of the operator's creed.

_PROMPTS: dict[str, tuple[str, list[tuple[str, str, bool]], str]] = {
    "design_subjects": (
        "Design a subject hierarchy for a domain",
        [("domain", "The business domain, e.g. 'orders and shipping'", True)],
        "Design a NATS subject hierarchy for {domain}. Subjects are the data model: dot-separated tokens from "
        "general to specific (domain.entity.<id>.action), with wildcards '*' and '>' in mind for consumers. "
        "Propose one stream with a broad subject filter rather than a stream per entity, the filtered "
        "consumers each projection needs, and any subject mapping for partitioning. Check mappings with "
        "the server_mapping tool before recommending them.",
    ),
    "review_config": (
        "Review a stream (and optionally a consumer) against the operator's creed",
        [("stream", "Stream name", True), ("consumer", "Consumer name (optional)", False)],
        "Review the configuration of stream {stream}{consumer_part}. Read it with stream_info"
        "{consumer_tool}, run audit, and compare with the defaults: are changed defaults explained in the "
        "description or metadata? Is it an event stream that should deny delete and purge? Is AckExplicit "
        "used? Are replicas right for the deployment (R1 single server, R3 in production)? Is sync_interval "
        "adequate for how critical the data is? Recommend only changes you can justify.",
    ),
    "plan_event_sourcing": (
        "Plan an event-sourced stream with a KV projection",
        [("domain", "What the events describe, e.g. 'todo items'", True)],
        "Plan event sourcing for {domain} on NATS: one append-only stream (deny_delete, deny_purge, S2 "
        "compression, file storage) with a subject hierarchy; events in the standard envelope (UUIDv7 ids, "
        "Nats-Msg-Id for deduplication, Correlation-Id/Causation-Id headers); a durable AckExplicit consumer "
        "per projection with a filter subject; and a KV bucket (with a size guard) that the consumer "
        "maintains as a rebuildable projection. Give the natsop calls (stream_add, consumer_add, kv_add) "
        "with their arguments.",
    ),
    "investigate_consumer_lag": (
        "Investigate a consumer that is behind",
        [("stream", "Stream name", True), ("consumer", "Consumer name", True)],
        "Consumer {consumer} on stream {stream} is behind. Use consumer_info and consumer_report to read "
        "num_pending, num_ack_pending against max_ack_pending, redeliveries, waiting pulls, last activity and "
        "whether it is paused; stream_info for the stream's rate and limits. Explain the likely cause "
        "(slow or stopped subscriber, ack_wait too short causing redeliveries, max_ack_pending saturation, "
        "a paused consumer) and the fix, changing defaults only with a reason.",
    ),
}


async def list_prompts(_: ServerRequestContext[Any], __: types.PaginatedRequestParams | None
                       ) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=[
        types.Prompt(name=name, description=desc,
                     arguments=[types.PromptArgument(name=a, description=d, required=r) for a, d, r in args])
        for name, (desc, args, _text) in _PROMPTS.items()
    ])


async def get_prompt(_: ServerRequestContext[Any], params: types.GetPromptRequestParams) -> types.GetPromptResult:
    from mcp.shared.exceptions import MCPError

    entry = _PROMPTS.get(params.name)
    if entry is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"no prompt named {params.name!r}")
    desc, args, text = entry
    values = {k: str(v) for k, v in (params.arguments or {}).items()}
    missing = [a for a, _d, required in args if required and not values.get(a)]
    if missing:
        raise MCPError(code=types.INVALID_PARAMS, message=f"missing argument(s): {', '.join(missing)}")
    consumer = values.get("consumer", "")
    values.setdefault("consumer", consumer)
    values["consumer_part"] = f" and its consumer {consumer}" if consumer else ""
    values["consumer_tool"] = f" and consumer_info for {consumer}" if consumer else ""
    return types.GetPromptResult(description=desc, messages=[
        types.PromptMessage(role="user", content=types.TextContent(type="text", text=text.format(**values)))])


def _error_result(err: NatsopError) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=error_text(err))],
        structured_content=None,
        is_error=True,
        meta={"natsop/error": json.loads(json.dumps(err.to_dict(), default=str))},
    )
