"""`mltp mcp serve`: the MCP server for agents (Kiro, Claude Code, Cursor, VS Code), over stdio or
streamable HTTP; `mltp mcp config`: the entry each of those clients needs to start it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import quiet_prefect_console
from mltp.errors import ConfigError
from mltp.mcp.client_config import WHERE
from mltp.planning import COMPUTE_CHOICES

app = typer.Typer(help="The MCP server agents drive the platform through.")


ALLOW_WRITE = typer.Option(
    False,
    "--allow-write",
    help="Allow the tools that change the platform (ingest, train, cancel, promote, approve, predict...).",
)


@app.command("serve")
def serve(
    allow_write: bool = ALLOW_WRITE,
    root: Path = typer.Option(
        None, "--root", help="Local files are taken only under this folder [default: the current folder]."
    ),
    allow_s3_prefix: list[str] = typer.Option(
        [], "--allow-s3-prefix", help="An s3://bucket/prefix/ sources may come from besides the data bucket."
    ),
    max_cost_usd: float = typer.Option(
        1.0, "--max-cost-usd", min=0, help="Refuse a training run whose plan estimates more (USD)."
    ),
    confirm_above_usd: float | None = typer.Option(
        None,
        "--confirm-above-usd",
        min=0,
        help="Ask the user to confirm a training run whose plan estimates more (USD); where the client "
        "cannot ask, refuse it.",
    ),
    compute: str = typer.Option(
        ",".join(COMPUTE_CHOICES),
        "--compute",
        help="The compute start_training may ask for, comma-separated.",
    ),
    tools: str | None = typer.Option(None, "--tools", help="Serve only these tools, comma-separated."),
    exclude_tools: str = typer.Option(
        "", "--exclude-tools", help="Never serve these tools, comma-separated."
    ),
    http: str | None = typer.Option(
        None,
        "--http",
        metavar="HOST:PORT",
        help="Serve streamable HTTP on this loopback address instead of stdio; clients send the token in "
        "MLTP_MCP_TOKEN as Authorization: Bearer.",
    ),
) -> None:
    """Serve the platform's tools over stdio (an agent's MCP client starts this command).

    Read-only unless --allow-write. It finds the Prefect API and the blocks the way every `mltp` command
    does; stdout carries the protocol, so everything else goes to stderr. With --http HOST:PORT it serves
    streamable HTTP at http://HOST:PORT/mcp instead, to requests bearing the token in MLTP_MCP_TOKEN."""
    root = (root or Path.cwd()).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a folder: give the folder agents may read files from")
    bad = [prefix for prefix in allow_s3_prefix if not prefix.startswith("s3://") or prefix.count("/") < 3]
    if bad:
        raise ConfigError(f"--allow-s3-prefix {bad[0]!r}: give s3://bucket/ or s3://bucket/prefix/")
    allowed = tuple(choice.strip() for choice in compute.split(",") if choice.strip())
    unknown = sorted(set(allowed) - set(COMPUTE_CHOICES))
    if unknown or not allowed:
        raise ConfigError(f"--compute {compute!r}: list some of {', '.join(COMPUTE_CHOICES)}")
    endpoint = None
    if http is not None:
        from mltp.mcp.http_transport import http_endpoint

        endpoint = http_endpoint(http)
    from mltp.mcp.options import ServeOptions
    from mltp.mcp.server import build_server

    options = ServeOptions(
        allow_write=allow_write,
        root=root.resolve(),
        s3_prefixes=tuple(allow_s3_prefix),
        max_cost_usd=max_cost_usd,
        confirm_above_usd=confirm_above_usd,
        compute=allowed,
        tools=None if tools is None else _names(tools),
        exclude_tools=_names(exclude_tools),
    )
    server = build_server(options=options)  # unknown tool names are refused before anything connects
    quiet_prefect_console()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else a line per Prefect API call, amid the audit
    _log_each_call_on_one_line()
    with prefect_connection():
        from prefect.events.worker import EventsWorker

        try:
            if endpoint is None:
                server.run("stdio")
            else:
                from mltp.mcp.http_transport import serve_http

                serve_http(server, endpoint)
        finally:
            EventsWorker.drain_all(timeout=10)  # the last calls' audit events leave before the process does


def _log_each_call_on_one_line() -> None:
    """The audit's log lines (logger `mltp.mcp`) as plain lines on stderr: the SDK's handler (rich) folds
    a long record over several lines, which breaks `grep` and anything that reads the log a line a
    record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    audit = logging.getLogger("mltp.mcp")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@app.command("config")
def config(
    client: str = typer.Option(..., "--client", help=f"The agent's MCP client: {', '.join(WHERE)}."),
    allow_write: bool = ALLOW_WRITE,
) -> None:
    """Print the client's MCP entry for this install's server (JSON, or for Claude Code the `claude mcp
    add` line) on stdout, and where it goes on stderr. Kiro's `autoApprove` lists the read-only tools."""
    if client not in WHERE:
        raise ConfigError(f"--client {client!r}: use {', '.join(WHERE)}")
    from mltp.mcp.client_config import client_config, read_only_tools, serve_command, serve_env

    command = [*serve_command(), *(["--allow-write"] if allow_write else [])]
    typer.echo(client_config(client, command, serve_env(), read_only_tools()))
    typer.echo(f"mltp: {WHERE[client]}", err=True)
