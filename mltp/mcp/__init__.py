"""The MCP server agents drive the platform through (`mltp mcp serve`): the platform's own operations,
typed and validated, calling the same functions the CLI and the flows call."""
