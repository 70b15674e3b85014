"""The deployments suite: how fast the sandbox's deployments react, on one private sandbox (`mltp sandbox up`
deploys prefect.yaml and starts the worker).

Event to run: `mltp.dataset.ingested`, exactly as flows/ingest.py announces a dataset version for
training, sent to `POST /events`; the `train-on-new-dataset` flow run it triggers is timed from the request
to created, RUNNING and COMPLETED. Baseline: `create_flow_run` on the same deployment with the same
parameters, the floor without the event and the automation. One run at a time, each waited for to its
end, so none waits for a slot of the deployment's concurrency limit.

Watcher: an object put under `incoming/<dataset>/`, timed to the start of its `ingest-dataset` subflow:
with the `mltp.incoming.created` event the S3 forwarder Lambda (deployments/aws/s3_forwarder) sends right
after the put (push), next to polling alone on `watch-incoming`'s interval schedule (poll). Poll drops are
put at phases spread evenly over the interval. While they wait for their tick, the other measurements run
in the idle time: never while the worker prefetches or runs a tick, push drops only while no poll drop is
waiting (its event's run would ingest that one too).

All that on the default sandbox; then the event and direct training runs alone (the watcher's schedule
paused) on a sandbox on SQLite with one worker and on one on PostgreSQL with two, side by side.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from prefect.client.base import PrefectHttpxSyncClient
from prefect.events import Event
from prefect.settings import get_current_settings
from sklearn.datasets import load_iris

from benchmarks.files import REPO
from benchmarks.flow_timeline import seconds
from benchmarks.harness import MLTP, SETUPS, Setup, database_of, measure, sandbox, server_503s
from benchmarks.report import Row, load_average, p90, table
from benchmarks.results import Section, environment
from benchmarks.training import sandbox_clients
from flows.ingest import announce_dataset
from mltp.sandbox.deployments import WORKER_POLL_S
from mltp.sandbox.lifecycle import DATA_BUCKET, Sandbox

TRAIN = "train-model/train-on-new-dataset"
WATCH = "watch-incoming/watch-incoming"
UNMEASURED = ("train-model/retrain-nightly", "reap-orphans/reap-orphans")  # paused: no runs of theirs
DATASET = "iris"  # 150 rows: `compute: auto`, the trigger's default, plans Lambda
EVENTS, DIRECT = 20, 10  # interleaved: two events, then one direct run
PUSH_DROPS, POLL_DROPS = 5, 3  # poll drops are put at phases spread evenly over the interval
IMPORT_REPS = 3
IMPORTS = "import prefect.engine, flows.train"  # what a fresh flow-run process imports before RUNNING
FORWARDER = REPO / "deployments" / "aws" / "s3_forwarder" / "handler.py"
PACKAGES = ("prefect", "boto3", "moto")
# The worker submits a scheduled run this long before it is due and starts its process at once (Prefect's
# default, which the sandbox keeps); the run's process works until a little after the tick.
PREFETCH_S = get_current_settings().worker.prefetch_seconds
BEFORE_TICK_S, AFTER_TICK_S = PREFETCH_S + 3.0, 8.0
FIRST_BUDGET_S = {"event": 30.0, "direct": 30.0, "push": 20.0, "imports": 15.0}  # until one was measured
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Prefect's HTTP client waits 2 ** n s (jitter up to +20 %) before its n-th retry: after n retries, about
RETRIED_S = {n: 2.0 ** (n + 1) - 2 for n in range(1, 5)}  # 2, 6, 14, 30 s, plus the failed attempts' time


def at(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return found


@dataclass(frozen=True)
class TrainRun:
    """One `train-on-new-dataset` flow run, in seconds from the request that made it."""

    created_s: float
    pending_s: float  # the worker took it (its first PENDING state)
    running_s: float  # its process started and the engine entered RUNNING (the run's start_time)
    completed_s: float
    queued: bool  # it waited for a concurrency slot (AwaitingConcurrencySlot)
    span: tuple[float, float]  # wall clock, from the request to the run's end


@dataclass(frozen=True)
class DropRun:
    """One object put under incoming/, in seconds from the put."""

    watcher_created_s: float  # poll: the tick's run was created long before (negative)
    watcher_pending_s: float  # the worker submitted the run and started its process
    watcher_running_s: float
    ingest_s: float  # its ingest-dataset subflow started
    before_tick_s: float = 0.0  # poll: the put was this long before the tick
    tick_to_ingest_s: float = 0.0  # poll: the tick to the ingest-dataset subflow's start


@dataclass
class Results:
    runs: dict[str, list[TrainRun]] = field(default_factory=lambda: {"event": [], "direct": []})
    drops: dict[str, list[DropRun]] = field(default_factory=lambda: {"poll": [], "push": []})
    imports_s: list[float] = field(default_factory=list)
    spans: dict[str, list[float]] = field(default_factory=dict)  # per kind of measurement, wall seconds
    between_ticks: dict[str, int] = field(default_factory=dict)  # per kind: measured while polling
    watcher_overlaps: int = 0  # training runs that overlapped a watcher run (none, by design)
    interval_s: float = 0.0  # watch-incoming's schedule
    load_start: tuple[float, ...] = ()  # os.getloadavg()
    load_end: tuple[float, ...] = ()
    database: str = ""  # the Prefect server's
    server_503s: int = 0  # answered by the Prefect server while the suite ran (its log)


class Api:
    """The sandbox's Prefect REST API, as the benchmark reads it (retrying 503s as Prefect's client does)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = PrefectHttpxSyncClient(base_url=url, timeout=30)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.http.get(f"/deployments/name/{name}").raise_for_status().json()

    def pause(self, name: str) -> None:
        self.http.post(f"/deployments/{self.deployment(name)['id']}/pause_deployment").raise_for_status()

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def flow_runs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return self.http.post("/flow_runs/filter", json=body).raise_for_status().json()

    def runs_of(self, deployment_id: str, **flow_runs: Any) -> list[dict[str, Any]]:
        return self.flow_runs({"flow_runs": {"deployment_id": {"any_": [deployment_id]}, **flow_runs}})

    def states(self, run_id: str) -> list[dict[str, Any]]:
        found = self.http.get("/flow_run_states/", params={"flow_run_id": run_id}).raise_for_status().json()
        return sorted(found, key=lambda state: state["timestamp"])

    def finished(self, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        run = wait_for(
            lambda: (found := self.flow_run(run_id))["state_type"] in FINAL and found,
            timeout_s,
            f"flow run {run_id} to finish",
            every_s=0.5,
        )
        if run["state_type"] != "COMPLETED":
            raise RuntimeError(f"flow run {run['name']} ended {run['state_type']}: {run['state']}")
        return run


class Ticks:
    """`watch-incoming`'s interval schedule: its runs are due at the anchor plus whole intervals."""

    def __init__(self, deployment: dict[str, Any]) -> None:
        (schedule,) = [item["schedule"] for item in deployment["schedules"] if item["active"]]
        self.anchor, self.interval = at(schedule["anchor_date"]), float(schedule["interval"])

    def next(self, moment: float) -> float:
        return self.anchor + math.ceil((moment - self.anchor) / self.interval) * self.interval

    def previous(self, moment: float) -> float:
        return self.next(moment) - self.interval


class Suite:
    def __init__(self, api: Api, env: dict[str, str], endpoint: str, scratch: Path) -> None:
        self.api, self.env, self.scratch = api, env, scratch
        self.s3 = sandbox_clients(endpoint)("s3")
        self.forwarder = load_forwarder()
        self.results = Results()
        self.train = api.deployment(TRAIN)["id"]
        self.watch = api.deployment(WATCH)["id"]
        self.ticks: Ticks | None = Ticks(api.deployment(WATCH))  # None once its schedule is paused
        self.results.interval_s = self.ticks.interval
        trains = ["event", "event", "direct"] * DIRECT + ["event"] * (EVENTS - 2 * DIRECT)
        self.queue: list[str] = []  # kinds of measurement, in the order they are wanted
        for number, kind in enumerate(trains):
            self.queue.append(kind)
            if number % max(2, len(trains) // PUSH_DROPS) == 1 and self.queue.count("push") < PUSH_DROPS:
                self.queue.append("push")
        self.queue += ["push"] * (PUSH_DROPS - self.queue.count("push")) + ["imports"] * IMPORT_REPS
        self.poll_pending = False  # a poll drop waits for its tick: a push drop now would take it too
        self.seen: set[str] = set()  # flow runs of the training deployment measured already
        self.event: dict[str, Any] = {}  # what flows.ingest emits for the dataset, set by `prepare`
        self.parameters: dict[str, Any] | None = None  # the first event's run's: every direct run's
        self.measurements: dict[str, Callable[[str], None]] = {
            "event": self.measure_train,
            "direct": self.measure_train,
            "push": self.push_drop,
            "imports": self.measure_imports,
        }

    def prepare(self) -> None:
        for name in UNMEASURED:
            self.api.pause(name)
        path = self.scratch / f"{DATASET}.csv"
        load_iris(as_frame=True).frame.to_csv(path, index=False)
        self.csv = path.read_bytes()
        ingest = [MLTP, "datasets", "ingest", path, "--name", DATASET, "--target", "target", "--json"]
        manifest = json.loads(subprocess.run(ingest, env=self.env, capture_output=True, check=True).stdout)
        self.event = announced(manifest)

    # -- the queue of measurements, run in the idle time -----------------------------------------

    def budget_s(self, kind: str) -> float:
        """How long a measurement may take: the longest of its kind so far and a quarter more."""
        spans = self.results.spans.get(kind)
        return 1.25 * max(spans) if spans else FIRST_BUDGET_S[kind]

    def fill(self, until: float) -> None:
        """Run queued measurements, the first that fits in the quiet time left, until none fits before
        `until`. While `watch-incoming` polls, the quiet time ends when the worker submits the next tick and
        starts AFTER_TICK_S after a tick (its run may still be working)."""
        while kinds := list(dict.fromkeys(k for k in self.queue if k != "push" or not self.poll_pending)):
            start, end_by = self.quiet(time.time(), until)
            fitting = [kind for kind in kinds if start + self.budget_s(kind) <= end_by]
            if not fitting and self.ticks is not None:  # maybe after the next tick
                start, end_by = self.quiet(self.ticks.next(time.time()) + AFTER_TICK_S, until)
                fitting = [kind for kind in kinds if start + self.budget_s(kind) <= end_by]
            if not fitting:
                return
            sleep_until(start)
            if self.ticks is not None and self.watcher_busy():  # a tick's run outlasted AFTER_TICK_S
                wait_for(lambda: not self.watcher_busy(), 300, "the watcher run under way", every_s=0.5)
                continue
            kind = fitting[0]
            self.queue.remove(kind)
            started = time.time()
            self.measurements[kind](kind)
            self.results.spans.setdefault(kind, []).append(time.time() - started)
            polling = self.results.between_ticks
            polling[kind] = polling.get(kind, 0) + (self.ticks is not None)

    def quiet(self, moment: float, until: float) -> tuple[float, float]:
        """The quiet time from `moment` on: when a measurement may start, and by when it must end."""
        if self.ticks is None:
            return moment, until
        start = max(moment, self.ticks.previous(moment) + AFTER_TICK_S)
        return start, min(until, self.ticks.next(moment) - BEFORE_TICK_S)

    # -- training runs ---------------------------------------------------------------------------

    def measure_train(self, kind: str) -> None:
        started = time.time()
        if kind == "event":
            body = [Event(**self.event).model_dump(mode="json")]  # a new id, occurred now
            self.api.http.post("/events", json=body).raise_for_status()
            run = wait_for(self._new_run, 60, f"the run {self.event['event']} should trigger")
            self.parameters = self.parameters or run["parameters"]
        else:
            answer = self.api.http.post(
                f"/deployments/{self.train}/create_flow_run", json={"parameters": self.parameters}
            )
            run = answer.raise_for_status().json()
        self.seen.add(run["id"])
        run = self.api.finished(run["id"])
        states = self.api.states(run["id"])
        measured = TrainRun(
            at(run["created"]) - started,
            self.pending_at(run["id"], states) - started,
            at(run["start_time"]) - started,
            at(run["end_time"]) - started,
            any(state["name"] == "AwaitingConcurrencySlot" for state in states),
            (started, at(run["end_time"])),
        )
        self.results.runs[kind].append(measured)
        _print(
            f"{kind} {len(self.results.runs[kind])}: created {measured.created_s * 1000:.0f} ms, pending "
            f"{measured.pending_s:.2f} s, running {measured.running_s:.2f} s, completed "
            f"{measured.completed_s:.2f} s"
        )

    def pending_at(self, run_id: str, states: list[dict[str, Any]] | None = None) -> float:
        """When the worker took the run: its first PENDING state."""
        states = self.api.states(run_id) if states is None else states
        return next(at(state["timestamp"]) for state in states if state["type"] == "PENDING")

    def _new_run(self) -> dict[str, Any] | None:
        fresh = [run for run in self.api.runs_of(self.train) if run["id"] not in self.seen]
        if len(fresh) > 1:
            raise RuntimeError(
                f"{len(fresh)} new runs of {TRAIN} for one event: {[r['name'] for r in fresh]}"
            )
        return fresh[0] if fresh else None

    def measure_imports(self, _kind: str) -> None:
        self.results.imports_s.append(
            measure([sys.executable, "-c", IMPORTS], self.env, timed_inside=False).seconds
        )

    # -- drops under incoming/ -------------------------------------------------------------------

    def put(self, key: str) -> tuple[float, str]:
        started = time.time()
        answer = self.s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=self.csv)
        return started, answer["ETag"].strip('"')

    def ingest_of(self, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The drop's `ingest-dataset` flow run once started, and the watcher run it is a subflow of."""
        source = f"s3://{DATA_BUCKET}/{key}"

        def started() -> dict[str, Any] | None:
            runs = self.api.flow_runs(
                {"flows": {"name": {"any_": ["ingest-dataset"]}}, "sort": "EXPECTED_START_TIME_DESC"}
            )
            return next(
                (r for r in runs if r["parameters"].get("source") == source and r["start_time"]), None
            )

        ingest = wait_for(started, 180, f"the ingest of {key}", every_s=0.5)
        parent = self.api.http.get(f"/task_runs/{ingest['parent_task_run_id']}").raise_for_status().json()
        return ingest, self.api.finished(parent["flow_run_id"])

    def poll_drop(self, phase_s: float) -> None:
        tick = self.ticks.next(time.time() + phase_s + 2)
        self.fill(tick - phase_s - 1)
        sleep_until(tick - phase_s)
        key = f"incoming/poll-{len(self.results.drops['poll']) + 1}/{DATASET}.csv"
        put_at, _ = self.put(key)
        self.poll_pending = True
        self.fill(tick)
        ingest, watcher = self.ingest_of(key)
        self.poll_pending = False
        if abs(at(watcher["expected_start_time"]) - tick) > 1:
            raise RuntimeError(f"{key} was ingested by {watcher['name']}, not by the run due at the tick")
        drop = DropRun(
            at(watcher["created"]) - put_at,
            self.pending_at(watcher["id"]) - put_at,
            at(watcher["start_time"]) - put_at,
            at(ingest["start_time"]) - put_at,
            tick - put_at,
            at(ingest["start_time"]) - tick,
        )
        self.results.drops["poll"].append(drop)
        _print(
            f"poll {len(self.results.drops['poll'])}: put {drop.before_tick_s:.1f} s before the tick, ingest "
            f"started {drop.ingest_s:.2f} s after the put ({drop.tick_to_ingest_s:.2f} s after the tick)"
        )

    def push_drop(self, _kind: str) -> None:
        """Put, then what the S3 forwarder Lambda does on the bucket's notification: its own handler."""
        key = f"incoming/push-{len(self.results.drops['push']) + 1}/{DATASET}.csv"
        put_at, etag = self.put(key)
        record = {
            "eventName": "ObjectCreated:Put",
            "eventTime": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "s3": {
                "bucket": {"name": DATA_BUCKET},
                "object": {"key": key, "size": len(self.csv), "eTag": etag},
            },
        }
        lambda_env = {"PREFECT_API_URL": self.api.url, "PREFECT_API_KEY": "", "PREFECT_API_AUTH_STRING": ""}
        with mock.patch.dict(os.environ, lambda_env):
            if self.forwarder.handler({"Records": [record]}, None) != {"forwarded": 1}:
                raise RuntimeError(f"the S3 forwarder did not forward {key}")
        ingest, watcher = self.ingest_of(key)
        drop = DropRun(
            at(watcher["created"]) - put_at,
            self.pending_at(watcher["id"]) - put_at,
            at(watcher["start_time"]) - put_at,
            at(ingest["start_time"]) - put_at,
        )
        self.results.drops["push"].append(drop)
        _print(
            f"push {len(self.results.drops['push'])}: watcher run created {drop.watcher_created_s:.2f} s, "
            f"running {drop.watcher_running_s:.2f} s, ingest started {drop.ingest_s:.2f} s after the put"
        )

    def watcher_busy(self) -> bool:
        return bool(self.api.runs_of(self.watch, state={"type": {"any_": ["PENDING", "RUNNING"]}}))

    def stop_polling(self) -> None:
        """Pause `watch-incoming`'s schedule (its trigger still runs it), then let a run under way end."""
        self.api.pause(WATCH)
        self.ticks = None
        wait_for(lambda: not self.watcher_busy(), 300, "the last scheduled watcher run", every_s=0.5)

    # -- everything ------------------------------------------------------------------------------

    def run(self) -> Results:
        self.results.load_start = os.getloadavg()
        self.prepare()
        interval = self.ticks.interval
        phases = [(k + 0.5) * interval / POLL_DROPS for k in range(POLL_DROPS)]  # evenly spread
        while phases:
            phase_s = self._next_phase(phases)
            phases.remove(phase_s)
            self.poll_drop(phase_s)
        self.stop_polling()
        self.fill(math.inf)
        self.results.watcher_overlaps = self._overlaps()
        self.results.load_end = os.getloadavg()
        return self.results

    def run_training(self) -> Results:
        """The event and direct training runs alone, `watch-incoming`'s schedule paused throughout."""
        self.results.load_start = os.getloadavg()
        self.prepare()
        self.stop_polling()
        self.queue = [kind for kind in self.queue if kind in ("event", "direct")]
        self.fill(math.inf)
        self.results.load_end = os.getloadavg()
        return self.results

    def _next_phase(self, phases: list[float]) -> float:
        """The longest phase still to measure that fits before the next tick, else the longest: the
        drops take consecutive ticks, with little waiting."""
        left = self.ticks.next(time.time()) - time.time() - 2
        return max((phase for phase in phases if phase <= left), default=max(phases))

    def _overlaps(self) -> int:
        """Training runs whose span met a watcher run's (from the worker's submission to its end)."""
        busy = [
            (max(at(run["created"]), at(run["expected_start_time"]) - PREFETCH_S), at(run["end_time"]))
            for run in self.api.runs_of(self.watch, end_time={"is_null_": False})
        ]
        spans = [run.span for runs in self.results.runs.values() for run in runs]
        return sum(any(start < end and begin < stop for begin, end in busy) for start, stop in spans)


def announced(manifest: dict[str, Any]) -> dict[str, Any]:
    """The event flows/ingest.py emits for a new dataset version with auto-train: its own code, captured."""
    captured: dict[str, Any] = {}

    def capture(event: str, **fields: Any) -> None:
        captured.update(event=event, **fields)

    with mock.patch("flows.ingest.emit_event", capture):
        announce_dataset(manifest, auto_train=True)
    return captured


def load_forwarder() -> ModuleType:
    """The S3 forwarder Lambda's handler module (deployments/aws is not a package)."""
    spec = importlib.util.spec_from_file_location("mltp_s3_forwarder", FORWARDER)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"no S3 forwarder at {FORWARDER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


# -- the section ---------------------------------------------------------------------------------


def median_p90(values: list[float], unit: str = "s") -> str:
    """Seconds to the hundredth, or milliseconds (from seconds) to the millisecond."""
    scale, digits = (1000, 0) if unit == "ms" else (1, 2)
    values = [value * scale for value in values]
    return f"{statistics.median(values):.{digits}f} / {p90(values):.{digits}f} {unit}"


def main_table(results: Results) -> str:
    events, direct = results.runs["event"], results.runs["direct"]
    push, poll = results.drops["push"], results.drops["poll"]
    rows = [
        Row(
            f"(a) event → train-model flow run created (the automation) vs `create_flow_run` → created "
            f"({len(events)} vs {len(direct)} runs)",
            [run.created_s * 1000 for run in events],
            [run.created_s * 1000 for run in direct],
            "ms",
        ),
        Row(
            "(b) event → flow run RUNNING (worker pick-up, process start) vs `create_flow_run` → RUNNING",
            [run.running_s for run in events],
            [run.running_s for run in direct],
            "s",
        ),
        Row(
            "(c) event → flow run COMPLETED (trained on Lambda) vs `create_flow_run` → COMPLETED",
            [run.completed_s for run in events],
            [run.completed_s for run in direct],
            "s",
        ),
        Row(
            f"watcher: put → its ingest-dataset starts, push event after the put vs polling alone every "
            f"{results.interval_s:.0f} s ({len(push)} vs {len(poll)} drops)",
            [drop.ingest_s for drop in push],
            [drop.ingest_s for drop in poll],
            "s",
        ),
        Row(
            "watcher: put → its watch-incoming run RUNNING, push vs poll",
            [drop.watcher_running_s for drop in push],
            [drop.watcher_running_s for drop in poll],
            "s",
        ),
    ]
    return table(rows)


def phases_table(results: Results) -> str:
    lines = [
        "| path (runs) | request → created | created → PENDING¹ | PENDING → RUNNING² | request → RUNNING "
        "| RUNNING → COMPLETED | request → COMPLETED |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, label in (("event", "event → automation → run"), ("direct", "`create_flow_run`")):
        runs = results.runs[kind]
        cells = [
            median_p90([run.created_s for run in runs], "ms"),
            median_p90([run.pending_s - run.created_s for run in runs]),
            median_p90([run.running_s - run.pending_s for run in runs]),
            median_p90([run.running_s for run in runs]),
            median_p90([run.completed_s - run.running_s for run in runs]),
            median_p90([run.completed_s for run in runs]),
        ]
        lines.append(f"| {label} ({len(runs)}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def header(results: Results) -> str:
    load = [load_average(results.load_start), load_average(results.load_end)]
    return "\n".join(
        [
            *environment(PACKAGES),
            f"- Load average (1, 5, 15 min) at the start: {load[0]}; at the end: {load[1]}. The machine is "
            "shared: other processes' load slows the new processes' start most.",
            f"- One private sandbox (`mltp sandbox up`: Prefect on {results.database}, work pool `mltp`, "
            "`prefect deploy --all`, one process "
            f"worker polling every {WORKER_POLL_S} s and submitting scheduled runs {PREFETCH_S:.0f} s "
            f"ahead). `{DATASET}` (150 rows) is ingested once with a target. Every timestamp is the Prefect "
            "API's (flow run `created`, state timestamps, `start_time`, `end_time`) or the benchmark's "
            "clock, on the same machine.",
            f"- Event to run: {EVENTS} `mltp.dataset.ingested` events, each the one flows/ingest.py emits "
            f"for that version with auto-train (resource `mltp.dataset.{DATASET}`, label `mltp.auto-train: "
            '"true"`, the full manifest payload: captured from its own `announce_dataset`, sent to `POST '
            f"/events` with a new id), interleaved with {DIRECT} `create_flow_run` calls on `{TRAIN}` "
            "with the parameters the first event's run got (dataset, version, target, task, compute "
            "`auto`, which plans Lambda for 150 rows). Timed from the request. One run at a time, each "
            "waited for to COMPLETED, so none waited for a slot of the deployment's concurrency limit "
            "(2, ENQUEUE).",
            "- Watcher: an object put under `incoming/<new dataset>/` of the data bucket (no known target: "
            "nothing trains), timed from the put to the start of its `ingest-dataset` subflow. Push: right "
            "after the put, the S3 forwarder Lambda's own handler (deployments/aws/s3_forwarder) posts "
            f"`mltp.incoming.created`; {PUSH_DROPS} drops, one at a time. Poll: no event, the "
            f"deployment's {results.interval_s:.0f} s schedule alone; {POLL_DROPS} drops (to keep the suite "
            f"short), put {', '.join(f'{d.before_tick_s:.0f}' for d in results.drops['poll'])} s before a "
            "tick: phases spread evenly over the interval, so their mean estimates a drop at a random "
            "moment.",
        ]
    )


def _slow_creates(results: Results) -> str:
    """The automation's tail: events whose run took over a second to be created, and how many of the
    Prefect client's retries each matches."""
    events = [run.created_s for run in results.runs["event"]]
    slow = sorted(value for value in events if value > 1)
    if not slow:
        return f"Every event's run was created within {max(events) * 1000:.0f} ms."
    fast = [value for value in events if value <= 1]
    direct = max(run.created_s for run in results.runs["direct"])
    found = (
        f"(a) has a tail: {len(slow)} of {len(events)} events' runs were created after "
        f"{', '.join(f'{value:.2f}' for value in slow)} s, the other {len(fast)} within "
        f"{max(fast, default=0) * 1000:.0f} ms (`create_flow_run`: all within {direct * 1000:.0f} ms)."
    )
    retries = [
        next((n for n, delay in RETRIED_S.items() if 0.7 * delay <= value <= 1.2 * delay + 1), None)
        for value in slow
    ]
    if None in retries:
        return found
    counts = ", ".join(
        f"{retries.count(n)} near {RETRIED_S[n]:.0f} s ({' + '.join(str(2**k) for k in range(1, n + 1))})"
        for n in sorted(set(retries))
    )
    return (
        f"{found} They sit at the sums of the retry delays (2, 4, 8 s, with jitter) of Prefect's HTTP "
        f"client, which the server's run-deployment action uses to create the run: {counts}. The client "
        "retries on HTTP 503, the server's answer when SQLite reports `database is locked` (another "
        "connection wrote first: the event's own bookkeeping, a flow's states and logs, a service loop). "
        f"The server answered {results.server_503s} requests with 503 while the suite ran (its log); checked "
        "separately with its `prefect.client` logger at DEBUG: every such creation came right after a logged "
        "503 and a retry about 2 s later."
    )


def _poll_drops(results: Results) -> str:
    lines = []
    for drop in results.drops["poll"]:
        late = drop.watcher_running_s - drop.before_tick_s
        submitted = drop.before_tick_s - drop.watcher_pending_s
        lines.append(
            f"put {drop.before_tick_s:.0f} s before the tick: ingest after {drop.ingest_s:.2f} s; its run, "
            f"submitted {submitted:.1f} s before the tick, was RUNNING "
            + (f"{late:.1f} s after the tick" if late > 0 else f"{-late:.1f} s before it")
        )
    return "; ".join(lines)


def footnotes(results: Results) -> str:
    push, poll = results.drops["push"], results.drops["poll"]
    queued = sum(run.queued for runs in results.runs.values() for run in runs)
    polled = ", ".join(f"{count} {kind}" for kind, count in results.between_ticks.items() if count)
    mean_poll = statistics.mean(drop.ingest_s for drop in poll)
    return "\n".join(
        [
            "Medians / p90 of the phases of the same training runs (p90 interpolated):",
            "",
            phases_table(results),
            "",
            f"- ¹ Created to PENDING: the worker's next poll (every {WORKER_POLL_S} s) and its submission.",
            "- ² PENDING to RUNNING: the worker runs the pool's command, a launcher "
            "(`python -m mltp.sandbox.flow_runs launch`) that asks the worker's fork server for the run's "
            "process: forked from a server that imported Prefect and the flows once, it loads the flow and "
            "enters RUNNING. A fresh `python -m prefect.engine`, what Prefect's worker starts by default, "
            f'would first import them: `python -c "{IMPORTS}"` alone takes {seconds(results.imports_s)} '
            f"({len(results.imports_s)} runs, measured in between).",
            "",
            _slow_creates(results),
            "",
            f"Poll drops: {_poll_drops(results)}. Their mean, {mean_poll:.1f} s, estimates a drop at a "
            f"random moment: half the interval ({results.interval_s / 2:.0f} s) plus the tick to the "
            f"ingest. The worker submits a scheduled run {PREFETCH_S:.0f} s "
            "early and starts its process at once; the server delays RUNNING until the scheduled time. "
            f"When the process starts within those {PREFETCH_S:.0f} s, polling costs the wait for the tick "
            "plus the watcher's work before the ingest (listing, claiming the drop, the previous version's "
            "target); when it starts later, the rest of the process start too. Tick to ingest start: "
            f"{seconds([d.tick_to_ingest_s for d in poll])}.",
            "",
            "Push drops, from the put: the automation created the watcher run after "
            f"{seconds([d.watcher_created_s for d in push])}, the worker took it after "
            f"{seconds([d.watcher_pending_s for d in push])}, it was RUNNING after "
            f"{seconds([d.watcher_running_s for d in push])} and started the ingest after "
            f"{seconds([d.ingest_s for d in push])}.",
            "",
            f"Measured in the idle time while poll drops waited for their tick: {polled or 'nothing'} (each "
            "only where it fitted before the worker's submission of the next tick, not within "
            f"{AFTER_TICK_S:.0f} s after one and not while a watcher run was under way); the rest after "
            "`watch-incoming`'s schedule was paused, one at a time (retrain-nightly's and reap-orphans' "
            "schedules were paused throughout). Training runs whose time overlapped a watcher run: "
            f"{results.watcher_overlaps}. Runs that waited for a concurrency slot: {queued}.",
            "",
            f"The Prefect server answered {results.server_503s} requests with 503 while the suite ran (its "
            "log, from the sandbox's start).",
            "",
            "moto, the Prefect server, the worker, its flow runs, the fleet and the trainers share the same "
            f"{os.cpu_count()} cores.",
        ]
    )


def comparison_table(compared: dict[Setup, Results]) -> str:
    baseline, ours = (compared[setup] for setup in SETUPS)
    figures = [
        ("event → train-model flow run created", "event", lambda run: run.created_s, "ms"),
        ("`create_flow_run` → created", "direct", lambda run: run.created_s, "ms"),
        ("event → flow run RUNNING", "event", lambda run: run.running_s, "s"),
        ("`create_flow_run` → RUNNING", "direct", lambda run: run.running_s, "s"),
        ("event → flow run COMPLETED", "event", lambda run: run.completed_s, "s"),
    ]
    lines = [
        f"| figure (median / p90) | {SETUPS[0].label} | {SETUPS[1].label} | ratio ours/baseline (medians) |",
        "|---|---|---|---|",
    ]
    for label, kind, phase, unit in figures:
        base, our = ([phase(run) for run in results.runs[kind]] for results in (baseline, ours))
        ratio = statistics.median(our) / statistics.median(base)
        lines.append(f"| {label} | {median_p90(base, unit)} | {median_p90(our, unit)} | {ratio:.2f}x |")
    lines += [
        f"| 503 answers (the Prefect server's log) | {baseline.server_503s} | {ours.server_503s} | |",
        f"| load average (1, 5, 15 min) at the start | {load_average(baseline.load_start)} "
        f"| {load_average(ours.load_start)} | |",
    ]
    return "\n".join(lines)


def comparison(compared: dict[Setup, Results]) -> str:
    runs = next(iter(compared.values())).runs
    return "\n".join(
        [
            "### PostgreSQL with 2 workers vs SQLite with 1 worker",
            "",
            f"A private sandbox for each (`mltp sandbox up --database sqlite --workers 1`, and `--database "
            f"postgres --workers 2`), with `watch-incoming`'s schedule paused throughout: the same "
            f"{len(runs['event'])} events and {len(runs['direct'])} `create_flow_run` calls as above, one "
            "run at a time. Baseline: SQLite with 1 worker; ratios are PostgreSQL with 2 workers over it, "
            "measured in the same run. 503 answers: the server's own count of the retryable database "
            "errors it answered with 503 (its log, with `PREFECT_SERVER_LOG_RETRYABLE_ERRORS` on), from "
            "every client, from the sandbox's start to the last run's end. p90 interpolated.",
            "",
            comparison_table(compared),
        ]
    )


def training_runs(setup: Setup, scratch: Path) -> Results:
    print(f"deployments: {setup.label}: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox(setup.database, setup.workers) as (endpoint, env):
        api = Api(Sandbox(Path(env["MLTP_HOME"])).endpoints().prefect_api_url)
        results = Suite(api, env, endpoint, scratch).run_training()
        results.server_503s = server_503s(Path(env["MLTP_HOME"]))
    return results


def run() -> Section:
    started = time.monotonic()
    print("deployments: starting a private sandbox ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="mltp-bench-data-") as scratch:
        with sandbox() as (endpoint, env):
            api = Api(Sandbox(Path(env["MLTP_HOME"])).endpoints().prefect_api_url)
            results = Suite(api, env, endpoint, Path(scratch)).run()
            results.database, results.server_503s = database_of(env), server_503s(Path(env["MLTP_HOME"]))
        compared = {setup: training_runs(setup, Path(scratch)) for setup in SETUPS}
    body = [
        header(results),
        main_table(results),
        footnotes(results),
        comparison(compared),
        f"Whole suite (sandbox starts and stops included): {(time.monotonic() - started) / 60:.1f} min.",
    ]
    return Section("deployments", "\n\n".join(body))
