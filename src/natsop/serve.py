"""`natsop serve`: the MCP server over stdio (default) or streamable HTTP.

The NATS target is fixed when the server starts (settings, or the embedded server);
no request can choose another. Over HTTP natsop binds to 127.0.0.1 by default and
refuses any other address unless a bearer token is configured (`NATSOP_HTTP_TOKEN`
or `--token-file`); with a token, every request must carry it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from natsop.bootstrap import ConnectOptions, open_context
from natsop.errors import ConfigError, NatsopError
from natsop.render import error_text

__all__ = ["serve_command", "serve_http", "serve_stdio"]

log = logging.getLogger("natsop.serve")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token(token_file: str | None) -> str | None:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError:
            raise ConfigError("cannot read the token file", code="bad_token_file",
                              hint="Check --token-file's path and permissions.") from None
        if not token:
            raise ConfigError("the token file is empty", code="bad_token_file")
        return token
    return os.environ.get("NATSOP_HTTP_TOKEN") or None


async def serve_stdio(conn: ConnectOptions, *, read_only: bool, files_dir: str | None) -> None:
    from mcp.server.stdio import stdio_server

    from natsop.mcp_server import build_server

    async with open_context(conn, files_dir=files_dir) as ctx:
        server = build_server(ctx, read_only=read_only)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


class _BearerGate:
    """ASGI middleware: every request except /healthz must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/healthz":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"")
            expected = b"Bearer " + self.token
            if not hmac.compare_digest(auth, expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"unauthorized\n"})
                return
        await self.app(scope, receive, send)


async def serve_http(conn: ConnectOptions, *, host: str, port: int, read_only: bool, files_dir: str | None,
                     token: str | None) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from natsop.mcp_server import build_server

    if not _is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host} without a bearer token",
            code="http_needs_token",
            hint="Set NATSOP_HTTP_TOKEN (or --token-file), or listen on 127.0.0.1.",
        )
    async with open_context(conn, files_dir=files_dir) as ctx:
        server = build_server(ctx, read_only=read_only)

        async def health(_: Request) -> JSONResponse:
            try:
                nc = await ctx.nc()
                ok = nc.is_connected
            except NatsopError:
                ok = False
            return JSONResponse({"status": "ok" if ok else "degraded", "nats": ok}, status_code=200 if ok else 503)

        security = None
        if not _is_loopback(host):
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app: Any = server.streamable_http_app(
            host=host, transport_security=security, custom_starlette_routes=[Route("/healthz", health)],
        )
        if token:
            app = _BearerGate(app, token)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        await uvicorn.Server(config).serve()


@click.command("serve")
@click.option("--http", "use_http", is_flag=True, help="Serve streamable HTTP instead of stdio")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP port")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the HTTP bearer token")
@click.pass_obj
def serve_command(state: Any, use_http: bool, host: str, port: int, token_file: str | None) -> None:
    """Run the MCP server `nats` (stdio by default; --http for streamable HTTP at /mcp)."""
    read_only = bool(state.read_only)
    logging.basicConfig(level=os.environ.get("NATSOP_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    try:
        if use_http:
            token = _read_token(token_file)
            anyio.run(lambda: serve_http(state.conn, host=host, port=port, read_only=read_only,
                                         files_dir=state.files_dir, token=token))
        else:
            anyio.run(lambda: serve_stdio(state.conn, read_only=read_only, files_dir=state.files_dir))
    except NatsopError as err:
        click.echo(f"natsop: {error_text(err)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
