"""The AWS setup in deployments/aws/: the CloudFormation template lints clean and deploys into a moto
server; its generated parts are current; its policies name what the code uses and allow every AWS call
the platform and the trainer really make.

moto's CloudFormation creates no `AWS::S3::BucketPolicy` nor `AWS::Lambda::EventInvokeConfig`, and of
a bucket's properties applies only `BucketName`, `BucketEncryption` and `Tags`; of a function's it drops
`PackageType`, `EphemeralStorage`, `Architectures` and `Tags`. Those are checked in the template (after
cfn-lint has validated it against CloudFormation's schemas), the rest on the deployed resources.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sklearn import datasets as toy

from blocks.compute import LambdaCompute
from blocks.platform import build_blocks
from mltp import dataset_catalog, datasets, registry
from mltp.aws_types import instance_type_allowed
from mltp.buckets import _DEFAULT_ENCRYPTION, _LIFECYCLE, _PUBLIC_ACCESS_BLOCKED, ensure_buckets
from mltp.compute import user_data
from mltp.compute.aws_lambda import LambdaBackend
from mltp.compute.base import JobLaunch
from mltp.compute.ec2 import (
    TAG_ATTEMPT,
    TAG_EXPIRES,
    TAG_FLOW_RUN,
    TAG_JOB,
    TAG_RUN,
    Ec2Backend,
    Ec2Settings,
    tagged_instances,
)
from mltp.compute.lambda_deploy import MANAGED_TAG, deploy_trainer_function
from mltp.compute.trainer_code import PREFIX as TRAINER_CODE_PREFIX
from mltp.jobs import build_job_spec, write_job
from mltp.monitor import LogCursor, poll
from mltp.pricing import EC2_INSTANCE_TYPES
from mltp.runs import write_run_record
from mltp.settings import DEFAULT_ALLOWED_INSTANCE_TYPES, PlatformSettings, load_settings
from mltp.trainer.runner import run_job
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE
from tests.conftest import threaded_moto_server

# moto warns about each resource type above that its CloudFormation skips (and the WaitConditionHandle,
# which it ignores on purpose): known, asserted in test_the_moto_gaps_are_the_known_ones.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Tried to parse AWS\W\W.* but it's not supported by moto:UserWarning"  # no ':' in a filter
)

ROOT = Path(__file__).resolve().parents[1]
AWS_DIR = ROOT / "deployments" / "aws"
ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's default account
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mltp-trainer:v1"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"mltp_aws_{name}", AWS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render, stack_env = _load("render"), _load("stack_env")
TEMPLATE_TEXT = render.TEMPLATE.read_text()
TEMPLATE = render.load_template()
RESOURCES = TEMPLATE["Resources"]
PREFIX = TEMPLATE["Parameters"]["NamePrefix"]["Default"]
DATA_BUCKET, MODELS_BUCKET = f"{PREFIX}-data-{ACCOUNT}-{REGION}", f"{PREFIX}-models-{ACCOUNT}-{REGION}"


def properties(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id]["Properties"]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in document["Statement"]}


WORKER = statements(properties("WorkerPolicy")["PolicyDocument"])
TRAINER = statements(properties("TrainerPolicy")["PolicyDocument"])


def sub(value: Any) -> str:
    assert set(value) == {"Fn::Sub"}, value
    return value["Fn::Sub"]


# --- the template as a file ----------------------------------------------------------------------------


def test_cfn_lint_reports_nothing_not_even_informational() -> None:
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    matches = lint(TEMPLATE_TEXT, config=ManualArgs(include_checks=["I"], regions=[REGION, "eu-west-1"]))
    assert [str(match) for match in matches] == []


def test_cfn_lint_would_catch_a_wrong_action_in_the_policy() -> None:
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    broken = TEMPLATE_TEXT.replace("s3:GetLifecycleConfiguration", "s3:GetLifecycleConfig", 1)
    assert any("W3037" in str(match) for match in lint(broken, config=ManualArgs(include_checks=["I"])))


def test_the_generated_parts_are_current() -> None:
    handler = (AWS_DIR / "s3_forwarder" / "handler.py").read_text()
    assert properties("ForwarderFunction")["Code"]["ZipFile"] == handler
    assert len(handler.encode()) <= render.ZIPFILE_LIMIT
    assert render.rendered_template() == TEMPLATE_TEXT
    assert (AWS_DIR / "iam-policy.json").read_text() == render.rendered_policy()
    assert render.main(["--check"]) == 0


def test_iam_policy_json_is_a_valid_policy_whose_placeholders_the_template_defines() -> None:
    document = json.loads((AWS_DIR / "iam-policy.json").read_text())
    assert document["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in document["Statement"]]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids)
    for statement in document["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Effect"] == "Allow" and statement["Resource"]
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action) for action in as_list(statement["Action"]))
    placeholders = set(re.findall(r"\$\{([^}]+)\}", json.dumps(document)))
    known = {*TEMPLATE["Parameters"], *RESOURCES, "AWS::Partition", "AWS::Region", "AWS::AccountId"}
    known |= {f"{name}.Arn" for name in RESOURCES}
    assert placeholders and placeholders <= known, placeholders - known


# --- the template against the code ---------------------------------------------------------------------


def test_every_instance_type_the_planner_may_choose_is_allowed_and_no_other_family() -> None:
    allowed = WORKER["LaunchTrainerInstances"]["Condition"]["StringLike"]["ec2:InstanceType"]
    assert sorted(allowed) == sorted(DEFAULT_ALLOWED_INSTANCE_TYPES)
    choosable = [
        name for name in EC2_INSTANCE_TYPES if instance_type_allowed(name, DEFAULT_ALLOWED_INSTANCE_TYPES)
    ]
    assert len(choosable) >= 10
    # IAM's StringLike has the same `*` and `?` as fnmatch
    assert [name for name in choosable if not any(fnmatchcase(name, pattern) for pattern in allowed)] == []
    default_type = PlatformSettings.model_fields["ec2_instance_type"].default
    assert any(fnmatchcase(default_type, pattern) for pattern in allowed)


def test_the_launch_request_has_exactly_what_the_policy_demands(mock_clients) -> None:
    profile = "mltp-trainer-ec2"
    mock_clients("iam").create_instance_profile(InstanceProfileName=profile)
    ec2 = mock_clients("ec2")
    sent: list[dict] = []
    ec2.meta.events.register(
        "before-parameter-build.ec2.RunInstances", lambda params, **_: sent.append(params)
    )
    settings = Ec2Settings("m5.large", None, None, (), profile, None, False)
    Ec2Backend(ec2, mock_clients("ssm"), settings, lambda job: "#!/bin/bash\n").launch(a_job("job-1"))
    [request] = sent
    tags = {tag["Key"] for spec in request["TagSpecifications"] for tag in spec["Tags"]}
    tagging = WORKER["TagAtLaunchOnly"]
    assert tags == {"Name", TAG_JOB, TAG_RUN, TAG_FLOW_RUN, TAG_EXPIRES, TAG_ATTEMPT}
    assert tags == set(tagging["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"])
    tagged_types = {spec["ResourceType"] for spec in request["TagSpecifications"]}
    assert {sub(arn).rsplit(":", 1)[1] for arn in tagging["Resource"]} == {
        f"{kind}/*" for kind in tagged_types
    }
    assert tagging["Condition"]["StringEquals"]["ec2:CreateAction"] == "RunInstances"
    for sid in ("LaunchTrainerInstances", "LaunchTrainerVolumes"):
        assert WORKER[sid]["Condition"]["Null"] == {f"aws:RequestTag/{TAG_JOB}": "false"}
    assert WORKER["TerminateTrainerInstances"]["Condition"]["Null"] == {f"ec2:ResourceTag/{TAG_JOB}": "false"}
    launch = WORKER["LaunchTrainerInstances"]["Condition"]
    assert launch["StringEquals"]["ec2:MetadataHttpTokens"] == request["MetadataOptions"]["HttpTokens"]
    assert "Name" in request["IamInstanceProfile"]  # the policy only allows launches with our profile
    assert sub(launch["ArnEquals"]["ec2:InstanceProfile"]) == "${TrainerInstanceProfile.Arn}"


def test_the_names_in_the_template_are_the_codes() -> None:
    assert properties("TrainingLogGroup")["LogGroupName"] == LOG_GROUP
    for statement in (WORKER["PublishProgressWhenLocal"], TRAINER["PublishProgress"]):
        assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}
    assert f"${{ModelsBucket}}/{TRAINER_CODE_PREFIX}*" in {
        sub(arn).split(":::", 1)[1] for arn in TRAINER["ReadJobsAndTrainerCode"]["Resource"]
    }
    settings_prefix = PlatformSettings.model_fields["lambda_function_prefix"].default
    assert f"{PREFIX}-" == settings_prefix
    function_name = LambdaCompute.model_fields["function_name"].default
    assert (
        sub(properties("TrainerFunction")["FunctionName"]).replace("${NamePrefix}", PREFIX) == function_name
    )
    pattern = sub(WORKER["TrainerFunction"]["Resource"]).split(":function:", 1)[1]
    assert fnmatchcase(function_name, pattern.replace("${NamePrefix}", PREFIX))
    assert not fnmatchcase("someone-elses-function", pattern.replace("${NamePrefix}", PREFIX))


def test_the_trainer_function_defaults_are_the_settings_defaults() -> None:
    parameters = TEMPLATE["Parameters"]
    for parameter, field in [
        ("TrainerMemoryMb", "lambda_memory_mb"),
        ("TrainerTimeoutSeconds", "lambda_timeout_seconds"),
        ("TrainerEphemeralStorageMb", "lambda_ephemeral_storage_mb"),
    ]:
        assert parameters[parameter]["Default"] == PlatformSettings.model_fields[field].default, parameter


def test_the_trainer_function_is_what_mltp_lambda_deploy_makes(mock_clients) -> None:
    role = mock_clients("iam").create_role(RoleName="trainer", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lambda_client = mock_clients("lambda")
    deploy_trainer_function(
        lambda_client,
        function_name="mltp-trainer",
        runtime="python3.11",
        memory_mb=3008,
        timeout_seconds=900,
        ephemeral_storage_mb=2048,
        role_arn=role,
        image_uri=IMAGE,
    )
    deployed = lambda_client.get_function(FunctionName="mltp-trainer")
    function, retries = properties("TrainerFunction"), properties("TrainerEventInvokeConfig")
    assert function["PackageType"] == deployed["Configuration"]["PackageType"] == "Image"
    assert {tag["Key"]: tag["Value"] for tag in function["Tags"]} == MANAGED_TAG
    config = lambda_client.get_function_event_invoke_config(FunctionName="mltp-trainer")
    assert retries["MaximumRetryAttempts"] == config["MaximumRetryAttempts"] == 0
    assert retries["MaximumEventAgeInSeconds"] == config["MaximumEventAgeInSeconds"]
    assert retries["FunctionName"] == {"Ref": "TrainerFunction"} and retries["Qualifier"] == "$LATEST"


def lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A lifecycle rule, from the S3 API's shape (mltp/buckets.py) or CloudFormation's, as one shape."""
    return {
        "prefix": rule.get("Filter", {}).get("Prefix", rule.get("Prefix", "")),
        "abort_days": rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"),
        "expire_days": rule.get("Expiration", {}).get("Days", rule.get("ExpirationInDays")),
    }


def test_both_buckets_are_locked_down_as_mltp_locks_its_own() -> None:
    expected_rules = {rule["ID"]: lifecycle_rule(rule) for rule in _LIFECYCLE["Rules"]}
    default = _DEFAULT_ENCRYPTION["Rules"][0]
    for name in ("DataBucket", "ModelsBucket"):
        bucket = RESOURCES[name]
        assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
        [rule] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == default["ApplyServerSideEncryptionByDefault"]
        assert rule["BucketKeyEnabled"] is default["BucketKeyEnabled"]
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == _PUBLIC_ACCESS_BLOCKED
        rules = {
            rule["Id"]: lifecycle_rule(rule)
            for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
            if rule["Status"] == "Enabled"
        }
        assert {key: rules.get(key) for key in expected_rules} == expected_rules
        [deny] = properties(f"{name}Policy")["PolicyDocument"]["Statement"]
        assert properties(f"{name}Policy")["Bucket"] == {"Ref": name}
        assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"] == [{"Fn::GetAtt": [name, "Arn"]}, {"Fn::Sub": f"${{{name}.Arn}}/*"}]
    assert properties("ModelsBucket")["VersioningConfiguration"] == {"Status": "Enabled"}


def test_the_forwarder_is_wired_to_new_objects_under_the_incoming_prefix() -> None:
    notification = properties("DataBucket")["NotificationConfiguration"]["Fn::If"]
    assert notification[0] == "HasForwarder" and notification[2] == {"Ref": "AWS::NoValue"}
    [target] = notification[1]["LambdaConfigurations"]
    assert target["Event"] == "s3:ObjectCreated:*"
    assert target["Function"] == {"Fn::GetAtt": ["ForwarderFunction", "Arn"]}
    assert target["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "IncomingPrefix"}}]
    assert TEMPLATE["Parameters"]["IncomingPrefix"]["Default"] == "incoming/"
    permission = properties("ForwarderPermission")
    assert (permission["Principal"], permission["Action"]) == ("s3.amazonaws.com", "lambda:InvokeFunction")
    assert sub(permission["SourceArn"]).endswith(":s3:::" + sub(properties("DataBucket")["BucketName"]))
    assert RESOURCES["DataBucket"]["DependsOn"] == "ForwarderPermissionReady"
    assert RESOURCES["ForwarderPermissionReady"]["Metadata"]["Permission"]["Fn::If"][1] == {
        "Ref": "ForwarderPermission"
    }
    environment = properties("ForwarderFunction")["Environment"]["Variables"]
    assert environment["MLTP_INCOMING_PREFIX"] == {"Ref": "IncomingPrefix"}
    assert {"PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"} <= set(environment)
    assert TEMPLATE["Parameters"]["PrefectApiKey"]["NoEcho"] is True
    assert TEMPLATE["Parameters"]["PrefectApiAuthString"]["NoEcho"] is True


# --- every AWS call the code makes, against the policies of a stack deployed into moto ------------------


class Recorder:
    """A client factory over moto's in-process clients that records every call made while `on`."""

    def __init__(self, clients) -> None:
        self.clients, self.calls, self.on, self._hooked = clients, [], False, set()

    def __call__(self, service: str):
        client = self.clients(service)
        if service not in self._hooked:
            client.meta.events.register("before-parameter-build", self._record)
            self._hooked.add(service)
        return client

    def _record(self, params, model, **kwargs) -> None:
        if self.on:
            self.calls.append((model.service_model.service_name, model.name, dict(params)))


_RENAMED = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:UploadPartCopy": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:CopyObject": "s3:PutObject",
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "lambda:Invoke": "lambda:InvokeFunction",
}


def permissions(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The IAM (action, resource) pairs one API call needs; resource None where only the action is
    checked here (EC2: its resource and tag conditions are checked against the launcher above)."""
    action = _RENAMED.get(f"{service}:{operation}", f"{service}:{operation}")
    if service == "s3":
        if "Bucket" not in params:
            return [(action, "*")]
        needed = [
            (action, f"arn:aws:s3:::{params['Bucket']}" + (f"/{params['Key']}" if "Key" in params else ""))
        ]
        source = params.get("CopySource")  # {"Bucket", "Key"} or "bucket/key"
        if source:
            source = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else source
            needed.append(("s3:GetObject", f"arn:aws:s3:::{source}"))
        return needed
    if service == "logs":
        arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{params['logGroupName']}"
        if operation in ("CreateLogStream", "PutLogEvents"):
            arn += f":log-stream:{params['logStreamName']}"
        return [(action, arn)]
    if service == "lambda":
        name = params["FunctionName"]
        arn = name if name.startswith("arn:") else f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        needed = [(action, arn)]
        if operation == "GetFunction":
            needed.append(("lambda:ListTags", arn))  # without it GetFunction answers without the tags
        if operation == "CreateFunction" and params.get("Tags"):
            needed.append(("lambda:TagResource", arn))
        if "Role" in params:
            needed.append(("iam:PassRole", params["Role"]))
        return needed
    if service == "ssm":
        return [(action, f"arn:aws:ssm:{REGION}::parameter{params['Name']}")]
    if service == "ec2":
        return [(action, None)]
    return [(action, "*")]


def allowed(document: dict[str, Any], action: str, resource: str | None) -> bool:
    """Whether an Allow statement names the action and the resource (conditions are checked above)."""
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(fnmatchcase(action.lower(), granted.lower()) for granted in as_list(statement["Action"])):
            continue
        if resource is None or any(
            fnmatchcase(resource, granted) for granted in as_list(statement["Resource"])
        ):
            return True
    return False


def refused(document: dict[str, Any], calls: list[tuple[str, str, dict]]) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for service, operation, params in calls
        for action, resource in permissions(service, operation, params)
        if not allowed(document, action, resource)
    }


@pytest.fixture
def stack(mock_clients) -> dict[str, Any]:
    """The template deployed by moto's in-process CloudFormation (no trainer image, no forwarder), its
    outputs and its policies as IAM stores them: every `${...}` resolved by CloudFormation."""
    cloudformation = mock_clients("cloudformation")
    cloudformation.create_stack(
        StackName="mltp", TemplateBody=TEMPLATE_TEXT, Capabilities=["CAPABILITY_NAMED_IAM"]
    )
    deployed = cloudformation.describe_stacks(StackName="mltp")["Stacks"][0]
    assert deployed["StackStatus"] == "CREATE_COMPLETE"
    outputs = {output["OutputKey"]: output["OutputValue"] for output in deployed["Outputs"]}
    assert {"TrainerFunctionName", "TrainerImage", "ForwarderFunctionName"}.isdisjoint(outputs)
    iam = mock_clients("iam")

    def document(name: str) -> dict[str, Any]:
        arn = f"arn:aws:iam::{ACCOUNT}:policy/{PREFIX}-{name}"
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        return iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]

    return {"outputs": outputs, "worker": document("worker"), "trainer": document("trainer")}


def a_job(job_id: str, models: str = "models") -> JobLaunch:
    return JobLaunch(
        job_id=job_id,
        run_id=job_id,
        job_uri=f"s3://{models}/runs/{job_id}/job.json",
        output_prefix=f"s3://{models}/runs/{job_id}/",
        flow_run_id="0b6c9a4e-0000-4000-8000-000000000001",
        attempt=1,
        deadline=datetime.now(UTC) + timedelta(minutes=30),
    )


def iris_csv(tmp_path: Path) -> Path:
    path = tmp_path / "iris.csv"
    toy.load_iris(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_the_worker_policy_allows_every_call_of_the_platform_and_nothing_is_left_out(
    mock_clients, stack, tmp_path
) -> None:
    outputs, clients = stack["outputs"], Recorder(mock_clients)
    data, models = outputs["DataBucketName"], outputs["ModelsBucketName"]
    assert (data, models) == (DATA_BUCKET, MODELS_BUCKET)
    # moto's CloudFormation ignores the buckets' public access block and lifecycle: mltp puts the same
    # ones (checked above), so that the recorded run sees buckets as the real stack leaves them.
    ensure_buckets(clients, [data, models], REGION, ACCOUNT)
    wine = io.BytesIO(toy.load_wine(as_frame=True).frame.to_csv(index=False).encode())
    clients("s3").put_object(Bucket=data, Key="incoming/wine.csv", Body=wine.getvalue())

    clients.on = True
    ensure_buckets(clients, [data, models], REGION, ACCOUNT)  # `mltp blocks init` and `mltp doctor`
    manifest = datasets.ingest(clients, data, str(iris_csv(tmp_path)), target="target").manifest
    datasets.ingest(clients, data, f"s3://{data}/incoming/wine.csv", target="target")  # watch-incoming
    dataset_catalog.list_datasets(clients, data)
    spec = build_job_spec(manifest, algorithm="logistic_regression", candidates=[{}], models_bucket=models)
    job_uri = write_job(clients, spec)
    write_run_record(clients("s3"), models, spec.job_id, {"jobs": [spec.job_id]})
    status = run_job(job_uri, clients)  # compute=local runs the trainer with the worker's credentials
    assert status["state"] == "succeeded", status

    settings = Ec2Settings("m5.large", None, None, (), outputs["TrainerInstanceProfileName"], None, False)
    ec2 = Ec2Backend(clients("ec2"), clients("ssm"), settings, lambda job: "#!/bin/bash\n", clients("ec2"))
    launched = ec2.launch(a_job(spec.job_id, models))
    poll(
        clients,
        ec2,
        [launched],
        models,
        f"runs/{spec.job_id}",
        LogCursor(0),
        launched.launched_at,
        50,
        {spec.job_id},
    )
    tagged_instances(clients("ec2"), run_id=spec.job_id)
    assert ec2.terminate([launched]) == [launched.handle]

    for tag in ("v1", "v2"):  # `mltp lambda deploy`: create, then update
        deploy_trainer_function(
            clients("lambda"),
            function_name=f"{outputs['LambdaFunctionPrefix']}trainer",
            runtime="python3.11",
            memory_mb=3008,
            timeout_seconds=900,
            ephemeral_storage_mb=2048,
            role_arn=outputs["TrainerFunctionRoleArn"],
            image_uri=IMAGE.replace(":v1", f":{tag}"),
        )
    with Stubber(clients("lambda")) as stub:  # moto's Invoke needs Docker
        stub.add_response(
            "invoke", {"StatusCode": 202, "ResponseMetadata": {"RequestId": "r-1", "HTTPStatusCode": 202}}
        )
        LambdaBackend(clients("lambda"), "mltp-trainer").launch(a_job("lambda-job", models))

    registry.register_version(
        clients("s3"),
        models,
        "iris",
        model_uri=status["model_uri"],
        sha256=status["model_sha256"],
        metrics=status["metrics"],
        primary_metric="accuracy",
        signature={"inputs": []},
        lineage={"job_ids": [spec.job_id]},
        actor="test:aws-setup",
    )
    clients.on = False

    operations = {operation for _, operation, _ in clients.calls}
    assert {"RunInstances", "TerminateInstances", "GetMetricData", "FilterLogEvents", "Invoke"} <= operations
    assert {"CreateFunction", "UpdateFunctionCode", "PutMetricData", "CopyObject"} <= operations
    # ListBuckets is deliberately not granted: mltp/buckets.py answers "is it ours" with HeadBucket instead.
    assert refused(stack["worker"], clients.calls) == {("s3:ListAllMyBuckets", "*")}
    # The instance profile it launched with holds the role the policy lets it pass.
    profile = mock_clients("iam").get_instance_profile(
        InstanceProfileName=outputs["TrainerInstanceProfileName"]
    )
    [role] = profile["InstanceProfile"]["Roles"]
    assert allowed(stack["worker"], "iam:PassRole", role["Arn"])
    assert not allowed(stack["worker"], "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin")
    assert not allowed(stack["worker"], "s3:GetObject", "arn:aws:s3:::someone-elses-bucket/key")


def test_the_trainer_policy_allows_every_call_the_trainer_makes_and_no_more(
    mock_clients, stack, tmp_path
) -> None:
    outputs, clients = stack["outputs"], Recorder(mock_clients)
    data, models = outputs["DataBucketName"], outputs["ModelsBucketName"]
    manifest = datasets.ingest(clients, data, str(iris_csv(tmp_path)), target="target").manifest
    spec = build_job_spec(
        manifest, algorithm="random_forest", candidates=[{"n_estimators": 20}], models_bucket=models
    )
    job_uri = write_job(clients, spec)

    clients.on = True
    status = run_job(job_uri, clients, instance_id="i-0123456789abcdef0")
    clients.on = False
    assert status["state"] == "succeeded", status
    # The boot script's own S3 calls (aws s3 cp): the wheel and requirements in, its log out.
    assert "logs/bootstrap.log" in user_data.TEMPLATE.read_text()
    boot = [
        (
            "s3",
            "GetObject",
            {"Bucket": models, "Key": f"{TRAINER_CODE_PREFIX}abc/mltp-0.1.0-py3-none-any.whl"},
        ),
        ("s3", "GetObject", {"Bucket": models, "Key": f"{TRAINER_CODE_PREFIX}abc/trainer-requirements.txt"}),
        ("s3", "PutObject", {"Bucket": models, "Key": f"runs/{spec.job_id}/logs/bootstrap.log"}),
    ]
    assert {"GetObject", "PutObject", "PutMetricData", "CreateLogStream", "PutLogEvents"} <= {
        operation for _, operation, _ in clients.calls
    }
    assert refused(stack["trainer"], clients.calls + boot) == set()
    trainer = stack["trainer"]
    assert not allowed(trainer, "s3:PutObject", f"arn:aws:s3:::{models}/models/iris/versions/1/model.skops")
    assert not allowed(trainer, "s3:PutObject", f"arn:aws:s3:::{data}/datasets/iris/x/manifest.json")
    assert not allowed(trainer, "s3:GetObject", f"arn:aws:s3:::{data}/incoming/secret.csv")
    assert not allowed(trainer, "ec2:RunInstances", None) and not allowed(
        trainer, "lambda:InvokeFunction", None
    )


# --- deployed into a moto server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_stack() -> Iterator[dict[str, Any]]:
    with threaded_moto_server() as endpoint:

        def client(service: str):
            return boto3.client(
                service,
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

        cloudformation = client("cloudformation")
        parameters = {"TrainerImageUri": IMAGE, "PrefectApiUrl": "https://prefect.example.com/api"}
        cloudformation.create_stack(
            StackName="mltp",
            TemplateBody=TEMPLATE_TEXT,
            Capabilities=["CAPABILITY_NAMED_IAM"],
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        )
        deadline = time.monotonic() + 60
        while (stack := cloudformation.describe_stacks(StackName="mltp")["Stacks"][0])[
            "StackStatus"
        ].endswith("_IN_PROGRESS"):
            assert time.monotonic() < deadline, "the stack is still being created after 60 s"
            time.sleep(0.2)
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        yield {"client": client, "endpoint": endpoint, "stack": stack}


def test_the_moto_gaps_are_the_known_ones() -> None:
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    unsupported = (
        {resource["Type"] for resource in RESOURCES.values()} - set(get_model_map()) - set(NULL_MODELS)
    )
    assert unsupported == {"AWS::S3::BucketPolicy", "AWS::Lambda::EventInvokeConfig"}


def test_the_deployed_buckets_roles_profile_and_log_group(moto_stack) -> None:
    client = moto_stack["client"]
    s3, iam, logs = client("s3"), client("iam"), client("logs")
    for bucket in (DATA_BUCKET, MODELS_BUCKET):
        [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    trust = {
        f"{PREFIX}-trainer-ec2": "ec2.amazonaws.com",
        f"{PREFIX}-trainer-lambda": "lambda.amazonaws.com",
        f"{PREFIX}-incoming-forwarder": "lambda.amazonaws.com",
    }
    trainer_policy = f"arn:aws:iam::{ACCOUNT}:policy/{PREFIX}-trainer"
    for role_name, service in trust.items():
        role = iam.get_role(RoleName=role_name)["Role"]
        [statement] = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": service} and statement["Action"] == "sts:AssumeRole"
        attached = {
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
        }
        assert attached == ({trainer_policy} if "trainer" in role_name else set())
    assert iam.list_role_policies(RoleName=f"{PREFIX}-trainer-lambda")["PolicyNames"] == ["function-log"]
    profile = iam.get_instance_profile(InstanceProfileName=f"{PREFIX}-trainer-ec2")["InstanceProfile"]
    assert [role["RoleName"] for role in profile["Roles"]] == [f"{PREFIX}-trainer-ec2"]
    [group] = logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    assert group["logGroupName"] == LOG_GROUP and group["retentionInDays"] == 30


def test_the_deployed_functions(moto_stack) -> None:
    lambda_client = moto_stack["client"]("lambda")
    trainer = lambda_client.get_function(FunctionName=f"{PREFIX}-trainer")
    assert trainer["Code"]["ImageUri"] == IMAGE
    configuration = trainer["Configuration"]
    assert (configuration["MemorySize"], configuration["Timeout"]) == (3008, 900)
    assert configuration["Role"] == f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-trainer-lambda"
    forwarder = lambda_client.get_function(FunctionName=f"{PREFIX}-incoming-forwarder")["Configuration"]
    assert (forwarder["Runtime"], forwarder["Handler"]) == ("python3.12", "index.handler")
    assert forwarder["Environment"]["Variables"] == {
        "PREFECT_API_URL": "https://prefect.example.com/api",
        "PREFECT_API_KEY": "",
        "PREFECT_API_AUTH_STRING": "",
        "MLTP_INCOMING_PREFIX": "incoming/",
    }
    [grant] = json.loads(lambda_client.get_policy(FunctionName=f"{PREFIX}-incoming-forwarder")["Policy"])[
        "Statement"
    ]
    assert grant["Principal"] == {"Service": "s3.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:s3:::{DATA_BUCKET}"


def test_the_deployed_worker_policy_is_iam_policy_json_with_its_placeholders_filled(moto_stack) -> None:
    iam = moto_stack["client"]("iam")
    arn = f"arn:aws:iam::{ACCOUNT}:policy/{PREFIX}-worker"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    deployed = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    values = {
        "AWS::Partition": "aws",
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "NamePrefix": PREFIX,
        "DataBucket": DATA_BUCKET,
        "ModelsBucket": MODELS_BUCKET,
        "TrainingLogGroup": LOG_GROUP,
        "TrainerInstanceRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-trainer-ec2",
        "TrainerFunctionRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-trainer-lambda",
        "TrainerInstanceProfile.Arn": f"arn:aws:iam::{ACCOUNT}:instance-profile/{PREFIX}-trainer-ec2",
    }
    text = (AWS_DIR / "iam-policy.json").read_text()
    filled = re.sub(r"\$\{([^}]+)\}", lambda found: values[found.group(1)], text)
    assert json.loads(filled) == deployed


def test_the_outputs_are_the_settings_of_a_working_env_file(moto_stack, tmp_path, capsys) -> None:
    stack_env.main(["mltp", "--region", REGION, "--endpoint-url", moto_stack["endpoint"]])
    printed = capsys.readouterr().out
    lines = stack_env.env_lines(moto_stack["stack"]["Outputs"])
    assert printed.splitlines()[1:] == lines
    assert {line.split("=", 1)[0] for line in lines} == {
        "AWS_REGION",
        "ML_DATA_BUCKET",
        "ML_MODELS_BUCKET",
        "EC2_INSTANCE_PROFILE",
        "LAMBDA_FUNCTION_PREFIX",
        "LAMBDA_ROLE_ARN",
        "LAMBDA_IMAGE_URI",
        "LAMBDA_MEMORY_MB",
        "LAMBDA_TIMEOUT",
        "LAMBDA_EPHEMERAL_STORAGE_MB",
    }
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text() + printed)  # as the README says: appended
    settings = load_settings(env_file)
    assert (settings.data_bucket, settings.models_bucket) == (DATA_BUCKET, MODELS_BUCKET)
    assert settings.ec2_instance_profile == f"{PREFIX}-trainer-ec2"
    assert settings.lambda_role_arn == f"arn:aws:iam::{ACCOUNT}:role/{PREFIX}-trainer-lambda"
    assert settings.lambda_image_uri == IMAGE and settings.region == REGION
    assert (
        settings.lambda_memory_mb,
        settings.lambda_timeout_seconds,
        settings.lambda_ephemeral_storage_mb,
    ) == (
        3008,
        900,
        2048,
    )
    outputs = {output["OutputKey"]: output["OutputValue"] for output in moto_stack["stack"]["Outputs"]}
    assert build_blocks(settings).lambda_.function_name == outputs["TrainerFunctionName"]
    assert outputs["WorkerPolicyArn"] == f"arn:aws:iam::{ACCOUNT}:policy/{PREFIX}-worker"
    assert all(re.fullmatch(r"[A-Z0-9_]+=\S+", line) for line in lines)
