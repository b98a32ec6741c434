"""The MCP face, through a real MCP client over stdio against `natsop serve`."""

from __future__ import annotations

from typing import Any

import jsonschema

from natsop.registry import Impact, operations
from tests.conftest import mcp_client


def _props(schema: dict[str, Any]) -> dict[str, Any]:
    return schema.get("properties", {})


async def test_tools_list_matches_registry(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env) as client:
        assert client.server_info is not None
        assert client.server_info.name == "nats"
        listed = {t.name: t for t in (await client.list_tools()).tools}
    registered = {op.tool: op for op in operations()}
    assert set(listed) == set(registered)
    for name, op in registered.items():
        tool = listed[name]
        ann = tool.annotations
        assert ann is not None, name
        assert ann.read_only_hint is (op.impact is Impact.READ), name
        assert ann.destructive_hint is (op.impact is Impact.DESTRUCTIVE), name
        assert ann.idempotent_hint is op.idempotent, name
        assert tool.description, name
        assert tool.input_schema["type"] == "object", name
        assert "account_name" in _props(tool.input_schema), name
        if op.destructive:
            assert "confirm" in _props(tool.input_schema), name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)


async def test_call_returns_structured_content_matching_schema(server_env: dict[str, str], uniq: str) -> None:
    async with mcp_client(server_env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        created = await client.call_tool("stream_add", {"stream": uniq, "subjects": [f"{uniq}.>"]})
        assert not created.is_error, created.content
        info = await client.call_tool("stream_info", {"stream": uniq})
        assert not info.is_error
        assert info.structured_content is not None
        assert info.structured_content["name"] == uniq
        assert info.structured_content["config"]["subjects"] == [f"{uniq}.>"]
        output_schema = tools["stream_info"].output_schema
        assert output_schema is not None
        jsonschema.validate(info.structured_content, output_schema)
        text = info.content[0]
        assert getattr(text, "text", "").startswith("name")
        # A destructive call without confirmation changes nothing and says how to proceed.
        dry = await client.call_tool("stream_delete", {"stream": uniq})
        assert not dry.is_error
        assert dry.structured_content is not None
        assert dry.structured_content["done"] is False
        assert dry.structured_content["confirm_with"] == uniq
        wrong = await client.call_tool("stream_delete", {"stream": uniq, "confirm": "nope"})
        assert wrong.is_error
        still = await client.call_tool("stream_info", {"stream": uniq})
        assert not still.is_error
        done = await client.call_tool("stream_delete", {"stream": uniq, "confirm": uniq})
        assert done.structured_content is not None and done.structured_content["done"] is True
        gone = await client.call_tool("stream_info", {"stream": uniq})
        assert gone.is_error
        assert "stream_not_found" in getattr(gone.content[0], "text", "")


async def test_bad_input_is_an_error_result_not_a_crash(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env) as client:
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("stream_info", {"stream": "has space"}, "invalid_name"),
            ("stream_info", {"stream": "a.b"}, "invalid_name"),
            ("stream_info", {}, "invalid_arguments"),
            ("stream_info", {"stream": 12}, "invalid_arguments"),
            ("stream_info", {"stream": "X", "bogus": 1}, "invalid_arguments"),
            ("stream_list", {"limit": -1}, "invalid_arguments"),
            ("stream_list", {"limit": 10**9}, "invalid_arguments"),
            ("stream_add", {"stream": "S", "subjects": ["a..b"]}, "invalid_subject"),
            ("no_such_tool", {}, "unknown_tool"),
            ("stream_info", {"stream": "X", "account_name": "nobody"}, "unknown_account"),
        ]
        for name, args, code in cases:
            result = await client.call_tool(name, args)
            assert result.is_error, (name, args)
            text = getattr(result.content[0], "text", "")
            assert f"[{code}]" in text, (name, args, text)
            assert "Traceback" not in text
        # The server is still there and answers.
        ok = await client.call_tool("stream_list", {})
        assert not ok.is_error


async def test_read_only_server_offers_only_read_only_tools(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env, "--read-only", "serve") as client:
        tools = (await client.list_tools()).tools
        assert tools
        assert all(t.annotations and t.annotations.read_only_hint for t in tools)
        names = {t.name for t in tools}
        assert "stream_delete" not in names and "stream_add" not in names
        refused = await client.call_tool("stream_add", {"stream": "RO_REFUSED"})
        assert refused.is_error
    async with mcp_client(server_env) as client:
        check = await client.call_tool("stream_info", {"stream": "RO_REFUSED"})
        assert check.is_error  # nothing reached the server
