"""Training runs: start one through the `train-model` deployment (the worker runs it and it shows in the
UI, so the agent's session may end while it trains), look at runs, cancel one. A start is planned first
and refused over the server's cost cap or outside the compute it allows."""

from __future__ import annotations

import time
from typing import Annotated
from uuid import UUID

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mltp.mcp.answers import answer
from mltp.mcp.guards import require_write
from mltp.mcp.options import ServeOptions
from mltp.mcp.platform import Platform, platform_errors
from mltp.mcp.read_tools import (
    READ_ONLY,
    AlgorithmArgument,
    ComputeArgument,
    DatasetArgument,
    FoldsArgument,
    GridArgument,
    HyperparametersArgument,
    TargetArgument,
    TaskArgument,
    plan_request,
)
from mltp.mcp.results import RunList, RunStarted, RunSummary

TRAINING_DEPLOYMENT = "train-model/train-model"
TRAINING_FLOWS = ["train-model", "ingest-and-train"]  # the runs these tools look at and may cancel
LOG_LINES = 20
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
MAX_WAIT_S, WAIT_POLL_S = 600.0, 1.0
START = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)
CANCEL = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
)
RUN_ID = Field(description="The flow run id start_training returned (or list_runs shows)")


def register_run_tools(server: MCPServer, platform: Platform, options: ServeOptions) -> None:
    @server.tool(title="Start a training run", annotations=START)
    def start_training(
        dataset: DatasetArgument,
        algorithm: AlgorithmArgument,
        target: TargetArgument = None,
        task: TaskArgument = None,
        hyperparameters: HyperparametersArgument = {},  # noqa: B006 - pydantic copies defaults
        grid: GridArgument = {},  # noqa: B006
        folds: FoldsArgument = None,
        compute: ComputeArgument = "auto",
        model_name: Annotated[str | None, Field(description="Model name (default: the dataset's)")] = None,
        max_runtime_minutes: Annotated[
            float, Field(gt=0, le=10080, description="Stop the job after this")
        ] = 60,
        promote: Annotated[bool, Field(description="Make the new version champion if it is better")] = False,
    ) -> Annotated[CallToolResult, RunStarted]:
        """Plan a training job and start it on the planned compute through the train-model deployment;
        returns at once with the flow run id, the plan, its cost estimate and the UI link. Follow it with
        get_run."""
        from prefect.deployments import run_deployment

        from mltp.dataset_catalog import parse_reference
        from mltp.prefect_api import flow_run_url
        from mltp.registry import model_name_for, validate_model_name

        require_write(options, "start_training")
        if compute not in options.compute:
            raise ToolError(
                f"compute={compute} is not allowed by this server: use {', '.join(options.compute)}"
            )
        with platform_errors():
            validate_model_name(model_name or model_name_for(parse_reference(dataset)[0]))
            name, version, plan = plan_request(
                platform, dataset, algorithm, hyperparameters, grid, compute, target, task, folds
            )
            if plan.backend not in options.compute and compute == "auto":
                raise ToolError(f"the planner chose {plan.backend}, which this server does not allow: "
                                f"pass compute={' or '.join(options.compute)}")  # fmt: skip
            if plan.estimated_cost_usd > options.max_cost_usd:
                raise ToolError(
                    f"the plan's estimated cost ${plan.estimated_cost_usd:.4f} is over this server's cap "
                    f"of ${options.max_cost_usd:.2f} a run: train less, or start the server with a higher "
                    "--max-cost-usd"
                )
            run = run_deployment(
                TRAINING_DEPLOYMENT,
                parameters={
                    "dataset": name, "dataset_version": version, "algorithm": algorithm, "target": target,
                    "task": task, "hyperparameters": hyperparameters, "grid": grid, "folds": folds,
                    "compute": compute, "model_name": model_name, "max_runtime_minutes": max_runtime_minutes,
                    "promote": promote,
                },
                timeout=0,
                tags=["mcp"],
            )  # fmt: skip
        started = RunStarted(
            flow_run_id=str(run.id), name=run.name, plan=plan, ui_url=flow_run_url(str(run.id))
        )
        return answer(
            started,
            f"started {run.name} ({run.id}) on {plan.backend}, about {plan.estimated_runtime_s:,} s and "
            f"${plan.estimated_cost_usd:.4f}: follow it with get_run",
        )

    @server.tool(title="List training runs", annotations=READ_ONLY)
    def list_runs(
        state: Annotated[
            str | None, Field(description="Only runs in this state type, e.g. RUNNING, COMPLETED, FAILED")
        ] = None,
        dataset: Annotated[str | None, Field(description="Only runs training this dataset")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="At most this many, newest first")] = 20,
    ) -> Annotated[CallToolResult, RunList]:
        """Recent training runs (train-model and ingest-and-train), newest first."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.sorting import FlowRunSort

        states = None
        if state is not None:
            states = FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state.upper()]))
            )
        with platform_errors(), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=TRAINING_FLOWS)),
                flow_run_filter=states,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit if dataset is None else 200,
            )
        found = [_summary(run) for run in runs if dataset is None or _dataset_of(run) == dataset][:limit]
        listed = RunList(runs=found)
        return answer(listed, f"{len(found)} run(s)" + "".join(f"; {r.name} {r.state}" for r in found[:5]))

    @server.tool(title="A training run", annotations=READ_ONLY)
    def get_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, RunSummary]:
        """A run's state and its message, its progress, when it started and ended, its parameters, the UI
        link and the last log lines of the flow (the trainers' lines are relayed into it)."""
        summary = _read_run(run_id, with_logs=True)
        progress = "" if summary.progress is None else f", {summary.progress:.0%}"
        return answer(
            summary, f"{summary.name}: {summary.state}{progress}; {summary.state_message or ''}".rstrip()
        )

    @server.tool(title="Wait for a training run", annotations=READ_ONLY)
    async def wait_for_run(
        run_id: Annotated[str, RUN_ID],
        ctx: Context,
        max_wait_s: Annotated[
            float, Field(gt=0, le=MAX_WAIT_S, description="Return after this long even if the run goes on")
        ] = MAX_WAIT_S,
    ) -> Annotated[CallToolResult, RunSummary]:
        """Wait (at most 10 minutes a call) until the run ends, sending progress notifications from the
        run's own progress meanwhile; then the run as get_run reports it. Call again if it still runs."""
        deadline = time.monotonic() + max_wait_s
        while True:
            summary = await anyio.to_thread.run_sync(_read_run, run_id, False)
            await ctx.report_progress(summary.progress or 0.0, 1.0, f"{summary.name}: {summary.state}")
            if summary.state in ENDED or time.monotonic() >= deadline:
                break
            await anyio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0)))
        summary = await anyio.to_thread.run_sync(_read_run, run_id, True)
        if summary.state not in ENDED:
            return answer(
                summary, f"{summary.name} still {summary.state} after {max_wait_s:.0f} s: wait again"
            )
        return answer(summary, f"{summary.name}: {summary.state}; {summary.state_message or ''}".rstrip("; "))

    @server.tool(title="Cancel a training run", annotations=CANCEL)
    def cancel_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, RunSummary]:
        """Cancel a training run: the worker stops it, and the flow's hooks terminate its instances."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        require_write(options, "cancel_run")
        summary = _read_run(run_id, with_logs=False)
        if summary.state in ENDED:
            raise ToolError(f"run {run_id} has already ended ({summary.state}): there is nothing to cancel")
        with platform_errors(), get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), Cancelling())
        cancelled = _read_run(run_id, with_logs=False)
        return answer(cancelled, f"{cancelled.name}: {cancelled.state} (asked to cancel)")


def _read_run(run_id: str, with_logs: bool) -> RunSummary:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        flow_run_id = UUID(run_id)
    except ValueError as error:
        raise ToolError(f"{run_id!r} is not a run id: use one start_training or list_runs gave") from error
    with platform_errors(), get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound as error:
            raise ToolError(f"no run {run_id}: use one start_training or list_runs gave") from error
        if client.read_flow(run.flow_id).name not in TRAINING_FLOWS:
            raise ToolError(f"run {run_id} is not a training run: use one start_training or list_runs gave")
        progress = _progress(client, flow_run_id)
        logs = _last_logs(client, flow_run_id) if with_logs else []
    return _summary(run, progress, logs)


def _progress(client, flow_run_id: UUID) -> float | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=["progress"]),
        )
    )
    values = [artifact.data for artifact in artifacts if isinstance(artifact.data, int | float)]
    return max(values) / 100 if values else None


def _last_logs(client, flow_run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
        limit=LOG_LINES,
        sort=LogSort.TIMESTAMP_DESC,
    )
    return [
        f"{log.timestamp:%H:%M:%S} {log.message.splitlines()[0] if log.message else ''}"
        for log in reversed(logs)
    ]


def _dataset_of(run) -> str | None:
    parameters = run.parameters or {}
    return parameters.get("dataset") or parameters.get("dataset_name")


def _summary(run, progress: float | None = None, logs: list[str] | None = None) -> RunSummary:
    from mltp.prefect_api import flow_run_url

    state = run.state
    return RunSummary(
        flow_run_id=str(run.id),
        name=run.name,
        state=state.type.value if state else "UNKNOWN",
        state_message=state.message if state else None,
        dataset=_dataset_of(run),
        parameters=run.parameters or {},
        started_at=run.start_time.isoformat() if run.start_time else None,
        ended_at=run.end_time.isoformat() if run.end_time else None,
        progress=progress,
        ui_url=flow_run_url(str(run.id)),
        last_log_lines=logs or [],
    )
