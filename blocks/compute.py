"""Custom Prefect blocks holding the compute settings the planner and the launchers read."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, model_validator

from mltp.aws_types import (
    AmiId,
    IamRoleArn,
    InstanceType,
    InstanceTypePattern,
    LambdaFunctionName,
    LambdaRuntime,
    SecurityGroupId,
    SubnetId,
    instance_type_allowed,
)
from mltp.settings import DEFAULT_ALLOWED_INSTANCE_TYPES


class Ec2Compute(Block):
    """How mltp launches EC2 training instances: image, sizes it may use, network and limits."""

    _block_type_name: ClassVar[str] = "mltp EC2 Compute"
    _block_type_slug: ClassVar[str] = "mltp-ec2-compute"
    _description: ClassVar[str] = (
        "EC2 settings for ml-training-platform: AMI, allowed instance types, network, spot and the "
        "hard runtime limit after which an instance shuts itself down."
    )

    ami_id: AmiId | None = Field(
        None,
        description="AMI to boot. Empty means the latest Amazon Linux 2023 AMI, looked up at launch.",
    )
    instance_type: InstanceType = Field(
        "m5.large", description="Instance type used when the planner has no reason to pick another."
    )
    allowed_instance_types: list[InstanceTypePattern] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_INSTANCE_TYPES),
        description="Instance types (or patterns such as `m5.*`) the planner may choose from.",
    )
    subnet_id: SubnetId | None = Field(None, description="Subnet to launch into; empty for the default VPC.")
    security_group_ids: list[SecurityGroupId] = Field(
        default_factory=list, description="Security groups for the instance; empty for the VPC default."
    )
    instance_profile: str | None = Field(
        None, description="IAM instance profile (name or ARN) giving the trainer access to our buckets."
    )
    key_name: str | None = Field(None, description="EC2 key pair for SSH debugging; empty for none.")
    use_spot: bool = Field(False, description="Request spot capacity (cheaper, can be interrupted).")
    max_runtime_minutes: int = Field(
        120, ge=1, le=10080, description="Hard limit: the instance shuts itself down after this long."
    )
    max_instances: int = Field(
        4, ge=1, le=100, description="At most this many instances for one training run (a grid is split)."
    )
    trainer_preinstalled: bool = Field(
        False,
        description="The AMI already has the trainer in /opt/mltp: boot runs it without installing a wheel.",
    )

    @model_validator(mode="after")
    def _default_type_allowed(self) -> Ec2Compute:
        if not instance_type_allowed(self.instance_type, self.allowed_instance_types):
            raise ValueError(f"instance_type {self.instance_type!r} is not in allowed_instance_types")
        return self


class LambdaCompute(Block):
    """How mltp deploys and invokes the Lambda trainer."""

    _block_type_name: ClassVar[str] = "mltp Lambda Compute"
    _block_type_slug: ClassVar[str] = "mltp-lambda-compute"
    _description: ClassVar[str] = (
        "Lambda settings for ml-training-platform: function name, runtime, memory, timeout and "
        "ephemeral storage of the trainer function."
    )

    function_name: LambdaFunctionName = Field(
        "mltp-trainer", description="Name of the trainer function (LAMBDA_FUNCTION_PREFIX + `trainer`)."
    )
    runtime: LambdaRuntime = Field("python3.11", description="Python runtime of the zip-packaged trainer.")
    memory_mb: int = Field(3008, ge=128, le=10240, description="Function memory in MB (CPU scales with it).")
    timeout_seconds: int = Field(900, ge=1, le=900, description="Function timeout in seconds (AWS max 900).")
    ephemeral_storage_mb: int = Field(2048, ge=512, le=10240, description="Size of /tmp in MB.")
    max_rows: int = Field(
        100_000, ge=0, description="Datasets with more rows train on EC2 unless compute=lambda is forced."
    )
    role_arn: IamRoleArn | None = Field(
        None, description="IAM role the function runs as (our buckets, CloudWatch metrics and logs)."
    )
    image_uri: str | None = Field(
        None,
        pattern=r"^\S+:\S+$",
        description="Container image built from deployments/lambda/Dockerfile. Empty deploys a zip of the "
        "trainer code, which only the sandbox can run.",
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Endpoint for the Lambda API only; empty uses the credentials' endpoint.",
    )

    def deploy_settings(self) -> dict[str, object]:
        """The keyword arguments of `mltp.compute.lambda_deploy.deploy_trainer_function`."""
        return self.model_dump(
            include={
                "function_name",
                "runtime",
                "memory_mb",
                "timeout_seconds",
                "ephemeral_storage_mb",
                "role_arn",
                "image_uri",
            }
        )
