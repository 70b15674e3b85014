"""The estimators we train, by short name, and validation of their hyperparameters before launch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltp.trainer.errors import TrainingInputError

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class Algorithm:
    name: str
    # scikit-learn estimators by dotted path, imported only to build one: importing scikit-learn costs
    # every command and flow process a second or more, and most never fit anything.
    classifier: str | None
    regressor: str | None
    needs_scaling: bool
    # Ensembles grow in steps (warm start) so progress can follow the estimators as they are added.
    # Only where that is cheap and gives the same model: not for boosting, which re-bins the data at
    # every step and whose early stopping would see different rounds.
    growth_param: str | None = None
    # Trees split on missing values natively: imputing first only costs time and loses information.
    handles_missing: bool = False

    def estimator_path(self, task: str) -> str:
        """The dotted path of its estimator for `task`; refuses a task it does not do."""
        found = self.classifier if task == "classification" else self.regressor
        if found is None:
            other = "regression" if task == "classification" else "classification"
            raise TrainingInputError(
                f"algorithm {self.name!r} does only {other}, but the task is {task}: "
                f"choose one of {', '.join(names_for(task))}"
            )
        return found

    def estimator_class(self, task: str) -> type[BaseEstimator]:
        module, _, name = self.estimator_path(task).rpartition(".")
        return getattr(importlib.import_module(module), name)


ALGORITHMS = {
    a.name: a
    for a in (
        Algorithm("logistic_regression", "sklearn.linear_model.LogisticRegression", None, True),
        Algorithm("ridge", None, "sklearn.linear_model.Ridge", True),
        Algorithm(
            "random_forest",
            "sklearn.ensemble.RandomForestClassifier",
            "sklearn.ensemble.RandomForestRegressor",
            False,
            "n_estimators",
            handles_missing=True,
        ),
        Algorithm(
            "hist_gradient_boosting",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            "sklearn.ensemble.HistGradientBoostingRegressor",
            False,
            handles_missing=True,
        ),
        Algorithm("linear_svm", "sklearn.svm.LinearSVC", "sklearn.svm.LinearSVR", True),
        Algorithm(
            "knn",
            "sklearn.neighbors.KNeighborsClassifier",
            "sklearn.neighbors.KNeighborsRegressor",
            True,
        ),
    )
}


def names_for(task: str) -> list[str]:
    attribute = "classifier" if task == "classification" else "regressor"
    return [name for name, algorithm in ALGORITHMS.items() if getattr(algorithm, attribute)]


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise TrainingInputError(f"unknown algorithm {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def build_estimator(name: str, task: str, params: dict[str, Any], seed: int) -> BaseEstimator:
    """The configured estimator; scikit-learn's own message for any bad parameter."""
    from sklearn.utils._param_validation import InvalidParameterError

    estimator = get_algorithm(name).estimator_class(task)()
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=seed)
    try:
        estimator.set_params(**params)
        estimator._validate_params()  # the constraint check scikit-learn runs at fit(), done before launch
    except (InvalidParameterError, ValueError, TypeError) as error:
        raise TrainingInputError(
            f"invalid hyperparameters for {name}: {str(error).splitlines()[0]}"
        ) from error
    return estimator


def validate_candidates(name: str, task: str, candidates: list[dict[str, Any]]) -> None:
    for params in candidates:
        build_estimator(name, task, params, seed=0)
