"""`mltp plan` and `mltp train --compute local` through the console script and the sandbox."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from sklearn import datasets as toy

from tests.conftest import run_mltp

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def ingested(sandbox, tmp_path_factory) -> dict[str, str]:
    """Real datasets shipped with scikit-learn, ingested once through the CLI."""
    folder = tmp_path_factory.mktemp("toy")
    names = {}
    for loader in (toy.load_breast_cancer, toy.load_diabetes, toy.load_wine):
        name = f"{loader.__name__.removeprefix('load_').replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        path = folder / f"{name}.csv"
        loader(as_frame=True).frame.to_csv(path, index=False)
        result = run_mltp("datasets", "ingest", str(path), "--target", "target", env=sandbox.env)
        assert result.returncode == 0, result.stderr
        names[loader.__name__] = name
    return names


def runs_in(sandbox) -> list[str]:
    listed = sandbox.s3().list_objects_v2(Bucket=sandbox.status["buckets"]["models"], Prefix="runs/")
    return sorted(entry["Key"] for entry in listed.get("Contents", []))


def test_plan_json(sandbox, ingested) -> None:
    result = run_mltp(
        "plan",
        "--dataset",
        ingested["load_breast_cancer"],
        "--algorithm",
        "random_forest",
        "--grid",
        "n_estimators=50,100",
        "--json",
        env=sandbox.env,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    for key in (
        "backend",
        "instance_type",
        "memory_mb",
        "instances",
        "reasons",
        "estimated_runtime_s",
        "estimated_cost_usd",
    ):
        assert key in plan
    assert plan["backend"] == "lambda" and plan["reasons"]
    forced = json.loads(
        run_mltp(
            "plan",
            "--dataset",
            ingested["load_breast_cancer"],
            "--algorithm",
            "knn",
            "--compute",
            "ec2",
            "--json",
            env=sandbox.env,
        ).stdout
    )
    assert forced["backend"] == "ec2" and forced["instance_type"]


def cloudwatch_progress(sandbox, job_id: str) -> list[float]:
    import boto3
    import pandas as pd

    cloudwatch = boto3.client("cloudwatch", endpoint_url=sandbox.aws_endpoint_url, region_name="us-east-1")
    now = pd.Timestamp.now(tz="UTC")
    result = cloudwatch.get_metric_statistics(
        Namespace="ML/Training",
        MetricName="TrainingProgress",
        Dimensions=[{"Name": "JobId", "Value": job_id}],
        StartTime=now - pd.Timedelta(hours=1),
        EndTime=now + pd.Timedelta(hours=1),
        Period=60,
        Statistics=["Maximum"],
    )
    return [point["Maximum"] for point in result["Datapoints"]]


@pytest.mark.parametrize(
    ("dataset", "arguments", "metric_keys"),
    [
        (
            "load_breast_cancer",
            ["--algorithm", "random_forest", "--grid", "n_estimators=20,40"],
            {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"},
        ),
        (
            "load_wine",
            ["--algorithm", "hist_gradient_boosting", "--param", "max_iter=30", "--folds", "3"],
            {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"},
        ),
        (
            "load_diabetes",
            ["--algorithm", "ridge", "--param", "alpha=0.5", "--metric", "rmse"],
            {"r2", "rmse", "mae"},
        ),
    ],
)
def test_train_locally_end_to_end(sandbox, ingested, dataset, arguments, metric_keys) -> None:
    result = run_mltp(
        "train", "--dataset", ingested[dataset], *arguments, "--compute", "local", "--json", env=sandbox.env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "succeeded"
    assert set(report["metrics"]) == metric_keys
    assert report["compute"]["backend"] == "local" and report["compute"]["reasons"]
    job_id = report["best"]["job_id"]
    assert {
        f"runs/{job_id}/{name}"
        for name in ("job.json", "metrics.json", "model.skops", "signature.json", "status.json")
    } <= set(runs_in(sandbox))
    assert max(cloudwatch_progress(sandbox, job_id)) == 1.0
    import boto3

    logs = boto3.client("logs", endpoint_url=sandbox.aws_endpoint_url, region_name="us-east-1")
    events = logs.get_log_events(logGroupName="/mltp/training", logStreamName=job_id)["events"]
    assert any("progress 100%" in event["message"] for event in events)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--algorithm", "xgboost"], "unknown algorithm 'xgboost': choose one of"),
        (["--algorithm", "random_forest", "--param", "n_estimators=-1"], "Got -1 instead"),
        (["--algorithm", "random_forest", "--param", "max_depth=deep"], "Got 'deep' instead"),
        (["--algorithm", "ridge"], "does only regression, but the task is classification"),
        (["--algorithm", "knn", "--task", "regression", "--target", "target", "--no-register"], None),
        (["--algorithm", "knn", "--compute", "gpu"], "--compute 'gpu': use auto, lambda, ec2, local"),
        (["--algorithm", "random_forest", "--grid", "n_estimators="], "Got '' instead"),
        (["--algorithm", "knn", "--metric", "r2"], "'r2' is a regression metric"),
    ],
)
def test_bad_training_input_is_refused_before_launch(sandbox, ingested, arguments, message) -> None:
    before = runs_in(sandbox)
    result = run_mltp("train", "--dataset", ingested["load_breast_cancer"], *arguments, env=sandbox.env)
    if message is None:  # a 0/1 integer target can be regressed on: that is allowed
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert runs_in(sandbox) == before


def test_regression_on_a_text_target_is_refused(sandbox, tmp_path) -> None:
    path = tmp_path / f"pets-{uuid.uuid4().hex[:6]}.csv"
    path.write_text("weight,kind\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(50)))
    assert run_mltp("datasets", "ingest", str(path), "--target", "kind", env=sandbox.env).returncode == 0
    result = run_mltp(
        "train", "--dataset", path.stem, "--algorithm", "ridge", "--task", "regression", env=sandbox.env
    )
    assert result.returncode == 2
    assert "regression target 'kind' is not numeric" in result.stderr


def test_a_model_name_holding_the_other_task_is_refused_before_launch(sandbox, ingested) -> None:
    """A name holding a regression model, then classification training told to register (and promote)
    under it: one line, exit 2, before anything runs; nothing registered."""
    import skops.io as sio
    from sklearn.linear_model import Ridge

    from mltp import registry

    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    name = f"held-{uuid.uuid4().hex[:8]}"
    data = sio.dumps(Ridge().fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0]))
    s3.put_object(Bucket=bucket, Key=f"tests/{name}/model.skops", Body=data)
    registry.register_version(
        s3,
        bucket,
        name,
        model_uri=f"s3://{bucket}/tests/{name}/model.skops",
        sha256=hashlib.sha256(data).hexdigest(),
        metrics={"r2": 0.5, "rmse": 1.0, "mae": 1.0},
        primary_metric="r2",
        signature={"inputs": [{"name": "x", "type": "float"}], "target": {"name": "target", "type": "float"}},
        lineage={},
        actor="test:train-cli",
    )
    before = runs_in(sandbox)
    result = run_mltp(
        "train",
        "--dataset",
        ingested["load_breast_cancer"],
        "--algorithm",
        "knn",
        "--compute",
        "local",
        "--model-name",
        name,
        "--promote",
        env=sandbox.env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"model '{name}' holds regression of 'target' models, not classification of 'target'" in lines[0]
    assert runs_in(sandbox) == before
    assert registry.version_numbers(s3, bucket, name) == ({1}, {1})


def test_a_command_runs_its_flow_without_prefect_heartbeats_unless_they_are_configured() -> None:
    # Prefect waits up to a second for its heartbeat thread at the end of every flow run.
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    from mltp.cli.context import _no_flow_heartbeats_unless_configured

    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default
    with _no_flow_heartbeats_unless_configured():
        assert get_current_settings().flows.heartbeat_frequency is None
    with (
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}),
        _no_flow_heartbeats_unless_configured(),
    ):
        assert get_current_settings().flows.heartbeat_frequency == 60
