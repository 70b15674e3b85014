"""The read-only tools and resources: datasets, plans, models, their history and the platform's status.
Safe to auto-approve: none of them writes anything or starts compute."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mltp.mcp.answers import answer
from mltp.mcp.platform import Platform, platform_errors, resource_errors
from mltp.mcp.results import (
    AuditEvent,
    DatasetList,
    DatasetManifest,
    ModelDescription,
    ModelHistory,
    ModelList,
    PlatformStatus,
    StatusCheck,
    TrainingPlan,
)
from mltp.planning import ComputeChoice
from mltp.s3_json import strict_dumps
from mltp.trainer.algorithms import ALGORITHMS

AlgorithmName = Literal[tuple(ALGORITHMS)]  # the enum an agent picks from
Task = Literal["classification", "regression"]
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
# A training request's arguments, as plan_training and start_training take them.
DatasetArgument = Annotated[str, Field(description="Dataset name, or NAME@VERSION")]
AlgorithmArgument = Annotated[AlgorithmName, Field(description="The estimator (the task picks its class)")]
TargetArgument = Annotated[str | None, Field(description="Target column (default: the one given at ingest)")]
TaskArgument = Annotated[Task | None, Field(description="Default: inferred from the target")]
HyperparametersArgument = Annotated[
    dict[str, Any], Field(description='Fixed hyperparameters, e.g. {"n_estimators": 300}')
]
GridArgument = Annotated[
    dict[str, list[Any]],
    Field(description='Grid axes, e.g. {"max_depth": [4, 8]}: one candidate per combination'),
]
FoldsArgument = Annotated[int | None, Field(ge=2, le=20, description="k-fold instead of a holdout")]
ComputeArgument = Annotated[ComputeChoice, Field(description="auto lets the planner choose")]


def register_read_tools(server: MCPServer, platform: Platform) -> None:
    @server.tool(title="List datasets", annotations=READ_ONLY)
    def list_datasets() -> Annotated[CallToolResult, DatasetList]:
        """Every ingested dataset with its newest version, its number of versions, rows and bytes."""
        from mltp.dataset_catalog import list_datasets as listing

        with platform_errors():
            found = DatasetList(datasets=listing(*platform.data()))
        names = ", ".join(d.name for d in found.datasets) or "none yet"
        return answer(found, f"{len(found.datasets)} dataset(s): {names}")

    @server.tool(title="Describe a dataset", annotations=READ_ONLY)
    def describe_dataset(
        name: Annotated[str, Field(description="Dataset name, e.g. iris")],
        version: Annotated[
            str | None, Field(description="A version (16 hex digits); the newest when left out")
        ] = None,
    ) -> Annotated[CallToolResult, DatasetManifest]:
        """A dataset version's manifest: rows, bytes, sha256, format, target and task, and each column's
        profile (type, nulls, distinct values, min and max)."""
        manifest = _manifest(platform, name, version)
        return answer(
            manifest,
            f"{manifest.name}@{manifest.version}: {manifest.rows:,} rows, {len(manifest.columns)} columns, "
            f"target {manifest.target or '-'} ({manifest.task or 'no task yet'})",
        )

    @server.tool(title="Plan a training job", annotations=READ_ONLY)
    def plan_training(
        dataset: DatasetArgument,
        algorithm: AlgorithmArgument,
        target: TargetArgument = None,
        task: TaskArgument = None,
        hyperparameters: HyperparametersArgument = {},  # noqa: B006 - pydantic copies defaults
        grid: GridArgument = {},  # noqa: B006
        folds: FoldsArgument = None,
        compute: ComputeArgument = "auto",
    ) -> Annotated[CallToolResult, TrainingPlan]:
        """Where a training job would run (Lambda, EC2 or local), how big, how long, what it would cost,
        and why: the same checks and plan as `mltp plan`. Starts nothing."""
        with platform_errors():
            _, _, plan = plan_request(
                platform, dataset, algorithm, hyperparameters, grid, compute, target, task, folds
            )
        size = f"{plan.instances} x {plan.instance_type}" if plan.backend == "ec2" else f"{plan.memory_mb} MB"
        return answer(
            plan,
            f"{plan.backend} ({size}): about {plan.estimated_runtime_s:,} s and "
            f"${plan.estimated_cost_usd:.4f}; {plan.reasons[0]}",
        )

    @server.tool(title="List models", annotations=READ_ONLY)
    def list_models() -> Annotated[CallToolResult, ModelList]:
        """Every registered model: its newest version, number of versions and aliases (e.g. champion)."""
        from mltp import registry

        with platform_errors():
            found = ModelList(models=registry.list_models(*platform.models()))
        names = ", ".join(f"{m.name} (v{m.latest_version})" for m in found.models) or "none yet"
        return answer(found, f"{len(found.models)} model(s): {names}")

    @server.tool(title="Describe a model version", annotations=READ_ONLY)
    def describe_model(
        reference: Annotated[
            str,
            Field(description="NAME (the newest version), NAME:VERSION or NAME@ALIAS, e.g. churn@champion"),
        ],
    ) -> Annotated[CallToolResult, ModelDescription]:
        """A model version: task and target, approval, aliases, metrics beside the champion's, signature
        and lineage (dataset, jobs, flow run, code and library versions, cost)."""
        found = _model(platform, reference)
        shown = ", ".join(f"{k}={'n/a' if v is None else v}" for k, v in found.metrics.items())
        return answer(
            found,
            f"{found.name}:{found.version} ({found.approval}, aliases: {', '.join(found.aliases) or '-'}): "
            f"{found.task} of {found.target or '-'}; {shown}",
        )

    @server.tool(title="A model's history", annotations=READ_ONLY)
    def model_history(
        name: Annotated[str, Field(description="Model name")],
    ) -> Annotated[CallToolResult, ModelHistory]:
        """The model's audit log, oldest first: every registration, alias move and approval change, with
        when, by whom and why."""
        from mltp import registry

        with platform_errors():
            s3, bucket = platform.models()
            registry.get_version(s3, bucket, registry.validate_model_name(name))  # unknown names: one line
            events = [_audit_event(event) for event in registry.audit_log(s3, bucket, name)]
        history = ModelHistory(name=name, events=events)
        last = f"; last: {events[-1].action} by {events[-1].actor} at {events[-1].at}" if events else ""
        return answer(history, f"{len(events)} event(s) for {name}{last}")

    @server.tool(title="Platform status", annotations=READ_ONLY)
    def platform_status() -> Annotated[CallToolResult, PlatformStatus]:
        """What `mltp doctor` checks: the Prefect API, the blocks, the AWS credentials, both buckets and the
        EC2 settings, each with a fix when it fails. Asked afresh on every call."""
        from dataclasses import asdict

        from mltp.cli.doctor_cmd import run_checks

        api_url, checks = run_checks(platform)  # fresh checks through the server's blocks and clients
        status = PlatformStatus(
            ok=all(check.status == "ok" for check in checks),
            prefect_api_url=api_url,
            checks=[StatusCheck(**asdict(check)) for check in checks],
        )
        failed = [check.name for check in status.checks if check.status == "fail"]
        return answer(status, "all checks passed" if status.ok else f"failed: {', '.join(failed)}")

    @server.resource(
        "mltp://datasets/{name}",
        title="Dataset manifest",
        description="The newest version's manifest of a dataset",
        mime_type="application/json",
    )
    def dataset_resource(name: str) -> str:
        with resource_errors():
            return strict_dumps(_manifest(platform, name, None).model_dump(mode="json"), indent=2)

    @server.resource(
        "mltp://models/{name}/{version}",
        title="Model version card",
        description="A registered model version: metrics beside the champion's, approval, signature, lineage",
        mime_type="application/json",
    )
    def model_resource(name: str, version: str) -> str:
        with resource_errors():
            return strict_dumps(_model(platform, f"{name}:{version}").model_dump(mode="json"), indent=2)

    @server.resource(
        "mltp://models/{name}/{version}/card",
        title="Model card",
        description="A registered model version as one self-contained HTML page to share (what `mltp models "
        "report` writes): metrics beside the champion's, evaluation plots, dataset profile, signature, "
        "lineage, history",
        mime_type="text/html",
    )
    def model_card_resource(name: str, version: str) -> str:
        from mltp.model_card import build_card
        from mltp.model_card_html import render_card

        with resource_errors():
            clients, data_bucket = platform.data()
            return render_card(build_card(*platform.models(), clients, data_bucket, f"{name}:{version}"))


def plan_request(
    platform: Platform,
    dataset: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
    grid: dict[str, list[Any]],
    compute: str,
    target: str | None,
    task: str | None,
    folds: int | None,
) -> tuple[str, str | None, TrainingPlan]:
    """The dataset's name and version, and the plan as a result: every check `mltp plan` makes."""
    from tasks import training

    name, version, spec, chosen = training.plan_request(
        platform.blocks(),
        dataset,
        algorithm,
        hyperparameters,
        grid,
        compute,
        target=target,
        task=task,
        folds=folds,
    )
    plan = TrainingPlan(**chosen.as_dict(), task=spec.task, target=spec.target, candidates=spec.candidates)
    return name, version, plan


def _manifest(platform: Platform, name: str, version: str | None) -> DatasetManifest:
    from mltp.dataset_catalog import get_manifest

    with platform_errors():
        clients, bucket = platform.data()
        return DatasetManifest(**get_manifest(clients, bucket, name, version))


def _model(platform: Platform, reference: str) -> ModelDescription:
    from mltp import registry

    with platform_errors():
        s3, bucket = platform.models()
        name, version, alias = registry.parse_model_ref(reference)
        found = registry.get_version(s3, bucket, name, version, alias)
        pointers = registry.aliases(s3, bucket, name)
        champion_version = pointers.get("champion")
        champion = None
        if champion_version is not None:
            held = registry.get_version(s3, bucket, name, champion_version)
            champion = {"version": held.version, "metrics": held.metrics}
    return ModelDescription(
        **{k: v for k, v in found.as_dict().items() if k != "version"},
        version=found.version,
        target=registry.target_of(found.signature),
        aliases=sorted(alias for alias, number in pointers.items() if number == found.version),
        champion=champion,
    )


def _audit_event(event: dict[str, Any]) -> AuditEvent:
    known = {"at", "action", "actor", "reason"}
    return AuditEvent(
        **{key: event.get(key) for key in known},
        details=json.loads(strict_dumps({k: v for k, v in event.items() if k not in known})),
    )
