"""The baseline of the monitor suite: what a poller written one job at a time does each tick. Five calls
per job: DescribeInstances for its instance, HeadObject of its status.json, GetMetricStatistics for its
progress and for its heartbeat, GetLogEvents of its log stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import ClientError

from mltp.aws import NOT_FOUND_CODES, ClientFactory, error_code
from mltp.compute.base import Launched
from mltp.monitor import METRIC_PERIOD_S
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE


@dataclass
class Seen:
    """What a tick saw, per job, to check that both pollers saw the same."""

    alive: set[str] = field(default_factory=set)
    statuses: set[str] = field(default_factory=set)
    progress: set[str] = field(default_factory=set)
    heartbeats: set[str] = field(default_factory=set)
    log_lines: int = 0


def naive_tick(
    clients: ClientFactory,
    launched: list[Launched],
    bucket: str,
    start: datetime,
    end: datetime,
    logs_from_ms: int,
) -> Seen:
    """`start`-`end` is the metric window; the log lines are read from `logs_from_ms` on."""
    ec2, s3, cloudwatch, logs = (clients(name) for name in ("ec2", "s3", "cloudwatch", "logs"))
    seen = Seen()
    for item in launched:
        reservations = ec2.describe_instances(InstanceIds=[item.handle])["Reservations"]
        if reservations[0]["Instances"][0]["State"]["Name"] in ("pending", "running"):
            seen.alive.add(item.job_id)
        try:
            s3.head_object(Bucket=bucket, Key=f"runs/{item.job_id}/status.json")
            seen.statuses.add(item.job_id)
        except ClientError as error:
            if error_code(error) not in NOT_FOUND_CODES:
                raise
        for metric, stat, found in (
            ("TrainingProgress", "Maximum", seen.progress),
            ("Heartbeat", "SampleCount", seen.heartbeats),
        ):
            datapoints = cloudwatch.get_metric_statistics(
                Namespace=NAMESPACE,
                MetricName=metric,
                Dimensions=[{"Name": "JobId", "Value": item.job_id}],
                StartTime=start,
                EndTime=end,
                Period=METRIC_PERIOD_S,
                Statistics=[stat],
            )["Datapoints"]
            if datapoints:
                found.add(item.job_id)
        events = logs.get_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=item.job_id,
            startTime=logs_from_ms,
            startFromHead=True,
        )["events"]
        seen.log_lines += len(events)
    return seen
