from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from mltp.s3_json import finite, lost_race, put_json, read_json, strict_dumps


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="docs-bucket")
        yield client


def test_create_only_once(s3) -> None:
    put_json(s3, "docs-bucket", "a.json", {"n": 1}, create=True)
    with pytest.raises(ClientError) as caught:
        put_json(s3, "docs-bucket", "a.json", {"n": 2}, create=True)
    assert lost_race(caught.value)
    assert read_json(s3, "docs-bucket", "a.json")[0] == {"n": 1}


def test_compare_and_swap(s3) -> None:
    put_json(s3, "docs-bucket", "a.json", {"n": 1}, create=True)
    _, etag = read_json(s3, "docs-bucket", "a.json")
    put_json(s3, "docs-bucket", "a.json", {"n": 2}, etag=etag)
    with pytest.raises(ClientError) as caught:  # the stale ETag loses
        put_json(s3, "docs-bucket", "a.json", {"n": 3}, etag=etag)
    assert lost_race(caught.value)
    assert read_json(s3, "docs-bucket", "a.json")[0] == {"n": 2}
    assert s3.head_object(Bucket="docs-bucket", Key="a.json")["ServerSideEncryption"] == "AES256"


def test_missing_document(s3) -> None:
    assert read_json(s3, "docs-bucket", "nope.json") == (None, None)


def test_a_retried_write_that_finds_its_own_bytes_succeeded(s3) -> None:
    """What botocore's retry of a write whose answer was lost sees: the condition fails against our own
    first attempt. Identical bytes are ours; anything else is a lost race."""
    put_json(s3, "docs-bucket", "a.json", {"n": 1, "owner": "me"}, create=True)
    put_json(s3, "docs-bucket", "a.json", {"n": 1, "owner": "me"}, create=True)
    _, first = read_json(s3, "docs-bucket", "a.json")
    put_json(s3, "docs-bucket", "a.json", {"n": 2}, etag=first)
    put_json(s3, "docs-bucket", "a.json", {"n": 2}, etag=first)
    with pytest.raises(ClientError) as caught:
        put_json(s3, "docs-bucket", "a.json", {"n": 1, "owner": "someone else"}, create=True)
    assert lost_race(caught.value)
    assert read_json(s3, "docs-bucket", "a.json")[0] == {"n": 2}


def strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_stored_as_null(s3) -> None:
    document = {"roc_auc": float("nan"), "columns": [{"max": float("inf"), "min": -float("inf")}], "n": 2.5}
    put_json(s3, "docs-bucket", "a.json", document, create=True)
    stored = strict(s3.get_object(Bucket="docs-bucket", Key="a.json")["Body"].read())
    assert stored == {"roc_auc": None, "columns": [{"max": None, "min": None}], "n": 2.5}
    assert read_json(s3, "docs-bucket", "a.json")[0] == stored


def test_strict_dumps_refuses_what_it_cannot_make_finite() -> None:
    nested = ({"a": [float("nan"), (1.0, float("-inf"))]}, "x", 3)
    assert finite(nested) == [{"a": [None, [1.0, None]]}, "x", 3]
    with pytest.raises(ValueError, match="not JSON compliant"):
        strict_dumps({"a": object()}, default=lambda _: float("nan"))
