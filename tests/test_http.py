"""`natsop serve --http`: loopback by default, a bearer token anywhere else, a health endpoint,
and a NATS target that no request can change. Real server processes, a real MCP HTTP client.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from natsop import EmbeddedServer, Toolkit
from natsop.registry import operations
from tests.conftest import env_for
from tests.httpserve import http_client, listening, serve_http

TOKEN = "tok-" + "7f3a9c2e" * 4


@pytest.fixture(scope="module")
def http_env(server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    return {**base, **env_for(server, tmp_path_factory.mktemp("http-config"))}


async def test_default_is_loopback_only_with_health_and_real_mcp(http_env: dict[str, str], tmp_path: Path,
                                                                 server: EmbeddedServer, uniq: str) -> None:
    with serve_http(http_env, tmp_path) as served:
        assert listening(served.port) == {"0100007F"}  # 127.0.0.1 and nothing else
        health = httpx2.get(f"{served.url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json() == {"status": "ok", "nats": True}
        assert "127.0.0.1" in served.stderr and "/mcp" in served.stderr
        async with http_client(served.url) as client:
            assert client.server_info is not None and client.server_info.name == "nats"
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {op.tool for op in operations()}
            made = await client.call_tool("stream_add", {"stream": uniq, "subjects": [f"{uniq}.>"]})
            assert not made.is_error, made.content
    async with Toolkit.for_server(server) as tk:
        info: Any = await tk.call("stream_info", stream=uniq)
        assert info.config["name"] == uniq
        await tk.call("stream_delete", stream=uniq, confirm=uniq)


def test_refuses_a_public_address_without_a_token(http_env: dict[str, str], tmp_path: Path) -> None:
    with serve_http(http_env, tmp_path, "--host", "0.0.0.0", wait=False) as served:
        assert served.proc.wait(20) == 1
        assert "[http_needs_token]" in served.stderr and "NATSOP_HTTP_TOKEN" in served.stderr
        assert listening(served.port) == set()


def test_the_token_is_never_taken_from_the_command_line(http_env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "natsop", "serve", "--http", "--token", TOKEN],
                          env=http_env, capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"No such option" in proc.stderr


@pytest.mark.parametrize("token", ["short", "has space inside the token value"])
def test_weak_tokens_are_refused(http_env: dict[str, str], tmp_path: Path, token: str) -> None:
    with serve_http(http_env | {"NATSOP_HTTP_TOKEN": token}, tmp_path, wait=False) as served:
        assert served.proc.wait(20) == 1
        assert "[weak_token]" in served.stderr and token not in served.stderr


def test_token_file_problems(http_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, code in ((empty, "bad_token_file"), (tmp_path / "missing", "bad_token_file")):
        with serve_http(http_env, tmp_path, "--token-file", str(path), wait=False) as served:
            assert served.proc.wait(20) == 1
            assert f"[{code}]" in served.stderr


async def test_every_request_needs_the_token(http_env: dict[str, str], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with serve_http(http_env, tmp_path, "--host", "0.0.0.0", "--token-file", str(token_file)) as served:
        assert listening(served.port) == {"00000000"}
        mcp_url = f"{served.url}/mcp"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        for auth in (None, "Bearer wrong-token-wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN,
                     f"Bearer{TOKEN}", f"{TOKEN} Bearer", "Bearer"):
            sent = headers | ({"Authorization": auth} if auth else {})
            resp = httpx2.post(mcp_url, json=init, headers=sent, timeout=5)
            assert resp.status_code == 401, (auth, resp.status_code)
            assert resp.headers["www-authenticate"] == "Bearer" and TOKEN not in resp.text
        # Two Authorization headers, one right: still refused.
        twice = httpx2.post(mcp_url, json=init, timeout=5, headers=[
            ("Accept", "application/json, text/event-stream"), ("Authorization", "Bearer nope-nope-nope-nope"),
            ("Authorization", f"Bearer {TOKEN}")])
        assert twice.status_code == 401
        # The scheme's name is case-insensitive (RFC 7235).
        for scheme in ("bearer", "BEARER"):
            accepted = httpx2.post(mcp_url, json=init, timeout=5, headers=headers | {"Authorization": f"{scheme} {TOKEN}"})
            assert accepted.status_code == 200, (scheme, accepted.status_code)
        assert httpx2.get(mcp_url, timeout=5).status_code == 401
        assert httpx2.delete(mcp_url, timeout=5).status_code == 401
        # Health needs no token and says nothing about it.
        health = httpx2.get(f"{served.url}/healthz", timeout=5)
        assert health.status_code == 200 and TOKEN not in health.text

        # The SDK client without the token cannot even initialise (it reports the 401 as an error response).
        with pytest.raises(Exception):  # noqa: B017 - an ExceptionGroup around the SDK's MCPError
            async with http_client(served.url):
                pass
        async with http_client(served.url, TOKEN) as client:
            listed = await client.call_tool("stream_list", {})
            assert not listed.is_error, listed.content
    assert TOKEN not in served.stderr


async def test_token_from_the_environment_also_guards_loopback(http_env: dict[str, str], tmp_path: Path) -> None:
    with serve_http(http_env | {"NATSOP_HTTP_TOKEN": TOKEN}, tmp_path) as served:
        assert listening(served.port) == {"0100007F"}
        resp = httpx2.post(f"{served.url}/mcp", json={}, timeout=5)
        assert resp.status_code == 401
        async with http_client(served.url, TOKEN) as client:
            assert (await client.list_tools()).tools


async def test_no_request_can_choose_the_nats_target(http_env: dict[str, str], tmp_path: Path) -> None:
    # A listener that counts connections: if any request made natsop connect elsewhere, it shows here.
    connections = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    decoy = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    decoy_url = f"nats://127.0.0.1:{decoy.sockets[0].getsockname()[1]}"
    # No parameter of any tool names a server, credentials or a context (`user` in the connections
    # report is a filter on the server's list, not an identity).
    forbidden = {"url", "servers", "server_url", "creds", "credentials", "password", "token", "nkey",
                 "context", "tls_ca", "tls_cert", "tls_key", "ca", "cert", "key_file"}
    for op in operations():
        assert not forbidden & set(op.params.model_fields), op.tool
    try:
        with serve_http(http_env, tmp_path) as served:
            async with http_client(served.url) as client:
                attempts: list[tuple[str, dict[str, Any]]] = [
                    ("stream_list", {"account_name": decoy_url}),
                    ("stream_list", {"account_name": "default", "servers": [decoy_url]}),
                    ("stream_list", {"url": decoy_url}),
                    ("server_info", {"server": decoy_url, "timeout_s": 0.2}),
                    ("account_info", {"account_name": "../../etc/passwd"}),
                ]
                for tool, args in attempts:
                    result = await client.call_tool(tool, args)
                    text = getattr(result.content[0], "text", "")
                    if tool != "server_info":
                        assert result.is_error, (tool, args)
                        assert "[unknown_account]" in text or "[invalid_arguments]" in text, text
                # Headers a proxy might add change nothing either.
                resp = httpx2.get(f"{served.url}/healthz", headers={"X-Nats-Url": decoy_url,
                                                                    "Forwarded": "host=evil"}, timeout=5)
                assert resp.json()["nats"] is True
                ok = await client.call_tool("account_info", {})
                assert not ok.is_error and ok.structured_content is not None
        assert connections == 0
    finally:
        decoy.close()
        await decoy.wait_closed()
