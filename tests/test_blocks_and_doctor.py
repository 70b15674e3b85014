"""`mltp blocks init` and `mltp doctor` on setups that go wrong.

These tests break blocks on purpose, so they point the CLI at a scratch Prefect server (PREFECT_API_URL)
and at the sandbox's moto server, or at a moto server that checks credentials like AWS does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace

import boto3
import httpx
import pytest

from tests.conftest import free_port, prefect_http, run_mltp

pytestmark = pytest.mark.servers


@pytest.fixture
def aws_env(sandbox, scratch_prefect) -> Iterator[dict[str, str]]:
    """Variables for `blocks init` against the sandbox's moto, saving blocks on the scratch server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # every test starts with no blocks
        for document in client.read_block_documents():
            client.delete_block_document(document.id)
    yield {
        "PREFECT_API_URL": scratch_prefect,
        "AWS_ENDPOINT_URL": sandbox.aws_endpoint_url,
        "ML_DATA_BUCKET": f"team-data-{os.getpid()}-{time.monotonic_ns()}",
        "ML_MODELS_BUCKET": f"team-models-{os.getpid()}-{time.monotonic_ns()}",
    }


def bucket_exists(sandbox, name: str) -> bool:
    return any(bucket["Name"] == name for bucket in sandbox.s3().list_buckets()["Buckets"])


def block_documents(api_url: str) -> list[dict]:
    with prefect_http(api_url) as api:
        return api.post("block_documents/filter", json={}).json()


def block_names(api_url: str) -> set[str]:
    return {document["name"] for document in block_documents(api_url)}


def doctor(env: dict[str, str]) -> dict[str, dict]:
    result = run_mltp("doctor", "--json", env=env)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1)
    return {check["name"]: check for check in report["checks"]}


def test_init_creates_buckets_and_blocks_then_is_idempotent(sandbox, aws_env) -> None:
    first = run_mltp("blocks", "init", "--json", env=aws_env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert set(report["buckets"].values()) == {"created"}
    assert report["blocks"] == ["mltp-aws", "mltp-datasets", "mltp-models", "mltp-ec2", "mltp-lambda"]
    assert block_names(aws_env["PREFECT_API_URL"]) == set(report["blocks"])

    second = run_mltp("blocks", "init", "--json", env={**aws_env, "LAMBDA_TIMEOUT": "300"})
    assert second.returncode == 0, second.stderr
    assert set(json.loads(second.stdout)["buckets"].values()) == {"existing"}
    documents = block_documents(aws_env["PREFECT_API_URL"])
    assert len(documents) == 5  # updated in place, not duplicated
    lambda_block = next(document for document in documents if document["name"] == "mltp-lambda")
    assert lambda_block["data"]["timeout_seconds"] == 300
    checks = doctor(aws_env)
    assert all(check["status"] == "ok" for check in checks.values())
    # The sandbox's moto speaks plain HTTP: a TLS-only bucket policy there would refuse our own requests.
    assert checks["bucket:datasets"]["detail"].endswith("plain-HTTP endpoint, so no TLS-only policy")


def test_secret_is_stored_as_a_secret(sandbox, aws_env) -> None:
    secret = "do-not-print-me-0123456789"
    env = {**aws_env, "AWS_ACCESS_KEY_ID": "AKIASANDBOXTEST", "AWS_SECRET_ACCESS_KEY": secret}
    result = run_mltp("blocks", "init", env=env)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    report = run_mltp("doctor", "--json", env=env)
    assert secret not in report.stdout + report.stderr
    documents = block_documents(aws_env["PREFECT_API_URL"])
    credentials = next(document for document in documents if document["name"] == "mltp-aws")
    assert set(credentials["data"]["aws_secret_access_key"]) == {"*"}  # the API only shows a mask
    assert secret not in json.dumps(documents)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LAMBDA_TIMEOUT", "abc", "LAMBDA_TIMEOUT='abc'"),
        ("LAMBDA_TIMEOUT", "1200", "LAMBDA_TIMEOUT='1200'"),
        ("EC2_INSTANCE_TYPE", "huge", "EC2_INSTANCE_TYPE='huge'"),
        ("ML_DATA_BUCKET", "Not_A_Bucket", "ML_DATA_BUCKET='Not_A_Bucket'"),
    ],
)
def test_malformed_variable_writes_nothing(sandbox, aws_env, variable, value, message) -> None:
    env = {**aws_env, variable: value}
    result = run_mltp("blocks", "init", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not bucket_exists(sandbox, aws_env["ML_MODELS_BUCKET"])
    assert block_names(aws_env["PREFECT_API_URL"]) == set()


def test_env_file_is_accepted(sandbox, aws_env, tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("EC2_KEY_NAME=from-file\n")
    result = run_mltp("blocks", "init", "--env-file", str(env_file), env=aws_env)
    assert result.returncode == 0, result.stderr
    documents = block_documents(aws_env["PREFECT_API_URL"])
    assert next(d for d in documents if d["name"] == "mltp-ec2")["data"]["key_name"] == "from-file"


def test_bucket_of_another_account_is_refused(sandbox, aws_env) -> None:
    foreign = boto3.client("s3", endpoint_url=sandbox.aws_endpoint_url, region_name="us-east-1")
    foreign.meta.events.register(
        "before-sign.s3.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", "111122223333"),
    )
    foreign.create_bucket(Bucket=aws_env["ML_MODELS_BUCKET"])
    result = run_mltp("blocks", "init", env=aws_env)
    assert result.returncode == 2
    assert (
        f"s3://{aws_env['ML_MODELS_BUCKET']} already exists and belongs to another AWS account"
        in result.stderr
    )
    assert not bucket_exists(sandbox, aws_env["ML_DATA_BUCKET"])
    assert block_names(aws_env["PREFECT_API_URL"]) == set()


def test_unreachable_prefect_api_writes_nothing(sandbox, aws_env) -> None:
    env = {**aws_env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    result = run_mltp("blocks", "init", env=env)
    assert result.returncode == 1
    assert "is unreachable" in result.stderr and "mltp sandbox up" in result.stderr
    assert not bucket_exists(sandbox, aws_env["ML_DATA_BUCKET"])
    checks = doctor(env)
    assert checks["prefect-api"]["status"] == "fail"
    assert checks["blocks"]["status"] == "skip"


def test_doctor_names_missing_blocks(aws_env) -> None:
    checks = doctor(aws_env)
    assert checks["prefect-api"]["status"] == "ok"
    assert checks["blocks"]["status"] == "fail"
    assert "aws-credentials/mltp-aws is missing" in checks["blocks"]["detail"]
    assert checks["blocks"]["fix"] == "run `mltp blocks init` to create them"


def test_doctor_names_a_block_edited_into_nonsense(aws_env) -> None:
    assert run_mltp("blocks", "init", env=aws_env).returncode == 0
    documents = block_documents(aws_env["PREFECT_API_URL"])
    lambda_block = next(document for document in documents if document["name"] == "mltp-lambda")
    data = {**lambda_block["data"], "timeout_seconds": 5000}  # as a UI edit could leave it
    with prefect_http(aws_env["PREFECT_API_URL"]) as api:
        response = api.patch(
            f"block_documents/{lambda_block['id']}", json={"data": data, "merge_existing_data": False}
        )
    assert response.status_code == 204, response.text
    checks = doctor(aws_env)
    assert checks["blocks"]["status"] == "fail"
    assert "mltp-lambda-compute/mltp-lambda is invalid" in checks["blocks"]["detail"]
    assert checks["blocks"]["fix"] == "run `mltp blocks init` to create them"
    assert checks["aws-credentials"]["status"] == "skip"


def test_doctor_finds_a_deleted_bucket(sandbox, aws_env) -> None:
    assert run_mltp("blocks", "init", env=aws_env).returncode == 0
    sandbox.s3().delete_bucket(Bucket=aws_env["ML_MODELS_BUCKET"])
    checks = doctor(aws_env)
    assert checks["bucket:datasets"]["status"] == "ok"
    assert checks["bucket:models"]["status"] == "fail"
    assert checks["bucket:models"]["detail"] == f"s3://{aws_env['ML_MODELS_BUCKET']} does not exist"
    assert "mltp blocks init" in checks["bucket:models"]["fix"]


def test_doctor_finds_a_bucket_without_encryption(sandbox, aws_env) -> None:
    assert run_mltp("blocks", "init", env=aws_env).returncode == 0
    sandbox.s3().delete_bucket_encryption(Bucket=aws_env["ML_DATA_BUCKET"])
    checks = doctor(aws_env)
    assert checks["bucket:datasets"]["status"] == "fail"
    assert "no default encryption" in checks["bucket:datasets"]["detail"]
    assert run_mltp("blocks", "init", env=aws_env).returncode == 0  # the fix it suggests works
    assert doctor(aws_env)["bucket:datasets"]["status"] == "ok"


def test_doctor_flags_a_bucket_that_lets_requests_without_tls_through(mock_clients) -> None:
    from mltp.buckets import ensure_bucket, tls_only_policy
    from mltp.cli.doctor_cmd import _Checkup, _run

    s3, account = mock_clients("s3"), "123456789012"
    s3.create_bucket(Bucket="team-ml-data")  # an existing bucket's policy is the owner's: only reported
    ensure_bucket(mock_clients, "team-ml-data", "us-east-1", account)
    checkup = _Checkup(ExitStack())
    checkup.blocks = SimpleNamespace(client=mock_clients)
    checkup.account = account
    check = _run("bucket:datasets", lambda: checkup.bucket("team-ml-data"))
    assert check.status == "fail"
    assert check.detail == "s3://team-ml-data has no bucket policy denying requests without TLS"
    assert "aws:SecureTransport is false" in check.fix

    s3.put_bucket_policy(Bucket="team-ml-data", Policy=json.dumps(tls_only_policy("team-ml-data")))
    check = _run("bucket:datasets", lambda: checkup.bucket("team-ml-data"))
    assert check.status == "ok" and check.detail.endswith("public access blocked, TLS only")


def test_doctor_finds_a_missing_subnet(sandbox, aws_env) -> None:
    env = {**aws_env, "EC2_SUBNET_ID": "subnet-0123456789abcdef0"}
    assert run_mltp("blocks", "init", env=env).returncode == 0
    checks = doctor(env)
    assert checks["ec2"]["status"] == "fail"
    assert "subnet subnet-0123456789abcdef0 not found" in checks["ec2"]["detail"]


def test_missing_credentials(sandbox, aws_env, tmp_path) -> None:
    env = {
        **aws_env,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }
    result = run_mltp("blocks", "init", env=env)
    assert result.returncode == 1
    assert "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
    assert not bucket_exists(sandbox, aws_env["ML_DATA_BUCKET"])


@pytest.fixture(scope="module")
def authenticating_moto() -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that checks every request's credentials, as AWS does. The first three requests
    are let through unauthenticated to create a user and its access key."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.25)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
        iam.create_user(UserName="mltp")
        iam.put_user_policy(
            UserName="mltp",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="mltp")["AccessKey"]
        yield (
            endpoint,
            {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]},
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_wrong_credentials_are_rejected_and_nothing_is_created(aws_env, authenticating_moto) -> None:
    endpoint, good = authenticating_moto
    env = {**aws_env, "AWS_ENDPOINT_URL": endpoint, "AWS_SESSION_TOKEN": ""}
    wrong = run_mltp("blocks", "init", env={**env, **good, "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    assert wrong.returncode == 1
    assert "AWS rejected the credentials (SignatureDoesNotMatch)" in wrong.stderr
    assert "wrong-secret" not in wrong.stderr
    unknown = run_mltp(
        "blocks",
        "init",
        env={**env, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN00000000", "AWS_SECRET_ACCESS_KEY": "x"},
    )
    assert "AWS rejected the credentials (InvalidClientTokenId)" in unknown.stderr
    assert block_names(aws_env["PREFECT_API_URL"]) == set()

    right = run_mltp("blocks", "init", env={**env, **good})
    assert right.returncode == 0, right.stderr
    checks = doctor(env)
    assert all(check["status"] == "ok" for check in checks.values()), checks
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=good["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=good["AWS_SECRET_ACCESS_KEY"],
    )
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} >= {aws_env["ML_DATA_BUCKET"]}


def test_doctor_reports_credentials_that_stopped_working(aws_env, authenticating_moto) -> None:
    endpoint, good = authenticating_moto
    env = {**aws_env, "AWS_ENDPOINT_URL": endpoint, "AWS_SESSION_TOKEN": "", **good}
    assert run_mltp("blocks", "init", env=env).returncode == 0
    from prefect_aws import AwsCredentials

    credentials = AwsCredentials.load("mltp-aws")  # the key is rotated behind our back
    credentials.aws_secret_access_key = "rotated-away"
    credentials.save("mltp-aws", overwrite=True)
    checks = doctor(env)
    assert checks["aws-credentials"]["status"] == "fail"
    assert "AWS rejected the credentials" in checks["aws-credentials"]["detail"]
    assert "AWS_SECRET_ACCESS_KEY" in checks["aws-credentials"]["fix"]
    assert checks["bucket:datasets"]["status"] == "skip"


def test_commands_that_need_a_missing_block_say_so_in_one_line(aws_env) -> None:
    result = run_mltp("datasets", "list", env=aws_env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mltp: error: blocks not usable: s3-bucket/mltp-datasets is missing: "
        "run `mltp blocks init` to create them"
    )


def test_the_blocks_share_one_session_and_one_client_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.platform import build_blocks
    from mltp.settings import PlatformSettings

    settings = PlatformSettings(
        data_bucket="data",
        models_bucket="models",
        access_key_id="testing",
        secret_access_key="testing",
        endpoint_url="http://127.0.0.1:1",
    )
    blocks = build_blocks(settings)
    sessions = []
    real = type(blocks.credentials).get_boto3_session

    def counted(credentials):
        sessions.append(real(credentials))
        return sessions[-1]

    monkeypatch.setattr(type(blocks.credentials), "get_boto3_session", counted)
    s3 = blocks.client("s3")
    assert blocks.client("s3") is s3 and blocks.client("logs") is blocks.client("logs")
    assert s3.meta.endpoint_url == "http://127.0.0.1:1"
    single = blocks.single_attempt_client("ec2")  # overrides: a client of its own, never the shared one
    assert single is not blocks.client("ec2") and single.meta.config.retries["total_max_attempts"] == 1
    assert blocks.client("ec2").meta.config.retries["mode"] == "adaptive"
    assert len(sessions) == 1
