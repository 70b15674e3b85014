"""The tools that change the platform: ingest a dataset, move an alias, approve or reject a version. Each
refuses unless the server was started with --allow-write, and takes local files only under its root and
s3:// sources only in the data bucket (or the prefixes it was given)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mltp.mcp.answers import answer
from mltp.mcp.guards import allowed_source, require_write
from mltp.mcp.options import ServeOptions
from mltp.mcp.platform import Platform, platform_errors
from mltp.mcp.results import AliasMove, ApprovalChange, IngestedDataset

INGEST = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)  # the same bytes again are the same version
REGISTRY_CHANGE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
REFERENCE = Field(description="NAME:VERSION or NAME@ALIAS of a registered model, e.g. churn:3")
REASON = Field(min_length=1, description="Why: kept in the model's audit log")


def register_write_tools(server: MCPServer, platform: Platform, options: ServeOptions) -> None:
    @server.tool(title="Ingest a dataset", annotations=INGEST)
    def ingest_dataset(
        source: Annotated[
            str,
            Field(
                description="A CSV or Parquet file under the server's root, or s3:// URI in the data bucket"
            ),
        ],
        name: Annotated[str | None, Field(description="Dataset name (default: from the file name)")] = None,
        target: Annotated[str | None, Field(description="Target column for training, if known")] = None,
        auto_train: Annotated[
            bool, Field(description="Have the train-on-new-dataset deployment train it (needs a target)")
        ] = False,
    ) -> Annotated[CallToolResult, IngestedDataset]:
        """Upload, hash and profile a dataset in one pass (the ingest-dataset flow, as `mltp datasets
        ingest` runs it); the same bytes again change nothing."""
        require_write(options, "ingest_dataset")
        if auto_train and not target:
            raise ToolError("auto_train needs a target: training needs to know which column to predict")
        from flows.ingest import announce_dataset
        from flows.ingest import ingest_dataset as ingest_flow

        with platform_errors():
            checked = allowed_source(source, options, platform.data()[1])
            manifest = ingest_flow(source=checked, name=name, target=target, auto_train=auto_train)
            if auto_train and not manifest["created"]:  # asked to train bytes ingested before: train them
                announce_dataset(manifest, auto_train=True)
        result = IngestedDataset(
            **{field: manifest[field] for field in ("name", "version", "rows", "bytes", "uri", "created")},
            announced_for_training=auto_train,
        )
        done = "ingested" if result.created else "already ingested"
        return answer(result, f"{done} {result.name}@{result.version}: {result.rows:,} rows")

    @server.tool(title="Point an alias at a version", annotations=REGISTRY_CHANGE)
    def promote_model(
        reference: Annotated[str, REFERENCE],
        alias: Annotated[str, Field(description="The alias to move, e.g. champion or staging")] = "champion",
        reason: Annotated[str | None, Field(description="Why: kept in the model's audit log")] = None,
        expected_version: Annotated[
            int | None, Field(ge=1, description="Move only if the alias still points at this version")
        ] = None,
    ) -> Annotated[CallToolResult, AliasMove]:
        """Move an alias (compare-and-swap; a Rejected version is refused), as `mltp models promote`."""
        from mltp import registry

        require_write(options, "promote_model")
        with platform_errors():
            name, target, previous = registry.point_alias(
                *platform.models(),
                reference,
                alias,
                actor=_actor(),
                reason=reason,
                expected_version=expected_version,
            )
        move = AliasMove(name=name, alias=alias, version=target, previous=previous)
        return answer(move, f"{name}@{alias} -> version {target} (was {previous or 'unset'})")

    @server.tool(title="Approve a model version", annotations=REGISTRY_CHANGE)
    def approve_model(
        reference: Annotated[str, REFERENCE], reason: Annotated[str, REASON]
    ) -> Annotated[CallToolResult, ApprovalChange]:
        """Mark a version Approved, as `mltp models approve`."""
        require_write(options, "approve_model")
        return _set_approval(platform, reference, "Approved", reason)

    @server.tool(title="Reject a model version", annotations=REGISTRY_CHANGE)
    def reject_model(
        reference: Annotated[str, REFERENCE], reason: Annotated[str, REASON]
    ) -> Annotated[CallToolResult, ApprovalChange]:
        """Mark a version Rejected (no alias may point at it then), as `mltp models reject`."""
        require_write(options, "reject_model")
        return _set_approval(platform, reference, "Rejected", reason)


def _actor() -> str:
    from mltp import registry

    return f"mcp:{registry.cli_actor().removeprefix('cli:')}"


def _set_approval(platform: Platform, reference: str, status: str, reason: str) -> CallToolResult:
    from mltp import registry

    with platform_errors():
        name, target, previous = registry.change_approval(
            *platform.models(), reference, status, actor=_actor(), reason=reason
        )
    change = ApprovalChange(name=name, version=target, approval=status, previous=previous)
    return answer(change, f"{name}:{target} {status} (was {previous})")
