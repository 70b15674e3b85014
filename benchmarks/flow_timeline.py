"""Where a `train-model` flow run spent its time: the Prefect API's timestamps of the flow run and its task
runs, and the millisecond timestamps of the trainer's first and last log lines in CloudWatch Logs (same
machine, same clock)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect.client.base import PrefectHttpxSyncClient

from benchmarks.report import summary
from mltp.trainer.telemetry import LOG_GROUP


@dataclass(frozen=True)
class Timeline:
    before_launch_s: float  # flow start to the end of launch-job: plan, publish-trainer, specs, launch
    publish_trainer_s: float  # of which publish-trainer (EC2 only; 0 otherwise)
    to_first_line_s: float  # end of launch-job to the trainer's first log line
    trainer_lines_s: float  # the trainer's first to its last log line
    to_seen_s: float  # the trainer's last log line to the end of the poll that saw its status
    after_s: float  # the end of that poll to the flow's end: terminate, collect, report
    polls: int


def _at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def _task_name(task_run: dict[str, Any]) -> str:
    return task_run["name"].rsplit("-", 1)[0]  # "poll-jobs-45a" -> "poll-jobs"


def _log_span(logs, job_id: str) -> tuple[datetime, datetime]:
    stamps = [
        event["timestamp"]
        for page in logs.get_paginator("filter_log_events").paginate(
            logGroupName=LOG_GROUP, logStreamNames=[job_id]
        )
        for event in page["events"]
    ]
    first, last = min(stamps), max(stamps)
    return datetime.fromtimestamp(first / 1000, UTC), datetime.fromtimestamp(last / 1000, UTC)


def timeline(api_url: str, flow_run_id: str, logs, job_id: str) -> Timeline:
    with PrefectHttpxSyncClient(base_url=api_url, timeout=30.0) as api:  # retries 503s
        flow_run = api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
        task_runs = (
            api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})
            .raise_for_status()
            .json()
        )
    ends = {}  # task name -> end of its last run
    publish_s, polls = 0.0, 0
    for task_run in sorted(task_runs, key=lambda run: run["start_time"]):
        name = _task_name(task_run)
        ends[name] = _at(task_run["end_time"])
        polls += name == "poll-jobs"
        if name == "publish-trainer":
            publish_s += task_run["total_run_time"]
    first_line, last_line = _log_span(logs, job_id)
    start, end = _at(flow_run["start_time"]), _at(flow_run["end_time"])
    return Timeline(
        (ends["launch-job"] - start).total_seconds(),
        publish_s,
        (first_line - ends["launch-job"]).total_seconds(),
        (last_line - first_line).total_seconds(),
        (ends["poll-jobs"] - last_line).total_seconds(),
        (end - ends["poll-jobs"]).total_seconds(),
        polls,
    )


def seconds(values: list[float]) -> str:
    """Median [min-max] in seconds, to the hundredth: the phases are short."""
    return summary(values, "s", digits=2)


def _polls(timelines: list[Timeline]) -> str:
    counts = Counter(t.polls for t in timelines)
    return ", ".join(f"{polls} ({runs} run{'s' * (runs > 1)})" for polls, runs in sorted(counts.items()))


def breakdown(timelines: dict[str, list[Timeline]]) -> str:
    """A table: per backend, each phase's median [min-max] and how many runs took how many polls."""
    lines = [
        "| backend | before the launch | of which publish-trainer | launch to the trainer's first log "
        "line¹ | trainer's first to last log line | last log line to the poll that saw the result | "
        "after that poll | polls per run (runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, runs in timelines.items():
        phases = [
            [getattr(t, name) for t in runs]
            for name in (
                "before_launch_s",
                "publish_trainer_s",
                "to_first_line_s",
                "trainer_lines_s",
                "to_seen_s",
                "after_s",
            )
        ]
        lines.append(f"| {backend} | {' | '.join(seconds(phase) for phase in phases)} | {_polls(runs)} |")
    return "\n".join(lines)
