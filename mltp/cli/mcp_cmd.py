"""`mltp mcp serve`: the MCP server for agents (Kiro, Claude Code, Cursor, VS Code), over stdio."""

from __future__ import annotations

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import quiet_prefect_console

app = typer.Typer(help="The MCP server agents drive the platform through.")


@app.command("serve")
def serve() -> None:
    """Serve the platform's tools over stdio (an agent's MCP client starts this command).

    It finds the Prefect API and the blocks the way every `mltp` command does; stdout carries the
    protocol, so everything else goes to stderr."""
    quiet_prefect_console()
    with prefect_connection():
        from mltp.mcp.server import build_server

        build_server().run("stdio")
