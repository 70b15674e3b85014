"""prefect.yaml's deployments on the sandbox: deployed by `mltp sandbox up`, run by its worker.

Each way to start training goes through the real servers: an event (`mltp.dataset.ingested`), a file
dropped under `incoming/` (watched by concurrent and restarted watchers), a schedule, and a manual
`prefect deployment run` with parameters. The UI form has its own browser test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import run_mltp, wait_for

pytestmark = pytest.mark.servers

PROJECT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")
DEPLOYMENTS = {
    "ingest-and-train",
    "train-model",
    "retrain-nightly",
    "train-on-new-dataset",
    "watch-incoming",
    "reap-orphans",
}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deployment(sandbox, name: str) -> dict:
    found = sandbox.api("/deployments/filter", {"deployments": {"name": {"any_": [name]}}})
    assert len(found) == 1, f"deployment {name} is not on the server"
    return found[0]


def runs_of(sandbox, deployment_name: str) -> list[dict]:
    return sandbox.api(
        "/flow_runs/filter",
        {"deployments": {"name": {"any_": [deployment_name]}}, "sort": "START_TIME_DESC", "limit": 200},
    )


def flow_runs_named(sandbox, flow_name: str) -> list[dict]:
    body = {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 200}
    return sandbox.api("/flow_runs/filter", body)


def final_state(sandbox, run_id: str, timeout: float = 240) -> dict:
    """The run once it reached a final state (fails if it has not within `timeout` seconds)."""
    return wait_for(
        lambda: (
            (found := sandbox.api(f"/flow_runs/{run_id}", method="GET"))["state_type"] in TERMINAL and found
        ),
        timeout=timeout,
        every=0.5,
    )


def finished(sandbox, run_id: str, timeout: float = 240) -> dict:
    run = final_state(sandbox, run_id, timeout)
    log = (sandbox.home / "logs" / "worker.log").read_text()[-3000:]
    assert run["state_type"] == "COMPLETED", f"{run['state_name']}: {run['state']['message']}\n{log}"
    return run


def training_runs_for(sandbox, dataset: str) -> list[dict]:
    return [
        run for run in runs_of(sandbox, "train-on-new-dataset") if run["parameters"]["dataset"] == dataset
    ]


def emit(sandbox, name: str, resource: dict, payload: dict | None = None) -> None:
    """`prefect event emit`, as a user (or another system) would send it."""
    result = subprocess.run(
        [PREFECT, "event", "emit", name, "--resource", json.dumps(resource)]
        + (["--payload", json.dumps(payload)] if payload else []),
        env=prefect_env(sandbox),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def prefect_env(sandbox) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": sandbox.prefect_api_url}


def ingest(sandbox, path: Path, name: str, *extra: str) -> dict:
    """`mltp datasets ingest`, the way a user asks for automatic training."""
    result = run_mltp("datasets", "ingest", str(path), "--name", name, "--target", "target", *extra, "--json",
                      env=sandbox.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def seed(sandbox, path: Path, name: str) -> None:
    """A dataset a test starts from, ingested in-process (the CLI's way is tested elsewhere)."""
    from mltp import datasets

    datasets.ingest(sandbox.client, sandbox.status["buckets"]["data"], str(path), name=name, target="target")


def model(sandbox, name: str, alias: str | None = None) -> dict:
    from mltp import registry

    found = registry.get_version(sandbox.s3(), sandbox.status["buckets"]["models"], name, alias=alias)
    return found.as_dict()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- what `mltp sandbox up` deployed ---------------------------------------------------------------


def test_sandbox_deploys_every_deployment_to_its_work_pool(sandbox) -> None:
    found = {entry["name"]: entry for entry in sandbox.api("/deployments/filter", {})}
    assert set(found) >= DEPLOYMENTS
    for name in DEPLOYMENTS:
        assert found[name]["work_pool_name"] == "mltp"
        assert found[name]["enforce_parameter_schema"] is True
        assert found[name]["pull_steps"] == []  # module entrypoints: the worker runs the installed package
    workers = sandbox.api("/work_pools/mltp/workers/filter", {})
    assert [worker["status"] for worker in workers if worker["name"] == "mltp-sandbox-worker"] == ["ONLINE"]


def test_the_pools_flow_runs_start_from_the_workers_fork_server(sandbox) -> None:
    """The pool's command is the launcher (tests/test_fork_server.py), and its server runs beside the
    worker: every run the tests here start through the worker goes through both."""
    import psutil
    from prefect.utilities.processutils import command_to_string

    from mltp.sandbox.flow_runs import LAUNCH_COMMAND, SERVER_ENV

    pool = sandbox.api("/work_pools/mltp", method="GET")
    assert pool["base_job_template"]["variables"]["properties"]["command"]["default"] == command_to_string(
        LAUNCH_COMMAND
    )
    worker = psutil.Process(sandbox.status["services"]["worker"]["pid"])
    # The worker's other children, if any, are launchers of runs in flight (a schedule's, say), which
    # may also end while they are listed.
    commands = []
    for child in worker.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            commands.append(child.cmdline()[1:])
    serving = ["-m", "mltp.sandbox.flow_runs", "serve", worker.environ()[SERVER_ENV], str(worker.pid)]
    assert [command for command in commands if command[:3] == serving[:3]] == [serving]


def test_the_manual_form_has_every_parameter_described_with_dropdowns(sandbox) -> None:
    from mltp.trainer.algorithms import ALGORITHMS

    schema = deployment(sandbox, "ingest-and-train")["parameter_openapi_schema"]
    properties = schema["properties"]
    assert schema["required"] == ["source"]
    assert {"source", "target", "algorithm", "compute", "dataset_name", "min_metric", "promote"} <= set(
        properties
    )
    assert [name for name, field in properties.items() if not field.get("description")] == []
    assert properties["algorithm"]["enum"] == list(ALGORITHMS)
    assert properties["algorithm"]["default"] == "random_forest"
    assert properties["compute"]["enum"] == ["auto", "lambda", "ec2", "local"]
    assert properties["compute"]["default"] == "auto"
    train = deployment(sandbox, "train-on-new-dataset")["parameter_openapi_schema"]
    assert [name for name, field in train["properties"].items() if not field.get("description")] == []


def test_schedules_and_concurrency_limits(sandbox) -> None:
    nightly = deployment(sandbox, "retrain-nightly")
    assert [
        (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in nightly["schedules"]
    ] == [("0 2 * * *", "UTC", True)]
    assert nightly["parameters"]["min_metric"] == "accuracy>=0.9"
    upcoming = wait_for(
        lambda: [run for run in runs_of(sandbox, "retrain-nightly") if run["state_type"] == "SCHEDULED"]
    )
    for run in upcoming:  # the server's scheduler has already planned the next nights
        start = datetime.fromisoformat(run["expected_start_time"])
        assert (start.hour, start.minute) == (2, 0)
    assert [s["schedule"]["interval"] for s in deployment(sandbox, "reap-orphans")["schedules"]] == [900.0]
    assert [s["schedule"]["interval"] for s in deployment(sandbox, "watch-incoming")["schedules"]] == [60.0]
    for name in ("ingest-and-train", "train-model", "retrain-nightly", "train-on-new-dataset"):
        found = deployment(sandbox, name)
        assert found["global_concurrency_limit"]["limit"] == 2, name
        assert found["concurrency_options"]["collision_strategy"] == "ENQUEUE", name
        assert found["work_queue_name"] == "training", name  # the worker takes 2 at most from it
    queue = sandbox.api("/work_pools/mltp/queues/training", method="GET")
    assert queue["concurrency_limit"] == 2
    assert deployment(sandbox, "watch-incoming")["work_queue_name"] == "default"


def test_prefect_deploy_all_works_by_hand(sandbox) -> None:
    before = deployment(sandbox, "watch-incoming")["updated"]
    result = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=PROJECT,
        env=prefect_env(sandbox),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert deployment(sandbox, "watch-incoming")["updated"] > before
    sandbox.stop_polling_incoming()  # the deploy turned the schedule back on
    automations = sandbox.api("/automations/filter", {})
    # every deploy replaces a deployment's automations: still exactly one per trigger
    assert sorted(a["name"] for a in automations if a["name"].startswith(("train-on-new", "watch-inc"))) == [
        "train-on-new-dataset__automation_1",
        "watch-incoming__automation_1",
    ]


# -- events ----------------------------------------------------------------------------------------


def test_an_ingest_with_auto_train_starts_a_training_run_from_the_event(sandbox, iris_csv) -> None:
    quiet, trained = unique("no-auto"), unique("auto")
    ingest(sandbox, iris_csv, quiet)
    manifest = ingest(sandbox, iris_csv, trained, "--auto-train")
    run = wait_for(lambda: training_runs_for(sandbox, trained), timeout=30)[0]
    assert run["parameters"] == {
        "dataset": trained,
        "dataset_version": manifest["version"],
        "target": "target",
        "task": "classification",
        "compute": "auto",
    }
    finished(sandbox, run["id"])
    shown = model(sandbox, trained)
    assert shown["lineage"]["flow_run_id"] == run["id"]
    assert training_runs_for(sandbox, quiet) == []  # ingested first, without --auto-train: no run
    again = ingest(sandbox, iris_csv, quiet, "--auto-train")  # the same bytes, now to be trained
    assert not again["created"]
    finished(sandbox, wait_for(lambda: training_runs_for(sandbox, quiet), timeout=30)[0]["id"])


def test_an_event_missing_optional_keys_still_starts_a_run(sandbox, iris_csv) -> None:
    name = unique("bare-event")
    seed(sandbox, iris_csv, name)
    emit(
        sandbox,
        "mltp.dataset.ingested",
        {
            "prefect.resource.id": f"mltp.dataset.{name}",
            "prefect.resource.name": name,
            "mltp.auto-train": "true",
        },
    )
    run = wait_for(lambda: training_runs_for(sandbox, name), timeout=30)[0]
    assert run["parameters"] == {
        "dataset": name,
        "dataset_version": None,
        "target": None,
        "task": None,
        "compute": "auto",
    }
    finished(sandbox, run["id"])
    failures = sandbox.api(
        "/events/filter", {"filter": {"event": {"prefix": ["prefect.automation.action.failed"]}}}
    )
    assert failures["events"] == []


def test_a_burst_of_new_datasets_waits_for_training_slots(sandbox, iris_csv) -> None:
    name = unique("burst")
    seed(sandbox, iris_csv, name)
    resource = {"prefect.resource.id": f"mltp.dataset.{name}", "mltp.auto-train": "true"}
    for _ in range(3):
        emit(sandbox, "mltp.dataset.ingested", resource, {"name": name})
    runs = wait_for(lambda: len(found := training_runs_for(sandbox, name)) == 3 and found, timeout=60)
    most_at_once = 0
    while not all(run["state_type"] in TERMINAL for run in runs):
        runs = training_runs_for(sandbox, name)
        most_at_once = max(most_at_once, sum(run["state_type"] == "RUNNING" for run in runs))
        time.sleep(0.2)
    assert [run["state_type"] for run in runs] == ["COMPLETED"] * 3
    assert 1 <= most_at_once <= 2  # never over the deployment's limit (a busy machine may not reach it)


# -- files dropped under incoming/ -----------------------------------------------------------------


def run_watcher(sandbox, **parameters) -> subprocess.Popen:
    """The watch-incoming flow in a process of its own, as a second worker (or a restart) would run it."""
    code = (
        "import json, sys; from flows.watch import watch_incoming; "
        "print(json.dumps(watch_incoming(**json.loads(sys.argv[1]))))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(parameters)],
        env={**prefect_env(sandbox), "PREFECT_LOGGING_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def report_of(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def ingests_of(sandbox, uri: str) -> list[dict]:
    return [run for run in flow_runs_named(sandbox, "ingest-dataset") if run["parameters"]["source"] == uri]


def test_a_dropped_file_is_ingested_and_trained_once_by_concurrent_and_restarted_watchers(
    sandbox, iris_csv
) -> None:
    from mltp import incoming

    name = unique("dropped")
    bucket = sandbox.status["buckets"]["data"]
    s3 = sandbox.s3()
    seed(sandbox, iris_csv, name)
    lines = iris_csv.read_text().splitlines()
    key = f"incoming/{name}/november.csv"
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(lines[:120]).encode())
    # the push event (what the S3 forwarder sends) starts the deployment's watcher; another one races it
    emit(sandbox, "mltp.incoming.created", {"prefect.resource.id": f"mltp.incoming.{bucket}/{key}"})
    racing = report_of(run_watcher(sandbox))
    uri = f"s3://{bucket}/{key}"
    wait_for(
        lambda: [run for run in ingests_of(sandbox, uri) if run["state_type"] == "COMPLETED"], timeout=60
    )
    training = wait_for(lambda: training_runs_for(sandbox, name), timeout=60)
    finished(sandbox, training[0]["id"])
    assert len(ingests_of(sandbox, uri)) == 1
    assert len(training_runs_for(sandbox, name)) == 1
    assert racing["ingested"] == [] or racing["ingested"][0]["key"] == key

    # A watcher crashed holding the claim of a second file. The next (restarted) watcher ingests nothing
    # twice, and takes the orphaned file over since its lease ran out.
    crashed_key = f"incoming/{name}/december.csv"
    s3.put_object(Bucket=bucket, Key=crashed_key, Body="\n".join(lines[:130]).encode())
    drop = next(d for d in incoming.pending_drops(s3, bucket, "incoming/") if d.key == crashed_key)
    assert incoming.claim(
        s3, drop, "crashed-run", timedelta(minutes=30), datetime.now(UTC) - timedelta(hours=2)
    )
    restarted = report_of(run_watcher(sandbox))
    assert key not in [entry["key"] for entry in restarted["ingested"]]
    crashed_uri = f"s3://{bucket}/{crashed_key}"
    wait_for(lambda: [run for run in ingests_of(sandbox, crashed_uri) if run["state_type"] == "COMPLETED"])
    wait_for(lambda: len(training_runs_for(sandbox, name)) == 2, timeout=60)
    assert len(ingests_of(sandbox, uri)) == 1
    assert len(ingests_of(sandbox, crashed_uri)) == 1


def test_a_bad_dropped_file_is_rejected_once_and_leaves_nothing(sandbox) -> None:
    from mltp import incoming
    from mltp.s3_json import read_json

    name = unique("bad-drop")
    bucket = sandbox.status["buckets"]["data"]
    s3 = sandbox.s3()
    key = f"incoming/{name}/notes.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"not a table")
    first, second = report_of(run_watcher(sandbox)), report_of(run_watcher(sandbox))
    drop = incoming.Drop(bucket, key, s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"'), 0, None)
    marker = f"{incoming.DONE}{drop.id}.json"
    done = wait_for(lambda: read_json(s3, bucket, marker)[0])
    assert done["state"] == "rejected" and "notes.txt" in done["error"]  # whichever watcher got it first
    assert sum(key in [entry["key"] for entry in report["rejected"]] for report in (first, second)) <= 1
    assert s3.list_objects_v2(Bucket=bucket, Prefix=f"datasets/{name}/")["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket=bucket, Prefix="staging/")["KeyCount"] == 0
    assert [run["state_type"] for run in ingests_of(sandbox, f"s3://{bucket}/{key}")] == ["FAILED"]


# -- a schedule and a manual run -------------------------------------------------------------------


def test_a_scheduled_run_is_created_by_the_schedule_and_completes(sandbox, iris_csv) -> None:
    name = unique("nightly")
    seed(sandbox, iris_csv, name)
    nightly = deployment(sandbox, "retrain-nightly")
    # A schedule due every hour (first in 15 s) instead of at 02:00, for this test's dataset; removed
    # once its first run has started, long before the next falls due, however slow the worker.
    schedule = {"interval": 3600, "anchor_date": (datetime.now(UTC) - timedelta(seconds=3585)).isoformat()}
    added = sandbox.add_schedule(nightly["id"], schedule, {"dataset": name})

    def scheduled_runs() -> list[dict]:
        return [r for r in runs_of(sandbox, "retrain-nightly") if r["parameters"]["dataset"] == name]

    try:
        started = wait_for(lambda: [r for r in scheduled_runs() if r["state_type"] != "SCHEDULED"], 150)
        run = started[0]
    finally:
        sandbox.api(f"/deployments/{nightly['id']}/schedules/{added}", method="DELETE")
    assert run["auto_scheduled"] is True
    assert run["parameters"]["min_metric"] == "accuracy>=0.9"  # the deployment's quality gate
    finished(sandbox, run["id"])
    assert [r["id"] for r in scheduled_runs()] == [run["id"]]  # the schedule's later runs went with it
    shown = model(sandbox, name, alias="champion")
    assert shown["lineage"]["flow_run_id"] == run["id"]  # passed the gate, registered and promoted


def test_a_manual_run_with_parameters_completes_and_registers(sandbox, iris_csv) -> None:
    name = unique("manual")
    seed(sandbox, iris_csv, name)  # the same bytes, ingested for another target: the run trains its own
    result = subprocess.run(
        [PREFECT, "deployment", "run", "ingest-and-train/ingest-and-train",
         "--param", f"source={iris_csv}", "--param", "target=petal length (cm)",
         "--param", f"dataset_name={name}",
         "--param", "compute=lambda", "--param", "algorithm=hist_gradient_boosting",
         "--watch", "--watch-timeout", "240"],
        env=prefect_env(sandbox),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Completed" in result.stdout
    shown = model(sandbox, name)
    assert shown["version"] == 1 and shown["task"] == "regression"
    assert shown["lineage"]["dataset"]["name"] == name


def test_a_manual_run_with_a_bad_parameter_is_refused_before_it_runs(sandbox) -> None:
    source = f"/tmp/{unique('refused')}.csv"
    result = subprocess.run(
        [PREFECT, "deployment", "run", "ingest-and-train/ingest-and-train",
         "--param", f"source={source}", "--param", "algorithm=xgboost"],
        env=prefect_env(sandbox),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "xgboost" in result.stdout + result.stderr
    created = [run for run in runs_of(sandbox, "ingest-and-train") if run["parameters"]["source"] == source]
    assert created == []


def start_training(sandbox, dataset: str, **parameters) -> dict:
    """A run of `train-on-new-dataset`, as the event or the UI starts one."""
    flow_runs = f"/deployments/{deployment(sandbox, 'train-on-new-dataset')['id']}/create_flow_run"
    return sandbox.api(flow_runs, {"parameters": {"dataset": dataset, **parameters}})


def start_slow_ec2_training(sandbox, dataset: str) -> dict:
    """A `train-on-new-dataset` run of minutes of EC2 time (seconds per candidate, many candidates)."""
    return start_training(
        sandbox,
        dataset,
        compute="ec2",
        hyperparameters={"n_estimators": 4000},
        grid={"max_depth": list(range(2, 30))},
        register_best=False,
    )


def instances_of(sandbox, run_id: str, states: list[str]) -> list[str]:
    """The EC2 instances launched for a flow run, in one of `states`."""
    filters = [
        {"Name": "tag:mltp:flow-run-id", "Values": [run_id]},
        {"Name": "instance-state-name", "Values": states},
    ]
    pages = sandbox.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


LIVE = ["pending", "running", "stopping", "stopped"]


def cancel_and_check_instances_terminated(sandbox, runs: list[dict]) -> None:
    """Cancel runs whose instances run (as the UI's Cancel does): each ends CANCELLED, its instances gone."""
    launched = {run["id"]: wait_for_instances(sandbox, run["id"]) for run in runs}
    for run_id in launched:
        sandbox.api(f"/flow_runs/{run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})
    for run_id, instances in launched.items():
        wait_cancelled_and_terminated(sandbox, run_id, instances)


def wait_for_instances(sandbox, run_id: str) -> list[str]:
    return wait_for(lambda: instances_of(sandbox, run_id, ["pending", "running"]), timeout=120)


def wait_cancelled_and_terminated(sandbox, run_id: str, instances: list[str]) -> None:
    wait_for(lambda: sandbox.api(f"/flow_runs/{run_id}", method="GET")["state_type"] == "CANCELLED", 60)
    wait_for(lambda: not instances_of(sandbox, run_id, LIVE), timeout=60)
    assert set(instances) <= set(instances_of(sandbox, run_id, ["shutting-down", "terminated"]))


def test_cancelling_a_training_run_terminates_its_instances(sandbox, iris_csv) -> None:
    name = unique("cancelled")
    seed(sandbox, iris_csv, name)
    cancel_and_check_instances_terminated(sandbox, [start_slow_ec2_training(sandbox, name)])
