"""N jobs that look running to a poller, without a trainer: for each, a `runs/<job_id>/` prefix with only
job.json (no status.json yet), an instance launched by our EC2 backend with empty user-data (so the
sandbox fleet leaves it idle) and tagged as ours, a log stream with one line, and `Heartbeat` and
`TrainingProgress` datapoints."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mltp.aws import ClientFactory
from mltp.compute.base import JobLaunch, Launched
from mltp.compute.ec2 import Ec2Backend, Ec2Settings
from mltp.runs import job_id_of
from mltp.s3_json import put_json
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE

INSTANCE_TYPE = "t3.micro"
DATUMS_PER_CALL = 1000  # PutMetricData's limit


@dataclass(frozen=True)
class FakeRun:
    run_id: str
    launched: list[Launched]
    started_ms: int  # before the first log line: where a flow's log cursor would start


def idle_backend(clients: ClientFactory) -> Ec2Backend:
    settings = Ec2Settings(INSTANCE_TYPE, None, None, (), None, None, use_spot=False)
    return Ec2Backend(clients("ec2"), clients("ssm"), settings, user_data=lambda job: "")


def start(clients: ClientFactory, bucket: str, count: int) -> FakeRun:
    run_id = f"bench-monitor-{count}-{uuid.uuid4().hex[:8]}"
    backend, s3, logs = idle_backend(clients), clients("s3"), clients("logs")
    deadline = datetime.now(UTC) + timedelta(hours=1)
    launched, started_ms = [], int(time.time() * 1000) - 1000
    for shard in range(1, count + 1):
        job_id = job_id_of(run_id, shard, 1)
        prefix = f"s3://{bucket}/runs/{job_id}/"
        put_json(s3, bucket, f"runs/{job_id}/job.json", {"job_id": job_id})
        job = JobLaunch(job_id, run_id, f"{prefix}job.json", prefix, "bench-monitor", 1, deadline)
        # What `backend.launch` sends, without its look-up by tag first (which makes a launch retry
        # idempotent, and costs moto a scan of every instance it holds: quadratic over 1,000 jobs).
        reservation = backend.launch_client.run_instances(**backend._request(job))
        launched.append(backend._launched(job, reservation["Instances"][0]))
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=job_id)
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=job_id,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"job {job_id}: training"}],
        )
    return FakeRun(run_id, launched, started_ms)


def beat(clients: ClientFactory, run: FakeRun) -> None:
    """One heartbeat and one progress datapoint per job, high resolution, as the trainer sends them."""
    datums = [
        {
            "MetricName": name,
            "Dimensions": [{"Name": "JobId", "Value": item.job_id}],
            "Value": value,
            "Unit": "None",
            "StorageResolution": 1,
        }
        for item in run.launched
        for name, value in (("Heartbeat", 1.0), ("TrainingProgress", 0.5))
    ]
    for first in range(0, len(datums), DATUMS_PER_CALL):
        clients("cloudwatch").put_metric_data(
            Namespace=NAMESPACE, MetricData=datums[first : first + DATUMS_PER_CALL]
        )


def stop(clients: ClientFactory, run: FakeRun) -> list[str]:
    return idle_backend(clients).terminate(run.launched)
