"""The sandbox fleet: its Lambda endpoint and its EC2 watcher, through the real servers; its queue in
process."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from mltp.compute.user_data import render_user_data
from mltp.s3_json import read_json
from mltp.sandbox.fleet import Fleet, Work
from tests.conftest import wait_for


def lambda_client(sandbox):
    return boto3.client(
        "lambda",
        endpoint_url=sandbox.status["lambda_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="mltp-sandbox",
        aws_secret_access_key="mltp-sandbox-secret",
    )


def state_of(sandbox, instance_id: str) -> str:
    reservations = sandbox.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


@pytest.mark.servers
def test_lambda_api_calls_other_than_invoke_reach_moto(sandbox) -> None:
    functions = lambda_client(sandbox).list_functions()["Functions"]
    trainer = next(f for f in functions if f["FunctionName"] == "mltp-trainer")
    assert trainer["Handler"] == "mltp.trainer.handler.handler"
    config = lambda_client(sandbox).get_function_event_invoke_config(FunctionName="mltp-trainer")
    assert config["MaximumRetryAttempts"] == 0  # the flow decides about relaunches, not Lambda


@pytest.mark.servers
def test_invoking_a_missing_function_or_synchronously_is_refused(sandbox) -> None:
    client = lambda_client(sandbox)
    with pytest.raises(ClientError) as missing:
        client.invoke(FunctionName="mltp-nope", InvocationType="Event", Payload=b"{}")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as synchronous:
        client.invoke(FunctionName="mltp-trainer", Payload=b"{}")
    assert "InvocationType=Event" in synchronous.value.response["Error"]["Message"]


@pytest.mark.servers
def test_an_invocation_runs_the_deployed_handler(sandbox) -> None:
    job_id = f"fleet-{uuid.uuid4().hex[:8]}"
    bucket = sandbox.status["buckets"]["models"]
    job_uri = f"s3://{bucket}/runs/{job_id}/job.json"  # never written: the trainer must say so
    response = lambda_client(sandbox).invoke(
        FunctionName="mltp-trainer", InvocationType="Event", Payload=json.dumps({"job_uri": job_uri}).encode()
    )
    assert response["StatusCode"] == 202
    status = wait_for(lambda: read_json(sandbox.s3(), bucket, f"runs/{job_id}/status.json")[0])
    assert status["state"] == "failed" and status["kind"] == "user"
    assert f"no job spec at {job_uri}" in status["message"]


def launch(sandbox, user_data: str | None) -> str:
    request = {"ImageId": "ami-12345678", "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.medium"}
    if user_data is not None:
        request["UserData"] = user_data
    return sandbox.client("ec2").run_instances(**request)["Instances"][0]["InstanceId"]


@pytest.mark.servers
def test_an_instance_runs_its_bootstrap_trainer_and_terminates_when_it_exits(sandbox) -> None:
    job_id = f"fleet-{uuid.uuid4().hex[:8]}"
    bucket = sandbox.status["buckets"]["models"]
    user_data = render_user_data(
        job_uri=f"s3://{bucket}/runs/{job_id}/job.json",
        output_prefix=f"s3://{bucket}/runs/{job_id}/",
        wheel_uri=None,
        requirements_uri=None,
        max_runtime_minutes=10,
        region="us-east-1",
    )
    instance_id = launch(sandbox, user_data)
    status = wait_for(lambda: read_json(sandbox.s3(), bucket, f"runs/{job_id}/status.json")[0])
    assert status["instance_id"] == instance_id  # the trainer saw the instance id the bootstrap exports
    wait_for(lambda: state_of(sandbox, instance_id) == "terminated")


@pytest.mark.servers
def test_a_missing_trainer_wheel_fails_the_boot_and_the_instance_terminates(sandbox) -> None:
    bucket = sandbox.status["buckets"]["models"]
    user_data = render_user_data(
        job_uri=f"s3://{bucket}/runs/fleet-nowheel/job.json",
        output_prefix=f"s3://{bucket}/runs/fleet-nowheel/",
        wheel_uri=f"s3://{bucket}/code/trainer/missing/ml_training_platform-0.1.0-py3-none-any.whl",
        requirements_uri=f"s3://{bucket}/code/trainer/missing/requirements.txt",
        max_runtime_minutes=10,
        region="us-east-1",
    )
    instance_id = launch(sandbox, user_data)
    wait_for(lambda: state_of(sandbox, instance_id) == "terminated")


@pytest.mark.servers
def test_an_instance_without_our_bootstrap_is_left_alone(sandbox) -> None:
    instance_id = launch(sandbox, "#!/bin/bash\necho not ours\n")
    fleet_log = sandbox.home / "logs" / "fleet.log"
    try:
        # the fleet looked at it (it looks at each instance once), whenever its poll came on a busy machine
        wait_for(lambda: f"instance {instance_id} has no mltp bootstrap" in fleet_log.read_text())
        assert state_of(sandbox, instance_id) == "running"
        health = httpx.get(f"{sandbox.status['lambda_endpoint_url']}/fleet/health").json()
        assert instance_id not in health["running"] and instance_id not in health["queued"]
    finally:
        sandbox.client("ec2").terminate_instances(InstanceIds=[instance_id])


def sleeper(key: str, seconds: float) -> Work:
    return Work(
        "lambda", key, [sys.executable, "-c", f"import time; time.sleep({seconds})"], {}, timeout_s=30
    )


def test_at_most_max_trainers_run_and_the_rest_wait(tmp_path: Path) -> None:
    fleet = Fleet("http://127.0.0.1:1", tmp_path, 2, {"AWS_DEFAULT_REGION": "us-east-1"})
    for number in range(4):
        fleet._enqueue(sleeper(f"w{number}", 0.5 if number < 2 else 0.1))
    fleet.schedule()
    snapshot = fleet.snapshot()
    assert set(snapshot["running"]) == {"w0", "w1"} and snapshot["queued"] == ["w2", "w3"]
    seen = []  # what ran at each look (w2 may end before w3 starts on a loaded machine)

    def drained() -> bool:
        fleet.schedule()
        now = fleet.snapshot()
        seen.append(set(now["running"]))
        return not now["running"] and not now["queued"]

    wait_for(drained, timeout=20)
    assert max(len(running) for running in seen) <= 2
    assert {"w2", "w3"} <= set().union(*seen)


def test_queued_work_starts_at_once_not_at_the_next_instance_poll(tmp_path: Path) -> None:
    env = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    fleet = Fleet("http://127.0.0.1:1", tmp_path, 1, env)  # no EC2 to poll: each poll fails, is logged
    stop = threading.Event()
    looping = threading.Thread(target=fleet.loop, args=(stop, 3600.0), daemon=True)  # one poll an hour
    looping.start()
    try:
        fleet._enqueue(sleeper("now", 60))
        wait_for(lambda: "now" in fleet.snapshot()["running"], timeout=30)
    finally:
        stop.set()
        fleet.work_queued.set()
        looping.join(timeout=10)
        fleet.stop()
    assert not looping.is_alive()


def test_an_invocation_past_the_function_timeout_is_killed(tmp_path: Path) -> None:
    fleet = Fleet("http://127.0.0.1:1", tmp_path, 1, {"AWS_DEFAULT_REGION": "us-east-1"})
    work = sleeper("slow", 60)
    work.timeout_s = 0.3
    fleet._enqueue(work)
    fleet.schedule()
    process = fleet.running["slow"].process
    wait_for(lambda: (fleet.schedule(), "slow" not in fleet.running)[1], timeout=10)
    assert process.poll() is not None and process.returncode < 0


def zip_whose_code_sha256_has_a_slash() -> tuple[bytes, str]:
    """CodeSha256 is standard base64: about half of all code hashes contain a `/`."""
    import base64
    import hashlib
    import io
    import zipfile

    for n in range(1000):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("handler.py", f"def handle(event, context):\n    return {n}\n")
        blob = buffer.getvalue()
        sha = base64.b64encode(hashlib.sha256(blob).digest()).decode()
        if "/" in sha:
            return blob, sha
    raise AssertionError("no such zip in 1000 tries")


def test_code_whose_hash_has_a_slash_is_stored_and_invoked(mock_clients, tmp_path: Path, monkeypatch) -> None:
    import base64

    blob, sha = zip_whose_code_sha256_has_a_slash()
    role = "arn:aws:iam::123456789012:role/trainer"
    mock_clients("iam").create_role(RoleName="trainer", AssumeRolePolicyDocument="{}")
    created = mock_clients("lambda").create_function(
        FunctionName="probe",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": blob},
    )
    assert created["CodeSha256"] == sha
    fleet = Fleet("http://unused", tmp_path, 1, {"AWS_DEFAULT_REGION": "us-east-1"})
    monkeypatch.setattr(fleet, "client", mock_clients)
    fleet.store_code("probe", {"ZipFile": base64.b64encode(blob).decode()}, sha)
    fleet.invoke("probe", b"{}")
    [work] = fleet.queue
    assert (Path(work.cwd) / "handler.py").read_text().startswith("def handle")
