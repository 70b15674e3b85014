"""The job spec: everything a trainer needs, written to `runs/<job_id>/job.json` before launch."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPEC_VERSION = 1
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")
REGRESSION_METRICS = ("r2", "rmse", "mae")
METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = get_args(Task)
_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["holdout", "kfold"] = "holdout"
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    folds: int = Field(5, ge=2, le=20)


class JobSpec(BaseModel):
    """Version 1 of the job spec. Unknown fields are refused so a typo cannot be silently ignored."""

    model_config = ConfigDict(extra="forbid")

    spec_version: Literal[1] = SPEC_VERSION
    job_id: str
    dataset_manifest_uri: str = Field(pattern=r"^s3://[^/]+/.+/manifest\.json$")
    target: str
    task: Task
    algorithm: str
    candidates: list[dict[str, Any]] = Field(
        default_factory=lambda: [{}], min_length=1, description="One hyperparameter set, or a grid shard"
    )
    metrics: list[str] = Field(default_factory=list)
    primary_metric: str
    seed: int = 0
    validation: Validation = Field(default_factory=Validation)
    output_prefix: str = Field(pattern=r"^s3://[^/]+/.+/$")
    deadline: datetime | None = None
    heartbeat_seconds: float = Field(15.0, ge=1, le=300, description="How often the trainer reports it lives")

    @field_validator("job_id")
    @classmethod
    def _job_id_shape(cls, value: str) -> str:
        if not _JOB_ID.fullmatch(value):
            raise ValueError("job_id must be 3-63 lowercase letters, digits or '-'")
        return value

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> JobSpec:
        known = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if not self.metrics:
            self.metrics = list(known)
        unknown = [metric for metric in [*self.metrics, self.primary_metric] if metric not in known]
        if unknown:
            raise ValueError(
                f"metric(s) {', '.join(unknown)} do not apply to {self.task}: use {', '.join(known)}"
            )
        if self.primary_metric not in self.metrics:
            self.metrics.append(self.primary_metric)
        return self

    @property
    def output_bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.output_prefix.removeprefix("s3://").partition("/")
        return bucket, prefix


def metric_problem(metric: str, task: str) -> str | None:
    """Why the trainer does not score `metric` for `task` (naming the ones it does), or None."""
    known = METRICS[task]
    if metric in known:
        return None
    other = next(other for other in METRICS if other != task)
    what = f"{metric!r} is a {other} metric" if metric in METRICS[other] else f"unknown metric {metric!r}"
    return f"{what}: the {task} metrics are {', '.join(known)}"


def default_primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "r2"


def better(metric: str, candidate: float | None, incumbent: float | None) -> bool:
    """Whether `candidate` beats `incumbent` on `metric`: a value not measured (NaN, or null read back from
    JSON) never wins; anything measured beats nothing."""
    if candidate is None or math.isnan(candidate):
        return False
    if incumbent is None or math.isnan(incumbent):
        return True
    return candidate < incumbent if metric in LOWER_IS_BETTER else candidate > incumbent
