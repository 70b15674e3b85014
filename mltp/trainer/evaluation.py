"""`evaluation.json`: the numbers behind a trained model's plots, bounded in size and time whatever the
data size. Numbers only: the trainer imports no plotting library (its image stays lean); the flow draws
the plots (mltp/evaluation_plots.py).

Computed on the rows the best candidate was scored on: the holdout, or with k folds its out-of-fold
predictions (every row, each predicted by the fold model that did not see it). Curves are downsampled to
at most `CURVE_POINTS` points (first and last kept), the confusion matrix to the 19 most frequent actual
classes and "other", per-class figures to the 50 most frequent classes, a regression's scatter to a random
sample. Permutation importance permutes the ORIGINAL input columns through the whole pipeline on a random
sample of the scored rows (with k folds, the best candidate's last fold model on that fold's held-out
rows), column after column until its time budget is spent; the columns it did not reach are `skipped`.

Every metric is scikit-learn's own; floats are rounded to 6 significant digits; an undefined figure (an
AUC for a class absent from the scored rows) is null.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as sk

from mltp.trainer.metrics import Outputs, probabilities

SCHEMA = 1  # mltp/evaluation_plots.py reads this layout: change both together
MATRIX_LABELS = 20  # the 19 most frequent actual classes and "other"
PER_CLASS = 50
CURVE_CLASSES = 10
CURVE_POINTS = 101
SCATTER_POINTS = 1_000
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
IMPORTANCE_ROWS = 2_000
IMPORTANCE_REPEATS = 3
IMPORTANCE_TOP = 20
PREDICT_ROWS = 12_000
SCORING = {"classification": "balanced_accuracy", "regression": "r2"}  # scikit-learn scorer names
OTHER = "other"


@dataclass
class Scored:
    """The scored rows of one candidate, fold by fold: positions into the job's rows, and the outputs of
    the model that held them out."""

    folds: list[tuple[np.ndarray, Outputs]] = field(default_factory=list)

    def add(self, rows: np.ndarray, outputs: Outputs) -> None:
        self.folds.append((rows, outputs))


@dataclass
class Importance:
    """A fitted pipeline, the job's rows (raw input columns) and the positions of those it did not see."""

    model: Any
    X: pd.DataFrame
    y: pd.Series
    rows: np.ndarray


def build(
    *,
    task: str,
    source: str,
    primary_metric: str,
    candidates: list[dict[str, Any]],
    y: pd.Series,
    scored: Scored,
    classes: np.ndarray | None,
    importance: Importance,
    seed: int,
    importance_budget_s: float,
    extra_s: float = 0.0,
) -> dict[str, Any]:
    """The document. `classes` are the delivered model's; `extra_s` is time already spent on its behalf
    (class scores the metrics did not need), counted in its `seconds`."""
    started = time.monotonic()
    rows = np.concatenate([fold_rows for fold_rows, _ in scored.folds])
    actual = y.to_numpy()[rows]
    predicted = np.concatenate([outputs.predicted for _, outputs in scored.folds])
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "task": task,
        "source": source,
        "rows_scored": len(rows),
        "primary_metric": primary_metric,
        "seconds": None,
        "candidates": candidates,
        "permutation_importance": None,
    }
    if task == "classification":
        scores = np.concatenate([class_scores(outputs, classes) for _, outputs in scored.folds])
        document.update(classification(actual, predicted, scores, classes))
    else:
        document.update(regression(actual, predicted.astype("float64"), seed))
    document["permutation_importance"] = permutation_importance(importance, task, seed, importance_budget_s)
    document["seconds"] = round(time.monotonic() - started + extra_s, 3)
    return document


def failed(task: str, source: str, primary_metric: str, candidates: list[dict[str, Any]], error: str) -> dict:
    """The document when computing it failed: the model is still useful without plots."""
    return {
        "schema": SCHEMA,
        "task": task,
        "source": source,
        "primary_metric": primary_metric,
        "candidates": candidates,
        "error": error,
    }


def class_scores(outputs: Outputs, classes: np.ndarray) -> np.ndarray:
    """One score column per class of `classes` (a fold's model may not have seen them all: zeros for
    those): probabilities, or for a model without predict_proba its decision scores (two classes: the
    positive class's score and its negation; more: their softmax, as the roc_auc metric takes them)."""
    scores = np.asarray(outputs.scores, dtype="float64")
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    if not outputs.probabilities and len(classes) > 2:
        scores = probabilities(scores)
    aligned = np.zeros((len(scores), len(classes)))
    position = {label: index for index, label in enumerate(classes)}
    for column, label in enumerate(outputs.classes):
        if label in position:
            aligned[:, position[label]] = scores[:, column]
    return aligned


def classification(
    actual: np.ndarray, predicted: np.ndarray, scores: np.ndarray, classes: np.ndarray
) -> dict[str, Any]:
    frequency = pd.Series(actual).value_counts()  # most frequent first
    labels = np.unique(np.concatenate([classes, pd.unique(actual), pd.unique(predicted)]))
    # every label as its position in `labels`: the figures below count integers, whatever the labels are
    true_codes = pd.Categorical(actual, categories=labels).codes.astype("int64")
    predicted_codes = pd.Categorical(predicted, categories=labels).codes.astype("int64")

    if len(labels) <= MATRIX_LABELS:
        kept, lookup = np.arange(len(labels)), np.arange(len(labels))
    else:
        kept = np.flatnonzero(np.isin(labels, frequency.index[: MATRIX_LABELS - 1]))
        lookup = np.full(len(labels), len(kept))  # any other label: the last row and column
        lookup[kept] = np.arange(len(kept))
    names = [str(label) for label in labels[kept]]
    if len(kept) < len(labels):
        names.append(OTHER if OTHER not in names else f"({OTHER})")
    matrix = sk.confusion_matrix(lookup[true_codes], lookup[predicted_codes], labels=np.arange(len(names)))

    chosen = np.arange(len(labels))
    if len(labels) > PER_CLASS:
        chosen = np.flatnonzero(np.isin(labels, frequency.index[:PER_CLASS]))
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        true_codes, predicted_codes, labels=chosen, zero_division=np.nan
    )
    per_class = [
        {
            "class": str(labels[c]),
            "precision": _round(p),
            "recall": _round(r),
            "f1": _round(f),
            "support": int(s),
        }
        for c, p, r, f, s in zip(chosen, precision, recall, f1, support, strict=True)
    ]

    roc, pr = [], []
    for index in _curve_classes(classes, frequency):
        positive = actual == classes[index]
        roc_entry, pr_entry = _curves(positive, scores[:, index])
        roc.append({"class": str(classes[index]), **roc_entry})
        pr.append({"class": str(classes[index]), **pr_entry})
    return {
        "classes": [str(label) for label in classes],
        "confusion_matrix": {"labels": names, "matrix": matrix.tolist()},
        "per_class": per_class,
        "per_class_truncated": len(chosen) < len(labels),
        "roc": roc,
        "pr": pr,
    }


def _curve_classes(classes: np.ndarray, frequency: pd.Series) -> list[int]:
    """Positions in `classes`: the positive class of two; else the most frequent actual classes."""
    if len(classes) == 2:
        return [1]
    if len(classes) <= CURVE_CLASSES:
        return list(range(len(classes)))
    counts = frequency.reindex(classes, fill_value=0).to_numpy()
    top = np.argsort(-counts, kind="stable")[:CURVE_CLASSES]
    return sorted(int(index) for index in top)


def _curves(positive: np.ndarray, score: np.ndarray) -> tuple[dict, dict]:
    """One-vs-rest ROC and precision-recall of one class; null and empty where undefined (the class is
    absent from the scored rows, or is all of them)."""
    if positive.all() or not positive.any():
        return {"auc": None, "fpr": [], "tpr": []}, {"average_precision": None, "recall": [], "precision": []}
    # sorted once here: each of the three functions below sorts by score again, and a (stable) sort of
    # sorted values takes one pass; the curves do not depend on the order of equal scores
    order = np.argsort(score, kind="stable")
    positive, score = positive[order], score[order]
    fpr, tpr, _ = sk.roc_curve(positive, score)
    auc = sk.auc(fpr, tpr)  # what roc_auc_score computes from the same curve
    precision, recall, _ = sk.precision_recall_curve(positive, score, drop_intermediate=True)
    keep_roc, keep_pr = _downsampled(len(fpr)), _downsampled(len(recall))
    return (
        {"auc": _round(auc), "fpr": _rounded(fpr[keep_roc]), "tpr": _rounded(tpr[keep_roc])},
        {
            "average_precision": _round(sk.average_precision_score(positive, score)),
            "recall": _rounded(recall[keep_pr]),
            "precision": _rounded(precision[keep_pr]),
        },
    )


def _downsampled(length: int, points: int = CURVE_POINTS) -> np.ndarray:
    """At most `points` indices evenly along a curve of `length` points, the first and last included."""
    if length <= points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, points).round().astype("int64"))


def regression(actual: np.ndarray, predicted: np.ndarray, seed: int) -> dict[str, Any]:
    actual = actual.astype("float64")
    residual = actual - predicted
    sample = np.arange(len(actual))
    if len(actual) > SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(seed).choice(len(actual), SCATTER_POINTS, replace=False))
    quantiles = np.quantile(residual, QUANTILES)
    return {
        "predicted_vs_actual": {
            "actual": _rounded(actual[sample]),
            "predicted": _rounded(predicted[sample]),
            "rows_sampled": len(sample),
        },
        "residual_quantiles": {str(q): _round(value) for q, value in zip(QUANTILES, quantiles, strict=True)},
    }


def permutation_importance(importance: Importance, task: str, seed: int, budget_s: float) -> dict[str, Any]:
    """scikit-learn's permutation importance (the drop in its scorer's score when one input column's
    values are shuffled among the rows), on at most `IMPORTANCE_ROWS` rows, `IMPORTANCE_REPEATS` shuffles
    a column. The shuffled copies of several columns go through the pipeline in one `predict` call (about
    `PREDICT_ROWS` rows: one call a column would cost more than the work on a small sample); batches are
    taken in column order until `budget_s` is spent, the columns not reached listed as skipped."""
    started = time.monotonic()
    scoring = SCORING[task]
    model, X, rows = importance.model, importance.X, importance.rows
    rng = np.random.default_rng(seed)
    size = min(len(rows), IMPORTANCE_ROWS)
    picked = np.sort(rng.choice(rows, size, replace=False))
    sample, target = X.iloc[picked].reset_index(drop=True), importance.y.to_numpy()[picked]
    columns, features, skipped = list(X.columns), [], []
    per_batch = max(1, PREDICT_ROWS // (size * IMPORTANCE_REPEATS))
    with warnings.catch_warnings():  # a small sample may lack a class the model predicts
        warnings.simplefilter("ignore")
        baseline = _block_scores(scoring, target, model.predict(sample))[0]
        for first in range(0, len(columns), per_batch):
            batch = columns[first : first + per_batch]
            if time.monotonic() - started > budget_s:
                skipped += batch
                continue
            # block (i, r): every column as sampled, except column i of the batch, shuffled a r-th time
            blocks = len(batch) * IMPORTANCE_REPEATS
            unchanged = np.tile(np.arange(size), blocks)
            probe = sample.take(unchanged).reset_index(drop=True)
            for i, column in enumerate(batch):
                order = unchanged.copy()
                for r in range(IMPORTANCE_REPEATS):
                    block = i * IMPORTANCE_REPEATS + r
                    order[block * size : (block + 1) * size] = rng.permutation(size)
                probe[column] = sample[column].take(order).set_axis(probe.index)
            drops = baseline - _block_scores(scoring, target, model.predict(probe))
            for i, column in enumerate(batch):
                mine = drops[i * IMPORTANCE_REPEATS : (i + 1) * IMPORTANCE_REPEATS]
                features.append({"name": column, "mean": float(np.mean(mine)), "std": float(np.std(mine))})
    features.sort(key=lambda feature: (np.isnan(feature["mean"]), -np.nan_to_num(feature["mean"])))
    return {
        "scoring": scoring,
        "rows": size,
        "repeats": IMPORTANCE_REPEATS,
        "features": [
            {"name": f["name"], "mean": _round(f["mean"]), "std": _round(f["std"])}
            for f in features[:IMPORTANCE_TOP]
        ],
        "skipped": skipped,
    }


def _block_scores(scoring: str, target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The score of each block of `len(target)` predictions, all blocks at once: r2 as scikit-learn's
    multi-output r2 (each block one output); balanced accuracy as its definition, the mean over the classes
    present in `target` of each class's recall (scikit-learn's function checks its input on every call,
    which cost more than the scoring itself on a small sample; the tests compare the two)."""
    blocks = predicted.reshape(-1, len(target))
    if scoring == "r2":
        return sk.r2_score(
            np.repeat(target[:, None], len(blocks), axis=1), blocks.T, multioutput="raw_values"
        )
    hits = blocks == target
    present, codes = np.unique(target, return_inverse=True)
    recalls = [hits[:, codes == k].mean(axis=1) for k in range(len(present))]
    return np.mean(recalls, axis=0)


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


def _rounded(values: np.ndarray) -> list[float]:
    return [_round(value) for value in values]
