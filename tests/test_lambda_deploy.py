"""`deploy_trainer_function` on moto's in-process Lambda, and `mltp lambda deploy` through the sandbox."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile

import boto3
import pytest
from botocore.stub import Stubber

from mltp.compute.lambda_deploy import HANDLER, deploy_trainer_function
from mltp.compute.lambda_package import trainer_zip
from mltp.errors import ConfigError, MltpError
from tests.conftest import run_mltp

NAME = "mltp-trainer"
IMAGE = "mltp-trainer"  # moto accepts any image name; AWS wants an ECR repository URI
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
SETTINGS = {
    "function_name": NAME,
    "runtime": "python3.11",
    "memory_mb": 3008,
    "timeout_seconds": 900,
    "ephemeral_storage_mb": 2048,
    "image_uri": None,
}


def zip_sha256(blob: bytes) -> str:
    return base64.b64encode(hashlib.sha256(blob).digest()).decode()


@pytest.fixture
def lam(mock_clients):
    return mock_clients("lambda")


@pytest.fixture
def role(mock_clients) -> str:
    created = mock_clients("iam").create_role(RoleName="mltp-trainer", AssumeRolePolicyDocument=TRUST)
    return created["Role"]["Arn"]


@pytest.fixture
def calls(lam) -> list[str]:
    """Names of the Lambda API operations the test makes from here on."""
    made: list[str] = []
    lam.meta.events.register("before-call.lambda.*", lambda model, **_: made.append(model.name))
    return made


def deploy(lam, role: str | None, **overrides):
    return deploy_trainer_function(lam, **{**SETTINGS, "role_arn": role, **overrides})


def test_creates_the_zip_function(lam, role) -> None:
    report = deploy(lam, role)
    function = lam.get_function(FunctionName=NAME)
    configuration = function["Configuration"]
    assert report == {
        "function_name": NAME,
        "arn": configuration["FunctionArn"],
        "action": "created",
        "code_sha256": zip_sha256(trainer_zip()),
        "package_type": "Zip",
    }
    assert configuration["Handler"] == HANDLER and configuration["Runtime"] == "python3.11"
    assert (configuration["MemorySize"], configuration["Timeout"]) == (3008, 900)
    assert configuration["EphemeralStorage"] == {"Size": 2048} and configuration["Role"] == role
    assert configuration["State"] == "Active"
    assert function["Tags"] == {"mltp:managed": "true"}
    retries = lam.get_function_event_invoke_config(FunctionName=NAME)
    assert (retries["MaximumRetryAttempts"], retries["MaximumEventAgeInSeconds"]) == (0, 3600)


def test_same_code_and_settings_change_nothing(lam, role, calls) -> None:
    first = deploy(lam, role)
    calls.clear()
    again = deploy(lam, role)
    assert again == {**first, "action": "unchanged"}
    assert not {"UpdateFunctionCode", "UpdateFunctionConfiguration"} & set(calls), calls


def test_a_create_that_finds_the_function_already_there_brings_it_up_to_date(lam, role) -> None:
    """What a retried CreateFunction whose first answer was lost sees, or a second deploy racing ours."""
    other = boto3.client("lambda", region_name="us-east-1")

    def racing_deploy(**_) -> None:
        lam.meta.events.unregister("before-call.lambda.CreateFunction", racing_deploy)
        deploy(other, role, memory_mb=1024)

    lam.meta.events.register("before-call.lambda.CreateFunction", racing_deploy)
    report = deploy(lam, role)
    assert report["action"] == "updated"  # to our memory size
    assert lam.get_function(FunctionName=NAME)["Configuration"]["MemorySize"] == 3008


def test_updates_old_code_and_settings(lam, role, calls) -> None:
    old = io.BytesIO()
    with zipfile.ZipFile(old, "w") as archive:
        archive.writestr("mltp/trainer/handler.py", "def handler(event, context): pass\n")
    lam.create_function(
        FunctionName=NAME,
        Runtime="python3.11",
        Role=role,
        Handler=HANDLER,
        Code={"ZipFile": old.getvalue()},
        MemorySize=1024,
        EphemeralStorage={"Size": 2048},  # moto ignores EphemeralStorage in UpdateFunctionConfiguration
        Tags={"mltp:managed": "true"},
    )
    calls.clear()
    report = deploy(lam, role)
    assert report["action"] == "updated" and report["code_sha256"] == zip_sha256(trainer_zip())
    assert lam.get_function(FunctionName=NAME)["Configuration"]["MemorySize"] == 3008
    assert {"UpdateFunctionCode", "UpdateFunctionConfiguration"} <= set(calls)
    assert deploy(lam, role)["action"] == "unchanged"


def test_settings_alone_update_only_the_configuration(lam, role, calls) -> None:
    first = deploy(lam, role)
    calls.clear()
    report = deploy(lam, role, memory_mb=4096, timeout_seconds=600)
    assert report == {**first, "action": "updated"}
    configuration = lam.get_function(FunctionName=NAME)["Configuration"]
    assert (configuration["MemorySize"], configuration["Timeout"]) == (4096, 600)
    assert "UpdateFunctionConfiguration" in calls and "UpdateFunctionCode" not in calls


def test_container_image(lam, role, calls) -> None:
    pinned = f"{IMAGE}@sha256:{'a' * 64}"
    report = deploy(lam, role, image_uri=pinned)
    configuration = lam.get_function(FunctionName=NAME)["Configuration"]
    assert (report["action"], report["package_type"]) == ("created", "Image")
    assert "Handler" not in configuration and "Runtime" not in configuration
    calls.clear()
    assert deploy(lam, role, image_uri=pinned)["action"] == "unchanged"
    assert "UpdateFunctionCode" not in calls  # a digest names one image
    assert deploy(lam, role, image_uri=f"{IMAGE}:v2")["action"] == "updated"
    calls.clear()
    deploy(lam, role, image_uri=f"{IMAGE}:v2")
    assert "UpdateFunctionCode" in calls  # the tag may have been pushed again: Lambda resolves it anew


def test_no_role_is_a_config_error_before_any_call(lam, calls) -> None:
    with pytest.raises(ConfigError, match=r"LAMBDA_ROLE_ARN .*`mltp blocks init`") as raised:
        deploy(lam, None)
    assert raised.value.exit_code == 2 and "\n" not in str(raised.value)
    assert calls == []


def test_role_lambda_cannot_assume_is_a_config_error(lam) -> None:
    missing = "arn:aws:iam::123456789012:role/not-there"
    with pytest.raises(ConfigError, match=f"cannot assume the role {missing}.*LAMBDA_ROLE_ARN"):
        deploy(lam, missing)
    assert lam.list_functions()["Functions"] == []


def test_role_refused_on_update_is_a_config_error() -> None:
    """moto accepts any role on update; AWS answers as stubbed here."""
    lam = boto3.client("lambda", region_name="us-east-1")
    pinned = f"{IMAGE}@sha256:{'b' * 64}"
    existing = {
        "Configuration": {
            "FunctionName": NAME,
            "PackageType": "Image",
            "CodeSha256": "b" * 64,
            "MemorySize": 128,
        },
        "Code": {"ImageUri": pinned},
        "Tags": {"mltp:managed": "true"},
    }
    with Stubber(lam) as stub:
        stub.add_response("get_function", existing)
        stub.add_client_error(
            "update_function_configuration",
            "InvalidParameterValueException",
            "The role defined for the function cannot be assumed by Lambda.",
        )
        with pytest.raises(ConfigError, match="cannot assume the role"):
            deploy(lam, "arn:aws:iam::123456789012:role/other", image_uri=pinned)


def test_function_that_fails_to_activate_says_why() -> None:
    lam = boto3.client("lambda", region_name="us-east-1")
    with Stubber(lam) as stub:
        stub.add_client_error("get_function", "ResourceNotFoundException", http_status_code=404)
        stub.add_response("create_function", {"FunctionName": NAME})
        stub.add_response(
            "get_function", {"Configuration": {"State": "Failed", "StateReason": "image manifest not found"}}
        )
        with pytest.raises(MltpError, match=f"{NAME} is not ready to run: image manifest not found"):
            deploy(lam, "arn:aws:iam::123456789012:role/r", image_uri=f"{IMAGE}:v1")


def test_refuses_a_function_mltp_does_not_manage(lam, role, calls) -> None:
    lam.create_function(
        FunctionName=NAME,
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": trainer_zip()},
    )
    calls.clear()
    with pytest.raises(ConfigError, match="not managed by mltp"):
        deploy(lam, role)
    assert calls == ["GetFunction"]


def test_refuses_to_switch_packaging(lam, role) -> None:
    deploy(lam, role)
    with pytest.raises(ConfigError, match=r"packaged as Zip.*unset LAMBDA_IMAGE_URI"):
        deploy(lam, role, image_uri=f"{IMAGE}:v1")


@pytest.mark.servers
def test_cli_deploys_to_the_sandbox(sandbox) -> None:
    iam = boto3.client("iam", endpoint_url=sandbox.aws_endpoint_url, region_name="us-east-1")
    role = iam.create_role(RoleName="mltp-test-lambda-deploy", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    first = run_mltp("lambda", "deploy", "--json", "--role-arn", role, env=sandbox.env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["action"] in {"created", "updated"} and report["package_type"] == "Zip"
    assert report["code_sha256"] == zip_sha256(trainer_zip())

    again = run_mltp("lambda", "deploy", "--role-arn", role, env=sandbox.env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"unchanged {report['function_name']} (Zip, code sha256 ")

    lam = boto3.client("lambda", endpoint_url=sandbox.aws_endpoint_url, region_name="us-east-1")
    configuration = lam.get_function(FunctionName=report["function_name"])["Configuration"]
    assert (configuration["Role"], configuration["Handler"]) == (role, HANDLER)
    retries = lam.get_function_event_invoke_config(FunctionName=report["function_name"])
    assert retries["MaximumRetryAttempts"] == 0
