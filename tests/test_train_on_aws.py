"""`mltp train` on EC2 and Lambda the way a user runs it: the console script, the sandbox's moto server,
its fleet (which really runs every instance's and invocation's trainer) and its Prefect server. Faults
are real too: trainers killed or frozen, throttling injected between boto3 and moto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn import datasets as toy

from mltp.sandbox.lifecycle import DATA_BUCKET, MODELS_BUCKET
from tests.conftest import run_mltp, start_mltp, wait_for
from tests.fault_proxy import FaultProxy, platform_routed
from tests.forked_cli import ForkedCommand
from tests.test_ui import render

pytestmark = pytest.mark.servers
FAST = ["--heartbeat", "1", "--heartbeat-timeout", "5"]
# Under injected faults a poll may retry for seconds: a short heartbeat timeout would call healthy
# trainers lost. Detection of silent trainers is tested with FAST, on the plain sandbox.
PATIENT = ["--heartbeat", "1", "--heartbeat-timeout", "60"]


def ingest(sandbox, folder, frame: pd.DataFrame, stem: str) -> str:
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    result = run_mltp("datasets", "ingest", str(path), "--target", "target", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    return name


@pytest.fixture(scope="module")
def datasets(sandbox, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("aws-data")
    rng = np.random.default_rng(0)
    rows = 120_000
    features = rng.normal(size=(rows, 6))
    big = pd.DataFrame(features, columns=[f"x{i}" for i in range(6)])
    big["target"] = (
        features[:, 0] + 0.5 * features[:, 1] - features[:, 2] + rng.normal(0, 0.5, rows) > 0
    ).astype(int)
    return {
        "big": ingest(sandbox, folder, big, "big"),
        "small": ingest(sandbox, folder, toy.load_breast_cancer(as_frame=True).frame, "cancer"),
    }


def instances_of(sandbox, run_id: str) -> list[dict]:
    pages = (
        sandbox.client("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "tag:mltp:run-id", "Values": [run_id]}])
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def train(sandbox, *args: str) -> subprocess.CompletedProcess:
    return run_mltp("train", *args, "--json", env=sandbox.env, timeout=300)


def metric_values(sandbox, job_id: str, metric: str) -> list[float]:
    now = datetime.now(UTC)
    result = sandbox.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "ML/Training",
                        "MetricName": metric,
                        "Dimensions": [{"Name": "JobId", "Value": job_id}],
                    },
                    "Period": 5,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
    )
    return result["MetricDataResults"][0]["Values"]


@pytest.mark.browser
def test_a_big_dataset_trains_on_ec2_with_its_grid_over_three_instances(sandbox, datasets, tmp_path) -> None:
    result = train(
        sandbox,
        "--dataset",
        datasets["big"],
        "--algorithm",
        "hist_gradient_boosting",
        "--grid",
        "max_iter=10,20,30",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["compute"]["backend"] == "ec2" and report["compute"]["instances"] == 3
    assert any("over the Lambda threshold" in reason for reason in report["compute"]["reasons"])
    assert [job["state"] for job in report["jobs"]] == ["succeeded"] * 3
    assert report["best"]["params"]["max_iter"] in (10, 20, 30) and report["metrics"]["accuracy"] > 0.8
    instances = instances_of(sandbox, report["run_id"])
    assert len(instances) == 3  # one per shard, none twice
    assert {job["handle"] for job in report["jobs"]} == {i["InstanceId"] for i in instances}
    for instance in instances:
        assert instance["State"]["Name"] == "terminated"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        tags = {tag["Key"] for tag in instance["Tags"]}
        assert {"mltp:job-id", "mltp:flow-run-id", "mltp:expires-at", "Name"} <= tags
    for job in report["jobs"]:  # visible in CloudWatch
        assert max(metric_values(sandbox, job["job_id"], "TrainingProgress")) == 1.0
        assert metric_values(sandbox, job["job_id"], "Heartbeat")
    assert_visible_in_prefect(sandbox, report, tmp_path)


def assert_visible_in_prefect(sandbox, report, tmp_path) -> None:
    flow_run_id = instances_of(sandbox, report["run_id"])[0]["Tags"]
    flow_run_id = next(tag["Value"] for tag in flow_run_id if tag["Key"] == "mltp:flow-run-id")
    run = sandbox.api(f"/flow_runs/{flow_run_id}", method="GET")
    assert run["state_type"] == "COMPLETED" and run["flow_id"], run
    artifacts = sandbox.api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    kinds = {artifact["type"] for artifact in artifacts}
    assert {"progress", "markdown"} <= kinds
    progress = next(artifact for artifact in artifacts if artifact["type"] == "progress")
    assert progress["data"] == 100.0
    # The run folder's link is a markdown artifact too, and the API lists artifacts in no set order.
    markdown = next(
        artifact
        for artifact in artifacts
        if artifact["type"] == "markdown" and artifact["data"].startswith("# Training")
    )
    assert report["run_id"] in markdown["data"] and "over the Lambda threshold" in markdown["data"]
    ui = sandbox.status["prefect_ui_url"]
    page = render(f"{ui}/artifacts/artifact/{markdown['id']}", tmp_path / "profile", "--dump-dom")
    for text in (report["run_id"], "over the Lambda threshold", report["compute"]["instance_type"]):
        assert text in page, f"{text!r} not on the training artifact's page"
    page = render(f"{ui}/runs/flow-run/{flow_run_id}", tmp_path / "profile", "--dump-dom")
    assert "train-model" in page and "Completed" in page


def test_a_small_dataset_trains_on_lambda(sandbox, datasets) -> None:
    result = train(
        sandbox, "--dataset", datasets["small"], "--algorithm", "random_forest", "--param", "n_estimators=30"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["compute"]["backend"] == "lambda"
    [job] = report["jobs"]
    assert job["state"] == "succeeded" and job["backend"] == "lambda"
    assert max(metric_values(sandbox, job["job_id"], "TrainingProgress")) == 1.0
    assert instances_of(sandbox, report["run_id"]) == []


def test_a_forced_backend_over_its_limits_is_refused_before_any_launch(sandbox, datasets) -> None:
    before = sandbox.live_instances(), len(list_runs(sandbox))
    result = run_mltp(
        "train",
        "--dataset",
        datasets["big"],
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=3000",
        "--compute",
        "lambda",
        env=sandbox.env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "compute=lambda is refused: estimated memory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (sandbox.live_instances(), len(list_runs(sandbox))) == before


def list_runs(sandbox) -> list[str]:
    bucket = sandbox.status["buckets"]["models"]
    pages = sandbox.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_trainer_that_raises_fails_with_its_message_and_is_not_relaunched(sandbox, datasets) -> None:
    result = train(
        sandbox,
        "--dataset",
        datasets["small"],
        "--algorithm",
        "logistic_regression",
        "--compute",
        "ec2",
        "--param",
        "penalty=elasticnet",
        "--param",
        "solver=lbfgs",
    )
    assert result.returncode == 2  # only scikit-learn's fit knows, but the hyperparameters are the user's
    assert "training failed (user)" in result.stderr
    assert "Solver lbfgs supports only 'l2' or None penalties" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def start_training(sandbox, *args: str) -> ForkedCommand:
    return start_mltp("train", *args, "--json", env=sandbox.env)


def ec2_trainers(sandbox) -> dict[str, int]:
    """Instance id -> pid of each trainer the fleet runs for an EC2 instance now."""
    running = httpx.get(f"{sandbox.status['lambda_endpoint_url']}/fleet/health").json()["running"]
    return {key: pid for key, pid in running.items() if key.startswith("i-")}


def new_trainer(sandbox, known: set[str]) -> tuple[str, int]:
    """The first trainer the fleet runs for an instance that was not running before."""

    def find():
        fresh = {key: pid for key, pid in ec2_trainers(sandbox).items() if key not in known}
        return next(iter(fresh.items()), None)

    return wait_for(find, timeout=120, every=0.05)


def job_id_of(sandbox, instance_id: str) -> str:
    [reservation] = sandbox.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return next(t["Value"] for t in reservation["Instances"][0]["Tags"] if t["Key"] == "mltp:job-id")


def finish(process: ForkedCommand) -> tuple[int, dict | None, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, (json.loads(out) if out.strip() else None), err


def test_a_killed_trainer_is_lost_compute_and_the_job_is_relaunched(sandbox, datasets) -> None:
    known = set(sandbox.live_instances())
    process = start_training(
        sandbox, "--dataset", datasets["small"], "--algorithm", "random_forest", "--compute", "ec2", *FAST
    )
    instance_id, pid = new_trainer(sandbox, known)
    os.kill(pid, signal.SIGKILL)  # the machine dies; the fleet's "shutdown" terminates the instance
    code, report, err = finish(process)
    assert code == 0, err
    [job] = report["jobs"]
    assert job["state"] == "succeeded" and len(job["attempts"]) == 2
    first = job["attempts"][0]
    assert first["handle"] == instance_id and first["kind"] == "lost"
    assert "terminated" in first["message"]
    assert [i["State"]["Name"] for i in instances_of(sandbox, report["run_id"])] == ["terminated"] * 2


def start_and_freeze(
    sandbox, datasets, *options: str, after_first_heartbeat: bool = True
) -> tuple[ForkedCommand, str]:
    """Start a slow EC2 job, and freeze its trainer (by default once its first heartbeat is in
    CloudWatch): the machine is alive but silent, as a hung one is."""
    known = set(sandbox.live_instances())
    process = start_training(
        sandbox,
        "--dataset",
        datasets["small"],
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=1500",
        "--compute",
        "ec2",
        *options,
    )
    instance_id, pid = new_trainer(sandbox, known)
    if after_first_heartbeat:
        job_id = job_id_of(sandbox, instance_id)
        wait_for(lambda: metric_values(sandbox, job_id, "Heartbeat"), timeout=60, every=0.2)
    os.kill(pid, signal.SIGSTOP)
    return process, instance_id


def test_a_silent_trainer_is_detected_by_its_missing_heartbeat_and_relaunched(sandbox, datasets) -> None:
    process, instance_id = start_and_freeze(sandbox, datasets, *FAST)
    frozen_at = time.monotonic()
    code, report, err = finish(process)
    assert code == 0, err
    [job] = report["jobs"]
    first = job["attempts"][0]
    assert first["handle"] == instance_id and first["kind"] == "lost"
    assert "no heartbeat for" in first["message"]
    assert time.monotonic() - frozen_at < 120
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances_of(sandbox, report["run_id"])}
    assert states[instance_id] == "terminated" and len(states) == 2


def test_a_job_past_its_deadline_is_terminated_and_fails_as_timed_out(sandbox, datasets) -> None:
    # Frozen at once: on a loaded machine the 15 s deadline can pass before the first heartbeat.
    process, instance_id = start_and_freeze(
        sandbox,
        datasets,
        "--max-runtime",
        "0.25",
        "--heartbeat",
        "1",
        "--heartbeat-timeout",
        "600",
        after_first_heartbeat=False,
    )
    code, _, err = finish(process)
    assert code == 1
    assert "training failed (timeout)" in err and "raise --max-runtime" in err  # the option of this command
    assert "max_runtime_minutes" not in err
    wait_for(lambda: instance_id not in sandbox.live_instances(), timeout=10)


def test_the_reaper_terminates_the_instances_of_a_killed_flow(sandbox, datasets) -> None:
    process, instance_id = start_and_freeze(sandbox, datasets, *FAST)
    process.kill()  # kill -9 of the flow process while it monitors: no hook can run
    process.wait()
    assert instance_id in sandbox.live_instances()
    time.sleep(7)  # the run's record was last renewed at launch: let it grow older than --stale-after
    result = run_mltp("reap", "--stale-after", "0.1", "--json", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert instance_id in report["terminated"]
    reason = next(o["reason"] for o in report["orphans"] if o["instance_id"] == instance_id)
    assert "watched" in reason or "stale" in reason or "not been" in reason, reason
    wait_for(lambda: instance_id not in sandbox.live_instances(), timeout=10)


def test_the_failure_hook_terminates_a_flow_runs_instances_from_another_process(sandbox) -> None:
    from types import SimpleNamespace

    from flows.train import terminate_flow_run_instances
    from mltp.prefect_api import activated

    flow_run_id = str(uuid.uuid4())
    ec2 = sandbox.client("ec2")
    tags = [{"Key": "mltp:job-id", "Value": "hook-s1-a1"}, {"Key": "mltp:flow-run-id", "Value": flow_run_id}]
    ids = [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=2,
            MaxCount=2,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"]
    ]
    state = SimpleNamespace(type=SimpleNamespace(value="CRASHED"))
    with activated(sandbox.prefect_api_url):
        terminate_flow_run_instances(None, SimpleNamespace(id=flow_run_id), state)
    assert not set(ids) & set(sandbox.live_instances())


# A fifth of every AWS call the platform makes fails, spread over the ways production fails.
FAULT_MIX = {"throttle": 0.06, "lost": 0.05, "unavailable": 0.03, "drop": 0.03, "slow": 0.03}


@pytest.fixture
def faulty_sandbox(sandbox):
    """The sandbox, its platform talking to AWS through fault-injecting proxies while the test runs: one
    in front of moto (every service), one in front of the fleet's Lambda endpoint."""
    with (
        FaultProxy(sandbox.aws_endpoint_url, {"*": FAULT_MIX}) as proxy,
        FaultProxy(sandbox.status["lambda_endpoint_url"], {"*": FAULT_MIX}, seed=11) as lambda_proxy,
        platform_routed(sandbox.prefect_api_url, proxy.url, lambda_proxy.url),
    ):
        yield sandbox, proxy, lambda_proxy


@pytest.mark.timeout(900)  # every fault costs botocore a backoff: on a loaded machine, minutes
def test_with_a_fifth_of_aws_calls_failing_the_pipeline_completes_with_nothing_lost_or_doubled(
    faulty_sandbox, tmp_path
) -> None:
    sandbox, proxy, lambda_proxy = faulty_sandbox
    name = ingest(sandbox, tmp_path, toy.load_wine(as_frame=True).frame, "faulty")
    common = ["--dataset", name, "--algorithm", "random_forest", "--model-name", name, *PATIENT]
    # Besides the random faults, some on the calls a short run makes few of: the grid's first launch
    # finds no capacity (relaunched at the next tick), the second one's answer is lost (the instance
    # exists: the retry must find it, not start another), and its polls are throttled.
    proxy.script("ec2:RunInstances", "capacity", "lost")
    proxy.script("ec2:DescribeInstances", "drop", "unavailable", "throttle")
    proxy.script("monitoring:GetMetricData", "lost", "throttle", "throttle")
    lambda_proxy.script("lambda:Invoke", "throttle", "drop")
    on_ec2 = train(sandbox, *common, "--grid", "n_estimators=10,20", "--compute", "ec2")
    assert on_ec2.returncode == 0, on_ec2.stderr
    assert not any(proxy.scripted.values()), proxy.scripted  # every scripted fault met its call
    on_lambda = train(sandbox, *common, "--param", "n_estimators=15", "--compute", "lambda")
    assert on_lambda.returncode == 0, on_lambda.stderr
    reports = [json.loads(on_ec2.stdout), json.loads(on_lambda.stdout)]

    instances = instances_of(sandbox, reports[0]["run_id"])
    attempts = [attempt["handle"] for job in reports[0]["jobs"] for attempt in job["attempts"]]
    assert sorted(i["InstanceId"] for i in instances) == sorted(a for a in attempts if a)  # none twice
    assert {i["State"]["Name"] for i in instances} == {"terminated"}
    kinds = sorted([attempt["kind"] for attempt in job["attempts"]] for job in reports[0]["jobs"])
    assert kinds == [[""], ["capacity", ""]], kinds  # the lost answer cost no attempt
    [starved] = [job for job in reports[0]["jobs"] if len(job["attempts"]) == 2]
    assert "InsufficientInstanceCapacity" in starved["attempts"][0]["message"]
    assert starved["job_id"].endswith("-a2") and starved["state"] == "succeeded"

    s3 = sandbox.s3()
    data, models = DATA_BUCKET, MODELS_BUCKET
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=models, Prefix=f"models/{name}/")["Contents"]]
    claimed = sorted(key.split("/")[3] for key in keys if key.endswith("/claim.json"))
    recorded = sorted(key.split("/")[3] for key in keys if key.endswith("/version.json"))
    assert claimed == recorded == ["1", "2"]  # no version lost, none doubled, no gap
    assert [report["version"] for report in reports] == [1, 2]
    for bucket in (data, models):
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    pointer = json.loads(s3.get_object(Bucket=data, Key=f"datasets/{name}/latest.json")["Body"].read())
    assert len(pointer["versions"]) == 1

    counts = (proxy.injected, proxy.calls, lambda_proxy.injected, lambda_proxy.calls)
    faulted = sum(proxy.drawn.values()) / sum(proxy.calls.values())  # at the rates, besides the script
    assert 0.1 < faulted < 0.3, counts
    assert {fault for _, fault in proxy.drawn} >= set(FAULT_MIX), counts
    assert {service for service, _ in proxy.injected} >= {"s3", "ec2", "monitoring"}, counts
    assert lambda_proxy.injected[("lambda", "throttle")] and lambda_proxy.injected[("lambda", "drop")], counts
