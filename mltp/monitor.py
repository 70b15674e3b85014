"""Watching a run's jobs: one batched poll per tick, and the pure decisions taken from what it saw.

A tick costs the same few API calls whatever the number of jobs: one `DescribeInstances` (EC2), one
`ListObjectsV2` over the run's prefix (plus one `GetObject` per status file, once in a job's life),
one `GetMetricData` with two queries per job, and one `FilterLogEvents` over the log streams of the
jobs that have started (up to 100 streams a call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from mltp.aws import error_code
from mltp.compute.base import Backend, ComputeState, Launched
from mltp.s3_json import read_json
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE

METRIC_PERIOD_S = 5  # the trainer publishes high-resolution metrics, so 5 s periods are valid
QUERIES_PER_CALL = 500  # GetMetricData's limit
STREAMS_PER_CALL = 100  # FilterLogEvents' limit
MAX_LINE_CHARS = 2000
# The progress shown in Prefect changes when the jobs' progress does, and at least this often for the time
# estimate beside it otherwise: each change is a Prefect API call, and the monitor ticks every second or two.
PROGRESS_REFRESH_S = 5.0
# Between polls, a run younger than the window looks for a result this often (one S3 listing): a short
# training's result is seen within a quarter second instead of at the next poll, which also asks
# CloudWatch and the compute, and is a Prefect task run.
QUICK_LOOK_S = 0.25
QUICK_LOOK_WINDOW_S = 120.0


class MonitorSettings(BaseModel):
    """How a run is watched. The defaults suit AWS; tests and the sandbox may tighten them."""

    poll_interval_s: float = Field(1.0, ge=0.2, le=300, description="First poll interval in seconds.")
    max_poll_interval_s: float = Field(
        30.0,
        ge=0.2,
        le=300,
        description="The interval grows with the run's age up to this (below the reaper's 10 min).",
    )
    heartbeat_s: float = Field(15.0, ge=1, le=300, description="How often the trainer sends a heartbeat.")
    heartbeat_timeout_s: float = Field(
        90.0,
        ge=3,
        le=3600,
        description="A gap between heartbeats longer than this means the compute was lost.",
    )
    startup_timeout_s: float = Field(
        600.0,
        ge=5,
        le=7200,
        description="Launch to first heartbeat (boot, install, waiting for capacity) may take this long.",
    )
    max_relaunches: int = Field(2, ge=0, le=10, description="Relaunches per job after lost compute.")
    max_log_lines_per_tick: int = Field(
        200, ge=0, le=5000, description="Trainer log lines relayed into the flow run's log per poll."
    )

    def interval(self, age_s: float) -> float:
        """Doubles after the first minute, triples after two, ... capped: young runs change fast."""
        return min(self.max_poll_interval_s, self.poll_interval_s * (1 + age_s / 60))


@dataclass
class Observation:
    compute: dict[str, ComputeState]
    statuses: dict[str, dict[str, Any]]
    progress: dict[str, float]
    heartbeats: dict[str, datetime]
    log_lines: list[tuple[str, datetime, str]]
    more_log_lines: bool = False


@dataclass
class LogCursor:
    """Where the relay stopped: events at the last timestamp already relayed are skipped next time."""

    after_ms: int
    seen_at_last: set[tuple[str, str]] = field(default_factory=set)


def poll(
    clients,
    backend: Backend,
    launched: list[Launched],
    bucket: str,
    run_prefix: str,
    cursor: LogCursor,
    window_start: datetime,
    max_log_lines: int,
    started: set[str],
) -> Observation:
    """Look at every active attempt of a run at once. Compute is observed before S3 so that an
    instance seen terminated has its status.json (written before it shut down) in the same tick."""
    compute = backend.observe(launched)
    statuses = _new_statuses(clients("s3"), bucket, run_prefix, {item.job_id for item in launched})
    progress, heartbeats = _metrics(clients("cloudwatch"), [item.job_id for item in launched], window_start)
    # A stream exists once its trainer started (and asking for a missing one is an error on AWS).
    streams = [
        item.job_id for item in launched if item.job_id in started | heartbeats.keys() | statuses.keys()
    ]
    lines, more = _log_lines(clients("logs"), streams, cursor, max_log_lines)
    return Observation(compute, statuses, progress, heartbeats, lines, more)


def _new_statuses(s3, bucket: str, run_prefix: str, waiting: set[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for job_id, key in _status_keys(s3, bucket, run_prefix, waiting).items():
        document, _ = read_json(s3, bucket, key)
        if document is not None:
            found[job_id] = document
    return found


def status_written(s3, bucket: str, run_prefix: str, waiting: set[str]) -> bool:
    """Whether any of the `waiting` jobs wrote its status.json: one listing, for a quick look between
    polls (a result is what a young run waits for)."""
    return bool(_status_keys(s3, bucket, run_prefix, waiting))


def _status_keys(s3, bucket: str, run_prefix: str, waiting: set[str]) -> dict[str, str]:
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=run_prefix):
        for item in page.get("Contents", []):
            job_id, _, name = item["Key"].removeprefix("runs/").partition("/")
            if name == "status.json" and job_id in waiting:
                keys[job_id] = item["Key"]
    return keys


def _metrics(cloudwatch, job_ids: list[str], start: datetime) -> tuple[dict[str, float], dict[str, datetime]]:
    """Latest progress and latest heartbeat per job from GetMetricData (two queries per job)."""
    if not job_ids:
        return {}, {}
    queries, names = [], {}
    for number, job_id in enumerate(job_ids):
        for metric, stat, prefix in (("TrainingProgress", "Maximum", "p"), ("Heartbeat", "SampleCount", "h")):
            query_id = f"{prefix}{number}"
            names[query_id] = job_id
            queries.append(
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NAMESPACE,
                            "MetricName": metric,
                            "Dimensions": [{"Name": "JobId", "Value": job_id}],
                        },
                        "Period": METRIC_PERIOD_S,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                }
            )
    now = datetime.now(UTC)
    start_at = _floor(start, METRIC_PERIOD_S)
    end_at = _floor(now, METRIC_PERIOD_S) + timedelta(seconds=METRIC_PERIOD_S)
    progress, heartbeats = {}, {}
    for first in range(0, len(queries), QUERIES_PER_CALL):
        pages = cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries[first : first + QUERIES_PER_CALL],
            StartTime=start_at,
            EndTime=end_at,
            ScanBy="TimestampDescending",
        )
        for page in pages:
            for result in page["MetricDataResults"]:
                if not result["Values"]:
                    continue
                job_id = names[result["Id"]]
                if result["Id"].startswith("p"):
                    progress[job_id] = max(max(result["Values"]), progress.get(job_id, 0.0))
                else:
                    latest = max(result["Timestamps"]) + timedelta(seconds=METRIC_PERIOD_S)
                    heartbeats[job_id] = max(latest, heartbeats.get(job_id, latest))
    return progress, heartbeats


def _floor(moment: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(math.floor(moment.timestamp() / seconds) * seconds, UTC)


def _log_lines(logs, streams: list[str], cursor: LogCursor, limit: int) -> tuple[list, bool]:
    """Up to `limit` new lines of the given log streams (each created by a trainer that started), oldest
    first."""
    if limit <= 0 or not streams:
        return [], False
    events, more = [], False
    for first in range(0, len(streams), STREAMS_PER_CALL):
        try:
            response = logs.filter_log_events(
                logGroupName=LOG_GROUP,
                logStreamNames=streams[first : first + STREAMS_PER_CALL],
                startTime=cursor.after_ms,
                limit=min(limit + len(cursor.seen_at_last), 10_000),
                interleaved=True,
            )
        except ClientError as error:
            # The group or a stream is gone (deleted, or an endpoint that lost its state): relaying is
            # best effort, and the verdicts come from the compute, the statuses and the heartbeats.
            if error_code(error) != "ResourceNotFoundException":
                raise
            continue
        events += response.get("events", [])
        more = more or bool(response.get("nextToken"))
    lines = []
    for event in sorted(events, key=lambda event: event["timestamp"]):
        identity = (event["logStreamName"], f"{event['timestamp']}:{event['message']}")
        if event["timestamp"] == cursor.after_ms and identity in cursor.seen_at_last:
            continue
        if len(lines) == limit:
            return lines, True
        if event["timestamp"] > cursor.after_ms:
            cursor.after_ms, cursor.seen_at_last = event["timestamp"], set()
        cursor.seen_at_last.add(identity)
        moment = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
        lines.append((event["logStreamName"], moment, event["message"].rstrip()[:MAX_LINE_CHARS]))
    return lines, more


Outcome = Literal["running", "succeeded", "failed", "lost", "timeout"]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    kind: str = ""  # for failures: user | trainer | lost | interrupted | timeout | capacity
    message: str = ""


def assess(
    launched: Launched,
    status: dict[str, Any] | None,
    compute: ComputeState | None,
    last_heartbeat: datetime | None,
    deadline: datetime,
    settings: MonitorSettings,
    now: datetime,
) -> Verdict:
    """What one attempt's state is, from what the last tick saw. Pure: tested with a table."""
    if status is not None:
        if status.get("state") == "succeeded":
            return Verdict("succeeded")
        kind = "user" if status.get("kind") == "user" else "trainer"
        return Verdict("failed", kind, status.get("message", "the trainer failed without a message"))
    if now > deadline:
        return Verdict(
            "timeout",
            "timeout",
            f"no result by the deadline {deadline.isoformat(timespec='seconds')}: raise max_runtime_minutes",
        )
    if compute is not None and not compute.alive:
        kind = "interrupted" if compute.interrupted else "lost"
        return Verdict("lost", kind, f"{compute.reason} before the trainer reported a result")
    if last_heartbeat is None:
        waited = (now - launched.launched_at).total_seconds()
        if waited > settings.startup_timeout_s:
            return Verdict("lost", "lost", f"no heartbeat {waited:.0f} s after launch")
        return Verdict("running")
    gap = (now - last_heartbeat).total_seconds()
    if gap > settings.heartbeat_timeout_s:
        return Verdict(
            "lost", "lost", f"no heartbeat for {gap:.0f} s (limit {settings.heartbeat_timeout_s:.0f} s)"
        )
    return Verdict("running")


def eta_seconds(first: tuple[float, float], latest: tuple[float, float]) -> float | None:
    """Seconds left at the rate observed between two (monotonic time, progress) points."""
    (t0, p0), (t1, p1) = first, latest
    if p1 >= 1.0:
        return 0.0
    if t1 <= t0 or p1 <= p0:
        return None
    return (1.0 - p1) * (t1 - t0) / (p1 - p0)


def progress_changed(shown: tuple[float, float], progress: float, now: float) -> bool:
    """Whether to show `progress` (0-1) at monotonic time `now`, given the (progress, time) on show."""
    return progress != shown[0] or now - shown[1] >= PROGRESS_REFRESH_S
