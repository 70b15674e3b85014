"""`mltp mcp config`: the entry an agent's MCP client needs to start this install's `mltp mcp serve`, in
that client's own shape. It names the command by absolute path and passes no secret: the server finds
its credentials in the blocks, as every `mltp` command does."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from mltp.home import mltp_home

NAME = "mltp"
# Where each client reads the entry from: the CLI says so on stderr.
WHERE = {
    "kiro": "put this in .kiro/settings/mcp.json (this workspace) or ~/.kiro/settings/mcp.json",
    "claude-code": "run this line in the project's folder (Claude Code keeps it in ~/.claude.json)",
    "claude-desktop": "put this in claude_desktop_config.json (Settings > Developer > Edit Config)",
    "vscode": "put this in .vscode/mcp.json",
    "cursor": "put this in .cursor/mcp.json (this project) or ~/.cursor/mcp.json",
}


def serve_command() -> list[str]:
    """This install's `mltp mcp serve` by absolute path: the client starts it without the venv activated."""
    script = Path(sys.executable).parent / "mltp"
    if script.is_file():
        return [str(script), "mcp", "serve"]
    return [sys.executable, "-m", "mltp.cli", "mcp", "serve"]  # console scripts installed elsewhere


def serve_env() -> dict[str, str]:
    """MLTP_HOME when this project's `.mltp/` exists: the client starts the server in a folder of its own
    choosing, from which the walk up to `.mltp/` would not find it; and PREFECT_API_URL when it is set
    (an address, not a secret: the client passes the server only what it is given)."""
    home = mltp_home()
    env = {"MLTP_HOME": str(home)} if home.is_dir() else {}
    api = os.environ.get("PREFECT_API_URL")
    return env | ({"PREFECT_API_URL": api} if api else {})


def read_only_tools() -> list[str]:
    """The tools the server itself annotates read-only: the only ones a client may run without asking."""
    import asyncio

    from mltp.mcp.server import build_server

    tools = asyncio.run(build_server().list_tools())
    return [tool.name for tool in tools if tool.annotations and tool.annotations.read_only_hint]


def client_config(client: str, command: list[str], env: dict[str, str], read_only: list[str]) -> str:
    """The text to give `client`: its JSON, or for Claude Code the `claude mcp add` line."""
    executable, *args = command
    if client == "claude-code":
        # The name goes before `-e`: that option takes several values and would swallow it.
        options = [part for key, value in env.items() for part in ("-e", f"{key}={value}")]
        return shlex.join(["claude", "mcp", "add", "--transport", "stdio", NAME, *options, "--", *command])
    entry = {"command": executable, "args": args, "env": env}
    if client == "kiro":
        entry |= {"disabled": False, "autoApprove": read_only}
    elif client == "vscode":
        entry = {"type": "stdio", **entry}
    return json.dumps({"servers" if client == "vscode" else "mcpServers": {NAME: entry}}, indent=2)
