"""`mltp sandbox` and `mltp doctor` against a sandbox started for real by the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_mltp

pytestmark = pytest.mark.servers


def test_status_json_has_every_endpoint(sandbox) -> None:
    result = run_mltp("sandbox", "status", "--json", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] is True
    assert status["aws_endpoint_url"].startswith("http://127.0.0.1:")
    assert status["prefect_api_url"].endswith("/api")
    assert status["prefect_ui_url"] == status["prefect_api_url"].removesuffix("/api")
    assert {name: service["state"] for name, service in status["services"].items()} == {
        "moto": "running",
        "fleet": "running",
        "prefect": "running",
        "worker": "running",
    }
    assert status["lambda_endpoint_url"].startswith("http://127.0.0.1:")
    assert httpx.get(f"{status['prefect_api_url']}/health").status_code == 200
    # The UI is told where the API is, since the port is not Prefect's default.
    ui_settings = httpx.get(f"{status['prefect_ui_url']}/ui-settings").json()
    assert ui_settings["api_url"] == status["prefect_api_url"]


def test_status_for_people_shows_the_ui_url(sandbox) -> None:
    result = run_mltp("sandbox", "status", env=sandbox.env)
    assert result.returncode == 0
    assert sandbox.status["prefect_ui_url"] in result.stdout
    assert sandbox.aws_endpoint_url in result.stdout


def test_up_twice_is_harmless(sandbox) -> None:
    result = run_mltp("sandbox", "up", "--json", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["notes"][0] == "the sandbox was already running"
    assert again["notes"][1].startswith("deployed ") and again["notes"][1].endswith("prefect.yaml")
    assert again["services"] == sandbox.status["services"]  # same pids: nothing restarted
    sandbox.stop_polling_incoming()  # the deploy turned the schedule back on


def test_up_with_other_ports_while_running_is_refused(sandbox) -> None:
    result = run_mltp("sandbox", "up", "--aws-port", "1", env=sandbox.env)
    assert result.returncode == 2
    assert "already running on ports" in result.stderr
    assert "mltp sandbox down" in result.stderr


def test_doctor_passes_on_the_sandbox(sandbox) -> None:
    result = run_mltp("doctor", "--json", env=sandbox.env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["prefect_api_url"] == sandbox.prefect_api_url
    assert [check["name"] for check in report["checks"]] == [
        "prefect-api",
        "blocks",
        "aws-credentials",
        "bucket:datasets",
        "bucket:models",
        "ec2",
    ]
    assert all(check["status"] == "ok" for check in report["checks"])


def test_doctor_for_people_prints_one_line_per_check(sandbox) -> None:
    result = run_mltp("doctor", env=sandbox.env)
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7
    assert lines[-1] == "all checks passed"


def test_buckets_exist_encrypted_and_private(sandbox) -> None:
    s3 = sandbox.s3()
    for bucket in sandbox.status["buckets"].values():
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())


def test_blocks_point_at_the_sandbox(sandbox) -> None:
    from blocks.platform import load_blocks
    from mltp.prefect_api import activated

    with activated(sandbox.prefect_api_url):
        blocks = load_blocks()
    assert blocks.credentials.aws_client_parameters.endpoint_url == sandbox.aws_endpoint_url
    assert blocks.credentials.aws_client_parameters.config == {
        "retries": {"mode": "adaptive", "max_attempts": 8}
    }
    assert blocks.datasets.bucket_name == sandbox.status["buckets"]["data"]
    assert blocks.models.bucket_name == sandbox.status["buckets"]["models"]
    assert blocks.ec2.instance_type == "m5.large"
    assert blocks.lambda_.function_name == "mltp-trainer"
    # The credentials block really reaches the moto server.
    identity = blocks.credentials.get_client("sts").get_caller_identity()
    assert identity["Account"] == "123456789012"


def test_custom_block_types_are_in_the_catalogue(sandbox) -> None:
    types = sandbox.api("/block_types/filter", {})
    by_slug = {block_type["slug"]: block_type for block_type in types}
    for slug in ("mltp-ec2-compute", "mltp-lambda-compute", "aws-credentials", "s3-bucket"):
        assert slug in by_slug
    schemas = sandbox.api(
        "/block_schemas/filter",
        {"block_schemas": {"block_type_id": {"any_": [by_slug["mltp-ec2-compute"]["id"]]}}},
    )
    properties = schemas[0]["fields"]["properties"]
    assert all(field.get("description") for field in properties.values()), properties


def test_sandbox_env_points_other_tools_at_it(sandbox) -> None:
    result = run_mltp("sandbox", "env", env=sandbox.env)
    assert result.returncode == 0
    assert f"export PREFECT_API_URL={sandbox.prefect_api_url}" in result.stdout
    assert f"export AWS_ENDPOINT_URL={sandbox.aws_endpoint_url}" in result.stdout


def test_block_types_register_the_prefect_way(sandbox) -> None:
    prefect = str(Path(sys.executable).parent / "prefect")
    result = subprocess.run(
        [prefect, "block", "register", "-m", "blocks.compute"],
        env={**os.environ, "PREFECT_API_URL": sandbox.prefect_api_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mltp EC2 Compute" in result.stdout
