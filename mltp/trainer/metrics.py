"""Holdout metrics under stable key names: classification accuracy, balanced_accuracy, f1_macro,
roc_auc (binary, or one-vs-rest); regression r2, rmse, mae."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk
from sklearn.pipeline import Pipeline


def _scores(model, X):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    return model.decision_function(X)  # e.g. LinearSVC: roc_auc needs a ranking, not a probability


def evaluate(model, X, y, task: str, wanted: list[str]) -> dict[str, float]:
    model, X = _preprocessed(model, X)
    predicted = model.predict(X)
    results: dict[str, float] = {}
    if task == "classification":
        results["accuracy"] = sk.accuracy_score(y, predicted)
        results["balanced_accuracy"] = sk.balanced_accuracy_score(y, predicted)
        results["f1_macro"] = sk.f1_score(y, predicted, average="macro")
        if "roc_auc" in wanted:
            results["roc_auc"] = _roc_auc(model, X, y)
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


def _roc_auc(model, X, y) -> float:
    classes = model.classes_
    present = np.unique(y)
    if len(present) < 2 or not np.isin(present, classes).all():
        return float("nan")  # undefined on a split that holds one class, or one the model never saw
    scores = _scores(model, X)
    if len(classes) == 2:
        positive = scores[:, 1] if scores.ndim == 2 else scores
        return sk.roc_auc_score(y, positive)
    if scores.ndim == 2 and not hasattr(model, "predict_proba"):
        scores = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    try:
        return sk.roc_auc_score(y, scores, multi_class="ovr", labels=classes)
    except ValueError:  # a class absent from this split: one-vs-rest AUC is undefined for it
        return float("nan")
