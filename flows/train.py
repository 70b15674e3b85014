"""Flow `train-model`: validate -> plan -> write job specs -> launch -> monitor -> collect the best.

Every instance the flow launched is terminated whatever happens: at the end of the flow (success or
failure), by the hooks when the flow fails, is cancelled or crashes (they find the instances by their
`mltp:flow-run-id` tag, so they work from another process too), and by `reap-orphans` when even the
hooks could not run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import Field

from blocks.platform import PlatformBlocks, load_blocks
from flows.parameters import (
    Algorithm,
    Compute,
    Folds,
    Grid,
    Holdout,
    Hyperparameters,
    MaxRuntimeMinutes,
    MinMetric,
    ModelName,
    Monitoring,
    PrimaryMetric,
    Promote,
    RegisterBest,
    Seed,
    Target,
    Task,
    document_parameters,
)
from mltp.aws import error_code
from mltp.compute.base import CapacityError, JobLaunch
from mltp.compute.ec2 import tagged_instances, terminate_instances
from mltp.errors import BucketError, MltpError
from mltp.evaluation_plots import DrawnEvaluation, draw, markdown_section
from mltp.gates import QualityGate
from mltp.jobs import expand_grid
from mltp.monitor import (
    QUICK_LOOK_S,
    QUICK_LOOK_WINDOW_S,
    LogCursor,
    MonitorSettings,
    Verdict,
    assess,
    eta_seconds,
    progress_changed,
    status_written,
)
from mltp.prefect_api import flow_run_url
from mltp.registry import (
    AliasRaceError,
    RejectedVersionError,
    model_name_for,
    shown_metric,
    validate_model_name,
)
from mltp.runs import Shard, attempt_spec, best_shard, observed_cost_usd, run_folder
from tasks.registry import announce, check_model_name, current_champion, promote_if_better, register_model
from tasks.training import (
    launch_job,
    make_backend,
    poll_jobs,
    prepare_training,
    publish_trainer,
    read_evaluation,
    read_summary,
    record_run,
    store_run_report,
    terminate_compute,
    write_job_spec,
)

LEASE_RENEW_S = 30.0


class TrainingFailed(MltpError):
    """No shard produced a model; `kind` says whose fault it was (user, trainer, lost, timeout, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = 2 if kind == "user" else 1


def terminate_flow_run_instances(flow, flow_run, state) -> None:
    """Flow hook (failure, cancellation, crash): terminate every instance tagged with this flow run."""
    logger = get_run_logger() if _in_run_context() else None
    blocks = load_blocks()
    ec2 = blocks.client("ec2")
    ids = [instance["InstanceId"] for instance in tagged_instances(ec2, flow_run_id=str(flow_run.id))]
    stopped = terminate_instances(ec2, ids) if ids else []
    if logger and stopped:
        logger.warning("flow run ended in %s: terminated %s", state.type.value, ", ".join(stopped))


def _in_run_context() -> bool:
    try:
        get_run_context()
    except RuntimeError:
        return False
    return True


CLEANUP_HOOKS = [terminate_flow_run_instances]


@flow(
    name="train-model",
    on_failure=CLEANUP_HOOKS,
    on_cancellation=CLEANUP_HOOKS,
    on_crashed=CLEANUP_HOOKS,
)
@document_parameters
def train_model(
    dataset: Annotated[str, Field(description="Name of an ingested dataset")],
    algorithm: Algorithm = "random_forest",
    dataset_version: Annotated[str | None, Field(description="Dataset version; empty for the latest")] = None,
    target: Target = None,
    task: Task = None,
    hyperparameters: Hyperparameters = {},  # noqa: B006 - Prefect copies parameters; renders as a JSON field
    grid: Grid = {},  # noqa: B006
    compute: Compute = "auto",
    max_runtime_minutes: MaxRuntimeMinutes = 60,
    model_name: ModelName = None,
    primary_metric: PrimaryMetric = None,
    folds: Folds = None,
    holdout: Holdout = 0.2,
    seed: Seed = 0,
    monitoring: Monitoring = MonitorSettings(),
    register_best: RegisterBest = True,
    min_metric: MinMetric = None,
    promote: Promote = False,
) -> dict[str, Any]:
    """Train a scikit-learn model on an ingested dataset on the compute the planner picks, then register
    the best candidate."""
    started = time.monotonic()
    logger = get_run_logger()
    flow_run = get_run_context().flow_run
    name = validate_model_name(model_name or model_name_for(dataset))
    gate = QualityGate.parse(min_metric) if min_metric else None
    blocks = load_blocks()
    candidates = expand_grid(hyperparameters, grid)
    prepared = prepare_training(
        blocks,
        dataset=dataset,
        dataset_version=dataset_version,
        algorithm=algorithm,
        candidates=candidates,
        compute=compute,
        max_runtime_minutes=max_runtime_minutes,
        heartbeat_s=monitoring.heartbeat_s,
        target=target,
        task=task,
        primary_metric=primary_metric,
        folds=folds,
        holdout=holdout,
        seed=seed,
    )
    plan, shards = prepared.plan, prepared.shards
    if gate:
        gate.check_metric(shards[0].spec.task)  # before paying for compute
    if register_best:
        check_model_name(blocks, name, shards[0].spec.task, shards[0].spec.target)
    code = publish_trainer(blocks) if plan.backend == "ec2" and not blocks.ec2.trainer_preinstalled else None
    backend = make_backend(blocks, plan, code)
    watch = _Watch(blocks, backend, prepared, str(flow_run.id), monitoring)
    with _vanished_buckets_named():
        try:
            watch.launch()
            watch.follow()
        finally:
            live = [shard.launched for shard in shards if shard.launched is not None]
            if live:
                terminate_compute(backend, live)
        best = best_shard(shards, shards[0].spec.primary_metric)
        report = _report(prepared, watch, best, name, time.monotonic() - started)
        evaluation = draw(None)
        if best is not None:
            report["summary"] = read_summary(blocks, best)
            evaluation = draw(read_evaluation(blocks, shards, best))
        _publish_report(report, evaluation)
        report.update(version=None, registered=False, promoted=False, gate=str(gate) if gate else None)
        if best is not None and register_best:
            report.update(_register(blocks, name, report, gate, promote, str(flow_run.id), evaluation))
        store_run_report(blocks, prepared.run_id, report)
    if best is None:
        failed = next(shard for shard in shards if shard.outcome == "failed")
        raise TrainingFailed(
            f"training failed ({failed.kind}): {failed.spec.job_id}: {failed.message}", failed.kind
        )
    for shard in shards:
        if shard.outcome == "failed":  # the other shards' candidates still compete
            logger.warning(
                "best of the rest: %s failed (%s): %s", shard.spec.job_id, shard.kind, shard.message
            )
    logger.info(
        "best: %s %s from %s in %.0f s",
        best.status["metrics"],
        best.status["params"],
        best.spec.job_id,
        report["duration_s"],
    )
    return report


@contextmanager
def _vanished_buckets_named() -> Iterator[None]:
    """A bucket that vanished while the run went on (deleted, or a sandbox restarted with an empty
    store) ends the run with one line naming it, not with the traceback of whichever call hit it first."""
    try:
        yield
    except ClientError as error:
        if error_code(error) != "NoSuchBucket":
            raise
        bucket = error.response.get("Error", {}).get("BucketName") or "a bucket of the run"
        raise BucketError(
            f"the bucket {bucket} vanished while the run went on (deleted, or the sandbox restarted): "
            "nothing was registered; recreate it (`mltp blocks init`, or `mltp sandbox up`) and train again",
            s3_uri=f"s3://{bucket}",
        ) from error


class _Watch:
    """The launch-and-monitor loop: one poll per tick for every job, verdicts, relaunches."""

    def __init__(
        self, blocks: PlatformBlocks, backend, prepared, flow_run_id: str, settings: MonitorSettings
    ):
        self.blocks, self.backend, self.prepared = blocks, backend, prepared
        self.flow_run_id, self.settings = flow_run_id, settings
        self.logger = get_run_logger()
        self.cursor = LogCursor(after_ms=int(datetime.now(UTC).timestamp() * 1000) - 60_000)
        self.started = time.monotonic()
        self.first_progress: tuple[float, float] | None = None
        self.shown: tuple[float, float] = (0.0, time.monotonic())  # the progress on show, and since when
        self.last_lease = 0.0
        self.launches: list[dict[str, Any]] = []

    @property
    def shards(self) -> list[Shard]:
        return self.prepared.shards

    def launch(self) -> None:
        self._record()  # before any launch: the hooks and the reaper can find what this run starts
        for shard in self.shards:
            self._launch(shard)

    def follow(self) -> None:
        """Until every job settled: poll, relay, relaunch what was lost."""
        self.artifact = create_progress_artifact(0.0, description=self._describe_progress(0.0, None))
        create_link_artifact(
            f"s3://{self.blocks.models.bucket_name}/{run_folder(self.prepared.run_id)}",
            link_text=self.prepared.run_id,
            description="The run's folder: its record (run.json), its jobs, and when it ends its report "
            "(report.json)",
        )
        window_start = datetime.now(UTC) - timedelta(minutes=1)
        while any(shard.active for shard in self.shards):
            self._wait(self.settings.interval(time.monotonic() - self.started))
            self._tick(window_start)
            window_start = datetime.now(UTC) - timedelta(seconds=self.settings.max_poll_interval_s + 30)

    def _wait(self, seconds: float) -> None:
        """Until the next poll, or sooner when a young run's job writes its result."""
        until = time.monotonic() + seconds
        if time.monotonic() - self.started < QUICK_LOOK_WINDOW_S:
            waiting = {shard.spec.job_id for shard in self.shards if shard.active and shard.launched}
            s3, bucket = self.blocks.client("s3"), self.blocks.models.bucket_name
            while until - time.monotonic() > QUICK_LOOK_S:
                time.sleep(QUICK_LOOK_S)
                try:
                    if status_written(s3, bucket, f"runs/{self.prepared.run_id}", waiting):
                        return
                except (BotoCoreError, ClientError):  # only a shortcut: the poll reports what is wrong
                    break
        time.sleep(max(0.0, until - time.monotonic()))

    def _record(self) -> None:
        self.last_lease = time.monotonic()
        plan = self.prepared.plan
        record_run(
            self.blocks,
            self.prepared.run_id,
            {
                "run_id": self.prepared.run_id,
                "flow_run_id": self.flow_run_id,
                "backend": plan.backend,
                "deadline": self.prepared.deadline.isoformat(timespec="seconds"),
                "jobs": [shard.as_dict() for shard in self.shards],
                "launches": self.launches,
            },
        )

    def _launch(self, shard: Shard) -> None:
        write_job_spec(self.blocks, shard)
        bucket, prefix = shard.spec.output_bucket_and_prefix
        job = JobLaunch(
            job_id=shard.spec.job_id,
            run_id=self.prepared.run_id,
            job_uri=f"s3://{bucket}/{prefix}job.json",
            output_prefix=shard.spec.output_prefix,
            flow_run_id=self.flow_run_id,
            attempt=len(shard.attempts) + 1,
            deadline=self.prepared.deadline,
            on_demand=shard.on_demand,
        )
        try:
            shard.launched = launch_job(self.backend, job)
        except CapacityError as error:
            self._settle(shard, Verdict("lost", "capacity", str(error)))
            return
        shard.outcome, shard.last_heartbeat = "running", None
        self.launches.append(shard.launched.as_dict())
        self._record()

    def _tick(self, window_start: datetime) -> None:
        active = [shard for shard in self.shards if shard.active and shard.launched is not None]
        observation = poll_jobs(
            self.blocks,
            self.backend,
            [shard.launched for shard in active],
            self.prepared.run_id,
            self.cursor,
            window_start,
            self.settings.max_log_lines_per_tick,
            {shard.spec.job_id for shard in active if shard.last_heartbeat},
        )
        now = datetime.now(UTC)
        settled = False
        for shard in active:
            job_id = shard.spec.job_id
            shard.progress = max(shard.progress, observation.progress.get(job_id, 0.0))
            beat = observation.heartbeats.get(job_id)
            if beat and (shard.last_heartbeat is None or beat > shard.last_heartbeat):
                shard.last_heartbeat = min(beat, now)
            verdict = assess(
                shard.launched,
                observation.statuses.get(job_id),
                observation.compute.get(job_id),
                shard.last_heartbeat,
                self.prepared.deadline,
                self.settings,
                now,
            )
            if verdict.outcome != "running":
                self._settle(shard, verdict, observation.statuses.get(job_id))
                settled = True
        for shard in self.shards:  # capacity errors at launch wait for the next tick to retry
            if shard.outcome == "pending" and shard.launched is None and shard.attempts:
                self._launch(shard)
        self._show_progress()
        # The record shows each job's fate as soon as it is known while the others go on.
        if (settled and any(shard.active for shard in self.shards)) or (
            time.monotonic() - self.last_lease > LEASE_RENEW_S
        ):
            self._record()

    def _settle(self, shard: Shard, verdict: Verdict, status: dict[str, Any] | None = None) -> None:
        shard.record_attempt(verdict)
        if verdict.outcome in ("lost", "timeout") and shard.launched is not None:
            terminate_compute(self.backend, [shard.launched])
        if verdict.outcome == "lost" and shard.may_relaunch(verdict, self.settings.max_relaunches):
            self.logger.warning("%s: %s (%s): relaunching", shard.spec.job_id, verdict.message, verdict.kind)
            shard.on_demand = shard.on_demand or verdict.kind == "interrupted"
            attempt = len(shard.attempts) + 1
            shard.spec = attempt_spec(
                shard.spec, self.prepared.run_id, shard.number, attempt, self.blocks.models.bucket_name
            )
            shard.launched, shard.outcome, shard.progress = None, "pending", 0.0
            if verdict.kind != "capacity":
                self._launch(shard)
            return
        if verdict.outcome == "lost":
            verdict = Verdict("failed", verdict.kind, f"{verdict.message} ({shard.attempts_note()})")
        shard.finish(verdict, status)
        level = self.logger.info if shard.outcome == "succeeded" else self.logger.error
        level(
            "%s: %s%s",
            shard.spec.job_id,
            shard.outcome,
            f" ({verdict.kind}): {verdict.message}" if verdict.kind else "",
        )

    def _show_progress(self) -> None:
        overall = sum(shard.progress for shard in self.shards) / len(self.shards)
        now = time.monotonic()
        if self.first_progress is None and overall > 0:
            self.first_progress = (now, overall)
        eta = eta_seconds(self.first_progress, (now, overall)) if self.first_progress else None
        if not progress_changed(self.shown, overall, now):
            return
        try:
            update_progress_artifact(
                self.artifact, 100.0 * overall, description=self._describe_progress(overall, eta)
            )
            self.shown = (overall, now)
        except (httpx.HTTPError, PrefectHTTPStatusError) as error:
            # Only a display: a Prefect API down for longer than its client's retries (a restarted
            # server) must not end a run whose compute is paid for. The next tick shows it again.
            self.logger.warning("progress not shown: the Prefect API did not answer (%s)", error)

    def _describe_progress(self, overall: float, eta: float | None) -> str:
        done = sum(shard.outcome == "succeeded" for shard in self.shards)
        left = f", about {eta:.0f} s left at the observed rate" if eta else ""
        return (
            f"Training {self.prepared.run_id} on {self.prepared.plan.backend}: "
            f"{done}/{len(self.shards)} jobs done, {100 * overall:.0f}%{left}"
        )


def _register(
    blocks,
    name: str,
    report: dict[str, Any],
    gate,
    promote: bool,
    flow_run_id: str,
    evaluation: DrawnEvaluation,
) -> dict:
    """Register the best model if it passes the gate; with `promote`, move the champion when it is better."""
    logger = get_run_logger()
    if gate and not gate.passes(report["metrics"]):
        shown = shown_metric(report["metrics"].get(gate.metric))
        logger.warning("not registered: %s %s fails the quality gate %s", gate.metric, shown, gate)
        return {"registered": False}
    champion = current_champion(blocks, name)
    version = register_model(blocks, name, report, flow_run_id, flow_run_url(flow_run_id), evaluation.data)
    promotion = None
    if promote:
        try:
            promotion = promote_if_better(blocks, version, flow_run_id)
        except (AliasRaceError, RejectedVersionError) as error:  # moved or rejected meanwhile: theirs stands
            logger.warning("not promoted: %s", error)
            promotion = {"promoted": False, "reason": str(error)}
    announce(blocks, version, champion, promotion, evaluation)
    return {
        "registered": True,
        "version": version["version"],
        "promoted": bool(promotion and promotion["promoted"]),
    }


def _report(
    prepared, watch: _Watch, best: Shard | None, model_name: str, duration_s: float
) -> dict[str, Any]:
    plan = prepared.plan
    durations = [
        float(shard.status["duration_s"])
        for shard in prepared.shards
        if shard.status and shard.status.get("duration_s")
    ]
    return {
        "run_id": prepared.run_id,
        "model": model_name,
        "status": "succeeded" if best else "failed",
        "dataset": {key: prepared.manifest[key] for key in ("name", "version", "sha256", "rows")},
        "compute": {**plan.as_dict(), "backend": plan.backend, "reasons": plan.reasons},
        "jobs": [shard.as_dict() for shard in prepared.shards],
        "best": (
            {
                "job_id": best.spec.job_id,
                "params": best.status["params"],
                "metrics": best.status["metrics"],
                "model_uri": best.status["model_uri"],
                "model_sha256": best.status["model_sha256"],
            }
            if best
            else None
        ),
        "metrics": best.status["metrics"] if best else None,
        "primary_metric": prepared.shards[0].spec.primary_metric,
        "duration_s": round(duration_s, 3),
        "cost_usd_estimate": plan.estimated_cost_usd,
        "cost_usd_observed": observed_cost_usd(plan.backend, plan.instance_type, plan.memory_mb, durations),
        "launches": watch.launches,
    }


def _publish_report(report: dict[str, Any], evaluation: DrawnEvaluation) -> None:
    plan = report["compute"]
    lines = [
        f"# Training {report['run_id']}: {report['status']}",
        "",
        f"Dataset **{report['dataset']['name']}@{report['dataset']['version']}** "
        f"({report['dataset']['rows']:,} rows), {report['duration_s']:.0f} s, "
        f"estimated ${report['cost_usd_estimate']:.4f} (trainer time ${report['cost_usd_observed']:.4f}).",
        "",
        f"## Compute: {plan['backend']}"
        + (f" ({plan['instances']} x {plan['instance_type']})" if plan["backend"] == "ec2" else ""),
        "",
        *[f"- {reason}" for reason in plan["reasons"]],
        "",
        "## Jobs",
        "",
        "| job | state | attempts | candidates | metrics | message |",
        "|---|---|---|---|---|---|",
        *[
            f"| {job['job_id']} | {job['state']} | {len(job['attempts'])} | {job['candidates']} | "
            f"{job['metrics'] or ''} | {job['message'] or ''} |"
            for job in report["jobs"]
        ],
    ]
    if report["best"]:
        best = report["best"]
        lines += [
            "",
            f"## Best: {best['metrics']} with {best['params']}",
            "",
            f"Model: `{best['model_uri']}`",
            "",
            *markdown_section(evaluation),
        ]
    key = re.sub(r"[^a-z0-9-]+", "-", f"training-{report['model']}".lower()).strip("-")
    create_markdown_artifact("\n".join(lines), key=key, description="Training run")
