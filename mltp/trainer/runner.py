"""Run one job spec end to end: read data, fit every candidate, keep the best, write the results.

`status.json` is written last: its presence means the model, metrics, signature and evaluation (the
numbers behind the plots, mltp/trainer/evaluation.py) are all there. A failure still writes it, saying
whether the user's data or parameters caused it (no retry will help) or the infrastructure did.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import platform
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import skops.io as sio
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from mltp.aws import ClientFactory
from mltp.dataset_catalog import split_s3_uri
from mltp.s3_json import SSE, put_json
from mltp.trainer import evaluation
from mltp.trainer.algorithms import build_estimator, get_algorithm
from mltp.trainer.errors import TrainingInputError
from mltp.trainer.feature_plan import plan_features
from mltp.trainer.features import build_preprocessor
from mltp.trainer.job_input import JobInput, TrainingData, start_reading
from mltp.trainer.metrics import predict, score
from mltp.trainer.spec import JobSpec, better
from mltp.trainer.telemetry import Telemetry, logger

GROWTH_STEPS = 5
# The evaluation's permutation importance stops taking columns after this share of the fit's time (within
# these bounds): on a large dataset it costs a few percent of the training, on a small one a second or two.
IMPORTANCE_SHARE, IMPORTANCE_MIN_S, IMPORTANCE_MAX_S = 0.04, 1.0, 60.0


class _Progress:
    """Maps the work units (candidates x folds, ensemble growth) onto 0.15..0.90."""

    def __init__(self, telemetry: Telemetry, units: int) -> None:
        self.telemetry, self.units, self.done = telemetry, units, 0

    def within_unit(self, fraction: float, stage: str) -> None:
        self.telemetry.progress(0.15 + 0.75 * (self.done + fraction) / self.units, stage)

    def unit_done(self, stage: str) -> None:
        self.done += 1
        self.within_unit(0.0, stage)


def fit_pipeline(spec: JobSpec, params: dict[str, Any], X, y, plan, on_growth) -> Pipeline:
    algorithm = get_algorithm(spec.algorithm)
    estimator = build_estimator(spec.algorithm, spec.task, params, spec.seed)
    preprocess = build_preprocessor(plan, scale=algorithm.needs_scaling, impute=not algorithm.handles_missing)
    features = preprocess.fit_transform(X, y)
    growth = algorithm.growth_param
    if growth is None:
        estimator.fit(features, y)
        on_growth(1.0)
    else:  # add trees/iterations in steps: same model, and progress follows it
        total = estimator.get_params()[growth]
        estimator.set_params(warm_start=True)
        for step in sorted({math.ceil(total * k / GROWTH_STEPS) for k in range(1, GROWTH_STEPS + 1)}):
            estimator.set_params(**{growth: step})
            estimator.fit(features, y)
            on_growth(step / total)
        estimator.set_params(warm_start=False)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _splits(spec: JobSpec, X, y):
    """Stratified for classification wherever every class has enough rows for it, else plain."""
    smallest_class = y.value_counts().min() if spec.task == "classification" else 0
    if spec.validation.kind == "holdout":
        test_rows = math.ceil(len(y) * spec.validation.holdout_fraction)
        stratify = smallest_class >= 2 and test_rows >= y.nunique() and len(y) - test_rows >= y.nunique()
        train, test = train_test_split(
            np.arange(len(y)),
            test_size=spec.validation.holdout_fraction,
            random_state=spec.seed,
            stratify=y if stratify else None,
        )
        return [(train, test)]
    if len(y) < spec.validation.folds:
        raise TrainingInputError(f"{len(y)} rows cannot be split into {spec.validation.folds} folds")
    if spec.task == "classification" and smallest_class < spec.validation.folds:
        counts = y.value_counts()
        rare = ", ".join(
            f"{label!r} ({count})" for label, count in counts[counts < spec.validation.folds].items()
        )
        logger.warning(
            "class(es) with fewer rows than the %d folds: %s; the folds are not stratified, and a fold "
            "trained without a class cannot score it: add rows of those classes, or use fewer folds",
            spec.validation.folds,
            rare,
        )
    folds = (StratifiedKFold if smallest_class >= spec.validation.folds else KFold)(
        spec.validation.folds, shuffle=True, random_state=spec.seed
    )
    return list(folds.split(X, y))


def train(spec: JobSpec, reading: Future[TrainingData], telemetry: Telemetry) -> dict[str, Any]:
    started = time.monotonic()
    _check_deadline(spec, "before it started")
    telemetry.progress(0.02, "reading the dataset")
    data = reading.result()
    manifest, X, y, dropped = data.manifest, data.X, data.y, data.dropped_missing_target
    if dropped:
        logger.info("dropped %d rows whose target %r is missing", dropped, spec.target)
    telemetry.progress(0.10, f"read {len(X):,} rows")
    plan = plan_features(manifest["columns"], spec.target, manifest["rows"])
    for line in plan.choices():
        logger.info("feature choice: %s", line)
    X = X[plan.used]
    with _user_data_errors(f"{len(y):,} rows cannot be split for scoring"):
        splits = _splits(spec, X, y)
    telemetry.progress(0.15, "data prepared")
    loaded_s = time.monotonic() - started
    progress = _Progress(telemetry, len(spec.candidates) * len(splits))
    scored, best, best_model = [], None, None
    classify = spec.task == "classification"
    best_outputs, best_fold_rows = None, None  # the best candidate's predictions, for the evaluation
    unasked_scores_s = 0.0  # class scores the metrics did not ask for, computed for the evaluation alone
    for number, params in enumerate(spec.candidates, start=1):
        _check_deadline(spec, f"before candidate {number}")
        fold_metrics, model, outputs = [], None, evaluation.Scored()
        for train_rows, test_rows in splits:
            with _user_data_errors(f"candidate {number} {params} cannot be fitted on this data"):
                model = fit_pipeline(
                    spec,
                    params,
                    X.iloc[train_rows],
                    y.iloc[train_rows],
                    plan,
                    lambda fraction, n=number: progress.within_unit(fraction, f"candidate {n}: fitting"),
                )
                predicted = predict(model, X.iloc[test_rows], spec.task, with_scores=classify)
                fold_metrics.append(score(predicted, y.iloc[test_rows], spec.task, spec.metrics))
            outputs.add(test_rows, predicted)
            if "roc_auc" not in spec.metrics:
                unasked_scores_s += predicted.scores_s
            progress.unit_done(f"candidate {number} scored")
        metrics = {name: _mean_of_defined([m[name] for m in fold_metrics]) for name in fold_metrics[0]}
        scored.append({"params": params, "metrics": metrics})
        logger.info("candidate %d %s: %s", number, params, metrics)
        if best is None or better(
            spec.primary_metric, metrics[spec.primary_metric], best["metrics"][spec.primary_metric]
        ):
            best, best_model = scored[-1], model
            best_outputs, best_fold_rows = outputs, test_rows
    if not math.isfinite(best["metrics"][spec.primary_metric]):
        raise TrainingInputError(
            f"{spec.primary_metric} is undefined on the {len(y):,} rows held out for scoring: add rows, "
            "or score with --folds"
        )
    held_out_model = best_model  # with folds: the best candidate's last fold model, on rows it did not see
    if spec.validation.kind == "kfold":  # scores came from the folds; the model learns from every row
        telemetry.progress(0.92, "refitting the best candidate on all rows")
        best_model = fit_pipeline(spec, best["params"], X, y, plan, lambda fraction: None)
    fit_s = round(time.monotonic() - started - loaded_s, 3)
    telemetry.progress(0.95, "computing the evaluation")
    report = _evaluation(
        spec,
        scored,
        y,
        best_outputs,
        getattr(best_model, "classes_", None),
        evaluation.Importance(held_out_model, X, y, best_fold_rows),
        fit_s,
        unasked_scores_s,
    )
    return {
        "model": best_model,
        "best": best,
        "candidates": scored,
        "signature": _signature(manifest, plan.used, spec, y),
        "rows": {"used": len(X), "dropped_missing_target": dropped},
        "features": {"used": plan.used, "choices": plan.choices()},
        "timings": {
            "read_s": data.read_s,
            "load_s": round(loaded_s, 3),
            "fit_s": fit_s,
        },
        "dataset": {key: manifest[key] for key in ("name", "version", "sha256", "rows")},
        "evaluation": report,
    }


def _evaluation(spec: JobSpec, scored, y, outputs, classes, importance, fit_s: float, extra_s: float) -> dict:
    """evaluation.json; a failure to compute it is logged and written down, never the job's failure."""
    source = "out-of-fold" if spec.validation.kind == "kfold" else "holdout"
    try:
        return evaluation.build(
            task=spec.task,
            source=source,
            primary_metric=spec.primary_metric,
            candidates=scored,
            y=y,
            scored=outputs,
            classes=classes,
            importance=importance,
            seed=spec.seed,
            importance_budget_s=min(IMPORTANCE_MAX_S, max(IMPORTANCE_MIN_S, IMPORTANCE_SHARE * fit_s)),
            extra_s=extra_s,
        )
    except Exception as error:
        message = f"{type(error).__name__}: {_first_line(error)}".rstrip(": ")
        logger.warning("the evaluation (numbers for plots) could not be computed: %s", message, exc_info=True)
        return evaluation.failed(spec.task, source, spec.primary_metric, scored, message)


def _mean_of_defined(scores: list[float]) -> float:
    """The mean over the folds where the metric is defined (NaN where it is nowhere)."""
    defined = [score for score in scores if not math.isnan(score)]
    return round(float(np.mean(defined)), 6) if defined else math.nan


@contextlib.contextmanager
def _user_data_errors(what: str) -> Iterator[None]:
    """scikit-learn raises ValueError for data it cannot use (too few rows per class or for the
    neighbours, infinite values, no feature left): the user's to fix, in one line."""
    try:
        yield
    except ValueError as error:
        raise TrainingInputError(f"{what}: {str(error).splitlines()[0]}") from error


def _check_deadline(spec: JobSpec, where: str) -> None:
    if spec.deadline is not None and datetime.now(UTC) > spec.deadline:
        raise TrainingInputError(
            f"the job's deadline {spec.deadline.isoformat(timespec='seconds')} passed {where}: "
            "raise max_runtime_minutes or train fewer candidates"
        )


def _signature(manifest: dict, used: list[str], spec: JobSpec, y: pd.Series) -> dict[str, Any]:
    types = {column["name"]: column["type"] for column in manifest["columns"]}
    signature = {
        "inputs": [{"name": name, "type": types[name]} for name in used],
        "target": {"name": spec.target, "type": types[spec.target]},
    }
    if spec.task == "classification":
        signature["classes"] = sorted(map(str, y.unique()))
    return signature


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "skops": package_version("skops"),
    }


def write_results(clients: ClientFactory, spec: JobSpec, result: dict[str, Any]) -> dict[str, Any]:
    s3 = clients("s3")
    bucket, prefix = spec.output_bucket_and_prefix
    model_bytes = sio.dumps(result["model"])
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    s3.upload_fileobj(io.BytesIO(model_bytes), bucket, f"{prefix}model.skops", ExtraArgs=SSE)
    summary = {
        "job_id": spec.job_id,
        "algorithm": spec.algorithm,
        "task": spec.task,
        "primary_metric": spec.primary_metric,
        "best": result["best"],
        "candidates": result["candidates"],
        "rows": result["rows"],
        "features": result["features"],
        "dataset": result["dataset"],
        "timings": result["timings"],
        "versions": versions(),
        "model": {"uri": f"s3://{bucket}/{prefix}model.skops", "sha256": sha256, "bytes": len(model_bytes)},
        "evaluation_uri": f"s3://{bucket}/{prefix}evaluation.json",
    }
    put_json(s3, bucket, f"{prefix}metrics.json", summary)
    put_json(s3, bucket, f"{prefix}signature.json", result["signature"])
    put_json(s3, bucket, f"{prefix}evaluation.json", result["evaluation"])
    return summary


def run_job(
    job_uri: str, clients: ClientFactory, instance_id: str | None = None, reading: JobInput | None = None
) -> dict[str, Any]:
    """Train as the spec says and write `status.json`; returns the status document. `reading` is the
    job's input already being read (`job_input.start_reading`), else it is read now."""
    started = time.monotonic()
    status_bucket, status_key = split_s3_uri(job_uri.rsplit("/", 1)[0] + "/status.json")
    telemetry, status = None, {}
    try:
        reading = reading or start_reading(clients, job_uri)
        spec = reading.spec.result()
        telemetry = Telemetry(clients, spec.job_id, instance_id, heartbeat=spec.heartbeat_seconds)
        logger.info(
            "job %s: %s for %s on %s", spec.job_id, spec.algorithm, spec.target, spec.dataset_manifest_uri
        )
        summary = write_results(clients, spec, train(spec, reading.data, telemetry))
        telemetry.progress(1.0, "done")
        status = {
            "state": "succeeded",
            "metrics": summary["best"]["metrics"],
            "params": summary["best"]["params"],
            "model_uri": summary["model"]["uri"],
            "model_sha256": summary["model"]["sha256"],
            "evaluation_uri": summary["evaluation_uri"],
        }
    except TrainingInputError as error:
        status = _failure(error, "user")
    except Exception as error:  # anything else is ours or the cloud's: the status says so
        status = _failure(error, "infrastructure")
    finally:
        if telemetry is not None:
            telemetry.close()
        status.update(
            job_id=job_uri.rstrip("/").split("/")[-2],
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=round(time.monotonic() - started, 3),
            instance_id=instance_id,
        )
        put_json(clients("s3"), status_bucket, status_key, status)
    return status


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else ""


def _failure(error: BaseException, kind: str) -> dict[str, Any]:
    message = _first_line(error) or type(error).__name__
    logger.error("job failed (%s): %s", kind, message, exc_info=kind == "infrastructure")
    return {"state": "failed", "error_class": type(error).__name__, "message": message, "kind": kind}


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for chatty in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
