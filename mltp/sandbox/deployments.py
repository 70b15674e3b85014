"""The sandbox's deployments: the `mltp` process work pool, `prefect deploy --all` on prefect.yaml, and
the worker that runs what the deployments schedule.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

from mltp.errors import SandboxError

WORK_POOL = "mltp"  # the pool every deployment in prefect.yaml names
TRAINING_QUEUE = "training"  # the pool's queue the training deployments run from
WORKER_NAME = "mltp-sandbox-worker"
# Seconds between the worker's polls for runs to start: an event's run starts within about this. Each
# poll also writes the pool's last-polled time: every second cost an idle sandbox's server a twentieth
# of a core and more SQLite lock contention (answered with 503) for half a second of latency.
WORKER_POLL_S = "2"
MISSED_RUNS_PAGE = 200  # the API's largest page


def project_dir() -> Path | None:
    """The folder holding prefect.yaml beside the flows (a source checkout); None for a plain install."""
    import flows

    folder = Path(flows.__file__).resolve().parents[1]
    return folder if (folder / "prefect.yaml").is_file() else None


def ensure_work_pool(api_url: str) -> None:
    """Create the work pool, or bring it up to date: its flow runs start through the worker's fork
    server (mltp/sandbox/flow_runs.py). Through Prefect's client, which retries the SQLite-backed
    server's occasional 503 "database is locked"."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.processutils import command_to_string
    from prefect.workers.process import ProcessWorker

    from mltp.prefect_api import activated
    from mltp.sandbox.flow_runs import LAUNCH_COMMAND

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = command_to_string(LAUNCH_COMMAND)
    pool = WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template)
    folder = project_dir()
    with activated(api_url), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(pool, overwrite=True)
            if folder is not None:
                _limit_training_queue(client, training_slots(folder))
        except httpx.HTTPStatusError as error:
            raise SandboxError(
                f"could not create the {WORK_POOL!r} work pool: HTTP {error.response.status_code}: "
                f"{error.response.text}"
            ) from error


def training_slots(folder: Path) -> int:
    """The training limit prefect.yaml gives its training deployments (`definitions.training_limit`)."""
    import yaml

    project = yaml.safe_load((folder / "prefect.yaml").read_text())
    return int(project["definitions"]["training_limit"]["limit"])


def _limit_training_queue(client, slots: int) -> None:
    """The training queue holds at most `slots` runs at once: the worker takes no more from it, and a
    waiting run is taken at the worker's next poll after a slot frees."""
    from prefect.exceptions import ObjectNotFound

    try:
        queue = client.read_work_queue_by_name(TRAINING_QUEUE, work_pool_name=WORK_POOL)
    except ObjectNotFound:
        client.create_work_queue(TRAINING_QUEUE, work_pool_name=WORK_POOL, concurrency_limit=slots)
        return
    if queue.concurrency_limit != slots:
        client.update_work_queue(queue.id, concurrency_limit=slots)


class DeployAll:
    """`prefect deploy --all` in the project folder, exactly as a user would run it by hand; started in
    the background so that `up` creates the blocks meanwhile."""

    def __init__(self, env: dict[str, str], log_file: Path, folder: Path | None) -> None:
        self.folder = folder
        self.log_file = log_file
        self.process: subprocess.Popen | None = None
        if self.folder is None:
            return
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def finish(self, timeout: float = 300) -> str:
        if self.process is None:
            return "no prefect.yaml beside the installed flows: run `prefect deploy --all` in your checkout"
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            took = f"`prefect deploy --all` ran over {timeout:.0f} s"
            raise SandboxError(f"{took}: see {self.log_file}") from None
        if returncode != 0:
            raise SandboxError(f"`prefect deploy --all` failed: see {self.log_file}")
        return f"deployed {self.folder / 'prefect.yaml'}"

    def stop(self) -> None:
        """Kill it unless it has finished (`up` failed meanwhile, or it ran over its time)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def worker_name(number: int) -> str:
    """The Prefect name of the sandbox's `number`th worker (1: the one every sandbox has)."""
    return WORKER_NAME if number == 1 else f"{WORKER_NAME}-{number}"


def worker_argv(name: str = WORKER_NAME) -> list[str]:
    """A worker, with its flow runs' fork server beside it."""
    return [
        sys.executable,
        "-m",
        "mltp.sandbox.flow_runs",
        "worker",
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        WORK_POOL,
        "--type",
        "process",
        "--name",
        name,
    ]


def worker_online(api_url: str, name: str = WORKER_NAME) -> bool:
    try:
        answer = httpx.post(f"{api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=2)
        workers = answer.json() if answer.status_code == 200 else []  # 503 while its database is down
    except (httpx.HTTPError, ValueError):
        return False
    return any(worker["name"] == name and worker["status"] == "ONLINE" for worker in workers)


def drop_missed_runs(api_url: str) -> dict[str, int]:
    """Delete the scheduled runs that fell due while no worker ran, but each deployment's latest.

    A sandbox that was down for an hour comes back with sixty overdue watcher polls, which the worker
    would run one after the other; one poll, reap or retrain does the work of all its missed ones.
    Runs somebody created by hand are kept. Returns deployment name -> runs dropped.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    from mltp.prefect_api import activated

    overdue = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)),
    )
    with activated(api_url), get_client(sync_client=True) as client:
        runs, page = [], None
        while page is None or len(page) == MISSED_RUNS_PAGE:
            page = client.read_flow_runs(
                flow_run_filter=overdue,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=MISSED_RUNS_PAGE,
                offset=len(runs),
            )
            runs += page
        latest: set = set()
        dropped: Counter[str] = Counter()
        names = {deployment.id: deployment.name for deployment in client.read_deployments()}
        for run in runs:
            if not run.auto_scheduled or run.deployment_id is None:
                continue
            if run.deployment_id not in latest:
                latest.add(run.deployment_id)
                continue
            with contextlib.suppress(ObjectNotFound):  # the worker, just started elsewhere, took it
                client.delete_flow_run(run.id)
                dropped[names.get(run.deployment_id, str(run.deployment_id))] += 1
    return dict(dropped)
