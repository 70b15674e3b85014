"""`mltp plan` (where a job would run, and why) and `mltp train` (run it; local backend for now)."""

from __future__ import annotations

import json as jsonlib
import os
from typing import Any

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json
from mltp.datasets import get_manifest, parse_reference
from mltp.errors import ConfigError, MltpError
from mltp.jobs import build_job_spec, candidates_from, write_job
from mltp.planning import ComputePlan, Workload, plan_compute

DATASET = typer.Option(..., "--dataset", help="NAME or NAME@VERSION of an ingested dataset.")
ALGORITHM = typer.Option(..., "--algorithm", help="e.g. random_forest, hist_gradient_boosting, ridge, knn.")
TARGET = typer.Option(None, "--target", help="Target column (default: the one given at ingest).")
TASK = typer.Option(None, "--task", help="classification or regression (default: from the target).")
PARAM = typer.Option([], "--param", help="Hyperparameter k=v (repeatable).")
GRID = typer.Option([], "--grid", help="Grid axis k=v1,v2 (repeatable): one candidate per combination.")
FOLDS = typer.Option(None, "--folds", min=2, max=20, help="k-fold cross-validation instead of a holdout.")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _prepare(
    dataset, algorithm, target, task, params, grid, folds, **spec_options
) -> tuple[Any, Any, Any, Any]:
    from blocks.platform import load_blocks, planner_settings

    name, version = parse_reference(dataset)
    blocks = load_blocks()
    clients = blocks.credentials.get_client
    manifest = get_manifest(clients, blocks.datasets.bucket_name, name, version)
    candidates = candidates_from(params, grid)
    spec = build_job_spec(
        manifest,
        algorithm=algorithm,
        candidates=candidates,
        models_bucket=blocks.models.bucket_name,
        target=target,
        task=task,
        folds=folds,
        **spec_options,
    )
    workload = Workload.of({**manifest, "target": spec.target}, algorithm, candidates, folds)
    return blocks, spec, workload, planner_settings(blocks)


def _print_plan(plan: ComputePlan) -> None:
    size = f"{plan.instances} x {plan.instance_type}" if plan.backend == "ec2" else f"{plan.memory_mb:,} MB"
    console.print(
        f"plan: {plan.backend} ({size}), about {plan.estimated_memory_mb:,} MB, "
        f"{plan.estimated_runtime_s:,} s, ${plan.estimated_cost_usd:.4f} (prices of {plan.prices_as_of})"
    )
    for reason in plan.reasons:
        console.print(f"  - {reason}")


def plan(
    dataset: str = DATASET,
    algorithm: str = ALGORITHM,
    target: str | None = TARGET,
    task: str | None = TASK,
    param: list[str] = PARAM,
    grid: list[str] = GRID,
    folds: int | None = FOLDS,
    compute: str = typer.Option("auto", "--compute", help="auto, lambda, ec2 or local."),
    json: bool = JSON,
) -> None:
    """Where a training job would run, how big, how long, what it would cost, and why."""
    if compute not in ("auto", "lambda", "ec2", "local"):
        raise ConfigError(f"--compute {compute!r}: use auto, lambda, ec2 or local")
    with prefect_connection():
        _, spec, workload, settings = _prepare(dataset, algorithm, target, task, param, grid, folds)
    chosen = plan_compute(workload, settings, compute)
    if json:
        emit_json(
            {**chosen.as_dict(), "task": spec.task, "target": spec.target, "candidates": spec.candidates}
        )
    else:
        _print_plan(chosen)


def train(
    dataset: str = DATASET,
    algorithm: str = ALGORITHM,
    target: str | None = TARGET,
    task: str | None = TASK,
    param: list[str] = PARAM,
    grid: list[str] = GRID,
    folds: int | None = FOLDS,
    holdout: float = typer.Option(0.2, "--holdout", min=0.05, max=0.5, help="Share of rows held out."),
    metric: str | None = typer.Option(None, "--metric", help="Primary metric that picks the best candidate."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the split and the estimator."),
    compute: str = typer.Option("local", "--compute", help="Only local so far (EC2 and Lambda come next)."),
    json: bool = JSON,
) -> None:
    """Train on the chosen compute and report the metrics."""
    if compute != "local":
        raise ConfigError(f"--compute {compute!r} is not available yet: use --compute local")
    from blocks.platform import trainer_environment
    from mltp.compute.local import LocalRun
    from mltp.s3_json import read_json

    with prefect_connection():
        blocks, spec, workload, settings = _prepare(
            dataset,
            algorithm,
            target,
            task,
            param,
            grid,
            folds,
            holdout=holdout,
            primary_metric=metric,
            seed=seed,
        )
        chosen = plan_compute(workload, settings, "local")
        job_uri = write_job(blocks.credentials.get_client, spec)
        env = {**os.environ, **trainer_environment(blocks.credentials)}
    if not json:
        _print_plan(chosen)
        console.print(f"job {spec.job_id}: {job_uri}")
    code = LocalRun(job_uri, env).wait(
        on_line=(lambda line: None) if json else lambda line: console.print(f"  {line}")
    )
    bucket, prefix = spec.output_bucket_and_prefix
    status, _ = read_json(blocks.credentials.get_client("s3"), bucket, f"{prefix}status.json")
    if status is None:
        raise MltpError(f"the trainer exited with {code} and wrote no status: see the log above")
    report = {"job_id": spec.job_id, "job_uri": job_uri, "plan": chosen.as_dict(), **status}
    if json:
        emit_json(report)
    elif status["state"] == "succeeded":
        console.print(f"succeeded: {jsonlib.dumps(status['metrics'])} with {status['params']}")
        console.print(f"model: {status['model_uri']}")
    if status["state"] != "succeeded":
        if not json:
            console.print(f"[red]failed[/] ({status['kind']}): {status['message']}")
        raise typer.Exit(2 if status["kind"] == "user" else 1)
