"""`build_server()`: the MCP server agents drive the platform through. Each tool calls what the matching
`mltp` command calls, returns a pydantic model (its output schema, and structured content) with a one-line
summary, and carries honest annotations; a refusal is an error result with the platform's own message.
Guardrails are the server's, not the client's: write tools refuse unless the server was started to allow
them, files are taken only under its root, and every call is audited.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from mltp import __version__
from mltp.mcp.argument_errors import ArgumentErrors
from mltp.mcp.audit import AuditExtension
from mltp.mcp.options import ServeOptions
from mltp.mcp.platform import Platform
from mltp.mcp.predict_tool import register_predict_tool
from mltp.mcp.read_tools import register_read_tools
from mltp.mcp.run_tools import register_run_tools
from mltp.mcp.start_tool import register_start_tool
from mltp.mcp.write_tools import register_write_tools

INSTRUCTIONS = (
    "ml-training-platform: datasets in S3, a planner that picks Lambda or EC2 and says why and at what "
    "cost, scikit-learn training orchestrated by Prefect, and a model registry. Look before you act: "
    "list_datasets and describe_dataset show what can be trained (columns, types, target), plan_training "
    "shows where a job would run, how long and what it would cost without starting anything, and "
    "describe_model compares a version with the champion. start_training returns at once with a run id: "
    "follow the run with get_run. Tools that change the platform (ingest, train, cancel, promote, "
    "approve, reject, predict) work only when the server was started with --allow-write."
)


def build_server(platform: Platform | None = None, options: ServeOptions | None = None) -> MCPServer:
    platform = platform or Platform()
    options = options or ServeOptions()
    server = MCPServer(
        "mltp",
        title="ml-training-platform",
        version=__version__,
        instructions=INSTRUCTIONS,
        # The audit wraps the argument check, so a refused argument is audited as the agent saw it.
        extensions=[
            AuditExtension(platform.audit),
            ArgumentErrors(lambda name: server._tool_manager.get_tool(name)),
        ],
    )
    register_read_tools(server, platform)
    register_write_tools(server, platform, options)
    register_predict_tool(server, platform, options)
    register_start_tool(server, platform, options)
    register_run_tools(server, platform, options)
    _narrow(server, options)
    return server


def _narrow(server: MCPServer, options: ServeOptions) -> None:
    """Leave only the tools --tools names and --exclude-tools does not: an agent never sees the rest."""
    from mltp.errors import ConfigError

    served = [tool.name for tool in server._tool_manager.list_tools()]  # the public list_tools is async
    named = [*(options.tools or ()), *options.exclude_tools]
    unknown = [name for name in named if name not in served]
    if unknown:
        raise ConfigError(f"unknown tool(s) {', '.join(unknown)}: the tools are {', '.join(served)}")
    for name in served:
        if (options.tools is not None and name not in options.tools) or name in options.exclude_tools:
            server.remove_tool(name)
