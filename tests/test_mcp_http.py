"""`mltp mcp serve --http HOST:PORT`: the real server process on a loopback port, against the sandbox. No
request without the bearer token from MLTP_MCP_TOKEN reaches the MCP server, an MCP client with it calls
tools, the token never reaches the server's output, and a bad setting refuses to start in one line."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mltp.mcp.http_transport import TOKEN_VARIABLE
from tests.conftest import MLTP, free_port, run_mltp, wait_for

TOKEN = "mcp-http-test-token-5f2c9a1e"  # fixed: the parametrized ids must match across xdist workers


@dataclass
class ServedHttp:
    process: subprocess.Popen
    url: str
    stderr: Path

    def stop(self) -> str:
        """Stop the server (idempotent) and return everything it wrote to stderr."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.stderr.read_text()


@pytest.fixture
def served(sandbox, tmp_path) -> Iterator[ServedHttp]:
    """`mltp mcp serve --http 127.0.0.1:PORT` started as a user would, answering on its port."""
    port = free_port()
    stderr = tmp_path / "serve.stderr"
    with stderr.open("w") as stream:
        process = subprocess.Popen(
            [MLTP, "mcp", "serve", "--http", f"127.0.0.1:{port}"],
            env={**os.environ, **sandbox.env, TOKEN_VARIABLE: TOKEN},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stream,
        )
    server = ServedHttp(process, f"http://127.0.0.1:{port}/mcp", stderr)
    try:
        wait_for(lambda: _listening(server, port), timeout=90)
        yield server
    finally:
        server.stop()


def _listening(server: ServedHttp, port: int) -> bool:
    assert server.process.poll() is None, f"the server exited: {server.stderr.read_text()}"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def mcp_session(url: str, calls):
    """Run `calls(client)` with an MCP client on the streamable HTTP endpoint, sending the token."""

    async def go():
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=bearer, timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            return await calls(client)

    return asyncio.run(go())


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.servers
def test_a_request_without_the_token_or_with_a_wrong_one_is_refused(served) -> None:
    for authorization in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = httpx.post(served.url, json=INITIALIZE, headers={**MCP_HEADERS, **authorization}, timeout=30)
        assert answer.status_code == 401, (authorization, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"] == "unauthorized"
    sneaked = httpx.get(served.url.removesuffix("/mcp") + "/anything", timeout=30)
    assert sneaked.status_code == 401  # every path, not only the endpoint's
    accepted = httpx.post(
        served.url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert accepted.status_code == 200, accepted.text


@pytest.mark.servers
def test_a_client_with_the_token_lists_tools_and_calls_one(served) -> None:
    async def calls(client):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        return tools, await client.call_tool("list_datasets", {})

    tools, listed = mcp_session(served.url, calls)
    assert {"list_datasets", "plan_training", "platform_status"} <= set(tools)
    assert not listed.is_error, listed.content
    assert isinstance(listed.structured_content["datasets"], list)


@pytest.mark.servers
def test_the_token_never_reaches_the_servers_output(served) -> None:
    httpx.get(served.url, headers={"Authorization": f"Bearer {TOKEN}-wrong"}, timeout=30)
    mcp_session(served.url, lambda client: client.call_tool("list_datasets", {}))
    output = served.stop()
    assert served.process.returncode == 0, output  # stopped, not killed: the audit events were drained
    assert TOKEN not in output
    assert f"mltp: MCP server on {served.url} (bearer token from {TOKEN_VARIABLE})" in output.splitlines()
    [audited] = [line for line in output.splitlines() if "mltp.mcp: tool call: " in line]
    record = json.loads(audited.split("mltp.mcp: tool call: ", 1)[1])  # the whole record on its line
    assert (record["tool"], record["outcome"], record["arguments"]) == ("list_datasets", "ok", {})


@pytest.mark.parametrize(
    ("http", "token", "named"),
    [
        ("127.0.0.1:8765", None, TOKEN_VARIABLE),
        ("127.0.0.1:8765", "", TOKEN_VARIABLE),
        ("127.0.0.1:8765", "too-short", TOKEN_VARIABLE),
        ("0.0.0.0:8765", TOKEN, "only listens on loopback"),
        ("nonsense", TOKEN, "HOST:PORT"),
        ("localhost:70000", TOKEN, "1 to 65535"),
    ],
)
def test_a_bad_setting_refuses_to_start_in_one_line(http, token, named, tmp_path) -> None:
    environment = {"MLTP_HOME": str(tmp_path)} | ({} if token is None else {TOKEN_VARIABLE: token})
    result = run_mltp("mcp", "serve", "--http", http, env=environment)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert named in line and TOKEN not in line, line


@pytest.mark.servers
def test_a_taken_port_refuses_to_start_in_one_line(sandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        environment = {**sandbox.env, TOKEN_VARIABLE: TOKEN}
        result = run_mltp("mcp", "serve", "--http", f"127.0.0.1:{port}", env=environment)
    assert result.returncode == 2, result.stderr
    assert f"mltp: error: --http 127.0.0.1:{port}: cannot listen there" in result.stderr.splitlines()[-1]
