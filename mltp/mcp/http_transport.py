"""Serving a built `MCPServer` over streamable HTTP (`mltp mcp serve --http HOST:PORT`): on loopback only,
and only to requests that carry the bearer token from MLTP_MCP_TOKEN."""

from __future__ import annotations

import hmac
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mltp.errors import ConfigError, PortInUseError

TOKEN_VARIABLE = "MLTP_MCP_TOKEN"
MIN_TOKEN_LENGTH = 16
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MCP_PATH = "/mcp"


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int
    token: str = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{MCP_PATH}"


def http_endpoint(value: str) -> HttpEndpoint:
    """The endpoint `--http HOST:PORT` names, with the token from the environment; refused (ConfigError)
    unless HOST is loopback, PORT a port and the token long enough."""
    host, colon, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8765 as well as ::1:8765
    if not colon or not host or not port_text:
        raise ConfigError(f"--http {value!r}: give HOST:PORT, e.g. 127.0.0.1:8765", setting="--http")
    if host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"--http {value!r}: this server only listens on loopback ({', '.join(LOOPBACK_HOSTS)}); "
            "to expose it, put a reverse proxy with TLS in front of it",
            setting="--http",
        )
    if not port_text.isdecimal() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"--http {value!r}: PORT must be a number from 1 to 65535", setting="--http")
    token = os.environ.get(TOKEN_VARIABLE, "")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_VARIABLE} is {'too short' if token else 'not set'}: set {TOKEN_VARIABLE} to a secret "
            f"of at least {MIN_TOKEN_LENGTH} characters; clients send it as Authorization: Bearer ...",
            setting=TOKEN_VARIABLE,
        )
    return HttpEndpoint(host, int(port_text), token)


class BearerTokenGate:
    """ASGI middleware: an HTTP request without `Authorization: Bearer <token>` gets 401 and never reaches
    the app; the lifespan passes through (the app's streamable HTTP session manager runs in it)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not hmac.compare_digest(_bearer_token(scope), self.token):
            refusal = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
    return b""


def serve_http(server: MCPServer, endpoint: HttpEndpoint) -> None:
    """Serve `server` at `endpoint.url`; return once SIGINT or SIGTERM has stopped it."""
    # Given the loopback host, the SDK turns its DNS-rebinding protection on: Host and Origin must be
    # loopback too, so a web page cannot reach the server through a name that resolves to 127.0.0.1.
    app = BearerTokenGate(server.streamable_http_app(host=endpoint.host), endpoint.token)
    listening = _listen(endpoint)
    # lifespan "on": without its session manager the app cannot answer, so a failing startup must stop us;
    # ws "none": the gate guards HTTP requests, and the app serves no websockets.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none")
    print(f"mltp: MCP server on {endpoint.url} (bearer token from {TOKEN_VARIABLE})", file=sys.stderr)
    _run_until_signalled(uvicorn.Server(config), listening)


class _Signalled(Exception):
    pass


def _raise_signalled(signum: int, frame: object) -> None:
    raise _Signalled


def _run_until_signalled(server: uvicorn.Server, listening: socket.socket) -> None:
    # uvicorn shuts down gracefully on SIGINT or SIGTERM, then raises the signal again for the handler it
    # replaced: with this one that ends in a return, not the process's death, so the caller's cleanup runs.
    replaced = {signum: signal.signal(signum, _raise_signalled) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[listening])
    except _Signalled:
        pass
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)


def _listen(endpoint: HttpEndpoint) -> socket.socket:
    # Bound here rather than by uvicorn, which would log a taken port and exit with its own status.
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    try:
        return socket.create_server((endpoint.host, endpoint.port), family=family)
    except OSError as error:
        raise PortInUseError(
            f"--http {endpoint.host}:{endpoint.port}: cannot listen there ({error.strerror}): "
            "choose another port, or stop what holds this one",
            port=endpoint.port,
        ) from error
