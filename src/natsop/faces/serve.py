"""`natsop serve`: the MCP server over stdio (default) or streamable HTTP.

The NATS target is fixed when the server starts (settings, or the embedded server);
no request can choose another. Over HTTP natsop binds to 127.0.0.1 by default and
refuses any other address unless a bearer token is configured (`NATSOP_HTTP_TOKEN`
or `--token-file`); with a token, every request must carry it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from natsop.embedded.bootstrap import ConnectOptions, Termination, open_context, termination
from natsop.errors import ConfigError, NatsopError
from natsop.faces.render import error_text

__all__ = ["serve_command", "serve_http", "serve_stdio"]

log = logging.getLogger("natsop.faces.serve")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIN_TOKEN_LENGTH = 16


def _read_token(token_file: str | None) -> str | None:
    """The bearer token from --token-file, else NATSOP_HTTP_TOKEN; never from the command line."""
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text().strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError):
            raise ConfigError("cannot read the token file", code="bad_token_file",
                              hint="Check --token-file's path and permissions.") from None
        if not token:
            raise ConfigError("the token file is empty", code="bad_token_file")
        if mode & 0o077:
            log.warning("the token file %s can be read by other users; chmod 600 it", path)
    else:
        token = os.environ.get("NATSOP_HTTP_TOKEN", "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        raise ConfigError(f"the HTTP bearer token must be at least {MIN_TOKEN_LENGTH} characters without spaces",
                          code="weak_token", hint="Generate one, e.g. `python -c 'import secrets; "
                                                  "print(secrets.token_urlsafe(32))'`.")
    return token


async def serve_stdio(conn: ConnectOptions, *, read_only: bool, files_dir: str | None) -> None:
    """Serve MCP on stdin/stdout until stdin ends or natsop is told to stop (SIGTERM, SIGHUP)."""
    from natsop.faces.mcp_server import build_server
    from natsop.faces.stdio import stdio_transport

    with termination() as term:
        async with open_context(conn, files_dir=files_dir) as ctx:
            server = build_server(ctx, read_only=read_only)
            # A signal cancels the session only: the context's clean-up runs outside the cancelled scope.
            with anyio.CancelScope() as session:
                term.when_asked(session.cancel)
                async with stdio_transport() as (read, write):
                    await server.run(read, write, server.create_initialization_options())


class _BearerGate:
    """ASGI middleware: every request except /healthz must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    def _authorized(self, scope: dict[str, Any]) -> bool:
        values = [v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"]
        # Exactly one Authorization header; the scheme is case-insensitive (RFC 7235), the token compared
        # in constant time.
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(b" "), self.expected)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        open_path = kind == "http" and scope.get("path") == "/healthz"
        if kind in ("http", "websocket") and not open_path and not self._authorized(scope):
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"unauthorized\n"})
            return
        await self.app(scope, receive, send)


def _security(host: str) -> Any:
    """DNS-rebinding protection on loopback (for any loopback address, not only 127.0.0.1);
    off elsewhere, where the bearer token guards every request."""
    from mcp.server.transport_security import TransportSecuritySettings

    if not _is_loopback(host):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    bracketed = f"[{host}]" if ":" in host else host
    hosts = sorted({bracketed, "127.0.0.1", "localhost", "[::1]"})
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=[f"{h}:*" for h in hosts],
                                     allowed_origins=[f"http://{h}:*" for h in hosts])


async def serve_http(conn: ConnectOptions, *, host: str, port: int, read_only: bool, files_dir: str | None,
                     token: str | None) -> None:
    """Serve MCP over streamable HTTP until natsop is told to stop (Ctrl-C, SIGTERM, SIGHUP)."""
    if not _is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to listen on {host} without a bearer token",
            code="http_needs_token",
            hint="Set NATSOP_HTTP_TOKEN (or --token-file), or listen on 127.0.0.1.",
        )
    with termination() as term:
        await _serve_http(conn, host=host, port=port, read_only=read_only, files_dir=files_dir, token=token,
                          term=term)


async def _serve_http(conn: ConnectOptions, *, host: str, port: int, read_only: bool, files_dir: str | None,
                      token: str | None, term: Termination) -> None:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from natsop.faces.mcp_server import build_server

    async with open_context(conn, files_dir=files_dir) as ctx:
        server = build_server(ctx, read_only=read_only)

        async def health(_: Request) -> JSONResponse:
            try:
                nc = await ctx.nc()
                ok = nc.is_connected
            except NatsopError:
                ok = False
            return JSONResponse({"status": "ok" if ok else "degraded", "nats": ok}, status_code=200 if ok else 503)

        app: Any = server.streamable_http_app(
            host=host, transport_security=_security(host), custom_starlette_routes=[Route("/healthz", health)],
        )
        if token:
            app = _BearerGate(app, token)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                server_header=False)
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"natsop: MCP over HTTP at http://{shown}:{port}/mcp (health: /healthz)"
                   f"{'; bearer token required' if token else ''}; NATS: {ctx.settings.default.describe()}",
                   err=True)
        web = uvicorn.Server(config)
        term.when_asked(lambda: setattr(web, "should_exit", True))  # uvicorn's own orderly shutdown
        await web.serve()


@click.command("serve")
@click.option("--http", "use_http", is_flag=True, help="Serve streamable HTTP instead of stdio")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="HTTP port")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the HTTP bearer token")
@click.pass_obj
def serve_command(state: Any, use_http: bool, host: str, port: int, token_file: str | None) -> None:
    """Run the MCP server `nats` (stdio by default; --http for streamable HTTP at /mcp)."""
    read_only = bool(state.read_only)
    level = os.environ.get("NATSOP_LOG_LEVEL", "WARNING").strip().upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "WARNING", stream=sys.stderr)
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
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C, SIGTERM or SIGHUP: everything is closed, the embedded server stopped
