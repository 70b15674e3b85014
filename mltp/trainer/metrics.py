"""Holdout metrics under stable key names: classification accuracy, balanced_accuracy, f1_macro,
roc_auc (binary, or one-vs-rest); regression r2, rmse, mae."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk
from sklearn.pipeline import Pipeline


@dataclass
class Outputs:
    """What a model said about some rows: its labels or values, and for classification (when asked) its
    per-class scores as `_scores` gives them, in the order of `classes` (the fitted estimator's)."""

    predicted: np.ndarray
    scores: np.ndarray | None = None
    classes: np.ndarray | None = None
    probabilities: bool = False  # scores from predict_proba, not decision_function
    scores_s: float = 0.0  # the time computing the scores took


def _scores(model, X):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    return model.decision_function(X)  # e.g. LinearSVC: roc_auc needs a ranking, not a probability


def evaluate(model, X, y, task: str, wanted: list[str]) -> dict[str, float]:
    return score(predict(model, X, task, with_scores="roc_auc" in wanted), y, task, wanted)


def predict(model, X, task: str, with_scores: bool) -> Outputs:
    """The model's outputs on `X`, preprocessed once; scores only for classification and when asked."""
    model, X = _preprocessed(model, X)
    outputs = Outputs(model.predict(X))
    if task == "classification":
        outputs.classes = model.classes_
        if with_scores:
            started = time.monotonic()
            outputs.scores, outputs.probabilities = _scores(model, X), hasattr(model, "predict_proba")
            outputs.scores_s = time.monotonic() - started
    return outputs


def score(outputs: Outputs, y, task: str, wanted: list[str]) -> dict[str, float]:
    predicted = outputs.predicted
    results: dict[str, float] = {}
    if task == "classification":
        results["accuracy"] = sk.accuracy_score(y, predicted)
        results["balanced_accuracy"] = sk.balanced_accuracy_score(y, predicted)
        results["f1_macro"] = sk.f1_score(y, predicted, average="macro")
        if "roc_auc" in wanted:
            results["roc_auc"] = _roc_auc(outputs, y)
    else:
        results["r2"] = sk.r2_score(y, predicted)
        results["rmse"] = float(np.sqrt(sk.mean_squared_error(y, predicted)))
        results["mae"] = sk.mean_absolute_error(y, predicted)
    return {name: round(float(value), 6) for name, value in results.items() if name in wanted}


def _preprocessed(model, X):
    """A pipeline's final estimator and the holdout through its other steps, once: the labels and the
    scores both need it, and the pipeline's own predict and predict_proba would each transform it again."""
    if isinstance(model, Pipeline):
        return model[-1], model[:-1].transform(X)
    return model, X


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Decision scores of more than two classes (no predict_proba) as a softmax: one-vs-rest needs rows
    that compare across classes."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _roc_auc(outputs: Outputs, y) -> float:
    classes, scores = outputs.classes, outputs.scores
    present = np.unique(y)
    if len(present) < 2 or not np.isin(present, classes).all():
        return float("nan")  # undefined on a split that holds one class, or one the model never saw
    if len(classes) == 2:
        positive = scores[:, 1] if scores.ndim == 2 else scores
        return sk.roc_auc_score(y, positive)
    if scores.ndim == 2 and not outputs.probabilities:
        scores = probabilities(scores)
    try:
        return sk.roc_auc_score(y, scores, multi_class="ovr", labels=classes)
    except ValueError:  # a class absent from this split: one-vs-rest AUC is undefined for it
        return float("nan")
