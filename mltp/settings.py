"""Platform settings read from environment variables (and optionally a `.env` file).

The variable names are the ones users of the original design know (`.env.example` documents each).
`mltp blocks init` turns these settings into Prefect blocks; everything after that reads the blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mltp.aws_types import (
    AmiId,
    BucketName,
    IamRoleArn,
    InstanceType,
    InstanceTypePattern,
    LambdaPrefix,
    LambdaRuntime,
    Region,
    SecurityGroupId,
    SubnetId,
    instance_type_allowed,
)
from mltp.errors import ConfigError

DEFAULT_ALLOWED_INSTANCE_TYPES = ["t3.*", "m5.*", "m6i.*", "c5.*", "c6i.*", "r5.*", "r6i.*"]


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PlatformSettings(BaseSettings):
    """Everything `mltp blocks init` needs, one field per environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    region: Region = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    access_key_id: str | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    session_token: SecretStr | None = Field(None, validation_alias="AWS_SESSION_TOKEN")
    profile_name: str | None = Field(None, validation_alias="AWS_PROFILE")
    endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL", pattern=r"^https?://\S+$")

    data_bucket: BucketName = Field(validation_alias="ML_DATA_BUCKET")
    models_bucket: BucketName = Field(validation_alias="ML_MODELS_BUCKET")

    ec2_ami_id: AmiId | None = Field(None, validation_alias="EC2_AMI_ID")
    ec2_instance_type: InstanceType = Field("m5.large", validation_alias="EC2_INSTANCE_TYPE")
    ec2_allowed_instance_types: Annotated[list[InstanceTypePattern], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_INSTANCE_TYPES),
        validation_alias="EC2_ALLOWED_INSTANCE_TYPES",
    )
    ec2_subnet_id: SubnetId | None = Field(None, validation_alias="EC2_SUBNET_ID")
    ec2_security_group_ids: Annotated[list[SecurityGroupId], NoDecode] = Field(
        default_factory=list, validation_alias="EC2_SECURITY_GROUP"
    )
    ec2_instance_profile: str | None = Field(None, validation_alias="EC2_INSTANCE_PROFILE")
    ec2_key_name: str | None = Field(None, validation_alias="EC2_KEY_NAME")
    ec2_use_spot: bool = Field(False, validation_alias="EC2_USE_SPOT")
    ec2_max_runtime_minutes: int = Field(120, ge=1, le=10080, validation_alias="EC2_MAX_RUNTIME_MINUTES")
    ec2_max_instances: int = Field(4, ge=1, le=100, validation_alias="EC2_MAX_INSTANCES")
    ec2_trainer_preinstalled: bool = Field(False, validation_alias="EC2_TRAINER_PREINSTALLED")

    lambda_function_prefix: LambdaPrefix = Field("mltp-", validation_alias="LAMBDA_FUNCTION_PREFIX")
    lambda_runtime: LambdaRuntime = Field("python3.11", validation_alias="LAMBDA_RUNTIME")
    lambda_timeout_seconds: int = Field(900, ge=1, le=900, validation_alias="LAMBDA_TIMEOUT")
    lambda_memory_mb: int = Field(3008, ge=128, le=10240, validation_alias="LAMBDA_MEMORY_MB")
    lambda_max_rows: int = Field(100_000, ge=0, validation_alias="LAMBDA_MAX_ROWS")
    lambda_ephemeral_storage_mb: int = Field(
        2048, ge=512, le=10240, validation_alias="LAMBDA_EPHEMERAL_STORAGE_MB"
    )
    lambda_role_arn: IamRoleArn | None = Field(None, validation_alias="LAMBDA_ROLE_ARN")
    lambda_image_uri: str | None = Field(None, validation_alias="LAMBDA_IMAGE_URI", pattern=r"^\S+:\S+$")
    lambda_endpoint_url: str | None = Field(
        None, validation_alias="LAMBDA_ENDPOINT_URL", pattern=r"^https?://\S+$"
    )

    _split_lists = field_validator("ec2_allowed_instance_types", "ec2_security_group_ids", mode="before")(
        _comma_separated
    )

    @model_validator(mode="after")
    def _consistent(self) -> PlatformSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together "
                "(or neither, to use a profile or an instance role)"
            )
        if not instance_type_allowed(self.ec2_instance_type, self.ec2_allowed_instance_types):
            raise ValueError(
                f"EC2_INSTANCE_TYPE {self.ec2_instance_type!r} is not in EC2_ALLOWED_INSTANCE_TYPES "
                f"{','.join(self.ec2_allowed_instance_types)}"
            )
        return self


def _variable_name(location: tuple[int | str, ...]) -> str:
    """The environment variable an error location points at (pydantic reports the alias)."""
    names = [str(part) for part in location if not isinstance(part, int)]
    if not names:
        return ""
    field = PlatformSettings.model_fields.get(names[0])
    if field is None:
        return names[0]
    alias = field.validation_alias
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else str(alias or names[0])


def _one_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        variable = _variable_name(item["loc"])
        if item["type"] == "missing":
            problems.append(f"{variable} is not set")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if variable:
            problems.append(f"{variable}={item.get('input')!r}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def load_settings(env_file: Path | None = None, **overrides: Any) -> PlatformSettings:
    """Read and validate the settings; raise one `ConfigError` listing every bad variable."""
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"env file {env_file} does not exist: pass an existing file to --env-file")
    try:
        return PlatformSettings(_env_file=env_file, **overrides)
    except ValidationError as error:
        raise ConfigError(
            f"invalid settings: {_one_line(error)} "
            "(fix the environment variables; .env.example documents each)"
        ) from error
