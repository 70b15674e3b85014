"""Training runs: start one through the `train-model` deployment (the worker runs it and it shows in the
UI, so the agent's session may end while it trains), look at runs, cancel one. A start is planned first
and refused over the server's cost cap or outside the compute it allows."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any
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
from mltp.mcp.results import Diagnosis, RunList, RunStarted, RunSummary

TRAINING_DEPLOYMENT = "train-model/train-model"
TRAINING_FLOWS = ["train-model", "ingest-and-train"]  # the runs these tools look at and may cancel
LOG_LINES = 20
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
MAX_WAIT_S, WAIT_POLL_S = 600.0, 1.0
# The flow's failure message: "training failed (KIND): JOB_ID: what the trainer said"
FAILURE = re.compile(r"training failed \((\w+)\): (\S+): (.*)")
ADVICE = {
    "user": "the data or the parameters: fix what the error names, then start_training again (a retry as is "
    "fails the same way)",
    "timeout": "it ran out of time: raise max_runtime_minutes, or train fewer candidates or smaller models",
    "lost": "its compute was lost and relaunched up to max_relaunches: see the instances' state reasons; "
    "start it again, on other compute if it keeps happening",
    "interrupted": "spot capacity was reclaimed: start it again, or on demand",
    "trainer": "the trainer failed: see its log tail; starting it again helps only once the cause is fixed",
}
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

    @server.tool(title="Diagnose a training run", annotations=READ_ONLY)
    def diagnose_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, Diagnosis]:
        """For a failed or stuck run, in one call: the failure kind the flow decided, its error, the
        failing trainer's log tail from CloudWatch, its instances' states and state reasons, and what to
        do."""
        summary = _read_run(run_id, with_logs=True)
        failure = FAILURE.search(summary.state_message or "")
        kind, job_id, error = failure.groups() if failure else (None, None, summary.state_message)
        with platform_errors():
            instances = _instances(platform, run_id)
            log_tail = _log_tail(platform, job_id) if job_id else []
        diagnosis = Diagnosis(
            run=summary, failure_kind=kind, job_id=job_id, error=error, trainer_log_tail=log_tail,
            instances=instances, what_to_do=_advice(summary.state, kind),
        )  # fmt: skip
        return answer(diagnosis, f"{summary.name} {summary.state}" + (f" ({kind}): {error}" if kind else "")
                      + f"; {diagnosis.what_to_do}")  # fmt: skip

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


def _instances(platform: Platform, run_id: str) -> list[dict[str, Any]]:
    """The run's EC2 instances (the flow tags them with its flow run id), with their state and reason."""
    ec2 = platform.blocks().credentials.get_client("ec2")
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:mltp:flow-run-id", "Values": [run_id]}]
    )
    return [
        {
            "instance_id": instance["InstanceId"],
            "state": instance["State"]["Name"],
            "state_reason": instance.get("StateReason", {}).get("Message"),
            "job_id": next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "mltp:job-id"), None),
        }
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]


def _log_tail(platform: Platform, job_id: str) -> list[str]:
    """The failing trainer's last log lines: CloudWatch Logs, one stream per job."""
    from botocore.exceptions import ClientError

    from mltp.trainer.telemetry import LOG_GROUP

    logs = platform.blocks().credentials.get_client("logs")
    try:
        events = logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=job_id, limit=LOG_LINES, startFromHead=False
        )["events"]
    except ClientError:  # the trainer never started, so it never logged
        return []
    return [event["message"].rstrip() for event in events]


def _advice(state: str, kind: str | None) -> str:
    if state not in ENDED:
        return "it has not ended: follow it with wait_for_run, or cancel_run"
    if state == "COMPLETED":
        return "it succeeded: nothing to fix (describe_model shows what it registered)"
    return ADVICE.get(
        kind or "", "see the run's log lines and state message; start it again once the cause is fixed"
    )


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
