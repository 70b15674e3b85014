"""On-demand prices the planner's cost estimates use. Update the table and its date together.

Source: AWS public price lists, us-east-1, Linux, on-demand. Estimates only: they ignore spot, savings
plans, storage and data transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-11-01"
PRICES_REGION = "us-east-1"

LAMBDA_USD_PER_GB_SECOND = 0.0000166667
LAMBDA_USD_PER_REQUEST = 0.0000002
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one full vCPU per 1,769 MB of memory
EC2_BOOT_SECONDS = 90  # launch, boot and installing the trainer, before training starts
EC2_MIN_BILLED_SECONDS = 60


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    usd_per_hour: float


_TABLE = [
    ("t3.medium", 2, 4, 0.0416),
    ("t3.large", 2, 8, 0.0832),
    ("t3.xlarge", 4, 16, 0.1664),
    ("t3.2xlarge", 8, 32, 0.3328),
    ("m5.large", 2, 8, 0.096),
    ("m5.xlarge", 4, 16, 0.192),
    ("m5.2xlarge", 8, 32, 0.384),
    ("m5.4xlarge", 16, 64, 0.768),
    ("m5.8xlarge", 32, 128, 1.536),
    ("m5.12xlarge", 48, 192, 2.304),
    ("m5.16xlarge", 64, 256, 3.072),
    ("m5.24xlarge", 96, 384, 4.608),
    ("m6i.large", 2, 8, 0.096),
    ("m6i.xlarge", 4, 16, 0.192),
    ("m6i.2xlarge", 8, 32, 0.384),
    ("m6i.4xlarge", 16, 64, 0.768),
    ("m6i.8xlarge", 32, 128, 1.536),
    ("c5.large", 2, 4, 0.085),
    ("c5.xlarge", 4, 8, 0.17),
    ("c5.2xlarge", 8, 16, 0.34),
    ("c5.4xlarge", 16, 32, 0.68),
    ("c5.9xlarge", 36, 72, 1.53),
    ("c6i.large", 2, 4, 0.085),
    ("c6i.xlarge", 4, 8, 0.17),
    ("c6i.2xlarge", 8, 16, 0.34),
    ("c6i.4xlarge", 16, 32, 0.68),
    ("r5.large", 2, 16, 0.126),
    ("r5.xlarge", 4, 32, 0.252),
    ("r5.2xlarge", 8, 64, 0.504),
    ("r5.4xlarge", 16, 128, 1.008),
    ("r5.8xlarge", 32, 256, 2.016),
    ("r5.16xlarge", 64, 512, 4.032),
    ("r6i.large", 2, 16, 0.126),
    ("r6i.xlarge", 4, 32, 0.252),
    ("r6i.2xlarge", 8, 64, 0.504),
    ("r6i.4xlarge", 16, 128, 1.008),
]
EC2_INSTANCE_TYPES = {name: InstanceType(name, cpus, memory, price) for name, cpus, memory, price in _TABLE}
