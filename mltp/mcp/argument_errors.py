"""Arguments that do not fit a tool's input schema, answered in one line: which argument, what is wrong
and what was given. The SDK's own answer is pydantic's multi-line report, which an agent has to untangle
and a client may show cut after its first line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.extension import Extension
from mcp_types import CallToolResult, TextContent
from pydantic import ValidationError

SHOWN_INPUT = 60  # characters of a refused value quoted back


class ArgumentErrors(Extension):
    """Checks a call's arguments against its tool's schema before the tool runs (the tool checks them
    again, as it always does)."""

    identifier = "dev.mltp/argument-errors"

    def __init__(self, find_tool: Callable[[str], Any]) -> None:
        self.find_tool = find_tool

    async def intercept_tool_call(self, params, ctx, call_next):
        tool = self.find_tool(params.name)
        if tool is not None:
            try:
                tool.fn_metadata.validate_arguments(dict(params.arguments or {}))
            except ValidationError as error:
                return CallToolResult(
                    content=[TextContent(type="text", text=one_line(params.name, error))], is_error=True
                )
        return await call_next(ctx)


def one_line(tool: str, error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "the arguments"
        given = "" if problem["type"] == "missing" else f" (got {_shown(problem.get('input'))})"
        problems.append(f"{where}: {problem['msg']}{given}")
    return f"{tool}: {'; '.join(problems)}: fix the argument (the tool's input schema describes each)"


def _shown(value: Any) -> str:
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= SHOWN_INPUT else text[: SHOWN_INPUT - 3] + "..."
