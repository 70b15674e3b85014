"""Where a training job runs: Lambda, EC2 or this machine, how big, how long, at what cost, and why.

A pure function of the dataset manifest, the algorithm, the grid and the settings (no AWS calls), so
every rule and guard is tested with a table of cases.

Rules, in order:
1. A forced backend (`compute=lambda|ec2|local`) is used, unless the job would not fit it within the
   safety margin (or at all): then it is refused, naming the limit.
2. Otherwise more than `lambda_max_rows` rows goes to EC2, fewer to Lambda...
3. ...but only if the estimated memory, runtime and data size fit the function with a safety margin.
4. On EC2: the cheapest allowed instance type whose memory fits the estimate with the margin; a grid
   of several candidates is split over up to `max_instances` instances.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mltp.aws_types import instance_type_allowed
from mltp.errors import ConfigError
from mltp.pricing import (
    EC2_BOOT_SECONDS,
    EC2_INSTANCE_TYPES,
    EC2_MIN_BILLED_SECONDS,
    LAMBDA_MB_PER_VCPU,
    LAMBDA_USD_PER_GB_SECOND,
    LAMBDA_USD_PER_REQUEST,
    PRICES_AS_OF,
    InstanceType,
)
from mltp.settings import DEFAULT_ALLOWED_INSTANCE_TYPES
from mltp.trainer.algorithms import get_algorithm

Backend = Literal["lambda", "ec2", "local"]
LAMBDA_MAX_MEMORY_MB = 10_240
LAMBDA_MAX_TIMEOUT_S = 900
MARGIN = 0.7  # use at most 70% of a limit: estimates are estimates
PROCESS_BASE_MB = 350  # Python with scikit-learn, pandas and pyarrow loaded
LOCAL_VCPUS = 2


class PlanError(ConfigError):
    """The requested compute cannot run this job; the message names the limit."""


@dataclass(frozen=True)
class PlannerSettings:
    lambda_max_rows: int = 100_000
    lambda_memory_mb: int = 3008
    lambda_timeout_s: int = 900
    lambda_ephemeral_mb: int = 2048
    allowed_instance_types: tuple[str, ...] = tuple(DEFAULT_ALLOWED_INSTANCE_TYPES)
    max_instances: int = 4


@dataclass(frozen=True)
class Workload:
    """The size of the job, derived from the manifest and the grid."""

    rows: int
    bytes: int
    columns: int
    features: int
    candidates: int
    fits_per_candidate: int  # 1 for a holdout, folds + 1 for k-fold (the refit on all rows)
    algorithm: str
    ensemble_size: int

    @classmethod
    def of(
        cls,
        manifest: dict[str, Any],
        algorithm: str,
        candidates: list[dict[str, Any]],
        folds: int | None = None,
    ):
        growth = get_algorithm(algorithm).growth_param
        sizes = [params.get(growth, 100) for params in candidates] if growth else [1]
        features = 0
        for column in manifest["columns"]:
            if column["name"] == manifest.get("target"):
                continue
            if column["type"] == "string":
                features += min(column["distinct"], 50)
            elif column["type"] == "datetime":
                features += 5
            else:
                features += 1
        return cls(
            rows=manifest["rows"],
            bytes=manifest["bytes"],
            columns=len(manifest["columns"]),
            features=max(features, 1),
            candidates=len(candidates),
            fits_per_candidate=(folds + 1) if folds else 1,
            algorithm=algorithm,
            ensemble_size=max(sizes),
        )

    def memory_mb(self) -> int:
        frame = self.rows * self.columns * 8 * 3  # the table, the frame, a training copy
        matrix = self.rows * self.features * 8 * 2  # transformed features, train and test views
        model = 0
        if self.algorithm == "random_forest":
            model = self.rows * self.ensemble_size * 6  # about one node per row per tree, 6 bytes a node
        elif self.algorithm == "knn":
            model = self.rows * self.features * 8
        return PROCESS_BASE_MB + math.ceil((frame + matrix + model) / 2**20)

    def cpu_seconds(self) -> float:
        algorithm = get_algorithm(self.algorithm)
        per_fit = self.rows * self.features * algorithm.cost_per_cell * 2e-7
        if algorithm.growth_param:
            per_fit *= self.ensemble_size / 100
        return 2.0 + self.bytes / 50e6 + per_fit * self.candidates * self.fits_per_candidate


@dataclass
class ComputePlan:
    backend: Backend
    instance_type: str | None
    memory_mb: int
    instances: int
    estimated_memory_mb: int
    estimated_runtime_s: int
    estimated_cost_usd: float
    reasons: list[str] = field(default_factory=list)
    prices_as_of: str = PRICES_AS_OF

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_compute(
    workload: Workload, settings: PlannerSettings, forced: Literal["auto", "lambda", "ec2", "local"] = "auto"
) -> ComputePlan:
    memory = workload.memory_mb()
    if forced == "local":
        runtime = workload.cpu_seconds() / LOCAL_VCPUS
        return ComputePlan(
            "local", None, memory, 1, memory, math.ceil(runtime), 0.0, ["compute=local was requested"]
        )
    lambda_problems = _lambda_problems(workload, settings, memory)
    if forced == "lambda":
        if lambda_problems:
            raise PlanError(f"compute=lambda is refused: {lambda_problems[0]}")
        return _lambda_plan(workload, settings, memory, ["compute=lambda was requested"])
    if forced == "ec2":
        return _ec2_plan(workload, settings, memory, ["compute=ec2 was requested"])
    if workload.rows > settings.lambda_max_rows:
        return _ec2_plan(
            workload,
            settings,
            memory,
            [f"{workload.rows:,} rows is over the Lambda threshold of {settings.lambda_max_rows:,} rows"],
        )
    reasons = [f"{workload.rows:,} rows is within the Lambda threshold of {settings.lambda_max_rows:,} rows"]
    if lambda_problems:
        return _ec2_plan(
            workload, settings, memory, [*reasons, f"but Lambda cannot run it: {lambda_problems[0]}"]
        )
    return _lambda_plan(workload, settings, memory, reasons)


def _lambda_runtime(workload: Workload, settings: PlannerSettings) -> float:
    vcpus = max(settings.lambda_memory_mb / LAMBDA_MB_PER_VCPU, 0.1)
    return workload.cpu_seconds() / min(vcpus, 6) + 5  # + a cold start


def _lambda_problems(workload: Workload, settings: PlannerSettings, memory: int) -> list[str]:
    problems = []
    function_memory = min(settings.lambda_memory_mb, LAMBDA_MAX_MEMORY_MB)
    if memory > MARGIN * function_memory:
        problems.append(
            f"estimated memory {memory:,} MB exceeds {MARGIN:.0%} of the function's {function_memory:,} MB "
            f"(Lambda's limit is {LAMBDA_MAX_MEMORY_MB:,} MB)"
        )
    runtime = _lambda_runtime(workload, settings)
    timeout = min(settings.lambda_timeout_s, LAMBDA_MAX_TIMEOUT_S)
    if runtime > MARGIN * timeout:
        problems.append(
            f"estimated runtime {runtime:,.0f} s exceeds {MARGIN:.0%} of the function's {timeout} s timeout "
            f"(Lambda's limit is {LAMBDA_MAX_TIMEOUT_S} s)"
        )
    needed_mb = workload.bytes / 2**20
    if needed_mb > MARGIN * settings.lambda_ephemeral_mb:
        problems.append(
            f"the dataset's {needed_mb:,.0f} MB exceeds {MARGIN:.0%} of the function's "
            f"{settings.lambda_ephemeral_mb:,} MB ephemeral storage"
        )
    return problems


def _lambda_plan(
    workload: Workload, settings: PlannerSettings, memory: int, reasons: list[str]
) -> ComputePlan:
    runtime = _lambda_runtime(workload, settings)
    cost = settings.lambda_memory_mb / 1024 * runtime * LAMBDA_USD_PER_GB_SECOND + LAMBDA_USD_PER_REQUEST
    reasons.append(
        f"fits Lambda: about {memory:,} MB of the function's {settings.lambda_memory_mb:,} MB and "
        f"{math.ceil(runtime):,} s of its {settings.lambda_timeout_s} s timeout"
    )
    return ComputePlan(
        "lambda",
        None,
        settings.lambda_memory_mb,
        1,
        memory,
        math.ceil(runtime),
        round(cost, 6),
        reasons,
    )


def _ec2_plan(workload: Workload, settings: PlannerSettings, memory: int, reasons: list[str]) -> ComputePlan:
    fitting = [
        kind
        for kind in EC2_INSTANCE_TYPES.values()
        if instance_type_allowed(kind.name, list(settings.allowed_instance_types))
        and memory <= MARGIN * kind.memory_gib * 1024
    ]
    if not fitting:
        raise PlanError(
            f"no allowed instance type has {memory / MARGIN / 1024:,.1f} GiB of memory for an estimated "
            f"{memory:,} MB: allow bigger types in EC2_ALLOWED_INSTANCE_TYPES"
        )
    chosen: InstanceType = min(fitting, key=lambda kind: (kind.usd_per_hour, -kind.vcpus))
    instances = max(1, min(settings.max_instances, workload.candidates))
    runtime = workload.cpu_seconds() / chosen.vcpus / instances + EC2_BOOT_SECONDS
    billed = max(runtime, EC2_MIN_BILLED_SECONDS)
    cost = chosen.usd_per_hour * billed / 3600 * instances
    reasons.append(
        f"{chosen.name} is the cheapest allowed type with room for about {memory:,} MB "
        f"({chosen.memory_gib:g} GiB, {chosen.vcpus} vCPU, ${chosen.usd_per_hour}/h)"
    )
    if instances > 1:
        reasons.append(
            f"the grid's {workload.candidates} candidates are split over {instances} instances "
            f"(max_instances={settings.max_instances})"
        )
    return ComputePlan(
        "ec2",
        chosen.name,
        int(chosen.memory_gib * 1024),
        instances,
        memory,
        math.ceil(runtime),
        round(cost, 6),
        reasons,
    )
