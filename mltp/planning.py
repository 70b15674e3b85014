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

The runtime estimate adds up the work each candidate's own hyperparameters ask for (trees, boosting
rounds, held-out rows x training rows for kNN, iterations) over every fit, and the saving of the biggest
model, calibrated against measured runs; the plan's reasons name the hyperparameters behind it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

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

ComputeChoice = Literal["auto", "lambda", "ec2", "local"]  # auto: the planner decides
COMPUTE_CHOICES: tuple[str, ...] = get_args(ComputeChoice)

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


# The runtime model, calibrated on a 2-core machine (benchmarks/planner_calibration.py, and the measured
# runs in tests/test_planning.py): seconds of one of its cores.
TRAIN_SHARE, TEST_SHARE = 0.8, 0.2  # the default holdout; k folds train on (k-1)/k rows, close enough
PER_FIT_S = 0.015  # building the pipeline, scaling, the metrics
TREE_S = 0.85e-3  # a random forest's tree on a few rows
TREE_CELL_S = 4.1e-9  # per row x candidate feature x level x log2(rows), sorting at every node
TREE_PREDICT_S, TREE_PREDICT_ROW_S = 9e-5, 2e-7
BOOSTED_LEAF_S = 3.5e-5  # a boosting round's tree, per leaf
BOOSTED_CELL_S = 7e-9  # per row x feature of a boosting round's histograms
BOOSTED_PREDICT_ROW_S = 9e-7  # per row and tree, both predictions for the metrics
NEIGHBOUR_CELL_S = 2.8e-10  # per test row x training row x feature, both predictions for the metrics
NEIGHBOUR_ROW_S = 8e-5
LINEAR_CELL_S = {"logistic_regression": 1.4e-9, "linear_svm": 2.3e-10, "ridge": 1e-7}
FOREST_SAVE_S, BOOSTED_SAVE_S = 1.2e-3, 0.4e-3  # skops, per tree, and more per tree the more there are
SAVED_TREES_DOUBLING = 2000
# A random forest's memory, measured on scikit-learn 1.x: a classification tree grows about one node per
# 5-10 training rows, a regression tree about 1.3 (its leaves hold single rows of the bootstrap sample).
FOREST_NODES_PER_ROW, REGRESSION_FOREST_NODES_PER_ROW = 0.2, 1.3
TREE_OBJECT_BYTES, TREE_NODE_BYTES, TREE_SAVED_BYTES = 4096, 150, 24 * 1024


@dataclass(frozen=True)
class Work:
    """Seconds of one core: `serial` uses one core whatever the machine has, `parallel` uses them all."""

    serial: float = 0.0
    parallel: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.serial + other.serial, self.parallel + other.parallel)

    def __mul__(self, factor: float) -> Work:
        return Work(self.serial * factor, self.parallel * factor)

    def seconds(self, vcpus: float) -> float:
        return self.serial / min(vcpus, 1.0) + self.parallel / vcpus


@dataclass(frozen=True)
class Cost:
    """One candidate's work: each fit with its scoring, and saving the model if it is the best."""

    fit: Work
    save: Work
    drivers: str  # the hyperparameters that make it big, as the user wrote them or their defaults


@dataclass(frozen=True)
class Workload:
    """The size of the job, derived from the manifest and the grid."""

    rows: int
    bytes: int
    columns: int
    features: int
    algorithm: str
    candidates: tuple[dict[str, Any], ...]  # each one's own hyperparameters
    folds: int | None = None
    classes: int = 2  # the target's classes; 1 for a regression

    @classmethod
    def of(
        cls,
        manifest: dict[str, Any],
        algorithm: str,
        candidates: list[dict[str, Any]],
        folds: int | None = None,
    ):
        features, classes = 0, 1
        for column in manifest["columns"]:
            if column["name"] == manifest.get("target"):
                classes = _classes(column)
            elif column["type"] == "string":
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
            algorithm=algorithm,
            candidates=tuple(candidates),
            folds=folds,
            classes=classes,
        )

    @property
    def fits_per_candidate(self) -> int:
        return (self.folds + 1) if self.folds else 1  # k-fold refits the best on all rows

    def memory_mb(self) -> int:
        frame = self.rows * self.columns * 8 * 3  # the table, the frame, a training copy
        matrix = self.rows * self.features * 8 * 2  # transformed features, train and test views
        model = 0
        if self.algorithm == "random_forest":
            model = max(self._forest_bytes(params) for params in self.candidates)
        elif self.algorithm == "knn":
            model = self.rows * self.features * 8
        return PROCESS_BASE_MB + math.ceil((frame + matrix + model) / 2**20)

    def _forest_bytes(self, params: dict[str, Any]) -> float:
        """The fitted forest, and while skops saves it, its serialized copy beside it (measured: a tree
        is about 4 KiB of objects plus 100-160 bytes a node, and 24 KiB more in the skops file)."""
        trees = params.get("n_estimators", 100)
        per_row = FOREST_NODES_PER_ROW if self.classes > 1 else REGRESSION_FOREST_NODES_PER_ROW
        grown = TRAIN_SHARE * self.rows * per_row
        nodes = min(grown, 2 ** ((params.get("max_depth") or 60) + 1))
        fitted = trees * (TREE_OBJECT_BYTES + nodes * TREE_NODE_BYTES)
        return 2 * fitted + trees * TREE_SAVED_BYTES

    def costs(self) -> list[Cost]:
        get_algorithm(self.algorithm)  # an unknown name fails with the list of known ones
        return [_COST_OF[self.algorithm](self, params) for params in self.candidates]

    def work(self) -> Work:
        """Fitting, scoring and saving: each candidate with its own hyperparameters, every fit, and the
        biggest model saved once."""
        costs = self.costs()
        fits = sum((cost.fit for cost in costs), Work()) * self.fits_per_candidate
        return fits + max((cost.save for cost in costs), key=lambda save: save.serial + save.parallel)

    def seconds(self, vcpus: float, shards: int = 1) -> float:
        """Wall seconds on `vcpus` cores like the calibration machine's, the grid split round-robin over
        `shards` machines (as mltp.runs.split_candidates does): the slowest shard's."""
        overhead = 2.0 + self.bytes / 50e6  # the process, imports and reading the data
        slowest = max(
            replace(self, candidates=self.candidates[shard::shards]).work().seconds(vcpus)
            for shard in range(min(shards, len(self.candidates)))
        )
        return overhead + slowest

    def explain(self, vcpus: float) -> str:
        """What the work is, naming the hyperparameters of the biggest candidate."""
        costs = self.costs()
        biggest = max(costs, key=lambda cost: cost.fit.seconds(vcpus))
        what = f"{self.algorithm} with {biggest.drivers}" if biggest.drivers else self.algorithm
        if len(costs) > 1:
            what += f" (the biggest of {len(costs)} candidates)"
        if self.folds:
            what += f", {self.fits_per_candidate} fits each ({self.folds} folds and the refit)"
        return f"{what}: about {math.ceil(self.work().seconds(vcpus)):,} s of fitting, scoring and saving"


def _classes(target: dict[str, Any]) -> int:
    """As mltp.dataset_catalog.task_hint decides the task (not imported: it brings boto3)."""
    if target["type"] == "float" or (
        target["type"] == "integer" and not (target.get("distinct_exact") and target["distinct"] <= 50)
    ):
        return 1
    return max(target["distinct"], 2)


def _saving(trees: int, per_tree_s: float) -> Work:
    return Work(serial=trees * per_tree_s * (1 + trees / SAVED_TREES_DOUBLING))


def _forest(job: Workload, params: dict[str, Any]) -> Cost:
    trees = params.get("n_estimators", 100)
    rows = max(job.rows * TRAIN_SHARE, 2)
    levels = min(params.get("max_depth") or math.inf, math.log2(rows))
    per_tree = TREE_S + TREE_CELL_S * rows * _split_features(job, params) * levels * math.log2(rows)
    per_tree += TREE_PREDICT_S + TREE_PREDICT_ROW_S * job.rows * TEST_SHARE
    n_jobs = params.get("n_jobs") or 1
    fit = Work(parallel=trees * per_tree) if n_jobs == -1 or n_jobs > 1 else Work(serial=trees * per_tree)
    depth = f", max_depth={params['max_depth']}" if params.get("max_depth") else ""
    return Cost(fit + Work(serial=PER_FIT_S), _saving(trees, FOREST_SAVE_S), f"n_estimators={trees}{depth}")


def _split_features(job: Workload, params: dict[str, Any]) -> float:
    """The features a forest's split looks at: scikit-learn's max_features."""
    chosen = params.get("max_features", "sqrt" if job.classes > 1 else 1.0)
    if chosen == "sqrt":
        return max(int(math.sqrt(job.features)), 1)
    if chosen == "log2":
        return max(int(math.log2(job.features)), 1)
    if isinstance(chosen, float):
        return max(job.features * chosen, 1)
    return min(chosen or job.features, job.features)


def _boosting(job: Workload, params: dict[str, Any]) -> Cost:
    rounds = params.get("max_iter", 100)
    trees = rounds * (job.classes if job.classes > 2 else 1)
    rows = job.rows * TRAIN_SHARE
    leaves = min(params.get("max_leaf_nodes", 31) or rows, rows / params.get("min_samples_leaf", 20))
    per_tree = BOOSTED_LEAF_S * max(leaves, 2) + BOOSTED_CELL_S * rows * job.features
    per_tree += BOOSTED_PREDICT_ROW_S * job.rows * TEST_SHARE
    early = params.get("early_stopping", "auto")
    stops = early is True or (early == "auto" and job.rows > 10_000)
    drivers = f"max_iter={rounds}" + (" (early stopping may end sooner)" if stops else "")
    return Cost(Work(serial=PER_FIT_S, parallel=trees * per_tree), _saving(trees, BOOSTED_SAVE_S), drivers)


def _neighbours(job: Workload, params: dict[str, Any]) -> Cost:
    """Fitting stores the rows; scoring compares every held-out row with every training row."""
    neighbours = params.get("n_neighbors", 5)
    test, train = job.rows * TEST_SHARE, job.rows * TRAIN_SHARE
    scoring = test * (train * job.features * NEIGHBOUR_CELL_S + NEIGHBOUR_ROW_S) * (1 + neighbours / 100)
    drivers = f"n_neighbors={neighbours}, scoring {test:,.0f} rows against {train:,.0f}"
    return Cost(Work(serial=PER_FIT_S, parallel=scoring), Work(), drivers)


def _linear(job: Workload, params: dict[str, Any]) -> Cost:
    default_iterations = {"logistic_regression": 100, "linear_svm": 1000}.get(job.algorithm)
    cells = job.rows * TRAIN_SHARE * job.features * (job.classes if job.classes > 2 else 1)
    if default_iterations is None:
        return Cost(Work(serial=PER_FIT_S + cells * LINEAR_CELL_S[job.algorithm]), Work(), "")
    iterations = params.get("max_iter", default_iterations)
    fit = cells * LINEAR_CELL_S[job.algorithm] * iterations
    return Cost(Work(serial=PER_FIT_S + fit), Work(), f"max_iter={iterations}")


_COST_OF = {
    "random_forest": _forest,
    "hist_gradient_boosting": _boosting,
    "knn": _neighbours,
    "logistic_regression": _linear,
    "linear_svm": _linear,
    "ridge": _linear,
}


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
    workload: Workload, settings: PlannerSettings, forced: ComputeChoice = "auto"
) -> ComputePlan:
    memory = workload.memory_mb()
    if forced == "local":
        runtime = workload.seconds(LOCAL_VCPUS)
        reasons = ["compute=local was requested", workload.explain(LOCAL_VCPUS)]
        return ComputePlan("local", None, memory, 1, memory, math.ceil(runtime), 0.0, reasons)
    lambda_problems = _lambda_problems(workload, settings, memory)
    if forced == "lambda":
        if lambda_problems:
            raise PlanError(f"compute=lambda is refused: {'; and '.join(lambda_problems)}")
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


def _lambda_vcpus(settings: PlannerSettings) -> float:
    return min(max(settings.lambda_memory_mb / LAMBDA_MB_PER_VCPU, 0.1), 6)


def _lambda_runtime(workload: Workload, settings: PlannerSettings) -> float:
    return workload.seconds(_lambda_vcpus(settings)) + 5  # + a cold start


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
            f"(Lambda's limit is {LAMBDA_MAX_TIMEOUT_S} s); {workload.explain(_lambda_vcpus(settings))}"
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
    reasons.append(workload.explain(_lambda_vcpus(settings)))
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
    instances = max(1, min(settings.max_instances, len(workload.candidates)))
    runtime = workload.seconds(chosen.vcpus, instances) + EC2_BOOT_SECONDS
    billed = max(runtime, EC2_MIN_BILLED_SECONDS)
    cost = chosen.usd_per_hour * billed / 3600 * instances
    reasons.append(
        f"{chosen.name} is the cheapest allowed type with room for about {memory:,} MB "
        f"({chosen.memory_gib:g} GiB, {chosen.vcpus} vCPU, ${chosen.usd_per_hour}/h)"
    )
    if instances > 1:
        reasons.append(
            f"the grid's {len(workload.candidates)} candidates are split over {instances} instances "
            f"(max_instances={settings.max_instances})"
        )
    reasons.append(workload.explain(chosen.vcpus))
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
