"""A training run as the run tools report it: the flow run's state, progress and last log lines from the
Prefect API, and its jobs, attempts, metrics and cost from the run's own record and report in S3 (the
flow links its S3 folder to the flow run as an artifact)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from mcp.server.mcpserver.exceptions import ToolError

from mltp.mcp.platform import Platform, platform_errors
from mltp.mcp.results import RunSummary

TRAINING_FLOWS = ["train-model", "ingest-and-train"]  # the runs these tools look at and may cancel
LOG_LINES = 20
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
RUN_FOLDER_LINK = re.compile(r"\(s3://[^/]+/runs/([^/)]+)/\)")  # the link artifact's "[text](s3://...)"


def read_run(platform: Platform, run_id: str, with_logs: bool) -> RunSummary:
    """The run's summary; with_logs adds its last log lines and what its S3 record or report says."""
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
        runs = _with_subflows(client, flow_run_id)
        artifacts = _artifacts(client, runs)
        logs = _last_logs(client, runs) if with_logs else []
    progress = _progress(artifacts)
    summary = summarize(run, progress, logs)
    if with_logs:
        with platform_errors():
            _add_record(summary, platform, artifacts)
    return summary


def summarize(run, progress: float | None = None, logs: list[str] | None = None) -> RunSummary:
    from mltp.monitor import eta_seconds
    from mltp.prefect_api import flow_run_url

    state = run.state
    state_type = state.type.value if state else "UNKNOWN"
    eta = None
    if progress and run.start_time and state_type not in ENDED:
        elapsed = (datetime.now(UTC) - run.start_time).total_seconds()
        eta = eta_seconds((0.0, 0.0), (elapsed, progress))
    return RunSummary(
        flow_run_id=str(run.id),
        name=run.name,
        state=state_type,
        state_message=state.message if state else None,
        dataset=dataset_of(run),
        parameters=run.parameters or {},
        started_at=run.start_time.isoformat() if run.start_time else None,
        ended_at=run.end_time.isoformat() if run.end_time else None,
        progress=progress,
        eta_s=None if eta is None else round(eta),
        ui_url=flow_run_url(str(run.id)),
        last_log_lines=logs or [],
    )


def dataset_of(run) -> str | None:
    parameters = run.parameters or {}
    return parameters.get("dataset") or parameters.get("dataset_name")


def _with_subflows(client, flow_run_id: UUID) -> list[UUID]:
    """The run and its subflow runs: ingest-and-train trains in a train-model subflow."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    )
    return [flow_run_id, *(child.id for child in children)]


def _artifacts(client, runs: list[UUID]) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=runs))
    )


def _progress(artifacts: list[Any]) -> float | None:
    values = [a.data for a in artifacts if a.type == "progress" and isinstance(a.data, int | float)]
    return max(values) / 100 if values else None


def _add_record(summary: RunSummary, platform: Platform, artifacts: list[Any]) -> None:
    """Jobs, attempts, metrics and cost: the final report once the run wrote it, else its record."""
    from mltp.runs import RECORD, REPORT, run_folder
    from mltp.s3_json import read_json

    links = [RUN_FOLDER_LINK.search(a.data) for a in artifacts if isinstance(a.data, str)]
    run_id = next((link.group(1) for link in links if link), None)
    if run_id is None:  # refused or failed before it launched anything
        return
    s3, bucket = platform.models()
    document, _ = read_json(s3, bucket, run_folder(run_id) + REPORT)
    if document is None:
        document, _ = read_json(s3, bucket, run_folder(run_id) + RECORD)
    document = document or {}
    summary.run_id = run_id
    summary.backend = document.get("compute", {}).get("backend") or document.get("backend")
    summary.jobs = [job for job in document.get("jobs", []) if isinstance(job, dict)]
    summary.metrics = document.get("metrics")
    summary.registered_version = document.get("version")
    summary.cost_usd_estimate = document.get("cost_usd_estimate")
    summary.cost_usd_observed = document.get("cost_usd_observed")


def _last_logs(client, runs: list[UUID]) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)),
        limit=LOG_LINES,
        sort=LogSort.TIMESTAMP_DESC,
    )
    return [
        f"{log.timestamp:%H:%M:%S} {log.message.splitlines()[0] if log.message else ''}"
        for log in reversed(logs)
    ]
