"""The limits the server keeps whatever a client asks: writes only when allowed, files only under the
root, S3 sources only where allowed."""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver.exceptions import ToolError

from mltp.dataset_catalog import check_data_file
from mltp.mcp.options import ServeOptions


def require_write(options: ServeOptions, tool: str) -> None:
    if not options.allow_write:
        raise ToolError(
            f"{tool} changes the platform and this server is read-only: start it with "
            "`mltp mcp serve --allow-write` to allow it"
        )


def allowed_source(source: str, options: ServeOptions, data_bucket: str) -> str:
    """`source` if the server may read it: under its root (after `..` and symlinks), or in S3 where it
    was allowed to look."""
    if source.startswith("s3://"):
        allowed = (f"s3://{data_bucket}/", *options.s3_prefixes)
        if not source.startswith(allowed):
            raise ToolError(
                f"{source} is outside the data bucket s3://{data_bucket}: start the server with "
                "--allow-s3-prefix to allow other locations"
            )
        return source
    root = options.root.resolve()
    path = (root / Path(source).expanduser()).resolve()
    if not path.is_relative_to(root):
        raise ToolError(f"{source} is outside the server's root {root}: move the file there, or start the "
                        "server with --root")  # fmt: skip
    return str(check_data_file(path, source))  # a missing file is refused before a flow run starts
