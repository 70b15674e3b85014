"""Prefect tasks of `train-model`: thin wrappers over mltp (retries for transient AWS errors, logging)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.platform import PlatformBlocks, planner_settings, trainer_environment
from mltp.compute.aws_lambda import LambdaBackend
from mltp.compute.base import Backend, JobLaunch, Launched
from mltp.compute.ec2 import Ec2Backend, Ec2Settings
from mltp.compute.local import LocalBackend
from mltp.compute.trainer_code import publish_trainer_code
from mltp.compute.user_data import render_user_data
from mltp.dataset_catalog import get_manifest, parse_reference
from mltp.jobs import build_job_spec, expand_grid, new_job_id, write_job
from mltp.monitor import LogCursor, Observation, poll
from mltp.planning import LAMBDA_MAX_TIMEOUT_S, ComputePlan, Workload, plan_compute
from mltp.runs import Shard, attempt_spec, split_candidates, write_run_record, write_run_report
from mltp.trainer.spec import JobSpec
from tasks.retries import AWS_RETRIES

EC2_BOOT_MINUTES = 10  # the instance's own hard limit is the job's runtime plus booting and installing


@dataclass
class PreparedRun:
    run_id: str
    plan: ComputePlan
    shards: list[Shard]
    deadline: datetime
    manifest: dict[str, Any]


def validate_and_plan(
    blocks: PlatformBlocks,
    dataset: str,
    dataset_version: str | None,
    algorithm: str,
    candidates: list[dict[str, Any]],
    compute: str,
    **spec_options: Any,
) -> tuple[dict[str, Any], JobSpec, ComputePlan]:
    """The dataset's manifest, the validated job spec and the compute plan: what `mltp plan` shows and
    what a training run starts from."""
    manifest = get_manifest(blocks.client, blocks.datasets.bucket_name, dataset, dataset_version)
    spec = build_job_spec(
        manifest,
        algorithm=algorithm,
        candidates=candidates,
        models_bucket=blocks.models.bucket_name,
        **spec_options,
    )
    workload = Workload.of(
        {**manifest, "target": spec.target}, algorithm, candidates, spec_options.get("folds")
    )
    return manifest, spec, plan_compute(workload, planner_settings(blocks), compute)


def plan_request(
    blocks: PlatformBlocks,
    dataset: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
    grid: dict[str, list[Any]],
    compute: str,
    **spec_options: Any,
) -> tuple[str, str | None, JobSpec, ComputePlan]:
    """A training request as `mltp plan` and the MCP tools take it (NAME or NAME@VERSION, fixed
    hyperparameters and grid axes): the dataset's name and version, the validated spec and the plan."""
    name, version = parse_reference(dataset)
    candidates = expand_grid(hyperparameters, grid)
    _, spec, plan = validate_and_plan(blocks, name, version, algorithm, candidates, compute, **spec_options)
    return name, version, spec, plan


@task(name="plan-training", cache_policy=NO_CACHE, **AWS_RETRIES)
def prepare_training(
    blocks: PlatformBlocks,
    *,
    dataset: str,
    dataset_version: str | None,
    algorithm: str,
    candidates: list[dict[str, Any]],
    compute: str,
    max_runtime_minutes: float,
    heartbeat_s: float,
    **spec_options: Any,
) -> PreparedRun:
    """Validate everything that can be checked before paying for compute, then plan and shard."""
    logger = get_run_logger()
    manifest, base, plan = validate_and_plan(
        blocks, dataset, dataset_version, algorithm, candidates, compute, **spec_options
    )
    limit_minutes = _runtime_limit_minutes(plan, blocks)
    if max_runtime_minutes > limit_minutes:
        plan.reasons.append(
            f"the deadline is {limit_minutes} minutes, not {max_runtime_minutes:g}: the {plan.backend} "
            "compute block allows no longer"
        )
    deadline = datetime.now(UTC) + timedelta(minutes=min(max_runtime_minutes, limit_minutes))
    run_id = new_job_id(manifest["name"], algorithm)
    base = base.model_copy(update={"deadline": deadline, "heartbeat_seconds": heartbeat_s})
    shards = [
        Shard(
            number,
            chunk,
            attempt_spec(
                base.model_copy(update={"candidates": chunk}), run_id, number, 1, blocks.models.bucket_name
            ),
        )
        for number, chunk in enumerate(split_candidates(candidates, plan.instances), start=1)
    ]
    for reason in plan.reasons:
        logger.info("plan: %s", reason)
    return PreparedRun(run_id, plan, shards, deadline, manifest)


def _runtime_limit_minutes(plan: ComputePlan, blocks: PlatformBlocks) -> int:
    if plan.backend == "ec2":
        return blocks.ec2.max_runtime_minutes
    if plan.backend == "lambda":
        return math.floor(min(blocks.lambda_.timeout_seconds, LAMBDA_MAX_TIMEOUT_S) / 60) or 1
    return 7 * 24 * 60


def make_backend(blocks: PlatformBlocks, plan: ComputePlan, code: dict[str, str] | None) -> Backend:
    """The backend the plan chose, configured from the blocks (the sandbox differs only there)."""
    credentials = blocks.credentials
    if plan.backend == "lambda":
        return LambdaBackend(blocks.lambda_client(), blocks.lambda_.function_name)
    if plan.backend == "local":
        return LocalBackend({**os.environ, **trainer_environment(credentials)})
    ec2 = blocks.ec2
    settings = Ec2Settings(
        plan.instance_type,
        ec2.ami_id,
        ec2.subnet_id,
        tuple(ec2.security_group_ids),
        ec2.instance_profile,
        ec2.key_name,
        ec2.use_spot,
    )

    def user_data(job: JobLaunch) -> str:
        minutes = math.ceil((job.deadline - datetime.now(UTC)).total_seconds() / 60) + EC2_BOOT_MINUTES
        return render_user_data(
            job_uri=job.job_uri,
            output_prefix=job.output_prefix,
            wheel_uri=code["wheel_uri"] if code else None,
            requirements_uri=code["requirements_uri"] if code else None,
            max_runtime_minutes=min(minutes, ec2.max_runtime_minutes),
            region=credentials.region_name or "us-east-1",
        )

    return Ec2Backend(
        blocks.client("ec2"),
        blocks.client("ssm"),
        settings,
        user_data,
        launch_client=blocks.single_attempt_client("ec2"),
    )


@task(name="publish-trainer", cache_policy=NO_CACHE, **AWS_RETRIES)
def publish_trainer(blocks: PlatformBlocks) -> dict[str, str]:
    code = publish_trainer_code(blocks.client("s3"), blocks.models.bucket_name)
    get_run_logger().info("trainer code: %s", code.wheel_uri)
    return {"wheel_uri": code.wheel_uri, "requirements_uri": code.requirements_uri}


@task(name="write-job-spec", cache_policy=NO_CACHE, **AWS_RETRIES)
def write_job_spec(blocks: PlatformBlocks, shard: Shard) -> str:
    return write_job(blocks.client, shard.spec)


@task(name="record-run", cache_policy=NO_CACHE, **AWS_RETRIES)
def record_run(blocks: PlatformBlocks, run_id: str, record: dict[str, Any]) -> None:
    write_run_record(blocks.client("s3"), blocks.models.bucket_name, run_id, record)


@task(name="store-run-report", cache_policy=NO_CACHE, **AWS_RETRIES)
def store_run_report(blocks: PlatformBlocks, run_id: str, report: dict[str, Any]) -> None:
    write_run_report(blocks.client("s3"), blocks.models.bucket_name, run_id, report)


@task(name="launch-job", cache_policy=NO_CACHE, **AWS_RETRIES)
def launch_job(backend: Backend, job: JobLaunch) -> Launched:
    launched = backend.launch(job)
    get_run_logger().info("%s attempt %d on %s: %s", job.job_id, job.attempt, backend.name, launched.handle)
    return launched


@task(name="poll-jobs", cache_policy=NO_CACHE, **AWS_RETRIES)
def poll_jobs(
    blocks: PlatformBlocks,
    backend: Backend,
    launched: list[Launched],
    run_id: str,
    cursor: LogCursor,
    window_start: datetime,
    max_log_lines: int,
    started: set[str],
) -> Observation:
    observation = poll(
        blocks.client,
        backend,
        launched,
        blocks.models.bucket_name,
        f"runs/{run_id}",
        cursor,
        window_start,
        max_log_lines,
        started,
    )
    logger = get_run_logger()
    for stream, moment, message in observation.log_lines:
        logger.info("[%s %s] %s", stream.removeprefix(f"{run_id}-"), moment.strftime("%H:%M:%S"), message)
    if observation.more_log_lines:
        logger.info("(more trainer log lines than relayed per poll: all of them are in CloudWatch Logs)")
    return observation


@task(name="terminate-compute", cache_policy=NO_CACHE, **AWS_RETRIES)
def terminate_compute(backend: Backend, launched: list[Launched]) -> list[str]:
    stopped = backend.terminate(launched)
    if stopped:
        get_run_logger().info("terminated %s", ", ".join(stopped))
    return stopped


@task(name="collect-result", cache_policy=NO_CACHE, **AWS_RETRIES)
def read_summary(blocks: PlatformBlocks, shard: Shard) -> dict[str, Any] | None:
    from mltp.s3_json import read_json

    bucket, prefix = shard.spec.output_bucket_and_prefix
    summary, _ = read_json(blocks.client("s3"), bucket, f"{prefix}metrics.json")
    return summary


@task(name="collect-evaluation", cache_policy=NO_CACHE, **AWS_RETRIES)
def read_evaluation(blocks: PlatformBlocks, shards: list[Shard], best: Shard) -> dict[str, Any] | None:
    """The best job's evaluation data, its grid candidates joined by every other succeeded job's (the grid
    is split over jobs); None when the trainer wrote none."""
    from mltp.s3_json import read_json

    s3 = blocks.client("s3")
    evaluations = {}
    for shard in shards:
        if shard.outcome == "succeeded":
            bucket, prefix = shard.spec.output_bucket_and_prefix
            evaluations[shard.number] = read_json(s3, bucket, f"{prefix}evaluation.json")[0]
    evaluation = evaluations[best.number]
    if evaluation is None or evaluation.get("error"):
        return evaluation
    candidates = [
        candidate
        for number in sorted(evaluations)
        for candidate in (evaluations[number] or {}).get("candidates", [])
    ]
    return {**evaluation, "candidates": candidates}
