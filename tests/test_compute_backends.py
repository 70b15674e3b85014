"""EC2, Lambda and local backends against moto's in-process mock (or botocore's Stubber where moto cannot
produce the answer, e.g. a capacity error)."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from mltp.compute.aws_lambda import LambdaBackend
from mltp.compute.base import CapacityError, JobLaunch
from mltp.compute.ec2 import (
    Ec2Backend,
    Ec2Settings,
    client_token,
    tagged_instances,
    terminate_instances,
)
from mltp.compute.local import LocalBackend
from mltp.errors import ConfigError

SETTINGS = Ec2Settings("m5.large", None, None, (), None, None, False)
WITH_PROFILE = Ec2Settings("m5.large", None, None, (), "mltp-trainer", None, False)


def job(attempt: int = 1, on_demand: bool = False, job_id: str | None = None) -> JobLaunch:
    return JobLaunch(
        job_id=job_id or f"run-x-s1-a{attempt}",
        run_id="run-x",
        job_uri=f"s3://models/runs/run-x-s1-a{attempt}/job.json",
        output_prefix=f"s3://models/runs/run-x-s1-a{attempt}/",
        flow_run_id="0b6c9a4e-0000-4000-8000-000000000001",
        attempt=attempt,
        deadline=datetime.now(UTC) + timedelta(minutes=30),
        on_demand=on_demand,
    )


def backend(clients, settings: Ec2Settings = SETTINGS) -> Ec2Backend:
    return Ec2Backend(
        clients("ec2"), clients("ssm"), settings, lambda launch: f"#!/bin/bash\n# {launch.job_uri}\n"
    )


def all_instances(ec2) -> list[dict]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def test_launch_asks_for_imdsv2_terminate_on_shutdown_profile_and_tags(mock_clients) -> None:
    mock_clients("iam").create_instance_profile(InstanceProfileName="mltp-trainer")
    launched = backend(mock_clients, WITH_PROFILE).launch(job())
    ec2 = mock_clients("ec2")
    [instance] = all_instances(ec2)
    assert instance["InstanceId"] == launched.handle and launched.backend == "ec2"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["InstanceType"] == "m5.large"
    assert instance["IamInstanceProfile"]["Arn"].endswith("mltp-trainer")
    behaviour = ec2.describe_instance_attribute(
        InstanceId=launched.handle, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert tags["mltp:job-id"] == "run-x-s1-a1" and tags["mltp:run-id"] == "run-x"
    assert tags["mltp:flow-run-id"] == job().flow_run_id and tags["Name"] == "mltp-run-x-s1-a1"
    assert datetime.fromisoformat(tags["mltp:expires-at"]) > job().deadline
    user_data = ec2.describe_instance_attribute(InstanceId=launched.handle, Attribute="userData")
    assert (
        "s3://models/runs/run-x-s1-a1/job.json" in base64.b64decode(user_data["UserData"]["Value"]).decode()
    )
    assert instance.get("InstanceLifecycle") != "spot"


def test_a_retried_launch_finds_the_instance_instead_of_starting_another(mock_clients) -> None:
    first = backend(mock_clients).launch(job())
    again = backend(mock_clients).launch(job())  # e.g. a task retry after the answer was lost
    assert again.handle == first.handle
    assert len(all_instances(mock_clients("ec2"))) == 1
    assert backend(mock_clients).launch(job(attempt=2)).handle != first.handle


def test_the_client_token_is_deterministic_per_job_and_attempt(mock_clients) -> None:
    ec2 = mock_clients("ec2")
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": []})
        stub.add_client_error("run_instances", "RequestLimitExceeded", http_status_code=503)
        with pytest.raises(ClientError):
            Ec2Backend(ec2, mock_clients("ssm"), SETTINGS, lambda j: "x").launch(job())
    assert client_token("run-x-s1-a1", 1) == client_token("run-x-s1-a1", 1)
    assert client_token("run-x-s1-a1", 1) != client_token("run-x-s1-a1", 2)
    assert len(client_token("run-x-s1-a1", 1)) <= 64


def test_spot_until_interrupted_then_on_demand(mock_clients) -> None:
    spot = Ec2Settings("m5.large", None, None, (), None, None, True)
    first = backend(mock_clients, spot).launch(job())
    relaunch = backend(mock_clients, spot).launch(job(attempt=2, on_demand=True))
    lifecycles = {i["InstanceId"]: i.get("InstanceLifecycle") for i in all_instances(mock_clients("ec2"))}
    assert first.spot and lifecycles[first.handle] == "spot"
    assert not relaunch.spot and lifecycles[relaunch.handle] != "spot"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("InsufficientInstanceCapacity", 500, CapacityError),
        ("InstanceLimitExceeded", 400, CapacityError),
        ("InvalidAMIID.NotFound", 400, ConfigError),
        ("UnauthorizedOperation", 403, ConfigError),
        ("RequestLimitExceeded", 503, ClientError),  # transient: Prefect's task retry takes it
    ],
)
def test_launch_errors_are_classified(mock_clients, code, status, error) -> None:
    ec2 = mock_clients("ec2")
    with Stubber(ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": []})
        stub.add_client_error("run_instances", code, http_status_code=status)
        with pytest.raises(error) as raised:
            Ec2Backend(
                ec2,
                mock_clients("ssm"),
                Ec2Settings("m5.large", "ami-12345678", None, (), None, None, False),
                lambda j: "x",
            ).launch(job())
    if error is not ClientError:
        assert code in str(raised.value)


def test_observe_reports_live_gone_interrupted_and_not_yet_visible(mock_clients) -> None:
    ec2 = mock_clients("ec2")
    launcher = backend(mock_clients)
    running = launcher.launch(job(job_id="run-x-s1-a1"))
    gone = launcher.launch(job(job_id="run-x-s2-a1"))
    ec2.terminate_instances(InstanceIds=[gone.handle])
    fresh = type(running)("run-x-s3-a1", "ec2", 1, datetime.now(UTC), "i-00000000000000001")
    stale = type(running)(
        "run-x-s4-a1", "ec2", 1, datetime.now(UTC) - timedelta(hours=1), "i-00000000000000002"
    )
    states = launcher.observe([running, gone, fresh, stale])
    assert states["run-x-s1-a1"].alive and states["run-x-s3-a1"].alive
    assert not states["run-x-s2-a1"].alive and "terminated" in states["run-x-s2-a1"].reason
    assert not states["run-x-s4-a1"].alive and "vanished" in states["run-x-s4-a1"].reason


def test_observe_is_one_call_for_many_instances(mock_clients) -> None:
    launcher = backend(mock_clients)
    items = [launcher.launch(job(job_id=f"run-x-s{n}-a1")) for n in range(1, 21)]
    calls = []
    mock_clients("ec2").meta.events.register("before-call.ec2.*", lambda **kw: calls.append(kw["model"].name))
    launcher.observe(items)
    assert calls == ["DescribeInstances"]


def test_terminate_only_touches_live_instances_and_tag_lookup_finds_a_flow_runs_instances(
    mock_clients,
) -> None:
    ec2 = mock_clients("ec2")
    launcher = backend(mock_clients)
    items = [launcher.launch(job(job_id=f"run-x-s{n}-a1")) for n in (1, 2)]
    ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)  # not ours
    found = tagged_instances(ec2, flow_run_id=job().flow_run_id)
    assert {i["InstanceId"] for i in found} == {item.handle for item in items}
    assert len(tagged_instances(ec2)) == 2
    assert sorted(terminate_instances(ec2, [items[0].handle])) == [items[0].handle]
    assert terminate_instances(ec2, [items[0].handle]) == []  # already gone
    assert sorted(launcher.terminate(items)) == [items[1].handle]
    assert tagged_instances(ec2) == []


def test_lambda_invokes_asynchronously_with_only_the_job_uri(mock_clients) -> None:
    client = mock_clients("lambda")
    with Stubber(client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 202, "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 202}},
            {
                "FunctionName": "mltp-trainer",
                "InvocationType": "Event",
                "Payload": json.dumps({"job_uri": job().job_uri}).encode(),
            },
        )
        launched = LambdaBackend(client, "mltp-trainer").launch(job())
    assert launched.handle == "req-1" and launched.backend == "lambda"
    assert LambdaBackend(client, "mltp-trainer").observe([launched])[launched.job_id].alive
    assert LambdaBackend(client, "mltp-trainer").terminate([launched]) == []


@pytest.mark.parametrize(
    ("code", "status", "error", "words"),
    [
        ("ResourceNotFoundException", 404, ConfigError, "run `mltp lambda deploy`"),
        ("ENILimitReachedException", 502, CapacityError, "no capacity"),
        ("TooManyRequestsException", 429, ClientError, "TooManyRequests"),
        ("InvalidParameterValueException", 400, ConfigError, "Lambda refused"),
    ],
)
def test_lambda_launch_errors_are_classified(mock_clients, code, status, error, words) -> None:
    client = mock_clients("lambda")
    with Stubber(client) as stub:
        stub.add_client_error("invoke", code, http_status_code=status)
        with pytest.raises(error, match=words):
            LambdaBackend(client, "mltp-trainer").launch(job())


def test_local_backend_runs_observes_and_terminates_a_process(tmp_path) -> None:
    marker = tmp_path / "started"
    env = {"PATH": "/usr/bin:/bin"}
    local = LocalBackend(env)
    local.processes["run-x-s1-a1"] = __import__("subprocess").Popen(
        [sys.executable, "-c", f"import pathlib,time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"],
        start_new_session=True,
    )
    launched = local.launch(job())  # already running for this job id: not started twice
    assert len(local.processes) == 1
    assert local.observe([launched])[launched.job_id].alive
    assert local.terminate([launched]) == [launched.handle]
    state = local.observe([launched])[launched.job_id]
    assert not state.alive and "exited with -9" in state.reason
