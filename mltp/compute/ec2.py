"""EC2 backend: one instance per job attempt, booted with our user-data, terminated when done.

Launches are idempotent twice over: the instance is looked up by its `mltp:job-id` tag first (a job id
names one attempt), and `RunInstances` gets a `ClientToken` derived from the job id and attempt, so a
retried call cannot start a second instance on AWS even when the first call's answer was lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from mltp.aws import error_code, is_transient
from mltp.compute.base import CapacityError, ComputeState, JobLaunch, Launched
from mltp.errors import ConfigError

TAG_JOB = "mltp:job-id"
TAG_RUN = "mltp:run-id"
TAG_FLOW_RUN = "mltp:flow-run-id"
TAG_EXPIRES = "mltp:expires-at"
TAG_ATTEMPT = "mltp:attempt"
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
LIVE_STATES = ("pending", "running")
CLEANUP_STATES = ("pending", "running", "stopping", "stopped")
EXPIRY_GRACE = timedelta(minutes=10)
VISIBILITY_GRACE = timedelta(minutes=5)  # DescribeInstances may not list a brand-new instance yet
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InstanceLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "InsufficientFreeAddressesInSubnet",
    }
)
SPOT_INTERRUPTION = "Server.SpotInstanceTermination"
FILTER_VALUES_MAX = 200
DESCRIBE_PAGE_MAX = 1000  # DescribeInstances' MaxResults


def client_token(job_id: str, attempt: int) -> str:
    return hashlib.sha256(f"mltp:{job_id}:{attempt}".encode()).hexdigest()[:64]


@dataclass(frozen=True)
class Ec2Settings:
    instance_type: str
    ami_id: str | None
    subnet_id: str | None
    security_group_ids: tuple[str, ...]
    instance_profile: str | None
    key_name: str | None
    use_spot: bool


class Ec2Backend:
    name = "ec2"

    def __init__(self, ec2, ssm, settings: Ec2Settings, user_data, launch_client=None) -> None:
        """`user_data(job)` renders the boot script for one attempt. `launch_client` sends RunInstances:
        it should not retry on its own, so that every retry starts with the look-up by tag."""
        self.ec2, self.ssm, self.settings, self.user_data = ec2, ssm, settings, user_data
        self.launch_client = launch_client or ec2
        self._ami: str | None = settings.ami_id

    def launch(self, job: JobLaunch) -> Launched:
        existing = self._find(job.job_id)
        if existing is not None:
            return self._launched(job, existing)
        try:
            reservation = self.launch_client.run_instances(**self._request(job))
        except ClientError as error:
            code = error_code(error)
            if code == "IdempotentParameterMismatch":  # same token, other request: someone else's launch
                raise ConfigError(
                    f"launch of {job.job_id} conflicts with an earlier request: {error}"
                ) from error
            if code in CAPACITY_CODES:
                raise CapacityError(f"no EC2 capacity for {job.job_id}: {code}") from error
            if is_transient(error):
                raise
            raise ConfigError(
                f"EC2 refused to launch {job.job_id} ({code}): check the mltp-ec2 block "
                f"(AMI, instance type, subnet, security groups, instance profile)"
            ) from error
        return self._launched(job, reservation["Instances"][0])

    def _request(self, job: JobLaunch) -> dict[str, Any]:
        settings = self.settings
        expires_at = (job.deadline + EXPIRY_GRACE).isoformat(timespec="seconds")
        tags = [
            {"Key": "Name", "Value": f"mltp-{job.job_id}"},
            {"Key": TAG_JOB, "Value": job.job_id},
            {"Key": TAG_RUN, "Value": job.run_id},
            {"Key": TAG_FLOW_RUN, "Value": job.flow_run_id},
            {"Key": TAG_EXPIRES, "Value": expires_at},
            {"Key": TAG_ATTEMPT, "Value": str(job.attempt)},
        ]
        request: dict[str, Any] = {
            "ImageId": self._image(),
            "InstanceType": settings.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(job.job_id, job.attempt),
            "UserData": self.user_data(job),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if settings.instance_profile:
            key = "Arn" if settings.instance_profile.startswith("arn:") else "Name"
            request["IamInstanceProfile"] = {key: settings.instance_profile}
        if settings.subnet_id:
            request["SubnetId"] = settings.subnet_id
        if settings.security_group_ids:
            request["SecurityGroupIds"] = list(settings.security_group_ids)
        if settings.key_name:
            request["KeyName"] = settings.key_name
        if settings.use_spot and not job.on_demand:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        return request

    def _image(self) -> str:
        if self._ami is None:
            self._ami = self.ssm.get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
        return self._ami

    def _find(self, job_id: str) -> dict[str, Any] | None:
        found = _describe(self.ec2, [{"Name": f"tag:{TAG_JOB}", "Values": [job_id]}])
        return found[0] if found else None

    def _launched(self, job: JobLaunch, instance: dict[str, Any]) -> Launched:
        return Launched(
            job.job_id,
            self.name,
            job.attempt,
            datetime.now(UTC),
            instance["InstanceId"],
            spot=instance.get("InstanceLifecycle") == "spot",
        )

    def observe(self, launched: list[Launched]) -> dict[str, ComputeState]:
        """One DescribeInstances call per 200 instances, whatever the number of jobs."""
        ids = [item.handle for item in launched]
        instances = {}
        for start in range(0, len(ids), FILTER_VALUES_MAX):
            chunk = ids[start : start + FILTER_VALUES_MAX]
            for instance in _describe(self.ec2, [{"Name": "instance-id", "Values": chunk}]):
                instances[instance["InstanceId"]] = instance
        now = datetime.now(UTC)
        states = {}
        for item in launched:
            instance = instances.get(item.handle)
            if instance is None:
                young = now - item.launched_at < VISIBILITY_GRACE
                states[item.job_id] = ComputeState(young, "" if young else f"instance {item.handle} vanished")
                continue
            state = instance["State"]["Name"]
            if state in LIVE_STATES:
                states[item.job_id] = ComputeState(True)
                continue
            reason = instance.get("StateReason", {}).get("Code", "")
            states[item.job_id] = ComputeState(
                False,
                f"instance {item.handle} is {state}" + (f" ({reason})" if reason else ""),
                interrupted=reason == SPOT_INTERRUPTION,
            )
        return states

    def terminate(self, launched: list[Launched]) -> list[str]:
        return terminate_instances(self.ec2, [item.handle for item in launched])


def _describe(ec2, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    instances = []
    # The largest page AWS allows: one call for 200 instances (moto's default page is 100 reservations).
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=filters, PaginationConfig={"PageSize": DESCRIBE_PAGE_MAX}
    )
    for page in pages:
        for reservation in page["Reservations"]:
            instances.extend(reservation["Instances"])
    return instances


def terminate_instances(ec2, instance_ids: list[str]) -> list[str]:
    """Terminate the instances that are not already gone; returns the ones this call terminated."""
    live = [
        instance["InstanceId"]
        for start in range(0, len(instance_ids), FILTER_VALUES_MAX)
        for instance in _describe(
            ec2,
            [
                {"Name": "instance-id", "Values": instance_ids[start : start + FILTER_VALUES_MAX]},
                {"Name": "instance-state-name", "Values": list(CLEANUP_STATES)},
            ],
        )
    ]
    for start in range(0, len(live), 1000):
        ec2.terminate_instances(InstanceIds=live[start : start + 1000])
    return live


def tagged_instances(ec2, **tags: str) -> list[dict[str, Any]]:
    """Our instances that can still cost money, optionally narrowed by tag values (`flow_run_id=...`)."""
    names = {"job_id": TAG_JOB, "run_id": TAG_RUN, "flow_run_id": TAG_FLOW_RUN}
    filters = [{"Name": "instance-state-name", "Values": list(CLEANUP_STATES)}]
    filters += [{"Name": f"tag:{names[key]}", "Values": [value]} for key, value in tags.items()]
    if not tags:
        filters.append({"Name": "tag-key", "Values": [TAG_JOB]})
    return _describe(ec2, filters)


def instance_tags(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
