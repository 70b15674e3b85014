from __future__ import annotations

import re

import pytest

from mltp.errors import ConfigError
from mltp.settings import load_settings

REQUIRED = {"ML_DATA_BUCKET": "team-ml-data", "ML_MODELS_BUCKET": "team-ml-models"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    for key, value in REQUIRED.items():
        monkeypatch.setenv(key, value)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_env


def test_defaults_and_names_users_know(env) -> None:
    env(
        AWS_REGION="eu-west-1",
        EC2_KEY_NAME="ops",
        EC2_SECURITY_GROUP="sg-0123456789abcdef0, sg-0fedcba9876543210",
        EC2_INSTANCE_TYPE="c5.xlarge",
        LAMBDA_FUNCTION_PREFIX="team-",
        LAMBDA_RUNTIME="python3.12",
        LAMBDA_TIMEOUT="600",
    )
    settings = load_settings()
    assert settings.region == "eu-west-1"
    assert settings.data_bucket == "team-ml-data"
    assert settings.models_bucket == "team-ml-models"
    assert settings.ec2_key_name == "ops"
    assert settings.ec2_security_group_ids == ["sg-0123456789abcdef0", "sg-0fedcba9876543210"]
    assert settings.ec2_instance_type == "c5.xlarge"
    assert settings.lambda_function_prefix == "team-"
    assert settings.lambda_runtime == "python3.12"
    assert settings.lambda_timeout_seconds == 600
    assert settings.ec2_use_spot is False


def test_env_file_is_read_and_environment_wins(env, tmp_path, monkeypatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LAMBDA_TIMEOUT=300\nEC2_KEY_NAME=from-file\n")
    monkeypatch.setenv("EC2_KEY_NAME", "from-env")
    settings = load_settings(env_file)
    assert settings.lambda_timeout_seconds == 300
    assert settings.ec2_key_name == "from-env"


def test_missing_env_file_is_an_error(env, tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.env")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LAMBDA_TIMEOUT", "abc", "LAMBDA_TIMEOUT='abc'.*valid integer"),
        ("LAMBDA_TIMEOUT", "901", "LAMBDA_TIMEOUT='901'.*less than or equal to 900"),
        ("LAMBDA_TIMEOUT", "0", "LAMBDA_TIMEOUT='0'.*greater than or equal to 1"),
        ("LAMBDA_MEMORY_MB", "64", "LAMBDA_MEMORY_MB='64'"),
        ("LAMBDA_RUNTIME", "nodejs20.x", "LAMBDA_RUNTIME='nodejs20.x'.*Lambda Python runtime"),
        ("LAMBDA_FUNCTION_PREFIX", "bad prefix!", "LAMBDA_FUNCTION_PREFIX"),
        ("EC2_INSTANCE_TYPE", "large", "EC2_INSTANCE_TYPE='large'.*EC2 instance type.*m5.large"),
        ("EC2_INSTANCE_TYPE", "M5.LARGE", "EC2_INSTANCE_TYPE"),
        ("EC2_INSTANCE_TYPE", "p4d.24xlarge", "not in EC2_ALLOWED_INSTANCE_TYPES"),
        ("EC2_ALLOWED_INSTANCE_TYPES", "m5.*,not a type", "EC2_ALLOWED_INSTANCE_TYPES"),
        ("EC2_SECURITY_GROUP", "default", "EC2_SECURITY_GROUP='default'.*security group id"),
        ("EC2_SUBNET_ID", "subnet-xyz", "EC2_SUBNET_ID"),
        ("EC2_AMI_ID", "ubuntu", "EC2_AMI_ID='ubuntu'.*AMI id"),
        ("EC2_MAX_RUNTIME_MINUTES", "-5", "EC2_MAX_RUNTIME_MINUTES"),
        ("EC2_USE_SPOT", "maybe", "EC2_USE_SPOT='maybe'"),
        ("AWS_REGION", "mars", "AWS_REGION='mars'.*AWS region"),
        ("AWS_ENDPOINT_URL", "localhost:5000", "AWS_ENDPOINT_URL"),
        ("ML_DATA_BUCKET", "Team_Data", "ML_DATA_BUCKET='Team_Data'.*S3 bucket name"),
        ("ML_MODELS_BUCKET", "192.168.1.1", "IP address"),
        ("ML_MODELS_BUCKET", "ab", "ML_MODELS_BUCKET='ab'"),
    ],
)
def test_malformed_variable_gets_one_line_naming_it(env, variable, value, expected) -> None:
    env(**{variable: value})
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == 2
    assert re.search(expected, message), message


def test_access_key_without_secret(env, monkeypatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    env(AWS_ACCESS_KEY_ID="AKIAONLYHALF")
    with pytest.raises(ConfigError, match="must be set together"):
        load_settings()


def test_every_problem_is_listed_at_once(env) -> None:
    env(LAMBDA_TIMEOUT="abc", EC2_INSTANCE_TYPE="large")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "LAMBDA_TIMEOUT" in str(caught.value)
    assert "EC2_INSTANCE_TYPE" in str(caught.value)


def test_required_buckets(monkeypatch) -> None:
    monkeypatch.delenv("ML_DATA_BUCKET", raising=False)
    monkeypatch.delenv("ML_MODELS_BUCKET", raising=False)
    with pytest.raises(ConfigError, match="ML_DATA_BUCKET is not set; ML_MODELS_BUCKET is not set"):
        load_settings()


def test_secret_never_shown(env) -> None:
    env(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="super-secret-value")
    settings = load_settings()
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.model_dump())
