"""Training runs (start_training is in start_tool.py): list them, follow one to its end with progress
notifications, diagnose a failure, cancel one, and read a run's report as a resource."""

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
from mltp.mcp.read_tools import READ_ONLY
from mltp.mcp.results import Diagnosis, RunList, RunSummary
from mltp.mcp.run_reading import ENDED, LOG_LINES, TRAINING_FLOWS, dataset_of, read_run, summarize
from mltp.s3_json import strict_dumps

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
CANCEL = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
)
RUN_ID = Field(description="The flow run id start_training returned (or list_runs shows)")


def register_run_tools(server: MCPServer, platform: Platform, options: ServeOptions) -> None:
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
        found = [summarize(run) for run in runs if dataset is None or dataset_of(run) == dataset][:limit]
        listed = RunList(runs=found)
        return answer(listed, f"{len(found)} run(s)" + "".join(f"; {r.name} {r.state}" for r in found[:5]))

    @server.tool(title="A training run", annotations=READ_ONLY)
    def get_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, RunSummary]:
        """A run's state and its message, its progress and ETA, its jobs and their attempts, the best
        metrics, the estimated and observed cost, its parameters, the UI link and the last log lines of the
        flow (the trainers' lines are relayed into it)."""
        summary = read_run(platform, run_id, with_logs=True)
        return answer(summary, _headline(summary))

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
            summary = await anyio.to_thread.run_sync(read_run, platform, run_id, False)
            await ctx.report_progress(summary.progress or 0.0, 1.0, f"{summary.name}: {summary.state}")
            if summary.state in ENDED or time.monotonic() >= deadline:
                break
            await anyio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0)))
        summary = await anyio.to_thread.run_sync(read_run, platform, run_id, True)
        if summary.state not in ENDED:
            return answer(
                summary, f"{_headline(summary)}; still running after {max_wait_s:.0f} s: wait again"
            )
        return answer(summary, _headline(summary))

    @server.tool(title="Diagnose a training run", annotations=READ_ONLY)
    def diagnose_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, Diagnosis]:
        """For a failed or stuck run, in one call: the failure kind the flow decided, its error, the
        failing trainer's log tail from CloudWatch, its instances' states and state reasons, and what to
        do."""
        summary = read_run(platform, run_id, with_logs=True)
        failure = FAILURE.search(summary.state_message or "")
        kind, job_id, error = failure.groups() if failure else (None, None, summary.state_message)
        with platform_errors():
            instances = _instances(platform, run_id)
            log_tail = _log_tail(platform, job_id) if job_id else []
        job = next((job for job in summary.jobs if job.get("job_id") == job_id), None)
        diagnosis = Diagnosis(
            run=summary, failure_kind=kind, job_id=job_id, error=error, trainer_log_tail=log_tail,
            attempts=job["attempts"] if job else [], instances=instances,
            what_to_do=_advice(summary.state, kind),
        )  # fmt: skip
        return answer(diagnosis, f"{summary.name} {summary.state}" + (f" ({kind}): {error}" if kind else "")
                      + f"; {diagnosis.what_to_do}")  # fmt: skip

    @server.tool(title="Cancel a training run", annotations=CANCEL)
    def cancel_run(run_id: Annotated[str, RUN_ID]) -> Annotated[CallToolResult, RunSummary]:
        """Cancel a training run: the worker stops it, and the flow's hooks terminate its instances."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        require_write(options, "cancel_run")
        summary = read_run(platform, run_id, with_logs=False)
        if summary.state in ENDED:
            raise ToolError(f"run {run_id} has already ended ({summary.state}): there is nothing to cancel")
        with platform_errors(), get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(run_id), Cancelling())
        cancelled = read_run(platform, run_id, with_logs=False)
        return answer(cancelled, f"{cancelled.name}: {cancelled.state} (asked to cancel)")

    @server.resource(
        "mltp://runs/{run_id}",
        title="Training run report",
        description="A training run as get_run reports it: state, progress, jobs and attempts, metrics, cost",
        mime_type="application/json",
    )
    def run_resource(run_id: str) -> str:
        return strict_dumps(read_run(platform, run_id, with_logs=True).model_dump(mode="json"), indent=2)


def _headline(summary: RunSummary) -> str:
    parts = [f"{summary.name}: {summary.state}"]
    if summary.progress is not None and summary.state not in ENDED:
        parts.append(
            f"{summary.progress:.0%}" + (f", about {summary.eta_s:.0f} s left" if summary.eta_s else "")
        )
    if summary.metrics:
        parts.append(
            ", ".join(f"{name} {value:.4g}" for name, value in summary.metrics.items() if value is not None)
        )
    if summary.registered_version:
        parts.append(f"registered version {summary.registered_version}")
    if summary.cost_usd_observed is not None:
        parts.append(f"${summary.cost_usd_observed:.4f} of trainer time")
    if summary.state_message and summary.state != "COMPLETED":
        parts.append(summary.state_message)
    return "; ".join(parts)


def _instances(platform: Platform, run_id: str) -> list[dict[str, Any]]:
    """The run's EC2 instances (the flow tags them with its flow run id), with their state and reason."""
    ec2 = platform.blocks().client("ec2")
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

    logs = platform.blocks().client("logs")
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
