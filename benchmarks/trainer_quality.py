"""Figure 1: the holdout metric of our trainer next to a plain scikit-learn script, on scikit-learn's
bundled datasets. Ours runs in process through `run_job`; both are deterministic, so one run each."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split

from benchmarks.report import Row
from benchmarks.training import SEED, ingest, new_job
from mltp.aws import ClientFactory
from mltp.trainer.algorithms import get_algorithm
from mltp.trainer.runner import run_job

TOLERANCE = 0.02
DATASETS: dict[str, tuple[Callable, str]] = {
    "breast-cancer": (load_breast_cancer, "classification"),
    "wine": (load_wine, "classification"),
    "digits": (load_digits, "classification"),
    "diabetes": (load_diabetes, "regression"),
}
METRICS = {"classification": ("accuracy", accuracy_score), "regression": ("r2", r2_score)}
PLAIN = {  # algorithm -> the scikit-learn class a plain script would use, per task
    "random_forest": {"classification": RandomForestClassifier, "regression": RandomForestRegressor},
    "hist_gradient_boosting": {
        "classification": HistGradientBoostingClassifier,
        "regression": HistGradientBoostingRegressor,
    },
    "logistic_regression": {"classification": LogisticRegression},
    "ridge": {"regression": Ridge},
}


@dataclass(frozen=True)
class Score:
    dataset: str
    algorithm: str
    metric: str
    ours: float
    plain: float
    plain_converged: bool


def plain_score(X: np.ndarray, y: np.ndarray, algorithm: str, task: str) -> tuple[float, bool]:
    """Default parameters, random_state=0, the trainer's split, raw features; and whether it converged."""
    estimator = PLAIN[algorithm][task]()
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=SEED)
    stratify = y if task == "classification" else None
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=SEED, stratify=stratify)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X[train], y[train])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float(METRICS[task][1](y[test], estimator.predict(X[test]))), converged


def ours_score(clients: ClientFactory, manifest: dict, algorithm: str, task: str) -> float:
    status = run_job(new_job(clients, manifest, algorithm, task), clients)
    if status["state"] != "succeeded":
        raise RuntimeError(f"{algorithm} on {manifest['name']} failed: {status}")
    return status["metrics"][METRICS[task][0]]


def run(clients: ClientFactory, scratch: Path) -> list[Score]:
    scores = []
    for name, (load, task) in DATASETS.items():
        bunch = load(as_frame=True)
        path = scratch / f"{name}.csv"
        bunch.frame.to_csv(path, index=False)
        manifest = ingest(clients, path, target=bunch.target.name, name=name)
        X, y = bunch.data.to_numpy(), bunch.target.to_numpy()
        for algorithm in (candidate for candidate, tasks in PLAIN.items() if task in tasks):
            plain, converged = plain_score(X, y, algorithm, task)
            ours = ours_score(clients, manifest, algorithm, task)
            scores.append(Score(name, algorithm, METRICS[task][0], ours, plain, converged))
            print(
                f"  {name:13} {algorithm:22} ours {ours:.4f}  plain {plain:.4f}", file=sys.stderr, flush=True
            )
    return scores


def scaled(score: Score) -> bool:
    return get_algorithm(score.algorithm).needs_scaling


def rows(scores: list[Score]) -> list[Row]:
    return [_row(score) for score in scores]


def _row(score: Score) -> Row:
    """Tree ensembles see the same features as the plain script: equal. Linear models see them
    standardized, which may change the score but must not make it worse."""
    label = f"holdout {score.metric}, {score.dataset} ({score.algorithm})"
    difference = score.ours - score.plain
    if scaled(score):
        return Row(
            label + "¹",
            [score.ours],
            [score.plain],
            "",
            f"no worse: ours ≥ plain \N{MINUS SIGN} {TOLERANCE} (here {difference:+.4f})",
            lambda ours, plain: ours[0] >= plain[0] - TOLERANCE,
        )
    return Row(
        label,
        [score.ours],
        [score.plain],
        "",
        f"\\|ours \N{MINUS SIGN} plain\\| ≤ {TOLERANCE} (here {abs(difference):.4f})",
        lambda ours, plain: abs(ours[0] - plain[0]) <= TOLERANCE,
    )


def footnote(scores: list[Score]) -> str:
    unconverged = [f"{s.algorithm} on {s.dataset}" for s in scores if not s.plain_converged]
    trees = [abs(s.ours - s.plain) for s in scores if not scaled(s)]
    return (
        "¹ Linear models: ours standardizes numeric features first (mltp/trainer/features.py does so for "
        "estimators that need scaling), the plain script fits the raw features, so their target is no "
        "worse than the plain script rather than equal"
        + (
            f"; the plain fit hit its iteration limit (ConvergenceWarning) for {', '.join(unconverged)}"
            if unconverged
            else ""
        )
        + ". Tree ensembles do not depend on feature scale: their largest difference is "
        f"{max(trees, default=0.0):.4f}."
    )
