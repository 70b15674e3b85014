"""Starting, restarting under a running training, crashing and stopping a sandbox of its own, through the
console script."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psutil
import pytest
from sklearn import datasets as toy

from mltp.sandbox.lifecycle import MODELS_BUCKET
from mltp.sandbox.process import boot_id
from tests.conftest import RunningSandbox, free_port, run_mltp, start_sandbox, wait_for
from tests.fault_proxy import FaultProxy, platform_routed
from tests.test_process_faults import FAST
from tests.test_train_on_aws import ec2_trainers, finish, ingest, job_id_of, start_training

pytestmark = pytest.mark.servers


def pids_of(home) -> dict[str, int]:
    return {
        pid_file.stem: json.loads(pid_file.read_text())["pid"] for pid_file in (home / "run").glob("*.pid")
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def test_port_in_use_is_refused_and_nothing_starts(tmp_path, taken_port) -> None:
    home = tmp_path / ".mltp"
    ports = ["--aws-port", str(free_port()), "--prefect-port", str(taken_port)]
    result = run_mltp("sandbox", "up", *ports, env={"MLTP_HOME": str(home)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"port {taken_port} for the Prefect server is already in use" in result.stderr
    assert "--prefect-port" in result.stderr
    assert not (home / "run").exists() or pids_of(home) == {}
    assert not (home / "sandbox.json").exists()


def test_ports_come_from_the_environment_too(tmp_path, taken_port) -> None:
    env = {"MLTP_HOME": str(tmp_path), "MLTP_SANDBOX_AWS_PORT": str(taken_port)}
    result = run_mltp("sandbox", "up", env=env)
    assert result.returncode == 2
    assert f"port {taken_port} for the moto (AWS) server" in result.stderr


def test_down_with_nothing_running_says_so(tmp_path) -> None:
    result = run_mltp("sandbox", "down", env={"MLTP_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"mltp: error: the sandbox is not running (no pid files in {tmp_path / 'run'}): nothing to stop"
    )


def test_commands_without_sandbox_or_api_say_how_to_start_one(tmp_path) -> None:
    env = {"MLTP_HOME": str(tmp_path)}
    doctor = run_mltp("doctor", env=env)
    assert doctor.returncode == 1
    assert "no Prefect API is configured" in doctor.stdout
    assert "mltp sandbox up" in doctor.stdout
    init = run_mltp(
        "blocks", "init", env={**env, "ML_DATA_BUCKET": "abc-data", "ML_MODELS_BUCKET": "abc-models"}
    )
    assert init.returncode == 1
    assert init.stderr.strip() == (
        "mltp: error: no Prefect API is configured: start the sandbox with `mltp sandbox up`, "
        "or set PREFECT_API_URL to your Prefect server"
    )
    status = run_mltp("sandbox", "status", "--json", env=env)
    assert json.loads(status.stdout)["running"] is False
    assert run_mltp("sandbox", "env", env=env).returncode == 1


def test_stale_pid_files_from_a_crash_are_cleaned_by_down(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    record = {"pid": 2**22 + 7, "boot_id": boot_id(), "started": 1.0, "port": 5055}
    (run / "moto.pid").write_text(json.dumps(record))
    status = run_mltp("sandbox", "status", env={"MLTP_HOME": str(tmp_path)})
    assert "stale" in status.stdout
    result = run_mltp("sandbox", "down", env={"MLTP_HOME": str(tmp_path)})
    assert result.returncode == 0
    assert "removed a stale moto pid file" in result.stdout
    assert not (run / "moto.pid").exists()


def overdue_runs(sandbox: RunningSandbox, deployment_id: str, before: datetime) -> list[dict]:
    """The deployment's runs still waiting for a worker that were due before `before`."""
    flow_runs = {
        "state": {"type": {"any_": ["SCHEDULED"]}},
        "expected_start_time": {"before_": before.isoformat()},
    }
    found = sandbox.api(
        "/flow_runs/filter", {"flow_runs": flow_runs, "deployments": {"id": {"any_": [deployment_id]}}}
    )
    return [run for run in found if run["auto_scheduled"]]


def family(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


@pytest.fixture(scope="module")
def private_sandbox(tmp_path_factory) -> Iterator[RunningSandbox]:
    """A sandbox of this module's own, which its tests restart, crash and stop in turn (in file order);
    stopped even when a test fails half-way."""
    running = start_sandbox(tmp_path_factory.mktemp("private") / ".mltp")
    yield running
    if pids_of(running.home):
        run_mltp("sandbox", "down", env=running.env)


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
        running = ec2_trainers(sandbox)
        ours = [pid for key, pid in running.items() if job_id_of(sandbox, key).startswith(dataset)]
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
    # No relaunch: one that cannot boot in the restarted sandbox would wait out the startup timeout.
    slow = start_training(sandbox, *forest_on_ec2(monitored, 50_000, "--max-relaunches", "0"))
    quick = start_training(sandbox, *forest_on_ec2(registering, 20, "--model-name", held_model))
    return slow, quick, monitored


@pytest.mark.timeout(600)  # the sandbox restarted: minutes on a loaded machine
def test_a_restarted_sandbox_fails_a_monitored_training_and_a_registration_clearly(
    private_sandbox, tmp_path
) -> None:
    sandbox = private_sandbox
    held = f"held-{uuid.uuid4().hex[:6]}"
    with (
        HoldingProxy(sandbox.aws_endpoint_url, f"models/{held}/versions/1/approval.json") as proxy,
        platform_routed(sandbox.prefect_api_url, proxy.url),
    ):
        slow, quick, monitored = start_slow_and_quick(sandbox, tmp_path, held)
        trainer = trainer_for(sandbox, monitored)  # the slow job runs: its flow is monitoring it
        assert proxy.held.wait(timeout=180)  # the quick one is registering: its claim and model are in
        restart(sandbox)
        proxy.released.set()
        (slow_code, _, slow_err), (quick_code, _, quick_err) = finish(slow), finish(quick)
    # Its next call reached moto either before `up` created the buckets again or after (no heartbeat
    # any more, and no relaunch allowed): both must end clearly.
    lost, vanished = (1, "training failed (lost): "), (2, f"the bucket {MODELS_BUCKET} vanished")
    assert_one_line_failure(slow_code, slow_err, lost, vanished)
    assert_one_line_failure(quick_code, quick_err, (1, f"registering '{held}' version 1 was interrupted"))
    listing = sandbox.s3().list_objects_v2(Bucket=MODELS_BUCKET, Prefix="models/")
    assert [item["Key"] for item in listing.get("Contents", [])] == []  # nothing half-registered
    assert sandbox.live_instances() == []
    assert not trainer.is_running()  # the restart took the old fleet's trainers with it


# -- crashed services ---------------------------------------------------------------------------------


def test_crash_restart_and_down_leave_no_process(private_sandbox) -> None:
    home, env = private_sandbox.home, private_sandbox.env
    first = pids_of(home)
    assert set(first) == {"moto", "fleet", "prefect", "worker"}
    prefect_family = family(first["prefect"])
    old_fleet_family = family(first["fleet"])
    assert len(old_fleet_family) > 1  # the fork server its trainers start from, and what it started
    old_worker_family = family(first["worker"])
    assert len(old_worker_family) > 1  # the fork server its flow runs start from: gone with the worker

    for crashed in ("moto", "worker"):  # the AWS side crashes, and so does the worker
        os.kill(first[crashed], signal.SIGKILL)
        psutil.wait_procs([psutil.Process(first[crashed])], timeout=10)
    # With no worker, a schedule's runs fall due and pile up (here every 2 s instead of every minute).
    watcher = private_sandbox.api("/deployments/name/watch-incoming/watch-incoming", method="GET")
    schedule = {"interval": 2, "anchor_date": datetime.now(UTC).isoformat()}
    private_sandbox.add_schedule(watcher["id"], schedule)
    status = json.loads(run_mltp("sandbox", "status", "--json", env=env).stdout)
    assert status["running"] is False
    assert status["services"]["moto"]["state"] == "stale"
    doctor = json.loads(run_mltp("doctor", "--json", env=env).stdout)
    failed = [check for check in doctor["checks"] if check["status"] == "fail"]
    assert [check["name"] for check in failed] == ["aws-credentials"]
    assert "cannot reach AWS" in failed[0]["detail"]
    assert "mltp sandbox up" in failed[0]["fix"]

    wait_for(lambda: len(overdue_runs(private_sandbox, watcher["id"], datetime.now(UTC))) >= 3, timeout=60)

    restarted_at = datetime.now(UTC)
    again = run_mltp("sandbox", "up", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert len(overdue_runs(private_sandbox, watcher["id"], restarted_at)) <= 1  # the latest, unless taken
    notes = json.loads(again.stdout)["notes"]
    [dropped] = [note for note in notes if note.startswith("dropped ")]
    assert (
        int(dropped.split()[1]) >= 2 and "runs of watch-incoming that fell due while no worker ran" in dropped
    )
    assert "removed a stale moto pid file left by a crashed sandbox" in notes
    assert "restarted the fleet with the new moto server" in notes
    assert "removed a stale worker pid file left by a crashed sandbox" in notes
    second = pids_of(home)
    fleet_family, worker_family = family(second["fleet"]), family(second["worker"])
    assert second["prefect"] == first["prefect"]  # the healthy server was kept
    assert all(second[name] != first[name] for name in ("moto", "fleet", "worker"))
    assert json.loads(run_mltp("sandbox", "status", "--json", env=env).stdout)["running"] is True
    assert run_mltp("doctor", env=env).returncode == 0  # buckets re-created in the new moto

    down = run_mltp("sandbox", "down", env=env)
    assert down.returncode == 0
    assert "stopped the prefect server" in down.stdout
    _, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in second.values() if psutil.pid_exists(pid)]
        + prefect_family
        + old_fleet_family
        + fleet_family
        + old_worker_family
        + worker_family,
        timeout=10,
    )
    assert not [process for process in alive if process.status() != psutil.STATUS_ZOMBIE]
    assert pids_of(home) == {}
    assert not (home / "sandbox.json").exists()
