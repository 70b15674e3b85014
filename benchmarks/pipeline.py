"""The pipeline suite: what the `train-model` flow adds around the trainer. `mltp train --json` on a small
dataset, each run a fresh command against one warm private sandbox, Lambda and EC2 interleaved; the
trainer's own time (its status.json `duration_s`) next to the flow's (the report's `duration_s`). Then the
cold start: the first `mltp train` in a just-started sandbox, next to a plain scikit-learn script."""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from benchmarks.flow_timeline import Timeline, breakdown, seconds, timeline
from benchmarks.harness import MLTP, database_of, measure, sandbox
from benchmarks.report import DASH, Row, load_average
from benchmarks.report import table as figure_table
from benchmarks.results import Section, environment
from benchmarks.training import sandbox_clients
from mltp.aws import ClientFactory
from mltp.compute.trainer_code import PREFIX as TRAINER_CODE_PREFIX
from mltp.monitor import QUICK_LOOK_S, QUICK_LOOK_WINDOW_S, MonitorSettings
from mltp.s3_json import read_json
from mltp.sandbox.lifecycle import MODELS_BUCKET, Sandbox

DATASET = "breast-cancer"
BACKENDS = ("lambda", "ec2")
REPS = 5
COLD_REPS = 3
TRAIN = ["train", "--dataset", DATASET, "--algorithm", "random_forest", "--param", "n_estimators=50"]
PACKAGES = ("prefect", "scikit-learn", "boto3", "moto")
OVERHEAD_TARGET_S, COMMAND_TARGET_S = 1.5, 6.0  # issue 22, on an idle machine


@dataclass
class Run:
    trainer_s: float  # the trainer's own clock: run_job, from reading the spec to writing status.json
    flow_s: float  # the flow's own clock: train_model's body
    command_s: float  # the whole `mltp train` process
    timeline: Timeline
    wheel_built: bool

    @property
    def overhead_s(self) -> float:
        return self.flow_s - self.trainer_s


@dataclass
class Runs:
    backends: dict[str, list[Run]] = field(default_factory=lambda: {backend: [] for backend in BACKENDS})
    warm_up: Run | None = None
    trainer_start_s: list[float] = field(default_factory=list)
    cold: dict[str, list[Run]] = field(default_factory=lambda: {backend: [] for backend in BACKENDS})
    plain_s: list[float] = field(default_factory=list)
    loads: list[tuple[float, ...]] = field(default_factory=list)  # os.getloadavg() at the start and end


def wheels(s3) -> int:
    listed = s3.list_objects_v2(Bucket=MODELS_BUCKET, Prefix=TRAINER_CODE_PREFIX).get("Contents", [])
    return sum(item["Key"].endswith(".whl") for item in listed)


def train(backend: str, env: dict[str, str], clients: ClientFactory, api_url: str) -> Run:
    s3 = clients("s3")
    before = wheels(s3)
    measured = measure(
        [MLTP, *TRAIN, "--compute", backend, "--json"], env, timed_inside=False, json_stdout=True
    )
    report = measured.output
    (job,) = report["jobs"]
    if (
        report["status"] != "succeeded"
        or report["compute"]["backend"] != backend
        or len(job["attempts"]) != 1
    ):
        raise RuntimeError(f"mltp train --compute {backend} did not succeed at its first attempt: {report}")
    record, _ = read_json(s3, MODELS_BUCKET, f"runs/{report['run_id']}/run.json")
    return Run(
        job["duration_s"],
        report["duration_s"],
        measured.seconds,
        timeline(api_url, record["flow_run_id"], clients("logs"), job["job_id"]),
        wheels(s3) > before,
    )


def trainer_start_up(env: dict[str, str]) -> float:
    """Interpreter start and the trainer's imports, which happen before its clock starts."""
    return measure([sys.executable, "-m", "mltp.trainer", "--help"], env, timed_inside=False).seconds


def _print(label: str, run: Run) -> None:
    print(
        f"  {label:13} trainer {run.trainer_s:5.2f} s  flow {run.flow_s:5.2f} s  command "
        f"{run.command_s:5.2f} s  polls {run.timeline.polls}"
        + ("  (built the wheel)" if run.wheel_built else ""),
        file=sys.stderr,
        flush=True,
    )


def ingested(env: dict[str, str], endpoint: str, path: Path) -> tuple[ClientFactory, str]:
    """The sandbox's clients and Prefect API, once the dataset is ingested into it."""
    ingest = [MLTP, "datasets", "ingest", path, "--name", DATASET, "--target", "target", "--json"]
    subprocess.run(ingest, env=env, capture_output=True, check=True)
    return functools.cache(sandbox_clients(endpoint)), Sandbox(
        Path(env["MLTP_HOME"])
    ).endpoints().prefect_api_url


def measure_cold(runs: Runs, path: Path) -> None:
    """In each new sandbox, the first run on each backend: nothing is warm but the OS's file cache."""
    for rep in range(COLD_REPS):
        with sandbox() as (endpoint, env):
            clients, api_url = ingested(env, endpoint, path)
            for backend in BACKENDS:
                run = train(backend, env, clients, api_url)
                runs.cold[backend].append(run)
                _print(f"{backend} cold {rep + 1}/{COLD_REPS}", run)
        plain = [sys.executable, "-m", "benchmarks.plain_forest", path]
        runs.plain_s.append(measure(plain, env, timed_inside=False, json_stdout=True).seconds)


def measure_all(env: dict[str, str], endpoint: str, path: Path) -> Runs:
    clients, api_url = ingested(env, endpoint, path)
    runs = Runs(warm_up=train("ec2", env, clients, api_url))
    _print("ec2 warm-up", runs.warm_up)
    runs.loads.append(os.getloadavg())
    for rep in range(REPS):
        for backend in BACKENDS:
            run = train(backend, env, clients, api_url)
            runs.backends[backend].append(run)
            _print(f"{backend} {rep + 1}/{REPS}", run)
        runs.trainer_start_s.append(trainer_start_up(env))
    runs.loads.append(os.getloadavg())
    return runs


def targets(runs: Runs) -> str:
    """The issue's targets for the warm runs: the flow's overhead and the whole command."""
    rows = []
    for backend, measured in runs.backends.items():
        rows.append(
            Row(
                f"flow overhead (flow \N{MINUS SIGN} trainer) on {backend}, vs the trainer's own time "
                f"({len(measured)} runs)",
                [run.overhead_s for run in measured],
                [run.trainer_s for run in measured],
                "s",
                f"≤ {OVERHEAD_TARGET_S:g} s",
                lambda ours, base: statistics.median(ours) <= OVERHEAD_TARGET_S,
            )
        )
    for backend, measured in runs.backends.items():
        rows.append(
            Row(
                f"`mltp train --compute {backend}` whole command vs the plain script (cold table below)",
                [run.command_s for run in measured],
                runs.plain_s,
                "s",
                f"≤ {COMMAND_TARGET_S:g} s",
                lambda ours, base: statistics.median(ours) <= COMMAND_TARGET_S,
            )
        )
    return figure_table(rows)


def table(runs: Runs) -> str:
    lines = [
        f"| backend | trainer (median [min{DASH}max]) | flow | overhead = flow \N{MINUS SIGN} trainer "
        "| overhead / trainer (medians) | `mltp train` command |",
        "|---|---|---|---|---|---|",
    ]
    for backend, measured in runs.backends.items():
        trainer, overhead = [r.trainer_s for r in measured], [r.overhead_s for r in measured]
        flow = [r.flow_s for r in measured]
        lines.append(
            f"| {backend} | {seconds(trainer)} | {seconds(flow)} | {seconds(overhead)} "
            f"| {statistics.median(overhead) / statistics.median(trainer):.2f}x "
            f"| {seconds([r.command_s for r in measured])} |"
        )
    return "\n".join(lines)


def cold_table(runs: Runs) -> str:
    rows = [
        Row(
            f"cold `mltp train --compute {backend}`: the first run in a new sandbox vs a plain script "
            f"({COLD_REPS} each)",
            [run.command_s for run in runs.cold[backend]],
            runs.plain_s,
            "s",
        )
        for backend in BACKENDS
    ]
    rows += [
        Row(
            f"cold vs warm `mltp train --compute {backend}` ({COLD_REPS} vs {REPS} runs)",
            [run.command_s for run in runs.cold[backend]],
            [run.command_s for run in runs.backends[backend]],
            "s",
        )
        for backend in BACKENDS
    ]
    built = sum(run.wheel_built for run in runs.cold["ec2"])
    return "\n".join(
        [
            "### Cold start",
            "",
            f"{COLD_REPS} times: `mltp sandbox up` on free ports, ingest the dataset, then time the first "
            "`mltp train` of the new sandbox on Lambda, then the first on EC2 (which builds and uploads "
            f"the trainer wheel: it did in {built} of {COLD_REPS}), each the whole command from its spawn "
            "to its exit, the same command as above. The plain script (benchmarks/plain_forest.py) is a "
            "fresh process too, timed the same way: pandas reads the CSV from local disk, the same 80/20 "
            "stratified split, `RandomForestClassifier(n_estimators=50)`, holdout accuracy; it does no "
            "I/O to S3, no Prefect run, no compute launch.",
            "",
            figure_table(rows),
        ]
    )


def header(database: str) -> str:
    return "\n".join(
        [
            *environment(PACKAGES),
            f"- Dataset: scikit-learn's breast cancer (569 rows, 30 features), ingested once with `mltp "
            f"datasets ingest`. Each run: `mltp {' '.join(TRAIN)} --compute lambda|ec2 --json` as a fresh "
            f"process against one private sandbox (Prefect on {database}), {REPS} runs per backend, "
            "interleaved, after one "
            "untimed warm-up run on EC2 (the first EC2 run builds and uploads the trainer wheel; later runs "
            "find it by its content hash).",
            "- Trainer: the job's `duration_s` in the report, the trainer's own clock in `run_job` (reading "
            "the spec, the data, fitting, scoring, writing the model and status.json). Flow: the report's "
            "`duration_s`, the wall time of `train_model`'s body. `mltp train` command: the whole process "
            "(interpreter start, imports, creating and finishing the Prefect flow run).",
        ]
    )


def _by_polls(runs: Runs) -> str:
    """Whether the trainer's result beat the flow's first poll decides a run's time: say how often."""
    measured = [run for backend in runs.backends.values() for run in backend]
    flows: dict[int, list[float]] = {}
    for run in measured:
        flows.setdefault(run.timeline.polls, []).append(run.flow_s)
    if len(flows) == 1:
        return f"Every run took {next(iter(flows))} poll(s)."
    medians = "; ".join(
        f"{polls} poll(s) in {len(values)} of {len(measured)} runs, flow {statistics.median(values):.2f} s"
        for polls, values in sorted(flows.items())
    )
    return (
        "The runs fall in groups by how many polls the flow needed (the trainer's status.json was or was "
        f"not written before the flow's first poll), which spreads the flow's time: {medians} (medians)."
    )


def footnotes(runs: Runs) -> str:
    measured = [run for backend in runs.backends.values() for run in backend]
    rebuilt = [
        f"{backend} run {number}"
        for backend, backend_runs in runs.backends.items()
        for number, run in enumerate(backend_runs, start=1)
        if run.wheel_built
    ]
    warm_up = runs.warm_up is not None and runs.warm_up.wheel_built
    interval = MonitorSettings().poll_interval_s
    timelines = {backend: [run.timeline for run in measured] for backend, measured in runs.backends.items()}
    return "\n".join(
        [
            "Where the overhead goes: the Prefect API's timestamps of each flow run and its task runs, and "
            "the trainer's first and last log lines in CloudWatch Logs (millisecond timestamps, same "
            f"machine), medians [min{DASH}max] over the same runs:",
            "",
            breakdown(timelines),
            "",
            "- Before the launch: the Prefect task runs `plan-training` (reads the manifest, plans), on EC2 "
            "`publish-trainer` (hashes the trainer's sources and finds the wheel of that hash in S3), "
            "building the backend's clients, `record-run`, `write-job-spec`, `launch-job`.",
            "- ¹ Launch to the trainer's first log line: the sandbox fleet picks the work up (an EC2 "
            "instance once its DescribeInstances, every 0.25 s, lists it and its user-data is read; a "
            "Lambda invocation at once), forks the trainer from a server that imported its libraries "
            "(mltp/sandbox/trainer_processes.py: a fresh interpreter importing them, scikit-learn, pandas, "
            f"skops, boto3, takes {seconds(runs.trainer_start_s)} for `python -m mltp.trainer --help`, "
            f"measured separately {len(runs.trainer_start_s)} times), which reads the spec and creates its "
            "log stream.",
            "- Last log line to the poll that saw the result: writing status.json, then the flow noticing "
            f"it: between its polls ({interval:g} s apart at first, growing slowly with the run's age) a run "
            f"younger than {QUICK_LOOK_WINDOW_S:.0f} s looks for a result every {QUICK_LOOK_S:g} s (one S3 "
            "listing), then polls at once.",
            "- After: `terminate-compute`, `collect-result`, the report and its artifacts.",
            "",
            _by_polls(runs),
            "",
            "The `mltp train` command takes "
            f"{seconds([run.command_s - run.flow_s for run in measured])} more than the flow "
            "(all runs): interpreter start, importing Prefect and the CLI, connecting to the Prefect API, "
            "creating and finishing the flow run.",
            "",
            "Load average (1, 5, 15 min) at the start of the warm runs: "
            f"{load_average(runs.loads[0])}; at their end: {load_average(runs.loads[1])}.",
            "",
            f"The warm-up run built and uploaded the trainer wheel: {'yes' if warm_up else 'no'}. Measured "
            "runs that built it again (the trainer's sources changed while the suite ran): "
            f"{', '.join(rebuilt) or 'none'}.",
            "",
            f"moto, the Prefect server, the fleet and the trainer share the same {os.cpu_count()} cores.",
        ]
    )


def run() -> Section:
    started = time.monotonic()
    print("pipeline: starting a private sandbox ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mltp-bench-data-") as scratch:
        path = Path(scratch) / f"{DATASET}.csv"
        load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
        with sandbox() as (endpoint, env):
            runs = measure_all(env, endpoint, path)
            database = database_of(env)
        print("pipeline: cold starts, each in a new sandbox ...", file=sys.stderr, flush=True)
        measure_cold(runs, path)
    total = f"Whole suite (sandbox starts and stops included): {(time.monotonic() - started) / 60:.1f} min."
    body = [header(database), targets(runs), table(runs), footnotes(runs), cold_table(runs), total]
    return Section("pipeline", "\n\n".join(body))
