"""`mltp mcp config`: each client's entry parses in that client's shape, names this install's command by
absolute path, carries no secret, auto-approves in Kiro exactly the tools the server annotates read-only,
and starts a server that answers (against the sandbox)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mltp.mcp.server import build_server
from tests.conftest import run_mltp

SECRET = "not-to-be-printed-6d1f"
WHERE = {
    "kiro": ".kiro/settings/mcp.json",
    "claude-code": "project's folder",
    "claude-desktop": "claude_desktop_config.json",
    "vscode": ".vscode/mcp.json",
    "cursor": ".cursor/mcp.json",
}
# Each client's keys for the server's entry.
KEYS = {
    "kiro": {"command", "args", "env", "disabled", "autoApprove"},
    "claude-desktop": {"command", "args", "env"},
    "cursor": {"command", "args", "env"},
    "vscode": {"type", "command", "args", "env"},
}


def printed(client: str, home: Path, *options: str, api_url: str = "") -> str:
    """What `mltp mcp config --client CLIENT` prints, with `home` as MLTP_HOME and a secret about."""
    environment = {"MLTP_HOME": str(home), "AWS_SECRET_ACCESS_KEY": SECRET, "PREFECT_API_URL": api_url}
    result = run_mltp("mcp", "config", "--client", client, *options, env=environment)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    [hint] = result.stderr.splitlines()
    assert WHERE[client] in hint
    return result.stdout


def entry(client: str, text: str) -> dict:
    """The server's entry in the client's shape: command, args and env (and Kiro's own keys)."""
    if client == "claude-code":
        words = shlex.split(text)
        dash = words.index("--")
        head, (command, *args) = words[:dash], words[dash + 1 :]
        assert head[:6] == ["claude", "mcp", "add", "--transport", "stdio", "mltp"], head
        flags, values = head[6::2], head[7::2]
        assert set(flags) <= {"-e"} and len(flags) == len(values), head
        return {"command": command, "args": args, "env": dict(value.split("=", 1) for value in values)}
    config = json.loads(text)
    servers = config["servers" if client == "vscode" else "mcpServers"]
    assert list(config) == ["servers" if client == "vscode" else "mcpServers"] and list(servers) == ["mltp"]
    found = servers["mltp"]
    assert set(found) == KEYS[client], found
    return found


def read_only_tools() -> list[str]:
    async def go():
        async with Client(build_server()) as client:
            return (await client.list_tools()).tools

    return [tool.name for tool in asyncio.run(go()) if tool.annotations and tool.annotations.read_only_hint]


@pytest.mark.parametrize("client", list(WHERE))
def test_each_client_gets_this_installs_command_and_home_and_no_secret(client, tmp_path) -> None:
    found = entry(client, printed(client, tmp_path))
    command = Path(found["command"])
    assert command.is_absolute() and command.is_file() and os.access(command, os.X_OK), command
    assert found["args"][-2:] == ["mcp", "serve"]
    assert found["env"] == {"MLTP_HOME": str(tmp_path.resolve())}


def test_the_home_is_left_out_when_there_is_none(tmp_path) -> None:
    assert entry("kiro", printed("kiro", tmp_path / "none"))["env"] == {}
    assert "-e" not in shlex.split(printed("claude-code", tmp_path / "none"))


@pytest.mark.parametrize("client", sorted(WHERE))
def test_allow_write_reaches_the_servers_arguments_and_a_set_api_url_its_environment(
    client, tmp_path
) -> None:
    found = entry(
        client, printed(client, tmp_path, "--allow-write", api_url="http://prefect.example:4200/api")
    )
    assert found["args"] == ["mcp", "serve", "--allow-write"]
    assert found["env"] == {
        "MLTP_HOME": str(tmp_path.resolve()),
        "PREFECT_API_URL": "http://prefect.example:4200/api",
    }


def test_kiro_auto_approves_exactly_the_read_only_tools(tmp_path) -> None:
    found = entry("kiro", printed("kiro", tmp_path))
    assert found["disabled"] is False
    assert found["autoApprove"] == read_only_tools() and found["autoApprove"]


def test_an_unknown_client_is_a_one_line_error() -> None:
    result = run_mltp("mcp", "config", "--client", "emacs")
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("mltp: error: --client 'emacs'") and all(client in line for client in WHERE)


@pytest.mark.servers
@pytest.mark.parametrize("client", ["kiro", "vscode"])
def test_the_printed_entry_starts_a_server_that_lists_its_tools(client, sandbox) -> None:
    found = entry(client, printed(client, sandbox.home))
    assert found["env"] == sandbox.env
    parameters = StdioServerParameters(command=found["command"], args=found["args"], env=found["env"])

    async def go():
        async with Client(parameters) as session:
            return [tool.name for tool in (await session.list_tools()).tools]

    tools = asyncio.run(go())
    assert set(read_only_tools()) <= set(tools)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--root", "/no/such/folder"], "--root /no/such/folder: not a folder"),
        (["--allow-s3-prefix", "bucket/prefix/"], "--allow-s3-prefix 'bucket/prefix/': give s3://bucket/"),
        (["--allow-s3-prefix", "s3://bucket"], "--allow-s3-prefix 's3://bucket': give s3://bucket/"),
        (["--tools", "list_datasets,bogus"], "unknown tool(s) bogus: the tools are list_datasets"),
        (["--exclude-tools", "bogus"], "unknown tool(s) bogus"),
        (["--compute", "gpu"], "--compute 'gpu': list some of auto, lambda, ec2, local"),
    ],
)
def test_serve_refuses_a_bad_option_in_one_line_before_it_starts(options, message, tmp_path) -> None:
    result = run_mltp("mcp", "serve", *options, env={"MLTP_HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mltp: error: {message}"), lines
