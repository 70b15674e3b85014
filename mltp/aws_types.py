"""Constrained string types for AWS identifiers, shared by the settings and the Prefect blocks.

Checking the shape early turns a typo into a one-line error at `mltp blocks init` instead of an
`InvalidParameterValue` from AWS halfway through a launch.
"""

from __future__ import annotations

import ipaddress
import re
from fnmatch import fnmatchcase
from typing import Annotated

from pydantic import AfterValidator

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_INSTANCE_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]*\*?(\.([a-z0-9-]+|\*))?$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_LAMBDA_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_LAMBDA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LAMBDA_RUNTIME = re.compile(r"^python3\.\d{1,2}$")
_IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def _matching(pattern: re.Pattern[str], what: str, example: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (expected something like {example!r})")
        return value

    return check


def _check_bucket_name(value: str) -> str:
    _matching(_BUCKET, "S3 bucket name", "my-team-ml-data")(value)
    if ".." in value or ".-" in value or "-." in value:
        raise ValueError(f"{value!r} is not a valid S3 bucket name (no '..', '.-' or '-.')")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError(f"{value!r} is not a valid S3 bucket name (it must not look like an IP address)")


InstanceType = Annotated[str, AfterValidator(_matching(_INSTANCE_TYPE, "EC2 instance type", "m5.large"))]
InstanceTypePattern = Annotated[
    str, AfterValidator(_matching(_INSTANCE_TYPE_PATTERN, "EC2 instance type or pattern", "m5.*"))
]
Region = Annotated[str, AfterValidator(_matching(_REGION, "AWS region", "us-east-1"))]
BucketName = Annotated[str, AfterValidator(_check_bucket_name)]
AmiId = Annotated[str, AfterValidator(_matching(_AMI, "AMI id", "ami-0abcdef1234567890"))]
SubnetId = Annotated[str, AfterValidator(_matching(_SUBNET, "subnet id", "subnet-0abc1234"))]
SecurityGroupId = Annotated[
    str, AfterValidator(_matching(_SECURITY_GROUP, "security group id", "sg-0abc1234"))
]
LambdaPrefix = Annotated[
    str, AfterValidator(_matching(_LAMBDA_PREFIX, "Lambda function name prefix", "mltp-"))
]
LambdaFunctionName = Annotated[
    str, AfterValidator(_matching(_LAMBDA_NAME, "Lambda function name", "mltp-trainer"))
]
LambdaRuntime = Annotated[
    str, AfterValidator(_matching(_LAMBDA_RUNTIME, "Lambda Python runtime", "python3.11"))
]

IamRoleArn = Annotated[
    str,
    AfterValidator(_matching(_IAM_ROLE_ARN, "IAM role ARN", "arn:aws:iam::123456789012:role/mltp-trainer")),
]


def instance_type_allowed(instance_type: str, allowed: list[str]) -> bool:
    """Whether `instance_type` matches one of the `allowed` names or patterns (`m5.*`, `c6i*`)."""
    return any(fnmatchcase(instance_type, pattern) for pattern in allowed)
