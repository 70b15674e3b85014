"""The trainer in-process on moto: real scikit-learn datasets, results, progress, logs and failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn import datasets as toy

from mltp import datasets
from mltp.jobs import build_job_spec, write_job
from mltp.s3_json import put_json, read_json
from mltp.trainer.errors import TrainingInputError
from mltp.trainer.job_input import start_reading
from mltp.trainer.runner import run_job
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE
from tests.conftest import packages_imported_by

DATA, MODELS = "team-data", "team-models"


@pytest.fixture
def clients(mock_clients):
    for bucket in (DATA, MODELS):
        mock_clients("s3").create_bucket(Bucket=bucket)
    return mock_clients


def ingest_frame(clients, tmp_path, name: str, frame: pd.DataFrame, target: str) -> dict:
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return datasets.ingest(clients, DATA, str(path), target=target).manifest


def run(clients, manifest, **options) -> tuple[dict, dict]:
    spec = build_job_spec(manifest, models_bucket=MODELS, **options)
    status = run_job(write_job(clients, spec), clients)
    metrics, _ = read_json(clients("s3"), MODELS, f"runs/{spec.job_id}/metrics.json")
    return status, metrics or {"job_id": spec.job_id}


def load_model(clients, status: dict):
    body = (
        clients("s3").get_object(Bucket=MODELS, Key=status["model_uri"].split(f"{MODELS}/")[1])["Body"].read()
    )
    untrusted = sio.get_untrusted_types(data=body)
    assert all(
        name.startswith(("sklearn.", "numpy.", "mltp.trainer.features.", "mltp.trainer.one_hot."))
        for name in untrusted
    ), untrusted
    return sio.loads(body, trusted=untrusted)


@pytest.mark.parametrize(
    ("loader", "algorithm", "metric", "floor"),
    [
        (toy.load_breast_cancer, "random_forest", "roc_auc", 0.95),
        (toy.load_wine, "hist_gradient_boosting", "accuracy", 0.85),
        (toy.load_digits, "knn", "f1_macro", 0.9),
        (toy.load_iris, "logistic_regression", "balanced_accuracy", 0.85),
        (toy.load_breast_cancer, "linear_svm", "roc_auc", 0.95),
    ],
)
def test_classification_on_real_datasets(clients, tmp_path, loader, algorithm, metric, floor) -> None:
    frame = loader(as_frame=True).frame
    manifest = ingest_frame(
        clients, tmp_path, loader.__name__.removeprefix("load_").replace("_", "-"), frame, "target"
    )
    status, metrics = run(clients, manifest, algorithm=algorithm, candidates=[{}])
    assert status["state"] == "succeeded", status
    assert set(status["metrics"]) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}
    assert status["metrics"][metric] >= floor
    model = load_model(clients, status)
    predicted = model.predict(frame.drop(columns="target").head(20))
    assert len(predicted) == 20
    assert metrics["model"]["sha256"] == status["model_sha256"]
    assert metrics["versions"]["scikit-learn"]


@pytest.mark.parametrize(
    "algorithm", ["ridge", "random_forest", "hist_gradient_boosting", "knn", "linear_svm"]
)
def test_regression_on_diabetes(clients, tmp_path, algorithm) -> None:
    frame = toy.load_diabetes(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "diabetes", frame, "target")
    status, _ = run(clients, manifest, algorithm=algorithm, candidates=[{}], task="regression")
    assert status["state"] == "succeeded", status
    assert set(status["metrics"]) == {"r2", "rmse", "mae"}
    assert status["metrics"]["rmse"] > 0


def test_grid_keeps_the_best_by_the_chosen_metric_and_kfold(clients, tmp_path) -> None:
    frame = toy.load_breast_cancer(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "bc", frame, "target")
    candidates = [{"C": 0.001}, {"C": 1.0}]
    status, metrics = run(
        clients,
        manifest,
        algorithm="logistic_regression",
        candidates=candidates,
        primary_metric="f1_macro",
        folds=3,
    )
    scored = {json.dumps(c["params"]): c["metrics"]["f1_macro"] for c in metrics["candidates"]}
    assert len(scored) == 2
    assert status["params"] == json.loads(max(scored, key=scored.get))


def test_mixed_columns_missing_targets_and_unknown_categories(clients, tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "id": [f"row-{i}" for i in range(n)],
            "city": rng.choice(["paris", "rome", "oslo", None], n),
            "street": [f"street-{i % 120}" for i in range(n)],
            "signup": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
            "member": rng.choice(["true", "false"], n),
            "spend": rng.normal(100, 20, n).round(2),
            "label": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[:9, "label"] = None
    manifest = ingest_frame(clients, tmp_path, "mixed", frame, "label")
    status, metrics = run(clients, manifest, algorithm="random_forest", candidates=[{"n_estimators": 20}])
    assert status["state"] == "succeeded", status
    assert metrics["rows"] == {"used": n - 10, "dropped_missing_target": 10}
    choices = " | ".join(metrics["features"]["choices"])
    assert "dropped id" in choices and "street: many distinct values" in choices and "signup: date" in choices
    model = load_model(clients, status)
    unseen = frame.drop(columns=["label", "id"]).head(3).assign(city="atlantis", street="street-9999")
    unseen["member"] = unseen["member"].map({"true": 1.0, "false": 0.0})
    assert len(model.predict(unseen)) == 3


def test_progress_rises_to_one_and_logs_reach_cloudwatch(clients, tmp_path) -> None:
    frame = toy.load_breast_cancer(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "bc", frame, "target")
    status, metrics = run(clients, manifest, algorithm="random_forest", candidates=[{"n_estimators": 30}, {}])
    assert status["state"] == "succeeded"
    job_id = metrics["job_id"]
    stats = clients("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "p",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": "TrainingProgress",
                        "Dimensions": [{"Name": "JobId", "Value": job_id}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1),
        EndTime=pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1),
    )
    assert max(stats["MetricDataResults"][0]["Values"]) == 1.0
    events = clients("logs").get_log_events(logGroupName=LOG_GROUP, logStreamName=job_id)["events"]
    messages = [event["message"] for event in events]
    progress = [float(m.split("progress ")[1].split("%")[0]) for m in messages if m.startswith("progress ")]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert len(set(progress)) >= 10  # download, preparation, each candidate, each growth step


def test_status_is_written_last(clients, tmp_path) -> None:
    frame = toy.load_iris(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "iris", frame, "target")
    seen = []
    clients("s3").meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: seen.append(params["url_path"].rsplit("/", 1)[-1])
    )
    status, _ = run(clients, manifest, algorithm="knn", candidates=[{}])
    assert status["state"] == "succeeded"
    assert seen[-1] == "status.json" and {"metrics.json", "signature.json"} <= set(seen)


def test_failures_on_the_compute_are_reported_with_their_kind(clients, tmp_path) -> None:
    frame = toy.load_iris(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "iris", frame, "target")
    spec = build_job_spec(manifest, models_bucket=MODELS, algorithm="knn", candidates=[{}])
    job_uri = write_job(clients, spec)
    put_json(
        clients("s3"), MODELS, f"runs/{spec.job_id}/job.json", {**spec.model_dump(mode="json"), "oops": 1}
    )
    status = run_job(job_uri, clients)
    assert (status["state"], status["kind"]) == ("failed", "user")
    assert "job spec" in status["message"] and "invalid" in status["message"]

    put_json(clients("s3"), MODELS, f"runs/{spec.job_id}/job.json", spec.model_dump(mode="json"))
    # the dataset's bytes disappear under the job: not the user's doing
    for entry in clients("s3").list_objects_v2(Bucket=DATA)["Contents"]:
        if entry["Key"].endswith(".csv"):
            clients("s3").delete_object(Bucket=DATA, Key=entry["Key"])
    status = run_job(job_uri, clients)
    assert (status["state"], status["kind"]) == ("failed", "infrastructure")
    assert status["error_class"] == "NoSuchKey"


def test_a_passed_deadline_fails_the_job(clients, tmp_path) -> None:
    manifest = ingest_frame(clients, tmp_path, "iris", toy.load_iris(as_frame=True).frame, "target")
    spec = build_job_spec(manifest, models_bucket=MODELS, algorithm="knn", candidates=[{}])
    spec.deadline = pd.Timestamp("2020-01-01", tz="UTC").to_pydatetime()
    status = run_job(write_job(clients, spec), clients)
    assert (status["state"], status["kind"]) == ("failed", "user")
    assert "deadline 2020-01-01T00:00:00+00:00 passed before it started" in status["message"]


def test_trainer_imports_no_prefect() -> None:
    statements = "import mltp.trainer.__main__, mltp.trainer.handler, mltp.trainer.runner"
    flow_side = {"prefect", "prefect_aws", "flows", "tasks", "blocks", "typer"}
    assert packages_imported_by(statements, flow_side) == []


def test_the_command_starts_reading_before_it_imports_scikit_learn() -> None:
    # The dataset downloads and parses on its own thread while the interpreter imports scikit-learn.
    statements = "import mltp.trainer.__main__, mltp.trainer.job_input"
    assert packages_imported_by(statements, {"sklearn", "skops", "scipy"}) == []


def test_a_job_that_cannot_be_read_fails_both_futures_with_its_error(clients) -> None:
    reading = start_reading(clients, f"s3://{MODELS}/runs/nothing-here/job.json")
    for future in (reading.spec, reading.data):
        with pytest.raises(TrainingInputError, match="no job spec at s3://"):
            future.result(timeout=30)


def test_cli_entry_point_has_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mltp.trainer", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "run" in result.stdout


@pytest.mark.parametrize("folds", [None, 5])
def test_rare_classes_still_split(clients, tmp_path, folds) -> None:
    frame = pd.DataFrame(
        {"x": range(40), "y": ["a"] * 20 + ["b"] * 17 + ["c"] * 3}
    )  # "c" too rare to stratify
    manifest = ingest_frame(clients, tmp_path, "rare", frame, "y")
    status, _ = run(clients, manifest, algorithm="knn", candidates=[{"n_neighbors": 3}], folds=folds)
    assert status["state"] == "succeeded", status


def test_a_single_row_class_with_folds_trains_and_names_the_class(clients, tmp_path, caplog) -> None:
    frame = pd.DataFrame({"x": range(40), "y": ["a"] * 20 + ["b"] * 19 + ["c"]})
    manifest = ingest_frame(clients, tmp_path, "single", frame, "y")
    for algorithm in ("random_forest", "logistic_regression"):
        status, metrics = run(clients, manifest, algorithm=algorithm, candidates=[{}], folds=5)
        assert status["state"] == "succeeded", status
        assert 0 <= metrics["best"]["metrics"]["accuracy"] <= 1
    assert "class(es) with fewer rows than the 5 folds: 'c' (1)" in caplog.text


def test_a_target_constant_where_it_has_values_is_refused_on_the_compute(clients, tmp_path) -> None:
    frame = pd.DataFrame({"x": range(30), "y": [2.5] * 10 + [None] * 20})
    manifest = ingest_frame(clients, tmp_path, "flat", frame, "y")
    spec = build_job_spec(
        {**manifest, "columns": [{**c, "max": 9.0} if c["name"] == "y" else c for c in manifest["columns"]]},
        algorithm="ridge",
        candidates=[{}],
        models_bucket=MODELS,
    )  # a stale profile: the trainer checks the rows it reads
    status = run_job(write_job(clients, spec), clients)
    assert (status["state"], status["kind"]) == ("failed", "user")
    assert status["message"] == "regression target 'y' is 2.5 in every row: there is nothing to learn"
