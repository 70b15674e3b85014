"""A training run: its shards (one per instance or invocation), their attempts, and its record in S3.

Job ids name one attempt of one shard: `<run_id>-s<shard>-a<attempt>`. Everything of a run therefore
lives under the S3 prefix `runs/<run_id>` and the log streams starting with `<run_id>`, which is what
lets the monitor look at all of it in one call per service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mltp.compute.base import Launched
from mltp.monitor import Verdict
from mltp.pricing import EC2_INSTANCE_TYPES, EC2_MIN_BILLED_SECONDS, LAMBDA_USD_PER_GB_SECOND
from mltp.s3_json import put_json
from mltp.trainer.spec import JobSpec, better

RELAUNCHABLE = frozenset({"lost", "interrupted", "capacity"})


def job_id_of(run_id: str, shard: int, attempt: int) -> str:
    return f"{run_id}-s{shard}-a{attempt}"


def split_candidates(candidates: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Round-robin, so every shard gets a similar mix of cheap and expensive candidates."""
    shards = max(1, min(shards, len(candidates)))
    return [candidates[number::shards] for number in range(shards)]


def attempt_spec(base: JobSpec, run_id: str, shard: int, attempt: int, models_bucket: str) -> JobSpec:
    job_id = job_id_of(run_id, shard, attempt)
    return base.model_copy(update={"job_id": job_id, "output_prefix": f"s3://{models_bucket}/runs/{job_id}/"})


@dataclass
class Shard:
    """One slice of the grid and the attempts made to train it."""

    number: int
    candidates: list[dict[str, Any]]
    spec: JobSpec
    launched: Launched | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "pending"  # pending | running | succeeded | failed
    kind: str = ""
    message: str = ""
    status: dict[str, Any] | None = None
    progress: float = 0.0
    last_heartbeat: datetime | None = None
    on_demand: bool = False

    @property
    def active(self) -> bool:
        return self.outcome in ("pending", "running")

    def record_attempt(self, verdict: Verdict) -> None:
        """Keep the attempt and when it was settled: how fast a loss was seen shows in the report."""
        self.attempts.append(
            {
                "job_id": self.spec.job_id,
                "handle": self.launched.handle if self.launched else None,
                "launched_at": _iso(self.launched.launched_at) if self.launched else None,
                "settled_at": _iso(datetime.now(UTC)),
                "outcome": verdict.outcome,
                "kind": verdict.kind,
                "message": verdict.message,
            }
        )

    def finish(self, verdict: Verdict, status: dict[str, Any] | None = None) -> None:
        self.outcome = "succeeded" if verdict.outcome == "succeeded" else "failed"
        self.kind, self.message, self.status = verdict.kind, verdict.message, status
        if self.outcome == "succeeded":
            self.progress = 1.0

    def attempts_note(self) -> str:
        """How many attempts were made, and the first one's fate when it differs from the last's: the
        later losses may only be consequences (relaunches that cannot boot once the inputs are gone)."""
        first, last = self.attempts[0], self.attempts[-1]
        note = f"after {len(self.attempts)} attempts"
        return note if _cause(first) == _cause(last) else f"{note}; the first: {first['message']}"

    def may_relaunch(self, verdict: Verdict, max_relaunches: int) -> bool:
        return verdict.kind in RELAUNCHABLE and len(self.attempts) <= max_relaunches

    def as_dict(self) -> dict[str, Any]:
        status = self.status or {}
        return {
            "shard": self.number,
            "job_id": self.spec.job_id,
            "backend": self.launched.backend if self.launched else None,
            "handle": self.launched.handle if self.launched else None,
            "candidates": len(self.candidates),
            "state": self.outcome,
            "kind": self.kind or None,
            "message": self.message or None,
            "metrics": status.get("metrics"),
            "duration_s": status.get("duration_s"),
            "attempts": self.attempts,
        }


def _cause(attempt: dict[str, Any]) -> str:
    return attempt["message"].replace(attempt["handle"] or "", "")


def best_shard(shards: list[Shard], primary_metric: str) -> Shard | None:
    best = None
    for shard in shards:
        if shard.outcome != "succeeded":
            continue
        value = shard.status["metrics"][primary_metric]
        if best is None or better(primary_metric, value, best.status["metrics"][primary_metric]):
            best = shard
    return best


def observed_cost_usd(
    backend: str, instance_type: str | None, memory_mb: int, durations_s: list[float]
) -> float:
    """What the attempts' trainer time cost at on-demand prices (boot and idle time not included)."""
    if backend == "ec2" and instance_type in EC2_INSTANCE_TYPES:
        hourly = EC2_INSTANCE_TYPES[instance_type].usd_per_hour
        return round(sum(max(d, EC2_MIN_BILLED_SECONDS) for d in durations_s) * hourly / 3600, 6)
    if backend == "lambda":
        return round(sum(durations_s) * memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND, 6)
    return 0.0


def run_folder(run_id: str) -> str:
    """Everything of a run in the models bucket: its record, its jobs' specs and outputs, its report."""
    return f"runs/{run_id}/"


RECORD, REPORT = "run.json", "report.json"


def write_run_record(s3, bucket: str, run_id: str, record: dict[str, Any]) -> None:
    """`runs/<run_id>/run.json`: who launched what and how each job fares, stored before any launch and
    renewed while watched (`watched_at`), so a cleanup in another process or the reaper can tell an
    abandoned run."""
    put_json(s3, bucket, run_folder(run_id) + RECORD, {**record, "watched_at": _now()})


def write_run_report(s3, bucket: str, run_id: str, report: dict[str, Any]) -> None:
    """`runs/<run_id>/report.json`: the run's final report, as `mltp train --json` prints it."""
    put_json(s3, bucket, run_folder(run_id) + REPORT, report)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
