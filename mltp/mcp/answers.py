"""How a tool answers: structured content (strict JSON: a value not measured is null) beside one line of
text for the model to read."""

from __future__ import annotations

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mltp.s3_json import finite


def answer(result: BaseModel, summary: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=summary)],
        structured_content=finite(result.model_dump(mode="json")),
    )
