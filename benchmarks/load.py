"""The load suite: N `ingest-and-train` pipelines started at once, the way a burst of users' form
submissions (or a script) starts them, against one private sandbox; next to one pipeline alone.

The scenario is shared with tests/test_load.py, which runs a small burst in the CI suite: each pipeline
ingests its own small dataset (120 rows of iris, a different sample each), trains it on EC2 and registers
the result under one model name shared by all. While the runs go, the Prefect API is sampled for how many
run at once. At the end the scenario reads what they left behind: the registry's versions of that model
with their lineage, and every instance launched for the burst's jobs. `violations` says which of the
promises a burst must keep were broken: every run COMPLETED or FAILED with a reason; never more runs
RUNNING than the deployment's concurrency limit; versions exactly 1..k for the k runs that completed,
none incomplete, each from a distinct one of the runs; every completed run's instance launched and none
left running.

The suite measures that on the default sandbox (a burst of PIPELINES next to one pipeline alone), then
compares the Prefect server's databases: a sandbox on SQLite with one worker (the baseline) and one on
PostgreSQL with two, each running a burst of every count in MLTP_BENCH_LOAD_COUNTS (default "20,100",
one after the other in the same sandbox, after a warm-up pipeline). The 503 answers are counted from the
Prefect server's log (harness.server_503s).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterId
from prefect.settings import get_current_settings
from sklearn.datasets import load_iris

from benchmarks.harness import SETUPS, Setup, database_of, sandbox, server_503s
from benchmarks.report import Row, load_average, p90, summary, table
from benchmarks.results import Section, environment
from benchmarks.training import sandbox_clients
from mltp import registry
from mltp.aws import ClientFactory
from mltp.compute.ec2 import CLEANUP_STATES, TAG_JOB, instance_tags
from mltp.prefect_api import activated
from mltp.sandbox.deployments import TRAINING_QUEUE, WORKER_POLL_S
from mltp.sandbox.lifecycle import MODELS_BUCKET, Sandbox

DEPLOYMENT = "ingest-and-train/ingest-and-train"
PIPELINES, ALONE = 20, 3  # the full burst, and how often one pipeline runs alone for the baseline
ROWS = 120
FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
BURST_TARGET = 0.75  # the burst's wall time over the same pipelines' one after another
BOUND_SLACK = 1.10  # where the machine's CPU rules the target out: the burst within 10% of that bound
SLOTTED = frozenset({"PENDING", "RUNNING"})  # a run holds its concurrency slot from PENDING on
SAMPLE_EVERY_S = 0.3
COUNTS = tuple(int(count) for count in os.environ.get("MLTP_BENCH_LOAD_COUNTS", "20,100").split(","))
PACKAGES = ("prefect", "boto3", "moto", "scikit-learn")


@dataclass(frozen=True)
class Target:
    """Where a burst runs: a sandbox's Prefect API and AWS."""

    prefect_api_url: str
    clients: ClientFactory
    models_bucket: str = MODELS_BUCKET
    home: Path | None = None  # the sandbox's MLTP_HOME: its processes' CPU time is counted when known


@dataclass(frozen=True)
class Pipeline:
    """One flow run of the deployment, with the Prefect API's timestamps (epoch seconds)."""

    flow_run_id: str
    dataset: str
    state: str
    message: str
    created: float
    started: float | None  # RUNNING: its process started
    ended: float | None
    slotted: float | None = None  # PENDING: the worker took it, holding a concurrency slot from then on
    turned_away: int = 0  # AwaitingConcurrencySlot: no slot was free, the server rescheduled it

    @property
    def queue_wait_s(self) -> float | None:
        return self.started - self.created if self.started else None

    @property
    def run_s(self) -> float | None:
        return self.ended - self.started if self.started and self.ended else None

    @property
    def start_s(self) -> float | None:
        return self.started - self.slotted if self.slotted and self.started else None

    @property
    def slot_s(self) -> float | None:
        return self.ended - self.slotted if self.slotted and self.ended else None


@dataclass
class Burst:
    model: str
    limit: int
    requested_at: float
    pipelines: list[Pipeline]
    most_running: int
    most_slotted: int
    samples: int
    claimed: set[int] = field(default_factory=set)
    complete: set[int] = field(default_factory=set)
    lineage: dict[int, dict[str, Any]] = field(default_factory=dict)  # version -> dataset, pipeline run
    launched: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    cpu_s: float = 0.0  # CPU time the sandbox's processes used from the request to the last run's end
    server_503s: int = 0  # answered by the Prefect server from the request to the last run's end
    load: tuple[float, ...] = ()  # the machine's load average at the request

    @property
    def completed(self) -> list[Pipeline]:
        return [pipeline for pipeline in self.pipelines if pipeline.state == "COMPLETED"]

    @property
    def wall_s(self) -> float:
        return max(pipeline.ended or time.time() for pipeline in self.pipelines) - self.requested_at

    @property
    def per_minute(self) -> float:
        return 60 * len(self.completed) / self.wall_s

    @property
    def queue_waits_s(self) -> list[float]:
        return _seconds([pipeline.queue_wait_s for pipeline in self.pipelines])


def write_datasets(folder: Path, prefix: str, count: int) -> dict[str, Path]:
    """Dataset name -> a small CSV of its own (a different sample of iris for each)."""
    frame = load_iris(as_frame=True).frame
    files = {}
    for number in range(1, count + 1):
        path = folder / f"{prefix}-{number}.csv"
        frame.sample(n=ROWS, random_state=number).to_csv(path, index=False)
        files[path.stem] = path
    return files


def parameters(source: Path, dataset: str, model: str) -> dict[str, Any]:
    return {
        "source": str(source),
        "target": "target",
        "dataset_name": dataset,
        "model_name": model,
        "compute": "ec2",
        "algorithm": "random_forest",
        "hyperparameters": {"n_estimators": 20},
    }


def run_burst(target: Target, folder: Path, count: int, timeout_s: float = 1800) -> Burst:
    """Start `count` pipelines at once, wait for all of them, and read what they left behind.

    Through Prefect's own client: it retries the 503 a SQLite-backed server answers when its database is
    locked, which a burst of writes makes likely."""
    prefix = f"load-{uuid.uuid4().hex[:6]}"
    files = write_datasets(folder, prefix, count)
    with activated(target.prefect_api_url), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        load, logged_503s = os.getloadavg(), server_503s_of(target.home)
        requested_at, cpu_at_request = time.time(), sandbox_cpu_s(target.home)
        runs = start(client, deployment.id, files, prefix)
        most_running, most_slotted, samples = watch(client, list(runs), timeout_s)
        cpu_s = sandbox_cpu_s(target.home) - cpu_at_request
        burst = Burst(
            model=prefix,
            limit=deployment.global_concurrency_limit.limit,
            requested_at=requested_at,
            pipelines=[pipeline_of(client, run, runs[run.id]) for run in flow_runs(client, list(runs))],
            most_running=most_running,
            most_slotted=most_slotted,
            samples=samples,
            cpu_s=cpu_s,
            server_503s=server_503s_of(target.home) - logged_503s,
            load=load,
        )
        read_registry(target, client, burst)
    read_instances(target, prefix, burst)
    return burst


def sandbox_cpu_s(home: Path | None) -> float:
    """CPU seconds the sandbox's processes have used so far: its services (moto, the Prefect server, the
    worker, the fleet) and every process they started (flow runs, trainers; those that ended are counted
    in their parents' children's times). Other programs on the machine are not."""
    if home is None:
        return 0.0
    total = 0.0
    for pid_file in (home / "run").glob("*.pid"):
        with contextlib.suppress(psutil.NoSuchProcess, ValueError, OSError):
            service = psutil.Process(json.loads(pid_file.read_text())["pid"])
            for process in (service, *service.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
    return total


def server_503s_of(home: Path | None) -> int:
    return server_503s(home) if home else 0


def start(client, deployment_id: uuid.UUID, files: dict[str, Path], model: str) -> dict[uuid.UUID, str]:
    """One run per dataset file, created one right after the other; flow run id -> dataset name."""
    return {
        client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters(path, name, model)
        ).id: name
        for name, path in files.items()
    }


def flow_runs(client, ids: list) -> list:
    return client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))


def watch(client, ids: list, timeout_s: float) -> tuple[int, int, int]:
    """Sample the runs' states until all are final: the most RUNNING at once, the most holding a slot
    (PENDING or RUNNING) at once, and how many samples that was."""
    deadline = time.monotonic() + timeout_s
    most_running = most_slotted = samples = 0
    while True:
        states = [run.state_type.value for run in flow_runs(client, ids)]
        samples += 1
        most_running = max(most_running, states.count("RUNNING"))
        most_slotted = max(most_slotted, sum(state in SLOTTED for state in states))
        if all(state in FINAL for state in states):
            return most_running, most_slotted, samples
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids)} pipelines not done after {timeout_s:.0f} s: {sorted(states)}")
        time.sleep(SAMPLE_EVERY_S)


def pipeline_of(client, run, dataset: str) -> Pipeline:
    states = client.read_flow_run_states(run.id)
    slotted = [state.timestamp for state in states if state.type.value == "PENDING"]
    return Pipeline(
        flow_run_id=str(run.id),
        dataset=dataset,
        state=run.state_type.value,
        message=(run.state.message if run.state else None) or "",
        created=run.created.timestamp(),
        started=run.start_time.timestamp() if run.start_time else None,
        ended=run.end_time.timestamp() if run.end_time else None,
        slotted=min(slotted).timestamp() if slotted else None,
        turned_away=sum(state.name == "AwaitingConcurrencySlot" for state in states),
    )


def read_registry(target: Target, client, burst: Burst) -> None:
    """The model's claimed and complete versions, and for each its dataset and the pipeline run its
    train-model subflow (the lineage's flow run) belongs to."""
    s3 = target.clients("s3")
    burst.claimed, burst.complete = registry.version_numbers(s3, target.models_bucket, burst.model)
    versions = [
        registry.get_version(s3, target.models_bucket, burst.model, n) for n in sorted(burst.complete)
    ]
    parents = pipeline_runs_of(client, [version.lineage["flow_run_id"] for version in versions])
    burst.lineage = {
        version.version: {
            "dataset": version.lineage["dataset"]["name"],
            "pipeline": parents.get(version.lineage["flow_run_id"]),
        }
        for version in versions
    }


def pipeline_runs_of(client, subflow_ids: list[str]) -> dict[str, str | None]:
    """train-model subflow run id -> the ingest-and-train run it ran in (through its parent task run)."""
    if not subflow_ids:
        return {}
    subflows = flow_runs(client, [uuid.UUID(value) for value in subflow_ids])
    parents = [run.parent_task_run_id for run in subflows if run.parent_task_run_id]
    task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=parents)))
    owner = {task_run.id: str(task_run.flow_run_id) for task_run in task_runs}
    return {str(run.id): owner.get(run.parent_task_run_id) for run in subflows}


def read_instances(target: Target, prefix: str, burst: Burst) -> None:
    """Every instance launched for the burst's jobs (their ids start with its datasets' names)."""
    pages = (
        target.clients("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "tag-key", "Values": [TAG_JOB]}])
    )
    ours = [
        instance
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
        if instance_tags(instance)[TAG_JOB].startswith(f"{prefix}-")
    ]
    burst.launched = [instance["InstanceId"] for instance in ours]
    burst.live = [instance["InstanceId"] for instance in ours if instance["State"]["Name"] in CLEANUP_STATES]


def violations(burst: Burst) -> list[str]:
    """The promises of a burst that it broke; empty when it kept them all."""
    found = []
    for pipeline in burst.pipelines:
        if pipeline.state != "COMPLETED" and not (pipeline.state == "FAILED" and pipeline.message):
            found.append(f"{pipeline.dataset} ended {pipeline.state} without a reason: {pipeline.message!r}")
    if not burst.completed:
        found.append("no pipeline completed")
    if burst.most_running > burst.limit:
        found.append(f"{burst.most_running} runs were RUNNING at once, over the limit of {burst.limit}")
    expected = set(range(1, len(burst.completed) + 1))
    if burst.complete != expected or burst.claimed != expected:
        found.append(
            f"versions {sorted(burst.complete)} complete, {sorted(burst.claimed)} claimed; expected exactly "
            f"{sorted(expected)} for {len(burst.completed)} completed runs"
        )
    found += lineage_violations(burst)
    if len(burst.launched) < len(burst.completed):
        found.append(f"{len(burst.launched)} instances launched for {len(burst.completed)} completed runs")
    if burst.live:
        found.append(f"instances left running: {burst.live}")
    return found


def lineage_violations(burst: Burst) -> list[str]:
    completed = {pipeline.flow_run_id: pipeline.dataset for pipeline in burst.completed}
    pipelines = [entry["pipeline"] for entry in burst.lineage.values()]
    found = []
    if sorted(pipelines, key=str) != sorted(completed, key=str):
        found.append(
            f"the versions' lineage names the runs {pipelines}, not the completed {sorted(completed)}"
        )
    for version, entry in sorted(burst.lineage.items()):
        if completed.get(entry["pipeline"]) != entry["dataset"]:
            found.append(f"version {version} was trained on {entry['dataset']}, not on its run's dataset")
    return found


# -- the benchmark ---------------------------------------------------------------------------------


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _seconds(values: list[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def measure(target: Target, scratch: Path) -> tuple[list[Burst], Burst]:
    """A warm-up pipeline (it publishes the trainer's wheel), ALONE pipelines one at a time, then the
    burst of PIPELINES."""
    alone = []
    for number in range(ALONE + 1):
        burst = run_burst(target, scratch, 1)
        _print(f"alone {number or 'warm-up'}: {burst.wall_s:.1f} s, {burst.pipelines[0].state}")
        alone.append(burst)
    burst = run_burst(target, scratch, PIPELINES, timeout_s=1800)
    _print(f"burst of {PIPELINES}: {burst.wall_s:.1f} s, {len(burst.completed)} completed")
    return alone[1:], burst


def cpu_bound_s(alone: list[Burst], count: int) -> float:
    """The least wall time `count` pipelines can take on this machine: the CPU seconds the sandbox spends
    on one alone (median), times `count`, over the cores."""
    return count * statistics.median(one.cpu_s for one in alone) / (os.cpu_count() or 1)


def figures(alone: list[Burst], burst: Burst) -> str:
    single, count = [one.pipelines[0] for one in alone], len(burst.pipelines)
    sequential_s = count * statistics.median(one.wall_s for one in alone)
    bound_s, cores = cpu_bound_s(alone, count), os.cpu_count()
    # The rule: where the machine's CPU rules the target out, prove the bound in the same run
    # and come within 10% of it.
    possible = bound_s <= BURST_TARGET * sequential_s
    target = (
        f"<= {BURST_TARGET}x (the limit of {burst.limit} lets runs overlap)"
        if possible
        else f"<= {BURST_TARGET}x is below what {cores} cores allow ({bound_s / sequential_s:.2f}x, next "
        f"row): within {BOUND_SLACK:.2f}x of that bound instead"
    )
    goal_s = BURST_TARGET * sequential_s if possible else BOUND_SLACK * bound_s
    rows = [
        Row(
            f"wall time to all done: {count} pipelines started at once vs {count} x one alone",
            [burst.wall_s],
            [count * one.wall_s for one in alone],
            "s",
            target,
            lambda ours, base: statistics.median(ours) <= goal_s,
        ),
        Row(
            f"wall time to all done: the burst vs its bound on {cores} cores ({count} x the CPU seconds the "
            f"sandbox's processes spend on one pipeline alone, / {cores})",
            [burst.wall_s],
            [bound_s],
            "s",
        ),
        Row(
            f"CPU seconds of the sandbox's processes (servers, worker, flow runs, fleet, trainers): the "
            f"burst vs {count} x one alone",
            [burst.cpu_s],
            [count * one.cpu_s for one in alone],
            "s",
        ),
        Row(
            "per pipeline: request to RUNNING (queue wait: worker, concurrency slot, process start)",
            _seconds([pipeline.queue_wait_s for pipeline in burst.pipelines]),
            _seconds([pipeline.queue_wait_s for pipeline in single]),
            "s",
        ),
        Row(
            "per pipeline: PENDING to done (holding its slot: process start, then the run)",
            _seconds([pipeline.slot_s for pipeline in burst.pipelines]),
            _seconds([pipeline.slot_s for pipeline in single]),
            "s",
        ),
        Row(
            "per pipeline: RUNNING to done (ingest, train on EC2, register)",
            _seconds([pipeline.run_s for pipeline in burst.pipelines]),
            _seconds([pipeline.run_s for pipeline in single]),
            "s",
        ),
    ]
    return table(rows)


def notes(alone: list[Burst], burst: Burst) -> list[str]:
    done, single_s = len(burst.completed), statistics.median(one.wall_s for one in alone)
    problems = violations(burst)
    held = "**all held**" if not problems else "**broken**: " + "; ".join(problems)
    versions = f"{min(burst.complete, default=0)}..{max(burst.complete, default=0)}"
    return [
        f"Throughput: {60 * done / burst.wall_s:.1f} pipelines a minute ({done} of {len(burst.pipelines)} "
        f"completed in {burst.wall_s:.0f} s) vs {60 / single_s:.1f} one at a time.",
        "",
        f"Runs RUNNING at once: at most {burst.most_running} ({burst.most_slotted} holding a slot, PENDING "
        f"included), sampled {burst.samples} times every {SAMPLE_EVERY_S} s; the deployment's limit is "
        f"{burst.limit}. The Prefect server answered {burst.server_503s} requests with 503 during the burst "
        "(its log).",
        "",
        slot_use(alone, burst),
        "",
        f"Promises of the burst ({'; '.join(PROMISES)}): {held}. Versions {versions}, "
        f"{len(burst.launched)} instances launched, {len(burst.live)} left running.",
    ]


def slot_use(alone: list[Burst], burst: Burst) -> str:
    """Why the burst takes the time it takes: the runs' total time in a slot over the slots' use, with
    the two ways it departs from 1/limit of the baseline (slower runs, idle slots) measured."""
    slot_s = _seconds([pipeline.slot_s for pipeline in burst.pipelines])
    mean_slot_s, single_s = statistics.mean(slot_s), statistics.median(one.wall_s for one in alone)
    held = sum(slot_s) / (burst.limit * burst.wall_s)
    waited = [float(pipeline.turned_away) for pipeline in burst.pipelines if pipeline.turned_away]
    settings = get_current_settings()  # the sandbox's server and worker keep Prefect's defaults
    wait_s, prefetch_s = (
        settings.server.deployments.concurrency_slot_wait_seconds,
        settings.worker.prefetch_seconds,
    )
    return (
        f"Why not 1/{burst.limit} of the baseline: the wall time is the runs' time in a slot over the slots' "
        f"use, {len(slot_s)} x {mean_slot_s:.1f} s (mean) / ({burst.limit} slots x {100 * held:.0f}% held) "
        f"= {len(slot_s) * mean_slot_s / (burst.limit * held):.0f} s. A run held its slot "
        f"{mean_slot_s / single_s:.2f}x as long as one pipeline alone took ({single_s:.1f} s), "
        f"{_slower(alone, burst)}. And the slots stood "
        f"idle {100 * (1 - held):.0f}% of the time: from a run's end to the next waiting run's PENDING took "
        f"{summary(handoffs_s(burst), 's', digits=1)}. Waiting runs stay Scheduled in the `{TRAINING_QUEUE}` "
        f"queue, whose limit keeps the worker from taking more than {burst.limit}; it takes one at its next "
        f"poll ({WORKER_POLL_S} s) after a slot frees. {len(waited)} runs were taken too early and turned "
        f"away by the deployment's own limit (AwaitingConcurrencySlot) "
        f"{summary(waited, '', digits=0) if waited else '0'} times each: the server puts such a run back "
        f"to Scheduled {wait_s:.0f} s later (`PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS`), "
        f"and the worker takes it again {prefetch_s:.0f} s before that (`PREFECT_WORKER_PREFETCH_SECONDS`)."
    )


def handoffs_s(burst: Burst) -> list[float]:
    """For each run's end while others waited, the time until the next waiting run was taken (PENDING):
    what a freed slot stood idle for."""
    ends = sorted(pipeline.ended for pipeline in burst.pipelines if pipeline.ended)
    taken = sorted(pipeline.slotted for pipeline in burst.pipelines if pipeline.slotted)
    gaps = []
    for end in ends:
        later = [moment for moment in taken if moment >= end]
        if later:
            gaps.append(later[0] - end)
            taken.remove(later[0])
    return gaps


def _slower(alone: list[Burst], burst: Burst) -> str:
    """The two parts of a run's time in its slot, in the burst and alone."""

    def median(pipelines: list[Pipeline], phase: str) -> float:
        return statistics.median(_seconds([getattr(pipeline, phase) for pipeline in pipelines]))

    single = [one.pipelines[0] for one in alone]
    return (
        f"its process's start (PENDING to RUNNING) taking {median(burst.pipelines, 'start_s'):.1f} s "
        f"({median(single, 'start_s'):.1f} s alone) and its work (RUNNING to done) "
        f"{median(burst.pipelines, 'run_s'):.1f} s ({median(single, 'run_s'):.1f} s alone): the runs' "
        f"processes start and work while others run, on {os.cpu_count()} cores shared with the servers"
    )


def section(alone: list[Burst], burst: Burst, loads: tuple[tuple[float, ...], ...], database: str) -> str:
    lines = [
        *environment(PACKAGES),
        f"- One private sandbox (`mltp sandbox up`: Prefect on {database}, its worker, the fleet running at "
        "most 4 trainers). Each "
        f"pipeline is a run of `{DEPLOYMENT}` created through the API: its own {ROWS}-row sample of iris, "
        "random forest (20 trees) on EC2, registered under one model name shared by the burst. Baseline: "
        f"one pipeline alone, {ALONE} times one after another (after a warm-up run that publishes the "
        "trainer's wheel), in the same sandbox.",
        "",
        figures(alone, burst),
        "",
        *notes(alone, burst),
        "",
        "Load average (1, 5, 15 min) before the first pipeline: "
        f"{load_average(loads[0])}; after the burst: {load_average(loads[1])}.",
    ]
    return "\n".join(lines)


# -- the databases compared -----------------------------------------------------------------------


def compare(setup: Setup, scratch: Path) -> list[Burst]:
    """In a sandbox of its own, a warm-up pipeline, then a burst of each of COUNTS, one after the other."""
    _print(f"{setup.label}: starting a private sandbox ...")
    with sandbox(setup.database, setup.workers) as (endpoint, env):
        target = target_of(endpoint, env)
        run_burst(target, scratch, 1)  # the warm-up: it publishes the trainer's wheel
        bursts = []
        for count in COUNTS:
            burst = run_burst(target, scratch, count)
            _print(f"{setup.label}, burst of {count}: {burst.wall_s:.1f} s, {burst.server_503s} 503 answers")
            bursts.append(burst)
    return bursts


@dataclass(frozen=True)
class Figure:
    label: str
    shown: Callable[[Burst], str]
    value: Callable[[Burst], float] | None = None  # for the ratio ours/baseline


def _in_seconds(value: Callable[[Burst], float]) -> Callable[[Burst], str]:
    return lambda burst: f"{value(burst):.1f} s"


def _wall_s(burst: Burst) -> float:
    return burst.wall_s


def _per_minute(burst: Burst) -> float:
    return burst.per_minute


def _p50_queue_wait_s(burst: Burst) -> float:
    return statistics.median(burst.queue_waits_s)


def _p90_queue_wait_s(burst: Burst) -> float:
    return p90(burst.queue_waits_s)


FIGURES = (
    Figure("wall time: first request to the last run's end", _in_seconds(_wall_s), _wall_s),
    Figure("runs completed per minute", lambda burst: f"{burst.per_minute:.1f}", _per_minute),
    Figure("runs completed", lambda burst: f"{len(burst.completed)} of {len(burst.pipelines)}"),
    Figure("503 answers (counted in the Prefect server's log)", lambda burst: str(burst.server_503s)),
    Figure("request to RUNNING, p50", _in_seconds(_p50_queue_wait_s), _p50_queue_wait_s),
    Figure("request to RUNNING, p90", _in_seconds(_p90_queue_wait_s), _p90_queue_wait_s),
    Figure("most RUNNING at once (the limit)", lambda burst: f"{burst.most_running} ({burst.limit})"),
    Figure("promises of the burst (below)", lambda burst: "**broken**" if violations(burst) else "all held"),
    Figure("load average (1, 5, 15 min) at the first request", lambda burst: load_average(burst.load)),
)


def comparison_table(compared: dict[Setup, list[Burst]]) -> str:
    """A column per setup and count, the baseline (SQLite, 1 worker) first, each count's ratio beside."""
    baseline, ours = SETUPS
    columns = [f"{baseline.label}, {n} runs | {ours.label}, {n} runs | ratio ours/baseline" for n in COUNTS]
    lines = [f"| figure | {' | '.join(columns)} |", "|---|" + "---|---|---|" * len(COUNTS)]
    for figure in FIGURES:
        cells = []
        for base, our in zip(compared[baseline], compared[ours], strict=True):
            ratio = f"{figure.value(our) / figure.value(base):.2f}x" if figure.value else ""
            cells += [figure.shown(base), figure.shown(our), ratio]
        lines.append(f"| {figure.label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def comparison(compared: dict[Setup, list[Burst]]) -> str:
    broken = [
        f"{setup.label}, burst of {len(burst.pipelines)}: {'; '.join(violations(burst))}"
        for setup, bursts in compared.items()
        for burst in bursts
        if violations(burst)
    ]
    return "\n".join(
        [
            "### PostgreSQL with 2 workers vs SQLite with 1 worker",
            "",
            f"A private sandbox for each (`mltp sandbox up --database sqlite --workers 1`, and `--database "
            f"postgres --workers 2`): a warm-up pipeline, then bursts of {' and '.join(map(str, COUNTS))} "
            "pipelines as above, one after the other. Baseline: SQLite with 1 worker; ratios are PostgreSQL "
            "with 2 workers over it, measured in the same run. 503 answers: the server's own count of the "
            "retryable database errors it answered with 503 (its log, with "
            "`PREFECT_SERVER_LOG_RETRYABLE_ERRORS` on), from every client: the worker(s), the flow runs, "
            "the benchmark. Request to RUNNING: p50 and p90 over the burst's runs (interpolated).",
            "",
            comparison_table(compared),
            "",
            f"Promises of the bursts ({'; '.join(PROMISES)}): "
            + ("**all held**." if not broken else "**broken**: " + " / ".join(broken)),
        ]
    )


def target_of(endpoint: str, env: dict[str, str]) -> Target:
    home = Path(env["MLTP_HOME"])
    return Target(Sandbox(home).endpoints().prefect_api_url, sandbox_clients(endpoint), home=home)


PROMISES = (
    "every run COMPLETED or FAILED with a reason",
    "never more RUNNING than the limit",
    "versions exactly 1..k for k completed runs, none incomplete",
    "each version from a distinct run, on its dataset",
    "no instance left running",
)


def run() -> Section:
    started = time.monotonic()
    print("load: starting a private sandbox ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mltp-bench-load-") as scratch:
        with sandbox() as (endpoint, env):
            load_before = os.getloadavg()
            alone, burst = measure(target_of(endpoint, env), Path(scratch))
            loads = (load_before, os.getloadavg())
            database = database_of(env)
        compared = {setup: compare(setup, Path(scratch)) for setup in SETUPS}
    body = [
        section(alone, burst, loads, database),
        comparison(compared),
        f"Whole suite (sandbox starts and stops included): {(time.monotonic() - started) / 60:.1f} min.",
    ]
    return Section("load", "\n\n".join(body))
