"""The reaper: find and terminate EC2 instances whose training flow is no longer there to stop them.

The train-model flow terminates its instances itself and through its failure, cancellation and crash
hooks. This is the last layer, for when the flow's process died (kill -9, a lost machine) or the hooks
could not run. `find_orphans` decides over already-fetched data; `reap` fetches, decides, terminates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mltp.compute.ec2 import (
    CLEANUP_STATES,
    TAG_EXPIRES,
    TAG_FLOW_RUN,
    TAG_JOB,
    TAG_RUN,
    instance_tags,
    tagged_instances,
)
from mltp.runs import RECORD, run_folder
from mltp.s3_json import read_json

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
TERMINATE_BATCH = 1000  # TerminateInstances accepts at most this many ids per call

FlowRunStates = Callable[[list[str]], dict[str, str | None]]


@dataclass(frozen=True)
class Orphan:
    instance_id: str
    job_id: str
    run_id: str | None
    flow_run_id: str | None
    reason: str
    launched_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "flow_run_id": self.flow_run_id,
            "reason": self.reason,
            "launched_at": self.launched_at.isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class ReapReport:
    checked: int
    orphans: list[Orphan]
    terminated: list[str]
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "dry_run": self.dry_run,
            "orphans": [orphan.as_dict() for orphan in self.orphans],
            "terminated": self.terminated,
        }


def find_orphans(
    instances: Iterable[dict[str, Any]],
    flow_run_states: dict[str, str | None],
    watched_at: dict[str, datetime | None],
    now: datetime,
    stale_after: timedelta,
) -> list[Orphan]:
    """Our live instances (tagged `mltp:job-id`, pending to stopped) that nothing watches any more.

    Args:
        instances: as DescribeInstances returns them.
        flow_run_states: flow run id -> Prefect state type (`RUNNING`, `COMPLETED`, ...), None when
            Prefect does not know the flow run; an id that is absent counts as unknown.
        watched_at: run id -> `watched_at` of its run record, None when the record (or the time) is
            missing.
        now: the moment of the decision.
        stale_after: how long a run may go unwatched, and a run record may be missing, before its
            instances count as abandoned.
    """
    orphans = []
    for instance in instances:
        tags = instance_tags(instance)
        if TAG_JOB not in tags or instance["State"]["Name"] not in CLEANUP_STATES:
            continue
        reason = _orphan_reason(instance, tags, flow_run_states, watched_at, now, stale_after)
        if reason:
            orphans.append(
                Orphan(
                    instance["InstanceId"],
                    tags[TAG_JOB],
                    tags.get(TAG_RUN),
                    tags.get(TAG_FLOW_RUN),
                    reason,
                    instance["LaunchTime"],
                )
            )
    return orphans


def _orphan_reason(
    instance: dict[str, Any],
    tags: dict[str, str],
    flow_run_states: dict[str, str | None],
    watched_at: dict[str, datetime | None],
    now: datetime,
    stale_after: timedelta,
) -> str | None:
    expires_at = parse_time(tags.get(TAG_EXPIRES))
    if expires_at is not None and expires_at <= now:
        return f"it expired {_ago(now - expires_at)} ago"
    flow_run_id = tags.get(TAG_FLOW_RUN)
    state = None
    if flow_run_id:  # without the tag no flow run can vouch for it: the run-record rules decide
        state = flow_run_states.get(flow_run_id)
        if state is None:
            return f"its flow run {flow_run_id} is unknown to Prefect"
        if state in FINAL_STATES:
            return f"its flow run {flow_run_id} is {state}"
    run_id = tags.get(TAG_RUN)
    watched = watched_at.get(run_id) if run_id else None
    said = f"its flow run says {state} but " if state else ""
    if watched is not None:
        if now - watched > stale_after:
            return f"{said}run {run_id} was last watched {_ago(now - watched)} ago: its watcher is gone"
        return None
    launched_at = instance["LaunchTime"]
    if now - launched_at > stale_after:
        record = f"run {run_id} has no run record" if run_id else "it has no run id"
        return f"{said}{record} and it was launched {_ago(now - launched_at)} ago"
    return None


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 time as an aware datetime (naive means UTC); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def reap(
    clients: Callable[[str], Any],
    models_bucket: str,
    flow_run_states_fn: FlowRunStates,
    *,
    dry_run: bool,
    stale_after: timedelta,
    now: datetime | None = None,
) -> ReapReport:
    """List our instances, read each run's record once, ask Prefect once, terminate the orphans.

    The flow runs' states are read after the instances and the records, so a run that ended in
    between is seen as ended rather than as still watched.
    """
    ec2, s3 = clients("ec2"), clients("s3")
    instances = tagged_instances(ec2)
    tags = [instance_tags(instance) for instance in instances]
    run_ids = sorted({tag[TAG_RUN] for tag in tags if tag.get(TAG_RUN)})
    watched_at = {run_id: _watched_at(s3, models_bucket, run_id) for run_id in run_ids}
    flow_run_ids = sorted({tag[TAG_FLOW_RUN] for tag in tags if tag.get(TAG_FLOW_RUN)})
    flow_run_states = flow_run_states_fn(flow_run_ids) if flow_run_ids else {}
    orphans = find_orphans(instances, flow_run_states, watched_at, now or datetime.now(UTC), stale_after)
    terminated = [] if dry_run else _terminate(ec2, [orphan.instance_id for orphan in orphans])
    return ReapReport(len(instances), orphans, terminated, dry_run)


def _watched_at(s3, bucket: str, run_id: str) -> datetime | None:
    record, _ = read_json(s3, bucket, run_folder(run_id) + RECORD)
    return parse_time(record.get("watched_at")) if record else None


def _terminate(ec2, instance_ids: list[str]) -> list[str]:
    terminated = []
    for start in range(0, len(instance_ids), TERMINATE_BATCH):
        answer = ec2.terminate_instances(InstanceIds=instance_ids[start : start + TERMINATE_BATCH])
        terminated += [item["InstanceId"] for item in answer["TerminatingInstances"]]
    return terminated
