"""Turning a training request into a validated job spec, before any compute is paid for.

Everything that can be checked from the dataset's manifest is checked here: the algorithm, the task,
the target's classes or type, that features remain, and every hyperparameter (with scikit-learn's own
message). What can only be found on the compute is reported in the job's status.json instead.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from mltp.aws import DENIED_CODES, NOT_FOUND_CODES, ClientFactory, error_code
from mltp.dataset_catalog import NOT_A_TARGET, column_list, task_hint
from mltp.errors import BucketError
from mltp.s3_json import put_json
from mltp.trainer.algorithms import get_algorithm
from mltp.trainer.errors import TrainingInputError
from mltp.trainer.feature_plan import plan_features
from mltp.trainer.spec import JobSpec, Validation, default_primary_metric, metric_problem
from mltp.valid_hyperparameters import check_candidates


def parse_value(text: str) -> Any:
    """`5` -> 5, `0.1` -> 0.1, `true` -> True, `null` -> None, anything else stays a string."""
    lowered = {"true": "true", "false": "false", "none": "null", "null": "null"}.get(text.strip().lower())
    try:
        return json.loads(lowered or text)
    except ValueError:
        return text


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainingInputError(f"{flag} {item!r} is not key=value")
        pairs.append((key.strip(), value))
    return pairs


def parse_params(items: list[str]) -> dict[str, Any]:
    """`--param k=v` options as a dict of typed values; a key given twice must say the same."""
    params: dict[str, Any] = {}
    for key, text in _pairs(items, "--param"):
        value = parse_value(text)
        if key in params and _same(params[key]) != _same(value):
            raise TrainingInputError(
                f"--param {key} is given twice, as {params[key]!r} and {value!r}: keep one, or try both "
                f"with --grid {key}=..."
            )
        params[key] = value
    return params


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`--grid k=v1,v2` options as a dict of axes; repeating a key adds to its axis (`--grid k=a,b
    --grid k=c` is `--grid k=a,b,c`)."""
    axes: dict[str, list[Any]] = {}
    for key, values in _pairs(items, "--grid"):
        axes.setdefault(key, []).extend(parse_value(value) for value in values.split(","))
    return axes


def _same(value: Any) -> str:
    """What tells two hyperparameter values apart: 1 and 1.0 or true and 1 are different values."""
    return json.dumps(value, sort_keys=True, default=repr)


def _distinct(values: list[Any]) -> list[Any]:
    kept: dict[str, Any] = {}
    for value in values:
        kept.setdefault(_same(value), value)
    return list(kept.values())


def expand_grid(fixed: dict[str, Any], axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The fixed hyperparameters with every combination of the grid's axes: one candidate each, none
    twice (a value repeated on an axis is tried once)."""
    overlap = set(fixed) & set(axes)
    if overlap:
        raise TrainingInputError(f"{', '.join(sorted(overlap))} given both as a fixed value and a grid axis")
    empty = [axis for axis, values in axes.items() if not values]
    if empty:
        raise TrainingInputError(f"grid axis {empty[0]!r} has no values")
    axes = {axis: _distinct(values) for axis, values in axes.items()}
    return [{**fixed, **dict(zip(axes, combo, strict=True))} for combo in itertools.product(*axes.values())]


def new_job_id(dataset: str, algorithm: str) -> str:
    stem = f"{dataset}-{algorithm}".replace("_", "-")[:28].strip("-")  # room for "-s12-a3" suffixes
    return f"{stem}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def build_job_spec(
    manifest: dict[str, Any],
    *,
    algorithm: str,
    candidates: list[dict[str, Any]],
    models_bucket: str,
    target: str | None = None,
    task: str | None = None,
    primary_metric: str | None = None,
    seed: int = 0,
    folds: int | None = None,
    holdout: float = 0.2,
    job_id: str | None = None,
) -> JobSpec:
    columns = {column["name"]: column for column in manifest["columns"]}
    target = target or manifest.get("target")
    if not target:
        raise TrainingInputError(f"dataset {manifest['name']} has no target: pass --target COLUMN")
    if target not in columns:
        raise TrainingInputError(
            f"target {target!r} is not a column of {manifest['name']} ({column_list(list(columns))})"
        )
    profile = columns[target]
    _check_target_kind(profile, manifest)
    task = task or (manifest.get("task") if target == manifest.get("target") else None) or task_hint(profile)
    get_algorithm(algorithm).estimator_path(task)  # the task check; no import
    if task == "regression" and profile["type"] not in ("integer", "float"):
        raise TrainingInputError(
            f"regression target {target!r} is not numeric (it is {profile['type']}): "
            "use --task classification"
        )
    if task == "classification" and profile["distinct_exact"] and profile["distinct"] < 2:
        raise TrainingInputError(
            f"classification target {target!r} has a single class: there is nothing to learn"
        )
    if task == "regression" and profile["min"] == profile["max"]:
        raise TrainingInputError(
            f"regression target {target!r} is {profile['min']:g} in every row: there is nothing to learn"
        )
    primary_metric = primary_metric or default_primary_metric(task)
    check_metric(primary_metric, task)
    plan_features(manifest["columns"], target, manifest["rows"])
    check_candidates(algorithm, task, candidates)
    job_id = job_id or new_job_id(manifest["name"], algorithm)
    validation = Validation(kind="kfold", folds=folds) if folds else Validation(holdout_fraction=holdout)
    try:
        return JobSpec(
            job_id=job_id,
            dataset_manifest_uri=manifest["manifest_uri"],
            target=target,
            task=task,
            algorithm=algorithm,
            candidates=candidates,
            primary_metric=primary_metric,
            seed=seed,
            validation=validation,
            output_prefix=f"s3://{models_bucket}/runs/{job_id}/",
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise TrainingInputError(
            f"job spec is invalid: {where}: {first['msg'].removeprefix('Value error, ')}"
        ) from error


def _check_target_kind(profile: dict[str, Any], manifest: dict[str, Any]) -> None:
    name, dataset = profile["name"], manifest["name"]
    if profile["type"] == "empty" or profile["nulls"] == manifest["rows"]:
        raise TrainingInputError(
            f"target {name!r} is empty in every row of {dataset}: choose another --target"
        )
    if profile["type"] in NOT_A_TARGET:
        raise TrainingInputError(
            f"target {name!r} of {dataset} is a {profile['type']} column: choose a column of numbers, "
            "text, booleans or dates as --target"
        )


def check_metric(metric: str, task: str) -> None:
    problem = metric_problem(metric, task)
    if problem:
        raise TrainingInputError(problem)


def write_job(clients: ClientFactory, spec: JobSpec) -> str:
    """Store the spec at runs/<job_id>/job.json, after checking the output location is ours to write."""
    bucket, prefix = spec.output_bucket_and_prefix
    s3 = clients("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in NOT_FOUND_CODES | DENIED_CODES:
            raise BucketError(
                f"the model output location s3://{bucket} does not exist or is not ours: "
                "run `mltp blocks init`",
                s3_uri=f"s3://{bucket}",
            ) from error
        raise
    put_json(s3, bucket, f"{prefix}job.json", spec.model_dump(mode="json"), create=True)
    return f"s3://{bucket}/{prefix}job.json"
