"""The deployments' main paths on the production shape: the sandbox on its own PostgreSQL with two workers
(`mltp sandbox up --database postgres --workers 2`), as N machines would run them against one server.

The main paths of tests/test_deployments.py and the UI form of tests/test_ui_deployments.py run here
again, unchanged, against that sandbox (this module's `sandbox` fixture): the event-triggered run, the
concurrency limit under a burst (held by the server across both workers), cancel -> instances terminated,
the dropped-file watchers, the form in a real browser. Then what only several workers raise: a run is
cancelled whichever worker holds it, one watcher on each worker ingests each dropped file once, and a
worker killed mid-run leaves its run to finish or to the crash handling and the reaper.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator

import psutil
import pytest

from mltp.sandbox import postgres
from tests.conftest import RunningSandbox, free_port, run_mltp, wait_for
from tests.test_deployments import (  # noqa: F401 (fixtures and tests collected again in this module)
    cancel_and_check_instances_terminated,
    deployment,
    final_state,
    finished,
    ingests_of,
    seed,
    start_slow_ec2_training,
    test_a_burst_of_new_datasets_waits_for_training_slots,
    test_a_dropped_file_is_ingested_and_trained_once_by_concurrent_and_restarted_watchers,
    test_an_ingest_with_auto_train_starts_a_training_run_from_the_event,
    test_cancelling_a_training_run_terminates_its_instances,
    unique,
)
from tests.test_sandbox_postgres import ABORTED, SUBMITTED, env_of, reachable_home, status, up
from tests.test_ui_deployments import (  # noqa: F401
    browser,
    page,
    test_custom_run_form_trains_and_registers_a_model,
    test_the_form_submitted_20_times_while_a_run_trains_never_fails,
)

pytestmark = pytest.mark.servers
WORKERS = ("worker", "worker-2")  # the sandbox's service names; Prefect's are mltp-sandbox-worker(-2)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    home = reachable_home()
    reason = postgres.unusable_reason(home)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run's machine has PostgreSQL)")
        pytest.skip(reason)
    result = up(home, "--database", "postgres", "--postgres-port", str(free_port()), "--workers", "2")
    assert result.returncode == 0, result.stderr
    running = RunningSandbox(home, json.loads(result.stdout))
    running.stop_polling_incoming()
    yield running
    left = running.live_instances()
    run_mltp("sandbox", "down", env=env_of(home))
    shutil.rmtree(home.parent, ignore_errors=True)
    assert not left, f"instances left running in moto after the tests: {left}"


# -- what several workers raise ---------------------------------------------------------------------


def holder(sandbox: RunningSandbox, run_id: str) -> str | None:
    """The worker (its service name) that started a run: its log has the submission, not refused."""
    for name in WORKERS:
        log = (sandbox.home / "logs" / f"{name}.log").read_text()
        if run_id in SUBMITTED.findall(log) and run_id not in ABORTED.findall(log):
            return name
    return None


@contextlib.contextmanager
def only_worker(sandbox: RunningSandbox, name: str) -> Iterator[None]:
    """Meanwhile every other worker is frozen (SIGSTOP), as if its machine hung: only `name` takes runs."""
    services = status(sandbox.home)["services"]
    others = [services[other]["pid"] for other in WORKERS if other != name]
    frozen = [psutil.Process(pid) for pid in others if pid]  # a dead worker has no pid
    for process in frozen:
        process.suspend()
    try:
        yield
    finally:
        for process in frozen:
            process.resume()


def start_on(sandbox: RunningSandbox, name: str, create) -> dict:
    """A flow run created by `create()` while only worker `name` polls: that worker holds it."""
    with only_worker(sandbox, name):
        run = create()
        wait_for(lambda: holder(sandbox, run["id"]) == name, timeout=60, every=0.2)
    return run


def test_a_run_is_cancelled_whichever_worker_holds_it(sandbox, iris_csv) -> None:
    name = unique("cancel-each")
    seed(sandbox, iris_csv, name)
    runs = [start_on(sandbox, worker, lambda: start_slow_ec2_training(sandbox, name)) for worker in WORKERS]
    assert [holder(sandbox, run["id"]) for run in runs] == list(WORKERS)
    cancel_and_check_instances_terminated(sandbox, runs)


@contextlib.contextmanager
def concurrency_limit(sandbox: RunningSandbox, deployment_id: str, limit: int) -> Iterator[None]:
    """The deployment's concurrency limit set to `limit` meanwhile (as a team running more watchers would)."""
    before = sandbox.api(f"/deployments/{deployment_id}", method="GET")["global_concurrency_limit"]["limit"]
    sandbox.api(f"/deployments/{deployment_id}", {"concurrency_limit": limit}, "PATCH")
    try:
        yield
    finally:
        sandbox.api(f"/deployments/{deployment_id}", {"concurrency_limit": before}, "PATCH")


def test_one_watcher_on_each_worker_ingests_each_dropped_file_once(sandbox, iris_csv) -> None:
    from mltp import incoming
    from mltp.dataset_catalog import versions
    from mltp.s3_json import read_json

    name, files, per_run = unique("two-watchers"), 12, 8  # neither watcher may take them all
    bucket, s3 = sandbox.status["buckets"]["data"], sandbox.s3()
    header, *rows = iris_csv.read_text().splitlines()
    keys = [f"incoming/{name}/part-{number:02}.csv" for number in range(files)]
    for number, key in enumerate(keys):  # distinct bytes: each file a version of its own
        s3.put_object(Bucket=bucket, Key=key, Body="\n".join([header, *rows[number : number + 100]]).encode())
    watcher = deployment(sandbox, "watch-incoming")
    with concurrency_limit(sandbox, watcher["id"], len(WORKERS)):
        create = lambda: sandbox.api(  # noqa: E731
            f"/deployments/{watcher['id']}/create_flow_run", {"parameters": {"max_files": per_run}}
        )
        runs = [start_on(sandbox, worker, create) for worker in WORKERS]
        for run in runs:
            finished(sandbox, run["id"])

    owners, ingested = [], []
    for key in keys:
        assert [run["state_type"] for run in ingests_of(sandbox, f"s3://{bucket}/{key}")] == ["COMPLETED"]
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        drop = incoming.Drop(bucket, key, etag, 0, None)
        done, _ = read_json(s3, bucket, f"{incoming.DONE}{drop.id}.json")
        assert done["state"] == "ingested", done
        owners.append(done["flow_run_id"])
        ingested.append(done["version"])
    assert sorted(set(owners)) == sorted(run["id"] for run in runs)  # each watcher ingested some
    published = [version["version"] for version in versions(sandbox.client, bucket, name)]
    assert len(set(ingested)) == files and sorted(published) == sorted(ingested)  # one version per file
    assert [drop for drop in incoming.pending_drops(s3, bucket, "incoming/") if drop.key in keys] == []


def test_a_worker_killed_mid_run_leaves_its_run_crashed_with_instances_terminated(sandbox, iris_csv) -> None:
    from tests.test_deployments import LIVE, instances_of

    name = unique("killed-worker")
    seed(sandbox, iris_csv, name)
    run = start_on(sandbox, "worker-2", lambda: start_slow_ec2_training(sandbox, name))
    launched = wait_for(lambda: instances_of(sandbox, run["id"], ["pending", "running"]), timeout=120)
    worker = psutil.Process(status(sandbox.home)["services"]["worker-2"]["pid"])
    family = worker.children(recursive=True)  # its fork server, the run's launcher and engine
    worker.kill()  # kill -9: the machine's worker dies, no hook of its own runs

    crashed = final_state(sandbox, run["id"], timeout=60)
    assert crashed["state_type"] == "CRASHED" and crashed["state"]["message"], crashed["state"]
    wait_for(lambda: not instances_of(sandbox, run["id"], LIVE), timeout=60)  # the run's crash hook
    assert set(launched) <= set(instances_of(sandbox, run["id"], ["shutting-down", "terminated"]))
    psutil.wait_procs(family, timeout=30)
    assert [process.pid for process in family if process.is_running()] == []

    # The other worker goes on alone; `up` brings the killed one back.
    survivor = start_on(sandbox, "worker", lambda: start_slow_ec2_training(sandbox, name))
    cancel_and_check_instances_terminated(sandbox, [survivor])
    result = run_mltp("sandbox", "up", "--json", env=env_of(sandbox.home))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["worker-2"]["healthy"] is True
