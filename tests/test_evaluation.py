"""evaluation.json, the numbers behind a trained model's plots: scikit-learn's own figures on known
cases, bounded in size on large data, written for every algorithm and task, and never a job's failure."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets as toy
from sklearn import metrics as sk
from sklearn.dummy import DummyClassifier, DummyRegressor

from mltp.jobs import build_job_spec, write_job
from mltp.s3_json import read_json, strict_dumps
from mltp.trainer import evaluation
from mltp.trainer.algorithms import ALGORITHMS, names_for
from mltp.trainer.metrics import Outputs
from mltp.trainer.runner import run_job
from tests import test_trainer
from tests.conftest import packages_imported_by
from tests.test_trainer import MODELS, ingest_frame

clients = test_trainer.clients  # the fixture: buckets on moto's in-process mock
MAX_BYTES = 300_000
COMMON = {"schema", "task", "source", "rows_scored", "primary_metric", "seconds", "candidates"}
CLASSIFICATION_KEYS = {"classes", "confusion_matrix", "per_class", "per_class_truncated", "roc", "pr"}
REGRESSION_KEYS = {"predicted_vs_actual", "residual_quantiles"}
FAST = {"random_forest": {"n_estimators": 5}, "hist_gradient_boosting": {"max_iter": 5}}


def run(clients, manifest, **options) -> tuple[dict, dict, dict]:
    """The status, metrics summary and evaluation of a job run to its end."""
    spec = build_job_spec(manifest, models_bucket=MODELS, **options)
    status = run_job(write_job(clients, spec), clients)
    s3 = clients("s3")
    metrics, _ = read_json(s3, MODELS, f"runs/{spec.job_id}/metrics.json")
    document, _ = read_json(s3, MODELS, f"runs/{spec.job_id}/evaluation.json")
    return status, metrics, document


def build(actual, predicted, scores=None, classes=None, *, task="classification", X=None, model=None):
    """The document for known predictions, as the runner builds it from one holdout."""
    actual = pd.Series(actual)
    X = pd.DataFrame({"x": np.zeros(len(actual))}) if X is None else X
    if model is None:
        model = (DummyClassifier() if task == "classification" else DummyRegressor()).fit(X, actual)
    rows = np.arange(len(actual))
    outputs = Outputs(np.asarray(predicted), scores, None if classes is None else np.asarray(classes), True)
    return evaluation.build(
        task=task,
        source="holdout",
        primary_metric="accuracy" if task == "classification" else "r2",
        candidates=[{"params": {}, "metrics": {}}],
        y=actual,
        scored=evaluation.Scored([(rows, outputs)]),
        classes=None if classes is None else np.asarray(classes),
        importance=evaluation.Importance(model, X, actual, rows),
        seed=0,
        importance_budget_s=5.0,
    )


def random_classification(rows: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"class-{i:02d}" for i in range(classes)])
    weights = rng.random(classes) + 0.05
    actual = rng.choice(labels, rows, p=weights / weights.sum())
    predicted = np.where(rng.random(rows) < 0.7, actual, rng.choice(labels, rows))
    scores = rng.random((rows, classes)) + (labels[None, :] == actual[:, None])
    return actual, predicted, scores / scores.sum(axis=1, keepdims=True), labels


# --- correct on known cases ---------------------------------------------------------------------------


def test_binary_figures_are_scikit_learns() -> None:
    actual, predicted, scores, classes = random_classification(400, 2)
    document = build(actual, predicted, scores, classes)
    assert document["classes"] == list(classes)
    matrix = document["confusion_matrix"]
    assert matrix["labels"] == list(classes)
    assert matrix["matrix"] == sk.confusion_matrix(actual, predicted).tolist()
    [roc], [pr] = document["roc"], document["pr"]  # one curve: the positive class
    assert roc["class"] == pr["class"] == classes[1]
    assert roc["auc"] == pytest.approx(sk.roc_auc_score(actual == classes[1], scores[:, 1]), rel=1e-5)
    assert pr["average_precision"] == pytest.approx(
        sk.average_precision_score(actual == classes[1], scores[:, 1]), rel=1e-5
    )
    fpr, tpr, _ = sk.roc_curve(actual == classes[1], scores[:, 1])
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (fpr[0], tpr[0], 1.0, 1.0)
    assert len(roc["fpr"]) == len(roc["tpr"]) == min(len(fpr), 101)
    assert document["rows_scored"] == 400 and document["source"] == "holdout"


def test_three_classes_match_scikit_learn_one_vs_rest() -> None:
    actual, predicted, scores, classes = random_classification(300, 3, seed=1)
    document = build(actual, predicted, scores, classes)
    assert document["confusion_matrix"]["matrix"] == sk.confusion_matrix(actual, predicted).tolist()
    assert [entry["class"] for entry in document["roc"]] == list(classes)
    for index, (roc, pr) in enumerate(zip(document["roc"], document["pr"], strict=True)):
        positive = actual == classes[index]
        assert roc["auc"] == pytest.approx(sk.roc_auc_score(positive, scores[:, index]), rel=1e-5)
        assert pr["average_precision"] == pytest.approx(
            sk.average_precision_score(positive, scores[:, index]), rel=1e-5
        )
    precision, recall, f1, support = sk.precision_recall_fscore_support(actual, predicted, labels=classes)
    assert [entry["class"] for entry in document["per_class"]] == list(classes)
    assert [entry["precision"] for entry in document["per_class"]] == pytest.approx(precision, rel=1e-5)
    assert [entry["recall"] for entry in document["per_class"]] == pytest.approx(recall, rel=1e-5)
    assert [entry["f1"] for entry in document["per_class"]] == pytest.approx(f1, rel=1e-5)
    assert [entry["support"] for entry in document["per_class"]] == support.tolist()
    assert document["per_class_truncated"] is False


def test_a_class_absent_from_the_scored_rows_has_null_auc_and_empty_curves() -> None:
    actual = np.array(["a", "b"] * 20)
    scores = np.tile([0.5, 0.3, 0.2], (40, 1))
    document = build(actual, actual, scores, ["a", "b", "c"])
    absent = next(entry for entry in document["roc"] if entry["class"] == "c")
    assert absent == {"class": "c", "auc": None, "fpr": [], "tpr": []}
    assert next(entry for entry in document["pr"] if entry["class"] == "c")["average_precision"] is None
    json.loads(strict_dumps(document))  # strict JSON: null, never NaN


def test_regression_quantiles_and_scatter_are_numpys() -> None:
    rng = np.random.default_rng(3)
    actual = rng.normal(10, 3, 200)
    predicted = actual + rng.normal(0, 1, 200)
    document = build(actual, predicted, task="regression")
    expected = np.quantile(actual - predicted, evaluation.QUANTILES)
    assert list(document["residual_quantiles"]) == [str(q) for q in evaluation.QUANTILES]
    assert list(document["residual_quantiles"].values()) == pytest.approx(expected, rel=1e-5)
    scatter = document["predicted_vs_actual"]
    assert scatter["rows_sampled"] == 200  # all of them: the sample is everything
    assert scatter["actual"] == pytest.approx(actual, rel=1e-5)
    assert scatter["predicted"] == pytest.approx(predicted, rel=1e-5)
    assert document["permutation_importance"]["scoring"] == "r2"


# --- bounded on large data ----------------------------------------------------------------------------


def test_bounded_in_size_on_150k_rows_and_60_classes() -> None:
    rows = 150_000
    actual, predicted, scores, classes = random_classification(rows, 60)
    X = pd.DataFrame({f"x{i}": np.random.default_rng(i).normal(size=rows) for i in range(30)})
    document = build(actual, predicted, scores, classes, X=X)
    size = len(strict_dumps(document))
    assert size < MAX_BYTES, size
    matrix = document["confusion_matrix"]
    assert len(matrix["labels"]) == 20 and matrix["labels"][-1] == "other"
    assert len(matrix["matrix"]) == 20 and all(len(row) == 20 for row in matrix["matrix"])
    assert sum(map(sum, matrix["matrix"])) == rows  # every row is counted, the rarer classes as "other"
    frequent = pd.Series(actual).value_counts().index[:19]
    assert set(matrix["labels"][:-1]) == set(frequent)
    assert len(document["per_class"]) == 50 and document["per_class_truncated"] is True
    assert len(document["roc"]) == len(document["pr"]) == 10
    for curve in document["roc"]:
        assert 2 <= len(curve["fpr"]) == len(curve["tpr"]) <= 101
    for curve in document["pr"]:
        assert 2 <= len(curve["recall"]) == len(curve["precision"]) <= 101
    importance = document["permutation_importance"]
    assert importance["rows"] == 2000 and len(importance["features"]) == 20
    assert len(importance["features"]) + len(importance["skipped"]) <= 30


def test_bounded_in_size_on_150k_rows_of_regression() -> None:
    rows = 150_000
    rng = np.random.default_rng(5)
    actual = rng.normal(size=rows)
    document = build(actual, actual + rng.normal(size=rows), task="regression")
    assert len(strict_dumps(document)) < MAX_BYTES
    scatter = document["predicted_vs_actual"]
    assert scatter["rows_sampled"] == len(scatter["actual"]) == len(scatter["predicted"]) == 1000
    assert document["rows_scored"] == rows


def test_importance_stops_at_its_deadline_and_lists_the_rest() -> None:
    X = pd.DataFrame({f"x{i}": np.arange(50.0) for i in range(5)})
    actual = np.arange(50.0)
    rows = np.arange(50)
    model = DummyRegressor().fit(X, actual)
    found = evaluation.permutation_importance(
        evaluation.Importance(model, X, pd.Series(actual), rows), "regression", 0, -1.0
    )
    assert found["features"] == [] and found["skipped"] == list(X.columns)


# --- written by every job -----------------------------------------------------------------------------


def small_frame(rows: int = 90) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "signal": signal,
            "noise": rng.normal(size=rows),
            "color": rng.choice(["red", "green", "blue"], rows),
            "label": np.select([signal < -0.4, signal < 0.4], ["low", "mid"], "high"),
            "amount": 3 * signal + rng.normal(0, 0.1, rows),
        }
    )


@pytest.mark.parametrize(
    ("algorithm", "task"),
    [(name, task) for task in ("classification", "regression") for name in names_for(task)],
)
def test_every_algorithm_writes_its_evaluation(clients, tmp_path, algorithm, task) -> None:
    assert algorithm in ALGORITHMS
    target, drop = ("label", "amount") if task == "classification" else ("amount", "label")
    manifest = ingest_frame(clients, tmp_path, "small", small_frame().drop(columns=drop), target)
    status, metrics, document = run(
        clients, manifest, algorithm=algorithm, task=task, candidates=[FAST.get(algorithm, {})]
    )
    assert status["state"] == "succeeded", status
    assert status["evaluation_uri"] == metrics["evaluation_uri"]
    assert status["evaluation_uri"].endswith(f"runs/{metrics['job_id']}/evaluation.json")
    expected = CLASSIFICATION_KEYS if task == "classification" else REGRESSION_KEYS
    assert set(document) == COMMON | expected | {"permutation_importance"}, document.get("error")
    assert (document["task"], document["source"], document["rows_scored"]) == (task, "holdout", 18)
    assert document["candidates"] == metrics["candidates"]
    names = [feature["name"] for feature in document["permutation_importance"]["features"]]
    assert sorted(names) == ["color", "noise", "signal"]
    if task == "classification":
        assert document["classes"] == ["high", "low", "mid"]
        assert len(document["roc"]) == 3


def test_folds_score_every_row_out_of_fold(clients, tmp_path) -> None:
    frame = small_frame().drop(columns="amount")
    manifest = ingest_frame(clients, tmp_path, "small", frame, "label")
    status, _, document = run(
        clients, manifest, algorithm="linear_svm", candidates=[{"C": 0.01}, {}], folds=3
    )
    assert status["state"] == "succeeded", status
    assert (document["source"], document["rows_scored"]) == ("out-of-fold", len(frame))
    assert sum(map(sum, document["confusion_matrix"]["matrix"])) == len(frame)
    assert [entry["support"] for entry in document["per_class"]] == frame[
        "label"
    ].value_counts().sort_index().tolist()
    assert len(document["candidates"]) == 2
    for curve in document["roc"]:
        assert 0.0 <= curve["auc"] <= 1.0


def test_binary_holdout_auc_equals_the_jobs_roc_auc(clients, tmp_path) -> None:
    frame = toy.load_breast_cancer(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "bc", frame, "target")
    status, _, document = run(clients, manifest, algorithm="logistic_regression", candidates=[{}])
    [roc] = document["roc"]
    assert roc["class"] == "1" and roc["auc"] == pytest.approx(status["metrics"]["roc_auc"], abs=1e-6)
    assert document["rows_scored"] == 114
    assert sum(map(sum, document["confusion_matrix"]["matrix"])) == 114


def test_the_determining_column_ranks_first_by_its_own_name(clients, tmp_path) -> None:
    rng = np.random.default_rng(1)
    rows = 400
    color = rng.choice(["red", "green", "blue", "white"], rows)
    frame = pd.DataFrame(
        {
            "noise": rng.normal(size=rows),
            "color": color,
            "other_noise": rng.normal(size=rows),
            "label": np.where(np.isin(color, ["red", "blue"]), "warm", "cool"),
        }
    )
    manifest = ingest_frame(clients, tmp_path, "colors", frame, "label")
    status, _, document = run(clients, manifest, algorithm="logistic_regression", candidates=[{}])
    assert status["state"] == "succeeded", status
    importance = document["permutation_importance"]
    names = [feature["name"] for feature in importance["features"]]
    assert names[0] == "color" and sorted(names) == ["color", "noise", "other_noise"]  # once, not per value
    assert importance["features"][0]["mean"] > 0.3 > abs(importance["features"][1]["mean"])
    assert importance["skipped"] == [] and importance["scoring"] == "balanced_accuracy"


@pytest.mark.parametrize("labels", [["a", "b"], ["x", "y", "z", "w"]])
def test_block_scores_equal_scikit_learns(labels) -> None:
    rng = np.random.default_rng(3)
    target = rng.choice(labels[:-1], 200)  # the last label is predicted but never actual
    predicted = rng.choice(labels, 200 * 4)
    blocks = predicted.reshape(4, 200)
    expected = [sk.balanced_accuracy_score(target, block) for block in blocks]
    assert np.allclose(evaluation._block_scores("balanced_accuracy", target, predicted), expected)
    values, guesses = rng.normal(size=200), rng.normal(size=200 * 3)
    expected = [sk.r2_score(values, block) for block in guesses.reshape(3, 200)]
    assert np.allclose(evaluation._block_scores("r2", values, guesses), expected)


def test_a_failing_evaluation_does_not_fail_the_job(clients, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("plots are broken\nsecond line")

    monkeypatch.setattr(evaluation, "classification", broken)
    manifest = ingest_frame(clients, tmp_path, "iris", toy.load_iris(as_frame=True).frame, "target")
    seen = []
    clients("s3").meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: seen.append(params["url_path"].rsplit("/", 1)[-1])
    )
    status, metrics, document = run(clients, manifest, algorithm="knn", candidates=[{}])
    assert status["state"] == "succeeded", status
    assert document["error"] == "RuntimeError: plots are broken"
    assert document["candidates"] == metrics["candidates"]
    assert seen.index("evaluation.json") < seen.index("status.json") == len(seen) - 1


# --- the trainer stays lean ---------------------------------------------------------------------------

PLOTTING = {"matplotlib", "seaborn", "plotly", "bokeh", "altair", "PIL"}


def test_the_trainer_imports_no_plotting_library() -> None:
    statements = (
        "import mltp.trainer.__main__, mltp.trainer.handler, mltp.trainer.runner, mltp.trainer.evaluation"
    )
    assert packages_imported_by(statements, PLOTTING) == []
    for path in Path(evaluation.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {name.split(".")[0] for name in names} & PLOTTING, path
