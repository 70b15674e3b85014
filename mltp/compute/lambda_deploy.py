"""Create or update the Lambda trainer function so it runs this code with the block's settings."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from mltp.aws import error_code
from mltp.compute.lambda_package import trainer_zip
from mltp.errors import ConfigError, MltpError

HANDLER = "mltp.trainer.handler.handler"
MANAGED_TAG = {"mltp:managed": "true"}
# Creating a function or pulling an image can take minutes on AWS; the sandbox is ready at the first look.
WAIT = {"Delay": 2, "MaxAttempts": 150}


def deploy_trainer_function(
    lambda_client: Any,
    *,
    function_name: str,
    runtime: str,
    memory_mb: int,
    timeout_seconds: int,
    ephemeral_storage_mb: int,
    role_arn: str | None,
    image_uri: str | None,
) -> dict[str, str]:
    """Create the function, or bring an existing one to this code and configuration, and wait until it
    can be invoked. A zip of the trainer's code is deployed unless `image_uri` names a container image.

    Returns `function_name`, `arn`, `action` (created, updated or unchanged), `code_sha256` and
    `package_type`.
    """
    if not role_arn:
        raise ConfigError(
            "the Lambda trainer needs an IAM role: set LAMBDA_ROLE_ARN (or the mltp-lambda block's role_arn) "
            "and rerun `mltp blocks init`",
            setting="LAMBDA_ROLE_ARN",
        )
    package_type = "Image" if image_uri else "Zip"
    configuration: dict[str, Any] = {
        "Role": role_arn,
        "MemorySize": memory_mb,
        "Timeout": timeout_seconds,
        "EphemeralStorage": {"Size": ephemeral_storage_mb},
    }
    if image_uri:
        code: dict[str, Any] = {"ImageUri": image_uri}
    else:
        code = {"ZipFile": trainer_zip()}
        configuration |= {"Runtime": runtime, "Handler": HANDLER}

    existing = _get_function(lambda_client, function_name)
    if existing is None:
        with _role_checked(role_arn):
            try:
                lambda_client.create_function(
                    FunctionName=function_name,
                    PackageType=package_type,
                    Code=code,
                    Tags=MANAGED_TAG,
                    **configuration,
                )
            except ClientError as error:
                # A create whose answer was lost and was retried, or another deploy first: it exists now.
                if error_code(error) != "ResourceConflictException":
                    raise
                existing = _get_function(lambda_client, function_name)
        _wait(lambda_client, function_name, "function_active_v2")
        action = "created"
    if existing is not None:
        _check_ours(existing, function_name, package_type)
        changed = _update_code(lambda_client, existing, code)
        changed |= _update_configuration(lambda_client, existing["Configuration"], configuration)
        action = "updated" if changed else "unchanged"

    # The flow decides whether to relaunch; Lambda's own retries of an async invoke would start duplicates.
    lambda_client.put_function_event_invoke_config(
        FunctionName=function_name, MaximumRetryAttempts=0, MaximumEventAgeInSeconds=3600
    )
    final = lambda_client.get_function(FunctionName=function_name)["Configuration"]
    return {
        "function_name": function_name,
        "arn": final["FunctionArn"],
        "action": action,
        "code_sha256": final["CodeSha256"],
        "package_type": final.get("PackageType", "Zip"),
    }


def _get_function(lambda_client: Any, function_name: str) -> dict[str, Any] | None:
    try:
        return lambda_client.get_function(FunctionName=function_name)
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return None
        raise


def _check_ours(existing: dict[str, Any], function_name: str, package_type: str) -> None:
    if not existing.get("Tags", {}).items() >= MANAGED_TAG.items():
        raise ConfigError(
            f"Lambda function {function_name} exists but is not managed by mltp (no tag mltp:managed=true): "
            "choose another name with LAMBDA_FUNCTION_PREFIX and rerun `mltp blocks init`, or tag it if it "
            "is the trainer",
            setting="LAMBDA_FUNCTION_PREFIX",
        )
    current = existing["Configuration"].get("PackageType", "Zip")
    if current != package_type:
        raise ConfigError(
            f"Lambda function {function_name} is packaged as {current} and Lambda cannot change that: delete "
            f"the function, or {'unset' if current == 'Zip' else 'set'} LAMBDA_IMAGE_URI and rerun "
            "`mltp blocks init`",
            setting="LAMBDA_IMAGE_URI",
        )


def _update_code(lambda_client: Any, existing: dict[str, Any], code: dict[str, Any]) -> bool:
    """Deploy the code unless the function already runs it; True when its CodeSha256 changed."""
    before = existing["Configuration"]["CodeSha256"]
    if "ZipFile" in code:
        if base64.b64encode(hashlib.sha256(code["ZipFile"]).digest()).decode() == before:
            return False
    elif existing["Code"].get("ImageUri") == code["ImageUri"] and "@sha256:" in code["ImageUri"]:
        return False  # a digest names one image; a tag may have moved, so Lambda must resolve it again
    function_name = existing["Configuration"]["FunctionName"]
    after = lambda_client.update_function_code(FunctionName=function_name, **code)["CodeSha256"]
    _wait(lambda_client, function_name, "function_updated_v2")
    return after != before


def _update_configuration(lambda_client: Any, current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Apply the configuration unless every setting already matches; True when it was applied."""
    if all(current.get(key) == value for key, value in wanted.items()):
        return False
    with _role_checked(wanted["Role"]):
        lambda_client.update_function_configuration(FunctionName=current["FunctionName"], **wanted)
    _wait(lambda_client, current["FunctionName"], "function_updated_v2")
    return True


def _wait(lambda_client: Any, function_name: str, waiter: str) -> None:
    try:
        lambda_client.get_waiter(waiter).wait(FunctionName=function_name, WaiterConfig=WAIT)
    except WaiterError as error:
        configuration = (error.last_response or {}).get("Configuration", {})
        reason = configuration.get("StateReason") or configuration.get("LastUpdateStatusReason") or str(error)
        raise MltpError(f"Lambda function {function_name} is not ready to run: {reason}") from error


@contextmanager
def _role_checked(role_arn: str) -> Iterator[None]:
    try:
        yield
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", "")
        if error_code(error) == "InvalidParameterValueException" and "role" in message.lower():
            raise ConfigError(
                f"Lambda cannot assume the role {role_arn} (it must exist and trust lambda.amazonaws.com; "
                "a role created seconds ago may need a few more): fix LAMBDA_ROLE_ARN and rerun "
                "`mltp blocks init`",
                setting="LAMBDA_ROLE_ARN",
            ) from error
        raise
