"""Lambda backend: one asynchronous invocation per job attempt, with only the job's URI in the payload.

Nothing reads the invocation's answer or its 4 KB log tail: the trainer reports through S3
(status.json), CloudWatch metrics and CloudWatch Logs, like on EC2. An invocation cannot be stopped
from outside; the trainer stops itself at its deadline and Lambda at the function's timeout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from mltp.aws import error_code, is_transient
from mltp.compute.base import CapacityError, ComputeState, JobLaunch, Launched
from mltp.errors import ConfigError

# Throttling (TooManyRequestsException) is retried as transient; these mean the function's network
# capacity ran out, which a later relaunch may find again.
CAPACITY_CODES = frozenset(
    {"EC2ThrottledException", "ENILimitReachedException", "SubnetIPAddressLimitReachedException"}
)


class LambdaBackend:
    name = "lambda"

    def __init__(self, client, function_name: str) -> None:
        self.client, self.function_name = client, function_name

    def launch(self, job: JobLaunch) -> Launched:
        try:
            response = self.client.invoke(
                FunctionName=self.function_name,
                InvocationType="Event",
                Payload=json.dumps({"job_uri": job.job_uri}).encode(),
            )
        except ClientError as error:
            code = error_code(error)
            if code in CAPACITY_CODES:
                raise CapacityError(f"Lambda has no capacity for {job.job_id}: {code}") from error
            if is_transient(error):
                raise
            if code == "ResourceNotFoundException":
                raise ConfigError(
                    f"the trainer function {self.function_name} does not exist: run `mltp lambda deploy`"
                ) from error
            raise ConfigError(f"Lambda refused to run {job.job_id} ({code}): {error}") from error
        request_id = response["ResponseMetadata"].get("RequestId", "")
        return Launched(job.job_id, self.name, job.attempt, datetime.now(UTC), request_id)

    def observe(self, launched: list[Launched]) -> dict[str, ComputeState]:
        # Lambda has no per-invocation state to ask for: heartbeats and the deadline decide.
        return {item.job_id: ComputeState(True) for item in launched}

    def terminate(self, launched: list[Launched]) -> list[str]:
        return []
