"""Process faults through the real servers: the flow's process killed while it monitors (the user's
`reap-orphans` deployment cleans up), and trainers killed or frozen (declared lost within the heartbeat
window). The whole sandbox restarted under a running training is in test_sandbox_lifecycle.py, on the
sandbox of its own that those tests share."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest
from botocore.exceptions import ClientError
from sklearn import datasets as toy

from mltp.errors import BucketError
from mltp.monitor import METRIC_PERIOD_S, MonitorSettings
from mltp.s3_json import read_json
from tests.conftest import wait_for
from tests.test_train_on_aws import (
    ec2_trainers,
    finish,
    ingest,
    instances_of,
    job_id_of,
    metric_values,
    start_and_freeze,
    start_training,
)

HEARTBEAT_S, HEARTBEAT_TIMEOUT_S = 1.0, 5.0
FAST = ["--heartbeat", f"{HEARTBEAT_S:g}", "--heartbeat-timeout", f"{HEARTBEAT_TIMEOUT_S:g}"]
# What one tick does after its sleep before a verdict is taken: the poll task (four AWS calls and
# Prefect's task bookkeeping) after the previous tick's progress update, about 1-2 s on two loaded
# cores; and, for a killed trainer, the fleet noticing the exit and terminating the instance (0.5 s
# loop). Doubled for a busy CI machine.
TICK_MARGIN_S = 5.0
# 3 s: a watched run renews its record every 30 s, but this worker's tests run one at a time, so the killed
# flow's instance is the only one in its sandbox that a reaper run can find.
REAP_STALE_MINUTES = 0.05


def test_a_bucket_vanished_mid_run_ends_the_flow_with_one_line_naming_it(mock_clients) -> None:
    from flows.train import _vanished_buckets_named

    vanished = r"^the bucket gone-bucket vanished while the run went on"
    with pytest.raises(BucketError, match=vanished), _vanished_buckets_named():
        mock_clients("s3").put_object(Bucket="gone-bucket", Key="runs/r/run.json", Body=b"{}")
    with pytest.raises(ClientError, match="NoSuchKey"), _vanished_buckets_named():  # only that error
        mock_clients("s3").create_bucket(Bucket="here")
        mock_clients("s3").get_object(Bucket="here", Key="missing")


@pytest.fixture(scope="module")
def cancer(sandbox, tmp_path_factory) -> str:
    return ingest(
        sandbox, tmp_path_factory.mktemp("faults"), toy.load_breast_cancer(as_frame=True).frame, "faults"
    )


def run_deployment(sandbox, name: str, parameters: dict, timeout: float = 120) -> dict:
    """A flow run of the deployment, created as the UI's Run button does, waited for to its end."""
    deployment = sandbox.api(f"/deployments/name/{name}", method="GET")
    run = sandbox.api(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    return wait_for(
        lambda: (
            (found := sandbox.api(f"/flow_runs/{run['id']}", method="GET"))["state_type"] in final and found
        ),
        timeout=timeout,
        every=0.5,
    )


def tag(instance: dict, key: str) -> str:
    return next(item["Value"] for item in instance["Tags"] if item["Key"] == key)


def describe(sandbox, instance_id: str) -> dict:
    [reservation] = sandbox.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]


def unwatched_for(sandbox, run_id: str) -> float:
    """Seconds since the run's record was last renewed (its `watched_at` has whole seconds)."""
    record, _ = read_json(sandbox.s3(), sandbox.status["buckets"]["models"], f"runs/{run_id}/run.json")
    return time.time() - datetime.fromisoformat(record["watched_at"]).timestamp() - 1


@pytest.mark.servers
def test_the_reap_orphans_deployment_terminates_the_instance_of_a_killed_flow(sandbox, cancer) -> None:
    process, instance_id = start_and_freeze(sandbox, {"small": cancer}, *FAST)
    process.kill()  # kill -9 of the flow process while it monitors: no hook can run
    process.wait()
    assert instance_id in sandbox.live_instances()
    run_id = tag(describe(sandbox, instance_id), "mltp:run-id")
    wait_for(lambda: unwatched_for(sandbox, run_id) > REAP_STALE_MINUTES * 60, timeout=30, every=0.2)

    reap = run_deployment(sandbox, "reap-orphans/reap-orphans", {"stale_after_minutes": REAP_STALE_MINUTES})

    assert reap["state_type"] == "COMPLETED", reap["state"]
    wait_for(lambda: instance_id not in sandbox.live_instances(), timeout=10)
    artifacts = sandbox.api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [reap["id"]]}}})
    [report] = [artifact["data"] for artifact in artifacts if artifact["key"] == "reap-orphans"]
    [row] = [line for line in report.splitlines() if line.startswith(f"| {instance_id} |")]
    assert "| yes |" in row and f"run {run_id} was last watched" in row, row


def fault_at_first_heartbeat(sandbox, known: set[str]) -> dict[str, tuple[str, float]]:
    """The two trainers of a new two-shard run, each faulted as soon as its first heartbeat is in
    CloudWatch: the first frozen (the machine hangs: alive, silent), the second killed (the trainer dies,
    and its instance shuts down as the boot script makes it). Fault -> (instance id, when).

    Each trainer is watched from the moment the fleet runs it, whenever its shard's instance launched:
    one that started seconds before the other could otherwise finish before it is faulted."""
    seen = set(known)
    trainers: dict[str, tuple[str, int]] = {}  # instance id -> (job id, pid) of the run's first attempts
    faulted: dict[str, tuple[str, float]] = {}

    def fault_the_beating() -> bool:
        for instance_id, pid in ec2_trainers(sandbox).items():
            if instance_id not in seen:
                seen.add(instance_id)
                job_id = job_id_of(sandbox, instance_id)
                if job_id not in {job for job, _ in trainers.values()}:  # a relaunch runs a known job
                    trainers[instance_id] = (job_id, pid)
        done = {instance for instance, _ in faulted.values()}
        for instance_id, (job_id, pid) in trainers.items():
            if instance_id not in done and metric_values(sandbox, job_id, "Heartbeat"):
                fault, sent = ("killed", signal.SIGKILL) if faulted else ("frozen", signal.SIGSTOP)
                os.kill(pid, sent)
                faulted[fault] = (instance_id, time.time())
        return len(faulted) == 2

    wait_for(fault_the_beating, timeout=120, every=0.2)
    return faulted


def seconds_after(moment: float, attempt: dict) -> float:
    return datetime.fromisoformat(attempt["settled_at"]).timestamp() - moment


def poll_interval_at(attempt: dict) -> float:
    """The monitor's sleep between ticks when the attempt was settled (it grows with the run's age)."""
    age = datetime.fromisoformat(attempt["settled_at"]) - datetime.fromisoformat(attempt["launched_at"])
    return MonitorSettings().interval(age.total_seconds())


@pytest.mark.servers
def test_a_killed_and_a_frozen_trainer_are_declared_lost_within_the_heartbeat_window(sandbox, cancer) -> None:
    # Every instance so far, terminated ones too: the fleet may still list the trainer of an instance the
    # previous test's reaper just terminated, and this test must fault only its own run's trainers.
    pages = sandbox.client("ec2").get_paginator("describe_instances").paginate()
    known = {i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]}
    process = start_training(
        sandbox, "--dataset", cancer, "--algorithm", "random_forest", "--param", "n_estimators=1500",
        "--grid", "max_depth=5,6", "--compute", "ec2", *FAST,
    )  # fmt: skip
    faulted = fault_at_first_heartbeat(sandbox, known)

    code, report, err = finish(process)

    assert code == 0, err  # both shards relaunched and trained
    # The faulted trainers are usually each shard's first attempt; on a loaded machine a first attempt can
    # be lost before the test saw it beat, and its relaunch is the one faulted: look each up by instance.
    attempt_on = {attempt["handle"]: attempt for job in report["jobs"] for attempt in job["attempts"]}
    (frozen, frozen_at), (killed, killed_at) = faulted["frozen"], faulted["killed"]
    assert attempt_on[killed]["kind"] == "lost" and "is terminated" in attempt_on[killed]["message"]
    assert attempt_on[frozen]["kind"] == "lost" and "no heartbeat for" in attempt_on[frozen]["message"]
    # Seen at the first tick after the instance shut down: well inside the heartbeat window.
    window = HEARTBEAT_TIMEOUT_S + poll_interval_at(attempt_on[killed]) + TICK_MARGIN_S
    assert seconds_after(killed_at, attempt_on[killed]) <= window
    # The last heartbeat was at most one interval before the freeze, and the monitor dates it at the end
    # of its metric period (never earlier than it was sent): lost after the timeout, not before, and at
    # most one metric period and one tick later.
    frozen_after = seconds_after(frozen_at, attempt_on[frozen])
    assert frozen_after >= HEARTBEAT_TIMEOUT_S - HEARTBEAT_S - 1
    window = HEARTBEAT_TIMEOUT_S + METRIC_PERIOD_S + poll_interval_at(attempt_on[frozen]) + TICK_MARGIN_S
    assert frozen_after <= window
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances_of(sandbox, report["run_id"])}
    assert set(states.values()) == {"terminated"} and len(states) >= 4  # two shards, each relaunched
