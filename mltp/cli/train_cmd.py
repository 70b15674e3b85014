"""`mltp plan` (where a job would run, and why) and `mltp train` (run the `train-model` flow)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json, quiet_prefect_console
from mltp.cli.runlog import echo_run_log
from mltp.dataset_catalog import parse_reference
from mltp.errors import ConfigError, MltpError
from mltp.jobs import parse_grid, parse_params
from mltp.monitor import MonitorSettings
from mltp.planning import COMPUTE_CHOICES, ComputePlan
from mltp.s3_json import strict_dumps
from mltp.trainer.algorithms import get_algorithm
from mltp.trainer.spec import TASKS

DATASET = typer.Option(..., "--dataset", help="NAME or NAME@VERSION of an ingested dataset.")
ALGORITHM = typer.Option(..., "--algorithm", help="e.g. random_forest, hist_gradient_boosting, ridge, knn.")
TARGET = typer.Option(None, "--target", help="Target column (default: the one given at ingest).")
TASK = typer.Option(None, "--task", help="classification or regression (default: from the target).")
PARAM = typer.Option([], "--param", help="Hyperparameter k=v (repeatable).")
GRID = typer.Option([], "--grid", help="Grid axis k=v1,v2 (repeatable): one candidate per combination.")
FOLDS = typer.Option(None, "--folds", min=2, max=20, help="k-fold cross-validation instead of a holdout.")
JSON = typer.Option(False, "--json", help="Print JSON.")
COMPUTE = typer.Option("auto", "--compute", help="auto (the planner decides), lambda, ec2 or local.")
# The flow's messages name its parameters, which the UI form and a deployment show; here they are options.
OPTIONS_OF_FLOW_PARAMETERS = {"max_runtime_minutes": "--max-runtime", "model_name": "--model-name"}


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
    compute: str = COMPUTE,
    json: bool = JSON,
) -> None:
    """Where a training job would run, how big, how long, what it would cost, and why."""
    _check_choices(compute, task)
    parse_reference(dataset)  # a bad reference is refused before anything connects
    hyperparameters, axes = parse_params(param), parse_grid(grid)
    with prefect_connection():
        from blocks.platform import load_blocks
        from tasks.training import plan_request

        _, _, spec, chosen = plan_request(
            load_blocks(),
            dataset,
            algorithm,
            hyperparameters,
            axes,
            compute,
            target=target,
            task=task,
            folds=folds,
        )
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
    compute: str = COMPUTE,
    max_runtime: float = typer.Option(
        60, "--max-runtime", min=0.1, max=10080, help="Minutes after which a job is stopped as timed out."
    ),
    model_name: str | None = typer.Option(None, "--model-name", help="Model name (default: the dataset's)."),
    max_relaunches: int = typer.Option(
        2,
        "--max-relaunches",
        min=0,
        max=10,
        help="Relaunches of a job whose compute was lost or interrupted.",
    ),
    heartbeat: float = typer.Option(
        15, "--heartbeat", min=1, max=300, help="Seconds between trainer heartbeats."
    ),
    heartbeat_timeout: float = typer.Option(
        90,
        "--heartbeat-timeout",
        min=3,
        max=3600,
        help="Seconds without a heartbeat after which compute is lost.",
    ),
    min_metric: str | None = typer.Option(
        None, "--min-metric", help="Register only if the metric passes, e.g. accuracy>=0.9 or rmse<12.5."
    ),
    promote: bool = typer.Option(False, "--promote", help="Make the new version champion if it is better."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the best model."),
    json: bool = JSON,
) -> None:
    """Train through the `train-model` flow on the planned compute, register the best model, report."""
    _check_choices(compute, task)
    if heartbeat >= heartbeat_timeout:
        raise ConfigError(
            f"--heartbeat {heartbeat:g} must be below --heartbeat-timeout {heartbeat_timeout:g}: every "
            "trainer would be called lost between two heartbeats"
        )
    get_algorithm(algorithm)  # the flow's parameter check would say it less clearly
    name, version = parse_reference(dataset)
    quiet_prefect_console()  # the run's log lines are echoed below instead
    with prefect_connection():
        from flows.train import train_model  # sets Prefect's logging up: echo handlers go on after

        with echo_run_log(enabled=not json), _in_option_terms():
            report = train_model(
                dataset=name,
                dataset_version=version,
                algorithm=algorithm,
                target=target,
                task=task,
                hyperparameters=parse_params(param),
                grid=parse_grid(grid),
                compute=compute,
                max_runtime_minutes=max_runtime,
                model_name=model_name,
                primary_metric=metric,
                folds=folds,
                holdout=holdout,
                seed=seed,
                register_best=register,
                min_metric=min_metric,
                promote=promote,
                monitoring=MonitorSettings(
                    max_relaunches=max_relaunches,
                    heartbeat_s=heartbeat,
                    heartbeat_timeout_s=heartbeat_timeout,
                ),
            )
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)  # mltp.model.registered must leave before this process does
    if json:
        emit_json(report)
        return
    best = report["best"]
    console.print(
        f"succeeded in {report['duration_s']:.0f} s: {strict_dumps(best['metrics'])} with {best['params']}"
    )
    if report["registered"]:
        promoted = " (now champion)" if report["promoted"] else ""
        console.print(f"model: {report['model']} version {report['version']}{promoted}")
    else:
        gate = f" (quality gate {report['gate']} not passed)" if report["gate"] else ""
        console.print(f"not registered{gate}: {best['model_uri']}")


@contextlib.contextmanager
def _in_option_terms() -> Iterator[None]:
    """An error that names a flow parameter names this command's option instead."""
    try:
        yield
    except MltpError as error:
        message = str(error)
        for parameter, option in OPTIONS_OF_FLOW_PARAMETERS.items():
            message = re.sub(rf"\b{parameter}\b", option, message)
        if message == str(error):
            raise
        error.args = (message,)
        raise


def _check_choices(compute: str, task: str | None) -> None:
    """What the flow's parameter check would refuse with a traceback."""
    if compute not in COMPUTE_CHOICES:
        raise ConfigError(f"--compute {compute!r}: use {', '.join(COMPUTE_CHOICES)}")
    if task not in (None, *TASKS):
        raise ConfigError(f"--task {task!r}: use {' or '.join(TASKS)}, or leave it out to infer it")
