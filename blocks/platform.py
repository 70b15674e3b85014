"""The platform's five blocks: build them from settings, save them, load them back.

Names are fixed so flows, deployments and the CLI find the blocks without configuration:
`aws-credentials/mltp-aws`, `s3-bucket/mltp-datasets`, `s3-bucket/mltp-models`,
`mltp-ec2-compute/mltp-ec2` and `mltp-lambda-compute/mltp-lambda`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from prefect.context import SyncClientContext
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket
from pydantic import ValidationError

from blocks.compute import Ec2Compute, LambdaCompute
from mltp.aws import RETRY_CONFIG, SharedClients, botocore_config, caller_identity
from mltp.buckets import ensure_buckets
from mltp.errors import MltpError
from mltp.planning import PlannerSettings
from mltp.settings import PlatformSettings

CREDENTIALS = "mltp-aws"
DATASETS = "mltp-datasets"
MODELS = "mltp-models"
EC2 = "mltp-ec2"
LAMBDA = "mltp-lambda"

CUSTOM_BLOCK_TYPES = (Ec2Compute, LambdaCompute)


@dataclass
class PlatformBlocks:
    credentials: AwsCredentials
    datasets: S3Bucket
    models: S3Bucket
    ec2: Ec2Compute
    lambda_: LambdaCompute

    def __post_init__(self) -> None:
        # Every client of these blocks comes from one boto3 session, which loads each service's model
        # once: a session of its own, as `credentials.get_client` makes for each service, costs about
        # 0.15 s of CPU before the first call.
        self._clients = SharedClients(
            lambda: self.credentials.get_boto3_session(),
            **self.credentials.aws_client_parameters.get_params_override(),
        )

    def client(self, service: str):
        """The client of `service`, with the credentials' session and retry settings, shared."""
        return self._clients(service)

    def lambda_client(self):
        """prefect-aws ignores a service-specific endpoint, so the Lambda client is built here, with the
        Lambda block's endpoint when it has one."""
        if self.lambda_.endpoint_url:
            return self._clients.with_settings("lambda", endpoint_url=self.lambda_.endpoint_url)
        return self.client("lambda")

    def single_attempt_client(self, service: str):
        """A client that never retries by itself, for calls that must not be repeated blindly: a retried
        `RunInstances` is only safe after looking for the instance the lost attempt may have started
        (moto, unlike AWS, ignores `ClientToken`). Prefect's task retry does that look-up first."""
        return self._clients.with_settings(
            service,
            config=botocore_config().merge(Config(retries={"total_max_attempts": 1, "mode": "standard"})),
        )

    def named(self) -> list[tuple[str, object]]:
        return [
            (CREDENTIALS, self.credentials),
            (DATASETS, self.datasets),
            (MODELS, self.models),
            (EC2, self.ec2),
            (LAMBDA, self.lambda_),
        ]


def build_blocks(settings: PlatformSettings) -> PlatformBlocks:
    credentials = AwsCredentials(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token.get_secret_value() if settings.session_token else None,
        profile_name=settings.profile_name,
        region_name=settings.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.endpoint_url, config=RETRY_CONFIG),
    )
    return PlatformBlocks(
        credentials=credentials,
        datasets=S3Bucket(bucket_name=settings.data_bucket, credentials=credentials),
        models=S3Bucket(bucket_name=settings.models_bucket, credentials=credentials),
        ec2=Ec2Compute(
            ami_id=settings.ec2_ami_id,
            instance_type=settings.ec2_instance_type,
            allowed_instance_types=settings.ec2_allowed_instance_types,
            subnet_id=settings.ec2_subnet_id,
            security_group_ids=settings.ec2_security_group_ids,
            instance_profile=settings.ec2_instance_profile,
            key_name=settings.ec2_key_name,
            use_spot=settings.ec2_use_spot,
            max_runtime_minutes=settings.ec2_max_runtime_minutes,
            max_instances=settings.ec2_max_instances,
            trainer_preinstalled=settings.ec2_trainer_preinstalled,
        ),
        lambda_=LambdaCompute(
            function_name=f"{settings.lambda_function_prefix}trainer",
            runtime=settings.lambda_runtime,
            memory_mb=settings.lambda_memory_mb,
            timeout_seconds=settings.lambda_timeout_seconds,
            ephemeral_storage_mb=settings.lambda_ephemeral_storage_mb,
            max_rows=settings.lambda_max_rows,
            role_arn=settings.lambda_role_arn,
            image_uri=settings.lambda_image_uri,
            endpoint_url=settings.lambda_endpoint_url,
        ),
    )


@dataclass(frozen=True)
class InitReport:
    account: str
    buckets: dict[str, str]
    blocks: list[str]


def register_block_types() -> None:
    """Register our block types so the UI's catalogue lists them even before a block exists."""
    for block_type in CUSTOM_BLOCK_TYPES:
        block_type.register_type_and_schema()


def init_blocks(settings: PlatformSettings) -> InitReport:
    """Check the credentials, create missing buckets, then create or update every block.

    Nothing is saved unless the credentials work and both buckets are ours, so a failed run leaves the
    previous blocks untouched.
    """
    blocks = build_blocks(settings)
    account = caller_identity(blocks.client)["account"]
    buckets = ensure_buckets(
        blocks.client,
        [settings.data_bucket, settings.models_bucket],
        settings.region,
        account,
    )
    register_block_types()
    for name, block in blocks.named():
        block.save(name, overwrite=True)
    return InitReport(account=account, buckets=buckets, blocks=[name for name, _ in blocks.named()])


def trainer_environment(credentials: AwsCredentials) -> dict[str, str]:
    """Environment giving a local trainer process the same AWS access as this block (never logged)."""
    env = {"AWS_DEFAULT_REGION": credentials.region_name or "us-east-1"}
    if credentials.aws_access_key_id and credentials.aws_secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = credentials.aws_access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = credentials.aws_secret_access_key.get_secret_value()
    if credentials.aws_session_token:
        env["AWS_SESSION_TOKEN"] = credentials.aws_session_token
    if credentials.profile_name:
        env["AWS_PROFILE"] = credentials.profile_name
    if credentials.aws_client_parameters.endpoint_url:
        env["AWS_ENDPOINT_URL"] = credentials.aws_client_parameters.endpoint_url
    return env


def planner_settings(blocks: PlatformBlocks) -> PlannerSettings:
    return PlannerSettings(
        lambda_max_rows=blocks.lambda_.max_rows,
        lambda_memory_mb=blocks.lambda_.memory_mb,
        lambda_timeout_s=blocks.lambda_.timeout_seconds,
        lambda_ephemeral_mb=blocks.lambda_.ephemeral_storage_mb,
        allowed_instance_types=tuple(blocks.ec2.allowed_instance_types),
        max_instances=blocks.ec2.max_instances,
    )


def load_block(block_type: type, name: str):
    """One block by name, or a one-line error saying it is missing or invalid and how to fix it."""
    return _load_all({name: block_type})[name]


def load_blocks() -> PlatformBlocks:
    """Load all five blocks, or say which are missing or no longer valid and how to fix that."""
    loaded = _load_all(
        {
            CREDENTIALS: AwsCredentials,
            DATASETS: S3Bucket,
            MODELS: S3Bucket,
            EC2: Ec2Compute,
            LAMBDA: LambdaCompute,
        }
    )
    return PlatformBlocks(*loaded.values())


def _load_all(loaders: dict[str, type]) -> dict[str, Any]:
    loaded, problems = {}, []
    with SyncClientContext.get_or_create():  # one Prefect client for every load, not one each
        for name, block_type in loaders.items():
            reference = f"{block_type.get_block_type_slug()}/{name}"
            try:
                loaded[name] = block_type.load(name)
            except ValueError:  # Prefect's "Unable to find block document"
                problems.append(f"{reference} is missing")
            except RuntimeError as error:  # Prefect wraps the ValidationError of a block edited into nonsense
                if not isinstance(error.__cause__, ValidationError):
                    raise
                fields = ", ".join(str(item["loc"][0]) for item in error.__cause__.errors())
                problems.append(f"{reference} is invalid ({fields})")
    if problems:
        raise MltpError(f"blocks not usable: {', '.join(problems)}: run `mltp blocks init` to create them")
    return loaded
