"""The watchers suite: FILES files dropped under `incoming/` of the data bucket at once, drained by two
`watch-incoming` runs at once, as a watcher on each of two machines would, on a sandbox on PostgreSQL with
two workers.

Each watcher is a process of its own (benchmarks/counted_watcher.py: the flow called as the deployment's
run calls it, `max_files` high enough for all, its AWS calls and Prefect API requests counted); the
deployment's own runs would take turns (its concurrency limit is 1), so its schedule is paused. Each file
is a new dataset (`incoming/<name>/data.csv`, 150 rows of iris) with no known target: nothing trains.

First one watcher alone drains PROBE files: its seconds per file. When FILES would take one watcher more
than BUDGET_S at that pace, the suite drops as many as it drains in BUDGET_S instead (two take less: how
much less is what is measured) and says so: the figure for FILES is then an extrapolation, labelled as
such. After the drain it checks that each file was ingested exactly once: a `done` marker for each and
none pending, one `ingest-dataset` run per file, one dataset version per file, each file in exactly one
watcher's report. MLTP_BENCH_WATCH_FILES overrides FILES (a small run; at most 1000, the flow's
`max_files`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.datasets import load_iris

from benchmarks.deployments import UNMEASURED, WATCH, Api, wait_for
from benchmarks.files import REPO
from benchmarks.harness import SETUPS, sandbox, server_503s
from benchmarks.report import Row, load_average, table
from benchmarks.results import Section, environment
from benchmarks.training import sandbox_clients
from flows.watch import INCOMING_PREFIX
from mltp import incoming
from mltp.sandbox.lifecycle import DATA_BUCKET, Sandbox

FILES = int(os.environ.get("MLTP_BENCH_WATCH_FILES", "1000"))
WATCHERS, PROBE = 2, 20
BUDGET_S = 1800.0  # the most files the suite drops are what one watcher alone drains in this time
PUT_THREADS = 10  # botocore keeps 10 connections per client
SETUP = SETUPS[1]  # PostgreSQL, 2 workers
PACKAGES = ("prefect", "boto3", "moto")


@dataclass(frozen=True)
class Watcher:
    """One watcher process: its wall time (spawn to exit) and what it printed."""

    wall_s: float
    flow_s: float  # the flow alone, imports and start excluded
    report: dict[str, list]
    aws_calls: dict[str, int]
    aws_requests: int
    prefect_answers: dict[str, int]  # HTTP status -> requests

    @property
    def ingested(self) -> list[str]:
        return [entry["key"] for entry in self.report["ingested"]]


@dataclass
class Drain:
    files: int
    put_s: float  # dropping them all, PUT_THREADS at a time
    drain_s: float  # from the watchers' spawn to the last one's exit
    watchers: list[Watcher]
    server_503s: int  # logged by the Prefect server from the watchers' spawn to the last one's exit
    problems: list[str]  # broken promises: duplicates, files lost

    @property
    def aws_calls(self) -> Counter[str]:
        return sum((Counter(watcher.aws_calls) for watcher in self.watchers), Counter())

    @property
    def aws_requests(self) -> int:
        return sum(watcher.aws_requests for watcher in self.watchers)

    @property
    def prefect_answers(self) -> Counter[str]:
        return sum((Counter(watcher.prefect_answers) for watcher in self.watchers), Counter())


class Bench:
    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        self.env, self.home = env, Path(env["MLTP_HOME"])
        self.api = Api(Sandbox(self.home).endpoints().prefect_api_url)
        self.s3 = sandbox_clients(endpoint)("s3")
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "data.csv"
            load_iris(as_frame=True).frame.to_csv(path, index=False)
            self.csv = path.read_bytes()

    def quiet(self) -> None:
        """No scheduled runs: neither the deployment's watcher nor the others'."""
        for name in (WATCH, *UNMEASURED):
            self.api.pause(name)
        watch = self.api.deployment(WATCH)["id"]
        busy = {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}
        wait_for(lambda: not self.api.runs_of(watch, **busy), 120, "the scheduled watcher runs to end", 1)

    def drain(self, files: int, watchers: int) -> Drain:
        tag = f"drain-{uuid.uuid4().hex[:6]}"
        names = [f"{tag}-{number}" for number in range(1, files + 1)]
        keys = [f"{INCOMING_PREFIX}{name}/data.csv" for name in names]
        started = time.monotonic()
        with ThreadPoolExecutor(PUT_THREADS) as pool:
            list(pool.map(lambda key: self.s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=self.csv), keys))
        put_s, started, logged_503s = time.monotonic() - started, time.monotonic(), server_503s(self.home)
        logs = [
            Path(self.env["MLTP_HOME"]) / "logs" / f"{tag}-watcher-{n}.log" for n in range(1, watchers + 1)
        ]
        processes = [self.spawn(files, log) for log in logs]
        ran = [self.finish(process, log, started) for process, log in zip(processes, logs, strict=True)]
        drain_s, refused = max(watcher.wall_s for watcher in ran), server_503s(self.home) - logged_503s
        drain = Drain(files, put_s, drain_s, ran, refused, [])
        drain.problems = self.check(keys, tag, ran)
        return drain

    def spawn(self, files: int, log: Path) -> subprocess.Popen:
        """A watcher process; its log goes to a file, so that no pipe left unread holds it up."""
        argv = [sys.executable, "-m", "benchmarks.counted_watcher", str(files)]
        env = {**self.env, "PREFECT_API_URL": self.api.url}
        with log.open("w") as stderr:
            return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)

    @staticmethod
    def finish(process: subprocess.Popen, log: Path, started: float) -> Watcher:
        out, _ = process.communicate(timeout=2 * BUDGET_S)
        wall_s = time.monotonic() - started
        if process.returncode != 0:
            raise RuntimeError(f"a watcher failed ({process.returncode}):\n{log.read_text()[-3000:]}")
        printed = json.loads(out.strip().splitlines()[-1])
        return Watcher(
            wall_s,
            printed["seconds"],
            printed["report"],
            printed["aws_calls"],
            printed["aws_requests"],
            printed["prefect_answers"],
        )

    def check(self, keys: list[str], tag: str, watchers: list[Watcher]) -> list[str]:
        """The promises of the drain that were broken: each file ingested exactly once."""
        problems = []
        reported = Counter(key for watcher in watchers for key in watcher.ingested)
        if twice := [key for key, count in reported.items() if count > 1]:
            problems.append(f"{len(twice)} files ingested by both watchers, e.g. {twice[0]}")
        if missing := set(keys) - set(reported):
            problems.append(f"{len(missing)} files in no watcher's report, e.g. {min(missing)}")
        ours = set(keys)
        pending = [
            drop for drop in incoming.pending_drops(self.s3, DATA_BUCKET, INCOMING_PREFIX) if drop.key in ours
        ]
        if pending:
            problems.append(f"{len(pending)} files without a done marker, e.g. {pending[0].key}")
        ingests = Counter(run["parameters"]["source"] for run in self.ingest_runs())
        sources = [f"s3://{DATA_BUCKET}/{key}" for key in keys]
        if wrong := [source for source in sources if ingests[source] != 1]:
            problems.append(f"{len(wrong)} files not ingested by exactly one ingest-dataset run: {wrong[0]}")
        versions = Counter(key.split("/")[1] for key in self.manifests(f"{tag}-"))
        if wrong := [name for name in (key.split("/")[1] for key in keys) if versions[name] != 1]:
            problems.append(f"{len(wrong)} datasets without exactly one version, e.g. {wrong[0]}")
        return problems

    def ingest_runs(self) -> list[dict[str, Any]]:
        runs, page = [], 200  # the API's largest page
        while batch := self.api.flow_runs(
            {"flows": {"name": {"any_": ["ingest-dataset"]}}, "limit": page, "offset": len(runs)}
        ):
            runs += batch
        return runs

    def manifests(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=DATA_BUCKET, Prefix=f"datasets/{prefix}"
        )
        return [
            entry["Key"]
            for page in pages
            for entry in page.get("Contents", [])
            if entry["Key"].endswith("/manifest.json")
        ]


def measure(bench: Bench) -> tuple[Drain, Drain]:
    """One watcher alone on PROBE files, then WATCHERS on FILES, or on as many as one drains in BUDGET_S."""
    probe = bench.drain(PROBE, 1)
    per_file_s = probe.watchers[0].flow_s / PROBE
    _print(f"one watcher alone: {PROBE} files in {probe.drain_s:.1f} s, {per_file_s:.2f} s per file")
    files = min(FILES, int(BUDGET_S / per_file_s))
    drain = bench.drain(files, WATCHERS)
    _print(
        f"{WATCHERS} watchers: {files} files in {drain.drain_s:.1f} s; problems: {drain.problems or 'none'}"
    )
    return probe, drain


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


# -- the section ---------------------------------------------------------------------------------


def per_file(drain: Drain, value: float) -> list[float]:
    return [value / drain.files]


def figures(probe: Drain, drain: Drain) -> str:
    rows = [
        Row(
            f"time to drain, per file: {WATCHERS} watchers on {drain.files} files vs 1 watcher alone on "
            f"{probe.files} (spawn to the last watcher's exit, over the files)",
            per_file(drain, drain.drain_s),
            per_file(probe, probe.drain_s),
            "s",
        ),
        Row(
            "AWS calls per file (S3, every client of the watchers)",
            per_file(drain, drain.aws_calls.total()),
            per_file(probe, probe.aws_calls.total()),
            "calls",
        ),
        Row(
            "Prefect API requests per file (HTTP, retries included)",
            per_file(drain, drain.prefect_answers.total()),
            per_file(probe, probe.prefect_answers.total()),
            "requests",
        ),
    ]
    return table(rows)


def notes(probe: Drain, drain: Drain) -> list[str]:
    held = "**all held**" if not drain.problems else "**broken**: " + "; ".join(drain.problems)
    split = ", ".join(
        f"{len(watcher.ingested)} ingested and {len(watcher.report['held_elsewhere'])} found held by the "
        f"other in {watcher.flow_s:.0f} s"
        for watcher in drain.watchers
    )
    calls = ", ".join(
        f"{operation} {count / drain.files:.1f}" for operation, count in drain.aws_calls.most_common()
    )
    retried = drain.aws_requests - drain.aws_calls.total()
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(drain.prefect_answers.items()))
    refused = drain.prefect_answers.get("503", 0)
    lines = [
        f"Exactly once ({'; '.join(PROMISES)}): {held}.",
        "",
        f"The watchers: {split}. Dropping the {drain.files} files took {drain.put_s:.1f} s ({PUT_THREADS} "
        f"PUTs at a time), before the watchers started.",
        "",
        f"AWS calls per file, by operation: {calls}; {retried} requests were retries. Prefect API answers, "
        f"by status: {answers}; {refused} answered 503 (retried by Prefect's client) as the watchers saw "
        f"it, {drain.server_503s} as the server logged it (every client's).",
    ]
    if drain.files < FILES:
        seconds_s = FILES * drain.drain_s / drain.files
        lines += [
            "",
            f"**Extrapolated, not measured:** {FILES} files would take {WATCHERS} watchers about "
            f"{seconds_s / 60:.1f} min at the pace measured on {drain.files} "
            f"({drain.drain_s / drain.files:.2f} s per file). One watcher alone took "
            f"{probe.watchers[0].flow_s / probe.files:.2f} s per file, so {FILES} files were over the "
            f"suite's budget of {BUDGET_S / 60:.0f} min: it dropped as many as one watcher drains in that "
            "budget.",
        ]
    return lines


PROMISES = (
    "each file in exactly one watcher's report",
    "a done marker for each, none pending",
    "one ingest-dataset run per file",
    "one dataset version per file",
)


def section(probe: Drain, drain: Drain, loads: tuple[tuple[float, ...], ...], total_s: float) -> str:
    lines = [
        *environment(PACKAGES),
        f"- One private sandbox (`mltp sandbox up --database {SETUP.database} --workers {SETUP.workers}`: "
        f"{SETUP.label}), the schedules paused. {drain.files} files dropped at once under `incoming/` of "
        "the data bucket, each a new dataset (`incoming/<name>/data.csv`, 150 rows of iris, no known target: "
        f"nothing trains), then {WATCHERS} `watch-incoming` runs started at once, each in a process of its "
        "own as on a machine of its own (the deployment's runs would take turns: its concurrency limit is "
        "1), each free to take every file. Baseline: one watcher alone on "
        f"{probe.files} files, in the same sandbox before. AWS calls and Prefect API requests counted in "
        "the watchers' processes (benchmarks/counted_watcher.py); the events they emit go over a websocket "
        "and are not counted.",
        "",
        figures(probe, drain),
        "",
        *notes(probe, drain),
        "",
        f"Load average (1, 5, 15 min) before the first drop: {load_average(loads[0])}; after the drain: "
        f"{load_average(loads[1])}.",
        "",
        f"Whole suite (sandbox start and stop included): {total_s / 60:.1f} min.",
    ]
    return "\n".join(lines)


def run() -> Section:
    started = time.monotonic()
    print(f"watchers: starting a private sandbox ({SETUP.label}) ...", file=sys.stderr, flush=True)
    with sandbox(SETUP.database, SETUP.workers) as (endpoint, env):
        bench = Bench(endpoint, env)
        bench.quiet()
        load_before = os.getloadavg()
        probe, drain = measure(bench)
        loads = (load_before, os.getloadavg())
    return Section("watchers", section(probe, drain, loads, time.monotonic() - started))
