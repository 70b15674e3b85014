"""Process faults through the real servers: the flow's process killed while it monitors (the user's
`reap-orphans` deployment cleans up), trainers killed or frozen (declared lost within the heartbeat window),
and the whole sandbox restarted under a running training and under a registration."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from botocore.exceptions import ClientError
from sklearn import datasets as toy

from mltp.errors import BucketError
from mltp.monitor import METRIC_PERIOD_S, MonitorSettings
from mltp.s3_json import read_json
from mltp.sandbox.lifecycle import MODELS_BUCKET
from tests.conftest import run_mltp, start_sandbox, wait_for
from tests.fault_proxy import FaultProxy
from tests.test_train_on_aws import (
    finish,
    ingest,
    instances_of,
    job_id_of,
    metric_values,
    new_trainer,
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
    and its instance shuts down as the boot script makes it). Fault -> (instance id, when)."""
    first = new_trainer(sandbox, known)
    trainers = dict([first, new_trainer(sandbox, known | {first[0]})])
    jobs = {instance_id: job_id_of(sandbox, instance_id) for instance_id in trainers}
    faulted: dict[str, tuple[str, float]] = {}

    def fault_the_beating() -> bool:
        for instance_id, pid in trainers.items():
            done = {instance for instance, _ in faulted.values()}
            if instance_id not in done and metric_values(sandbox, jobs[instance_id], "Heartbeat"):
                fault, sent = ("killed", signal.SIGKILL) if faulted else ("frozen", signal.SIGSTOP)
                os.kill(pid, sent)
                faulted[fault] = (instance_id, time.time())
        return len(faulted) == len(trainers)

    wait_for(fault_the_beating, timeout=60, every=0.2)
    return faulted


def seconds_after(moment: float, attempt: dict) -> float:
    return datetime.fromisoformat(attempt["settled_at"]).timestamp() - moment


def poll_interval_at(attempt: dict) -> float:
    """The monitor's sleep between ticks when the attempt was settled (it grows with the run's age)."""
    age = datetime.fromisoformat(attempt["settled_at"]) - datetime.fromisoformat(attempt["launched_at"])
    return MonitorSettings().interval(age.total_seconds())


@pytest.mark.servers
def test_a_killed_and_a_frozen_trainer_are_declared_lost_within_the_heartbeat_window(sandbox, cancer) -> None:
    known = set(sandbox.live_instances())
    process = start_training(
        sandbox, "--dataset", cancer, "--algorithm", "random_forest", "--param", "n_estimators=1500",
        "--grid", "max_depth=5,6", "--compute", "ec2", *FAST,
    )  # fmt: skip
    faulted = fault_at_first_heartbeat(sandbox, known)

    code, report, err = finish(process)

    assert code == 0, err  # both shards relaunched and trained
    first = {job["attempts"][0]["handle"]: job["attempts"][0] for job in report["jobs"]}
    (frozen, frozen_at), (killed, killed_at) = faulted["frozen"], faulted["killed"]
    assert first[killed]["kind"] == "lost" and "is terminated" in first[killed]["message"]
    assert first[frozen]["kind"] == "lost" and "no heartbeat for" in first[frozen]["message"]
    # Seen at the first tick after the instance shut down: well inside the heartbeat window.
    window = HEARTBEAT_TIMEOUT_S + poll_interval_at(first[killed]) + TICK_MARGIN_S
    assert seconds_after(killed_at, first[killed]) <= window
    # The last heartbeat was at most one interval before the freeze, and the monitor dates it at the end
    # of its metric period (never earlier than it was sent): lost after the timeout, not before, and at
    # most one metric period and one tick later.
    frozen_after = seconds_after(frozen_at, first[frozen])
    assert frozen_after >= HEARTBEAT_TIMEOUT_S - HEARTBEAT_S - 1
    window = HEARTBEAT_TIMEOUT_S + METRIC_PERIOD_S + poll_interval_at(first[frozen]) + TICK_MARGIN_S
    assert frozen_after <= window
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances_of(sandbox, report["run_id"])}
    assert set(states.values()) == {"terminated"} and len(states) == 4


# -- the sandbox restarted under a training and a registration ------------------------------------


class HoldingProxy(FaultProxy):
    """The fault proxy, holding every PUT of one S3 key until released: a moment inside a registration
    that a test can wait for, whatever the machine's speed."""

    def __init__(self, target: str, key: str) -> None:
        super().__init__(target, rates={})
        self.held, self.released = threading.Event(), threading.Event()
        forward = self.client.request

        def request(method: str, url: str, **options):
            if method == "PUT" and urlsplit(url).path.endswith(f"/{key}"):
                self.held.set()
                self.released.wait(timeout=600)
            return forward(method, url, **options)

        self.client.request = request  # what the proxy's handler forwards every call with


def route_platform_through(sandbox, url: str) -> None:
    """Point the `mltp-aws` block at the proxy: commands started from now on talk to moto through it."""
    from prefect_aws import AwsCredentials

    from mltp.prefect_api import activated

    with activated(sandbox.prefect_api_url):
        credentials = AwsCredentials.load("mltp-aws")
        credentials.aws_client_parameters.endpoint_url = url
        credentials.save("mltp-aws", overwrite=True)


def restart(sandbox) -> None:
    """`mltp sandbox down`, then `up` on the same ports: moto comes back empty, Prefect keeps its database."""
    ports = {
        flag: str(urlsplit(sandbox.status[key]).port)
        for flag, key in (
            ("--aws-port", "aws_endpoint_url"),
            ("--prefect-port", "prefect_api_url"),
            ("--fleet-port", "lambda_endpoint_url"),
        )
    }
    down = run_mltp("sandbox", "down", env=sandbox.env)
    assert down.returncode == 0, down.stderr
    up = run_mltp("sandbox", "up", *[item for pair in ports.items() for item in pair], env=sandbox.env)
    assert up.returncode == 0, up.stderr
    sandbox.stop_polling_incoming()


def trainer_for(sandbox, dataset: str) -> psutil.Process:
    """The trainer process the fleet runs for a job on `dataset` (job ids start with its name)."""

    def find():
        running = httpx.get(f"{sandbox.status['lambda_endpoint_url']}/fleet/health").json()["running"]
        ours = [
            pid
            for key, pid in running.items()
            if key.startswith("i-") and job_id_of(sandbox, key).startswith(dataset)
        ]
        return psutil.Process(ours[0]) if ours else None

    return wait_for(find, timeout=180, every=0.2)


def assert_one_line_failure(code: int, err: str, *clear: tuple[int, str]) -> None:
    """The command ended with one of the `clear` failures (exit code, start of the message) and printed
    no traceback (Prefect's own error lines while its server was down may come before)."""
    assert "Traceback" not in err, err[-3000:]
    last = (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
    ended_clearly = [
        code == expected and last.startswith(f"mltp: error: {start}") for expected, start in clear
    ]
    assert any(ended_clearly), (code, err[-3000:])


def forest_on_ec2(dataset: str, trees: int, *options: str) -> list[str]:
    return ["--dataset", dataset, "--algorithm", "random_forest", "--param", f"n_estimators={trees}",
            "--compute", "ec2", *FAST, *options]  # fmt: skip


def start_slow_and_quick(sandbox, folder, held_model: str) -> tuple[object, object, str]:
    """A slow training (minutes of trees) and a quick one registering as `held_model`, each on a dataset
    of its own; returns both commands and the slow one's dataset."""
    frame = toy.load_breast_cancer(as_frame=True).frame
    monitored, registering = ingest(sandbox, folder, frame, "slow"), ingest(sandbox, folder, frame, "quick")
    slow = start_training(sandbox, *forest_on_ec2(monitored, 50_000))
    quick = start_training(sandbox, *forest_on_ec2(registering, 20, "--model-name", held_model))
    return slow, quick, monitored


@pytest.mark.servers
@pytest.mark.timeout(600)  # a private sandbox started and restarted: minutes on a loaded machine
def test_a_restarted_sandbox_fails_a_monitored_training_and_a_registration_clearly(tmp_path_factory) -> None:
    sandbox = start_sandbox(tmp_path_factory.mktemp("mltp-restarted"))
    held = f"held-{uuid.uuid4().hex[:6]}"
    try:
        with HoldingProxy(sandbox.aws_endpoint_url, f"models/{held}/versions/1/approval.json") as proxy:
            route_platform_through(sandbox, proxy.url)
            slow, quick, monitored = start_slow_and_quick(sandbox, tmp_path_factory.mktemp("restart"), held)
            trainer = trainer_for(sandbox, monitored)  # the slow job runs: its flow is monitoring it
            assert proxy.held.wait(timeout=180)  # the quick one is registering: its claim and model are in
            restart(sandbox)
            proxy.released.set()
            (slow_code, _, slow_err), (quick_code, _, quick_err) = finish(slow), finish(quick)
        # Its next call reached moto either before `up` created the buckets again or after (no heartbeat
        # any more, and relaunches that cannot boot without the trainer's wheel): both must end clearly.
        lost, vanished = (1, "training failed (lost): "), (2, f"the bucket {MODELS_BUCKET} vanished")
        assert_one_line_failure(slow_code, slow_err, lost, vanished)
        assert_one_line_failure(quick_code, quick_err, (1, f"registering '{held}' version 1 was interrupted"))
        listing = sandbox.s3().list_objects_v2(Bucket=MODELS_BUCKET, Prefix="models/")
        assert [item["Key"] for item in listing.get("Contents", [])] == []  # nothing half-registered
        assert sandbox.live_instances() == []
        assert not trainer.is_running()  # the restart took the old fleet's trainers with it
    finally:
        run_mltp("sandbox", "down", env=sandbox.env)
