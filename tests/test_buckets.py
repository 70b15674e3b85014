from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from mltp.buckets import ensure_bucket, ensure_buckets, inspect_bucket
from mltp.errors import BucketError

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "111122223333"


@pytest.fixture
def clients():
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        yield lambda service: session.client(service)


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
