"""AWS Lambda entry point: `{"job_uri": "s3://.../job.json"}` in, the job's status out.

Invoked asynchronously; nothing depends on the return value or the log tail: the status lives in S3.
"""

from __future__ import annotations

from typing import Any

from mltp.aws import boto3_client_factory
from mltp.trainer.runner import configure_logging, run_job


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    configure_logging()
    return run_job(event["job_uri"], boto3_client_factory(), instance_id=None)
