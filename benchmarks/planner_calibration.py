"""Calibrates the planner's runtime estimate: `python -m benchmarks.planner_calibration [CASE ...]`.

Times the trainer's own work for one job in this process (`fit_pipeline` and `evaluate` on the holdout or
every fold, the refit on all rows after k-fold, and `skops` serializing the model it saves) on numeric
data of a few shapes, and prints each case's seconds next to the planner's estimate for this machine
(`compute=local`), as rows to paste into `MEASURED` in tests/test_planning.py. No sandbox: reading the
data and the process's start are not timed (the planner adds them as a fixed part). Cases are named like
`iris/random_forest/n_estimators=1000`; give some names (or prefixes) to time only those. On a busy
machine boosting's OpenMP threads wait for each other: time it again with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import sys
import time
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.datasets import load_breast_cancer, load_iris, make_classification
from sklearn.model_selection import StratifiedKFold, train_test_split

from mltp.planning import LOCAL_VCPUS, Workload
from mltp.trainer.feature_plan import FeaturePlan
from mltp.trainer.metrics import evaluate
from mltp.trainer.runner import fit_pipeline
from mltp.trainer.spec import CLASSIFICATION_METRICS

# (dataset, algorithm, hyperparameters, folds): about 5 minutes on 2 cores
CASES: list[tuple[str, str, dict[str, Any], int | None]] = [
    ("iris", "random_forest", {}, None),
    ("iris", "random_forest", {"n_estimators": 1000}, None),
    ("iris", "random_forest", {"n_estimators": 5000}, None),
    ("breast_cancer", "random_forest", {"n_estimators": 1000}, None),
    ("breast_cancer", "random_forest", {}, 5),
    ("synthetic_20k", "random_forest", {}, None),
    ("synthetic_20k", "random_forest", {"max_depth": 8}, None),
    ("iris", "hist_gradient_boosting", {}, None),
    ("iris", "hist_gradient_boosting", {"max_iter": 1000}, None),
    ("breast_cancer", "hist_gradient_boosting", {"max_iter": 1000}, None),
    ("breast_cancer", "hist_gradient_boosting", {}, 5),
    ("synthetic_20k", "hist_gradient_boosting", {"max_iter": 1000, "early_stopping": False}, None),
    ("synthetic_100k", "hist_gradient_boosting", {}, None),
    ("iris", "knn", {}, None),
    ("synthetic_20k", "knn", {}, None),
    ("synthetic_20k", "knn", {"n_neighbors": 50}, None),
    ("synthetic_100k", "knn", {}, None),
    ("iris", "logistic_regression", {}, None),
    ("breast_cancer", "logistic_regression", {}, 5),
    ("synthetic_100k", "logistic_regression", {}, None),
    ("synthetic_100k", "linear_svm", {}, None),
]


@cache
def dataset(name: str) -> tuple[pd.DataFrame, pd.Series]:
    if name == "iris":
        X, y = load_iris(return_X_y=True, as_frame=True)
    elif name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    else:
        rows = {"synthetic_20k": 20_000, "synthetic_100k": 100_000}[name]
        values, labels = make_classification(rows, 20, n_informative=10, flip_y=0.05, random_state=0)
        X, y = pd.DataFrame(values, columns=[f"x{i}" for i in range(20)]), pd.Series(labels)
    return X, y


def manifest(X: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """What the planner reads: the ingest's profile of every column, the target's distinct values."""
    columns = [{"name": name, "type": "float", "distinct": len(X)} for name in X.columns]
    target = {"name": "target", "type": "integer", "distinct": int(y.nunique()), "distinct_exact": True}
    return {
        "rows": len(X),
        "bytes": int(X.memory_usage().sum()),
        "target": "target",
        "columns": [*columns, target],
    }


def run_job(algorithm: str, params: dict[str, Any], folds: int | None, X, y) -> float:
    """Seconds of the trainer's work for one candidate, as `runner.train` and `write_results` do it."""
    spec = SimpleNamespace(algorithm=algorithm, task="classification", seed=0)
    plan = FeaturePlan(numeric=list(X.columns))
    if folds:
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y))
    else:
        splits = [train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)]
    started = time.perf_counter()
    for train, test in splits:
        model = fit_pipeline(spec, params, X.iloc[train], y.iloc[train], plan, lambda fraction: None)
        evaluate(model, X.iloc[test], y.iloc[test], "classification", list(CLASSIFICATION_METRICS))
    if folds:
        model = fit_pipeline(spec, params, X, y, plan, lambda fraction: None)
    sio.dumps(model)
    return time.perf_counter() - started


def main(wanted: list[str]) -> None:
    for name, algorithm, params, folds in CASES:
        label = f"{name}/{algorithm}/{','.join(f'{k}={v}' for k, v in params.items())}" + (
            f"/folds={folds}" if folds else ""
        )
        if wanted and not any(label.startswith(prefix) for prefix in wanted):
            continue
        X, y = dataset(name)
        seconds = run_job(algorithm, params, folds, X, y)
        if seconds < 5:  # the fastest of three: other work on the machine only slows a run down
            seconds = min(seconds, *(run_job(algorithm, params, folds, X, y) for _ in range(2)))
        estimate = Workload.of(manifest(X, y), algorithm, [params], folds).work().seconds(LOCAL_VCPUS)
        print(
            f'    ({len(X)}, {X.shape[1]}, {y.nunique()}, "{algorithm}", {params}, {folds}, {seconds:.2f}),'
            f"  # estimate {estimate:.2f} s, x{estimate / seconds:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
