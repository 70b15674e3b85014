from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from mltp.aws import RETRY_CONFIG, boto3_client_factory, caller_identity, is_transient
from mltp.errors import AwsAccessError
from tests.conftest import free_port


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("Throttling", 400), True),
        (client_error("RequestLimitExceeded", 503), True),
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("InvalidParameterValue", 400), False),
        (ValueError("user error"), False),
    ],
)
def test_only_throttling_5xx_and_connection_errors_are_transient(error, transient) -> None:
    assert is_transient(error) is transient


def test_clients_use_adaptive_retries() -> None:
    client = boto3_client_factory("us-east-1")("sts")
    assert client.meta.config.retries["mode"] == "adaptive"
    assert RETRY_CONFIG["retries"]["mode"] == "adaptive"


@pytest.mark.parametrize("code", ["InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_rejected_credentials_say_so(code) -> None:
    sts = boto3.client("sts", region_name="us-east-1")
    with Stubber(sts) as stub:
        stub.add_client_error("get_caller_identity", service_error_code=code, http_status_code=403)
        with pytest.raises(AwsAccessError, match=f"AWS rejected the credentials \\({code}\\)"):
            caller_identity(lambda service: sts)


def test_missing_credentials_say_what_to_set(monkeypatch, tmp_path) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AwsAccessError, match="no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        caller_identity(boto3_client_factory("us-east-1"))


def test_unreachable_endpoint_names_it() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=endpoint,
        config=boto3.session.Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(AwsAccessError, match=f"cannot reach AWS at {endpoint}"):
        caller_identity(lambda service: sts)
