"""Writes whose answer is lost after S3 stored them (a 503 or a dropped connection), retried by botocore
the way production retries them: through the fault proxy in front of a moto server, one fault scripted
at a time, so every path is taken exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from mltp import registry
from mltp.aws import RETRY_CONFIG
from mltp.s3_json import put_json, read_json
from mltp.s3_multipart import MIN_PART_SIZE, MultipartUpload
from tests.conftest import threaded_moto_server
from tests.fault_proxy import FaultProxy
from tests.test_registry import MODELS, register, small_model_bytes, upload

BUCKET = MODELS
KEY = "staging/one-writer/data.bin"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with threaded_moto_server() as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield url


@pytest.fixture
def proxy(moto_url) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url, rates={}) as running:
        yield running


def s3_through(proxy: FaultProxy):
    return boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1", config=Config(**RETRY_CONFIG))


def open_uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def write_two_parts(s3) -> bytes:
    data = b"a" * MIN_PART_SIZE + b"b" * 1000
    upload = MultipartUpload(s3, BUCKET, KEY, sole_writer=True)
    upload.write(data)
    upload.complete()
    return data


@pytest.mark.parametrize("fault", ["lost", "drop"])
def test_a_lost_create_answer_leaves_no_stray_upload(proxy, fault) -> None:
    s3 = s3_through(proxy)
    proxy.script("s3:CreateMultipartUpload", "lost")
    proxy.script("s3:UploadPart", fault)
    data = write_two_parts(s3)
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == data
    assert open_uploads(s3) == []
    assert proxy.injected[("s3", "lost")]


def test_a_lost_create_answer_leaves_no_stray_upload_after_an_abort(proxy) -> None:
    s3 = s3_through(proxy)
    proxy.script("s3:CreateMultipartUpload", "lost")
    upload = MultipartUpload(s3, BUCKET, "staging/aborted/data.bin", sole_writer=True)
    upload.write(b"x" * 10)
    upload.abort()
    assert open_uploads(s3) == []


def test_a_lost_completion_answer_is_a_completed_upload(proxy) -> None:
    s3 = s3_through(proxy)
    proxy.script("s3:CompleteMultipartUpload", "lost")
    data = write_two_parts(s3)
    assert proxy.injected[("s3", "lost")] == 1
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == data
    assert open_uploads(s3) == []


@pytest.mark.parametrize("fault", ["lost", "drop", "unavailable", "throttle"])
def test_a_conditional_create_survives_every_fault(proxy, fault) -> None:
    s3 = s3_through(proxy)
    key = f"docs/{fault}.json"
    proxy.script("s3:PutObject", fault)
    put_json(s3, BUCKET, key, {"fault": fault}, create=True)
    assert read_json(s3, BUCKET, key)[0] == {"fault": fault}
    assert proxy.injected[("s3", fault)] == 1


def test_a_lost_claim_answer_registers_one_version_without_a_gap(proxy) -> None:
    s3 = s3_through(proxy)
    source = upload(s3, "runs/lost/model.skops", small_model_bytes())
    first = register(s3, "lost-claim", *source)
    proxy.script("s3:PutObject", "lost", "lost", "lost", "lost")  # claim, model, approval, version
    second = register(s3, "lost-claim", *source)
    assert proxy.injected[("s3", "lost")] == 4
    assert [first.version, second.version] == [1, 2]
    assert [v.version for v in registry.list_versions(s3, BUCKET, "lost-claim")] == [1, 2]
