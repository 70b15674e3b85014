"""The whole pipeline the way a user runs it, through the real moto, fleet and Prefect servers:
ingest -> plan -> launch -> monitor -> register (gate, champion, event, artifact) -> predict, and
`mltp demo`, twice."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
from sklearn import datasets as toy

from tests.conftest import run_mltp, wait_for

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def wine(sandbox, tmp_path_factory) -> tuple[str, pd.DataFrame]:
    frame = toy.load_wine(as_frame=True).frame
    name = f"wine-{uuid.uuid4().hex[:6]}"
    path = tmp_path_factory.mktemp("pipeline") / f"{name}.csv"
    frame.to_csv(path, index=False)
    assert run_mltp("datasets", "ingest", str(path), "--target", "target", env=sandbox.env).returncode == 0
    return name, frame


def run_train(sandbox, dataset: str, *args: str) -> dict:
    result = run_mltp("train", "--dataset", dataset, "--compute", "ec2", *args, "--json", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def events_for(sandbox, name: str) -> list[dict]:
    body = {
        "filter": {
            "event": {"name": ["mltp.model.registered"]},
            "resource": {"id": [f"mltp.model.{name}"]},
            "any_resource": None,
        },
        "limit": 50,
    }
    return sandbox.api("/events/filter", body)["events"]


def test_train_register_promote_and_predict(sandbox, wine, tmp_path) -> None:
    dataset, frame = wine
    model = f"m-{uuid.uuid4().hex[:8]}"
    first = run_train(
        sandbox,
        dataset,
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=5",
        "--model-name",
        model,
        "--promote",
    )
    assert (first["registered"], first["version"], first["promoted"]) == (True, 1, True)
    second = run_train(
        sandbox,
        dataset,
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=60",
        "--model-name",
        model,
        "--promote",
        "--min-metric",
        "accuracy>=0.5",
    )
    assert second["version"] == 2
    beats = second["metrics"]["accuracy"] > first["metrics"]["accuracy"]
    assert second["promoted"] is beats

    shown = json.loads(run_mltp("models", "show", f"{model}@champion", "--json", env=sandbox.env).stdout)
    assert shown["version"] == (2 if beats else 1)
    lineage = shown["lineage"]
    assert lineage["dataset"]["name"] == dataset and lineage["flow_run_url"].startswith("http://127.0.0.1:")
    assert lineage["compute"]["backend"] == "ec2" and lineage["compute"]["reasons"]
    assert lineage["versions"]["scikit-learn"] and lineage["code_version"]

    # The server stores events in batches: the second may come a few seconds after its command ended.
    events = wait_for(lambda: len(found := events_for(sandbox, model)) >= 2 and found, timeout=30, every=0.5)
    assert sorted(event["payload"]["version"] for event in events) == [1, 2]
    artifacts = sandbox.api("/artifacts/filter", {"artifacts": {"key": {"any_": [f"model-{model}"]}}})
    assert artifacts and "## Lineage" in artifacts[0]["data"]

    sample = tmp_path / "rows.csv"
    frame.drop(columns=["target"]).head(12).to_csv(sample, index=False)
    out = tmp_path / "predicted.csv"
    predicted = run_mltp("predict", f"{model}@champion", str(sample), "-o", str(out), env=sandbox.env)
    assert predicted.returncode == 0, predicted.stderr
    assert len(pd.read_csv(out)) == 12 and "prediction" in pd.read_csv(out).columns


def test_a_failed_quality_gate_registers_nothing(sandbox, wine) -> None:
    dataset, _ = wine
    model = f"m-{uuid.uuid4().hex[:8]}"
    report = run_train(
        sandbox, dataset, "--algorithm", "knn", "--model-name", model, "--min-metric", "accuracy>1.5"
    )
    assert (report["status"], report["registered"], report["version"]) == ("succeeded", False, None)
    assert report["gate"] == "accuracy>1.5"
    missing = run_mltp("models", "show", model, env=sandbox.env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--min-metric", "accuracy=>0.9"], "is not METRIC OP NUMBER"),
        (["--min-metric", "rmse<3"], "'rmse' is a regression metric"),
        (["--model-name", "Bad_Name!"], "Bad_Name!"),
    ],
)
def test_bad_registration_input_is_refused_before_launch(sandbox, wine, arguments, message) -> None:
    dataset, _ = wine
    before = sandbox.live_instances()
    result = run_mltp("train", "--dataset", dataset, "--algorithm", "knn", *arguments, env=sandbox.env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sandbox.live_instances() == before


def test_demo_runs_end_to_end_and_again(sandbox) -> None:
    runs = []
    for _ in range(2):
        result = run_mltp("demo", "--json", env=sandbox.env, timeout=600)
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    for summary in runs:
        cancer, churn = summary["runs"]
        assert cancer["compute"] == "lambda" and churn["compute"].startswith("ec2 (3 x ")
        assert churn["rows"] > 100_000
        assert summary["prediction"]["rows"] == 5
        assert summary["prefect_ui_url"] == sandbox.status["prefect_ui_url"]
    assert [row["version"] for row in runs[1]["runs"]] == [row["version"] + 1 for row in runs[0]["runs"]]
    assert runs[0]["runs"][0]["promoted"]
