from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from mltp.buckets import (
    TLS_ONLY_SID,
    ensure_bucket,
    ensure_buckets,
    inspect_bucket,
    tls_only_policy,
    tls_policy_state,
)
from mltp.errors import BucketError

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "111122223333"
CFN_RENDER = Path(__file__).resolve().parents[1] / "deployments" / "aws" / "render.py"


@pytest.fixture
def clients(mock_clients):
    """One client per service (so a test's event hooks apply to every call) on moto's HTTPS endpoint."""
    return mock_clients


def other_account_s3():
    """An S3 client acting as another AWS account (moto routes by this header)."""
    client = boto3.client("s3", region_name="us-east-1")
    client.meta.events.register(
        "before-sign.s3.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", OTHER_ACCOUNT),
    )
    return client


def test_missing_bucket_is_created_encrypted_and_private(clients) -> None:
    assert ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT) == "created"
    report = inspect_bucket(clients, "team-ml-data", ACCOUNT)
    assert report.exists and report.owned
    assert report.encryption == "AES256"
    assert report.public_access_blocked
    assert report.policy == "tls-only"
    assert report.problem() is None


def test_outside_us_east_1_the_location_is_set(clients) -> None:
    eu = boto3.Session(region_name="eu-west-1")
    ensure_bucket(lambda service: eu.client(service), "team-ml-eu", "eu-west-1", ACCOUNT)
    assert eu.client("s3").get_bucket_location(Bucket="team-ml-eu")["LocationConstraint"] == "eu-west-1"


def test_second_run_is_a_no_op_that_keeps_our_own_kms_encryption(clients) -> None:
    s3 = clients("s3")
    s3.create_bucket(Bucket="team-ml-data")
    s3.put_bucket_encryption(
        Bucket="team-ml-data",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    assert ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT) == "existing"
    assert inspect_bucket(clients, "team-ml-data", ACCOUNT).encryption == "aws:kms"
    assert inspect_bucket(clients, "team-ml-data", ACCOUNT).public_access_blocked


def test_another_accounts_bucket_is_refused_and_nothing_is_created(clients) -> None:
    other_account_s3().create_bucket(Bucket="someone-elses")
    with pytest.raises(BucketError, match="belongs to another AWS account") as caught:
        ensure_buckets(clients, ["team-ml-data", "someone-elses"], "us-east-1", ACCOUNT)
    assert caught.value.s3_uri == "s3://someone-elses"
    assert caught.value.exit_code == 2
    assert not inspect_bucket(clients, "team-ml-data", ACCOUNT).exists


def test_one_bucket_for_both_roles_is_fine(clients) -> None:
    assert ensure_buckets(clients, ["team-ml", "team-ml"], "us-east-1", ACCOUNT) == {"team-ml": "created"}


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "does not exist"),
        ("foreign", "belongs to another AWS account"),
        ("unencrypted", "has no default encryption"),
        ("public", "does not block public access"),
    ],
)
def test_problems_are_named_with_a_fix(clients, setup, expected) -> None:
    s3 = clients("s3")
    if setup == "foreign":
        other_account_s3().create_bucket(Bucket="team-ml-data")
    elif setup != "missing":
        s3.create_bucket(Bucket="team-ml-data")
        s3.delete_bucket_encryption(Bucket="team-ml-data")
        if setup == "public":
            s3.put_bucket_encryption(
                Bucket="team-ml-data",
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            )
    what, fix = inspect_bucket(clients, "team-ml-data", ACCOUNT).problem()
    assert expected in what
    assert fix


def test_created_buckets_clean_up_abandoned_uploads(clients) -> None:
    ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT)
    rules = clients("s3").get_bucket_lifecycle_configuration(Bucket="team-ml-data")["Rules"]
    assert {rule["ID"] for rule in rules} == {"mltp-abort-incomplete-uploads", "mltp-expire-staging"}


def test_an_owners_lifecycle_is_left_alone(clients) -> None:
    s3 = clients("s3")
    s3.create_bucket(Bucket="team-ml-data")
    own = {
        "Rules": [
            {"ID": "theirs", "Status": "Enabled", "Filter": {"Prefix": "x/"}, "Expiration": {"Days": 9}}
        ]
    }
    s3.put_bucket_lifecycle_configuration(Bucket="team-ml-data", LifecycleConfiguration=own)
    ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT)
    assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket="team-ml-data")["Rules"]] == [
        "theirs"
    ]


def bucket_policy(clients, bucket: str) -> dict:
    return json.loads(clients("s3").get_bucket_policy(Bucket=bucket)["Policy"])


@pytest.mark.parametrize(("region", "partition"), [("us-east-1", "aws"), ("cn-north-1", "aws-cn")])
def test_a_created_bucket_denies_every_request_without_tls(region, partition) -> None:
    with mock_aws():
        session = boto3.Session(region_name=region)
        ensure_bucket(lambda service: session.client(service), "team-ml-data", region, ACCOUNT)
        [statement] = bucket_policy(lambda service: session.client(service), "team-ml-data")["Statement"]
    arn = f"arn:{partition}:s3:::team-ml-data"
    assert statement == {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _cloudformation_template() -> dict:
    spec = importlib.util.spec_from_file_location("mltp_aws_render", CFN_RENDER)
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    return render.load_template()


@pytest.mark.parametrize("logical_id", ["DataBucketPolicy", "ModelsBucketPolicy"])
def test_the_statement_is_the_one_the_cloudformation_stack_gives_its_buckets(logical_id) -> None:
    properties = _cloudformation_template()["Resources"][logical_id]["Properties"]
    bucket = properties["Bucket"]["Ref"]
    [declared] = properties["PolicyDocument"]["Statement"]
    resolved = {  # the template's references to the bucket's ARN, as CloudFormation resolves them
        json.dumps({"Fn::GetAtt": [bucket, "Arn"]}): f"arn:aws:s3:::{bucket}",
        json.dumps({"Fn::Sub": f"${{{bucket}.Arn}}/*"}): f"arn:aws:s3:::{bucket}/*",
    }
    declared["Resource"] = [resolved[json.dumps(reference)] for reference in declared["Resource"]]
    assert declared["Sid"] == TLS_ONLY_SID
    assert [declared] == tls_only_policy(bucket)["Statement"]


def _deny_plain_http(*resources: str, **changes) -> dict:
    return {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": list(resources),
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        **changes,
    }


BUCKET_ARN, OBJECTS_ARN = "arn:aws:s3:::team-ml-data", "arn:aws:s3:::team-ml-data/*"
READ_FOR_A_ROLE = {
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/reader"},
    "Action": "s3:GetObject",
    "Resource": OBJECTS_ARN,
}


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ([READ_FOR_A_ROLE, _deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Sid="Theirs")], "tls-only"),
        ([_deny_plain_http(BUCKET_ARN), _deny_plain_http(OBJECTS_ARN)], "tls-only"),
        (_deny_plain_http("arn:aws:s3:::team-ml-*", Principal={"AWS": "*"}, Action=["s3:*"]), "tls-only"),
        (
            [_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Condition={"Bool": {"aws:securetransport": False}})],
            "tls-only",
        ),
        ([READ_FOR_A_ROLE], "other"),
        ([_deny_plain_http(OBJECTS_ARN)], "other"),
        ([_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Action="s3:PutObject")], "other"),
        ([_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Effect="Allow")], "other"),
        (
            [_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Condition={"Bool": {"aws:SecureTransport": "true"}})],
            "other",
        ),
        ([_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Condition={})], "other"),
        (
            [_deny_plain_http(BUCKET_ARN, OBJECTS_ARN, Principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})],
            "other",
        ),
    ],
)
def test_a_policy_is_tls_only_when_it_denies_plain_http_to_the_bucket_and_its_objects(
    statements, expected
) -> None:
    assert tls_policy_state({"Version": "2012-10-17", "Statement": statements}, BUCKET_ARN) == expected


@pytest.mark.parametrize(
    ("statements", "problem"),
    [
        ([_deny_plain_http(BUCKET_ARN), _deny_plain_http(OBJECTS_ARN), READ_FOR_A_ROLE], None),
        ([READ_FOR_A_ROLE], "the bucket policy of s3://team-ml-data does not deny requests without TLS"),
    ],
)
def test_an_owners_policy_is_kept_and_judged(clients, statements, problem) -> None:
    s3 = clients("s3")
    s3.create_bucket(Bucket="team-ml-data")
    own = {"Version": "2012-10-17", "Statement": statements}
    s3.put_bucket_policy(Bucket="team-ml-data", Policy=json.dumps(own))
    assert ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT) == "existing"
    assert bucket_policy(clients, "team-ml-data") == own
    found = inspect_bucket(clients, "team-ml-data", ACCOUNT).problem()
    assert (found and found[0]) == problem
    if problem:
        assert "aws:SecureTransport is false" in found[1] and TLS_ONLY_SID in found[1]


def test_an_existing_bucket_without_a_policy_is_reported_not_given_one(clients) -> None:
    clients("s3").create_bucket(Bucket="team-ml-data")
    assert ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT) == "existing"
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        clients("s3").get_bucket_policy(Bucket="team-ml-data")
    report = inspect_bucket(clients, "team-ml-data", ACCOUNT)
    assert report.policy == "missing"
    what, fix = report.problem()
    assert what == "s3://team-ml-data has no bucket policy denying requests without TLS"
    assert TLS_ONLY_SID in fix


def test_a_policy_we_may_not_read_is_reported(clients) -> None:
    ensure_bucket(clients, "team-ml-data", "us-east-1", ACCOUNT)

    def refuse(**_) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetBucketPolicy")

    clients("s3").meta.events.register("before-call.s3.GetBucketPolicy", refuse)
    report = inspect_bucket(clients, "team-ml-data", ACCOUNT)
    assert report.policy == "unreadable"
    what, fix = report.problem()
    assert "cannot read the bucket policy" in what and "s3:GetBucketPolicy" in fix
