"""Every tool call, audited: which tool, its arguments (anything secret-looking redacted), the outcome,
the duration and the client. The platform sends each record as the Prefect event `mltp.mcp.tool-called`
(the UI's Event Feed) and one line of the server's log."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from mcp.server.extension import Extension

AUDIT_EVENT = "mltp.mcp.tool-called"
_SECRET = re.compile(r"secret|token|password|passwd|credential|api[_-]?key|access[_-]?key", re.IGNORECASE)
REDACTED = "[redacted]"


def redacted(value: Any, key: str = "") -> Any:
    """`value` with every entry whose name looks secret replaced, at any depth."""
    if key and _SECRET.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {name: redacted(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [redacted(item) for item in value]
    return value


class AuditExtension(Extension):
    """Wraps every `tools/call`; hands one record per call to `record`."""

    identifier = "dev.mltp/audit"

    def __init__(self, record: Callable[[dict[str, Any]], None]) -> None:
        self.record = record

    async def intercept_tool_call(self, params, ctx, call_next):
        started = time.monotonic()
        outcome, error = "error", "the call raised"
        try:
            result = await call_next(ctx)
            failed = bool(getattr(result, "is_error", False))
            outcome = "error" if failed else "ok"
            error = _first_text(result) if failed else None
            return result
        finally:
            client = ctx.session.client_params.client_info if ctx.session.client_params else None
            self.record(
                {
                    "tool": params.name,
                    "arguments": redacted(dict(params.arguments or {})),
                    "outcome": outcome,
                    "error": error,
                    "duration_ms": round((time.monotonic() - started) * 1000),
                    "client": {"name": client.name, "version": client.version} if client else None,
                }
            )


def _first_text(result: Any) -> str | None:
    texts = [block.text for block in getattr(result, "content", []) if getattr(block, "text", None)]
    return texts[0].splitlines()[0] if texts else None
