"""`mltp models ...` and `mltp predict` through the console script, on a model trained in the sandbox."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
from sklearn import datasets as toy

from mltp import registry
from mltp.s3_json import read_json
from tests.conftest import run_mltp

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def trained(sandbox, tmp_path_factory) -> dict:
    """Iris ingested and trained through the CLI; the best job's files as the trainer wrote them."""
    folder = tmp_path_factory.mktemp("models-cli")
    dataset = f"iris-{uuid.uuid4().hex[:6]}"
    path = folder / f"{dataset}.csv"
    toy.load_iris(as_frame=True).frame.to_csv(path, index=False)
    assert run_mltp("datasets", "ingest", str(path), "--target", "target", env=sandbox.env).returncode == 0
    result = run_mltp(
        "train",
        "--dataset",
        dataset,
        "--algorithm",
        "logistic_regression",
        "--compute",
        "local",
        "--json",
        env=sandbox.env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = json.loads(result.stdout)["best"]["job_id"]
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    files = {
        leaf: read_json(s3, bucket, f"runs/{job_id}/{leaf}.json")[0]
        for leaf in ("status", "metrics", "signature")
    }
    return {"job_id": job_id, "dataset": dataset, "csv": path, **files}


def register(sandbox, trained, name: str) -> registry.ModelVersion:
    status = trained["status"]
    return registry.register_version(
        sandbox.s3(),
        sandbox.status["buckets"]["models"],
        name,
        model_uri=status["model_uri"],
        sha256=status["model_sha256"],
        metrics=status["metrics"],
        primary_metric=trained["metrics"]["primary_metric"],
        signature=trained["signature"],
        lineage={"dataset": trained["metrics"]["dataset"], "job_ids": [trained["job_id"]]},
        actor="test:models-cli",
    )


@pytest.fixture
def model(sandbox, trained) -> str:
    name = f"iris-model-{uuid.uuid4().hex[:8]}"
    register(sandbox, trained, name)
    register(sandbox, trained, name)
    return name


def ok(*args: str, sandbox) -> str:
    result = run_mltp(*args, env=sandbox.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_list_show_promote_approve_reject(sandbox, model) -> None:
    listed = json.loads(ok("models", "list", "--json", sandbox=sandbox))
    assert {"name": model, "latest_version": 2, "versions": 2, "aliases": {}} in listed
    assert model in ok("models", "list", sandbox=sandbox)

    assert "(was unset)" in ok("models", "promote", f"{model}:1", "--alias", "champion", sandbox=sandbox)
    ok("models", "promote", f"{model}@champion", "--alias", "staging", "--reason", "copy", sandbox=sandbox)
    moved = ok(
        "models", "promote", f"{model}:2", "--alias", "champion", "--reason", "better", sandbox=sandbox
    )
    assert "(was 1)" in moved
    ok("models", "approve", f"{model}:2", "--reason", "checked by hand", sandbox=sandbox)
    ok("models", "reject", f"{model}@staging", "--reason", "superseded", sandbox=sandbox)

    shown = json.loads(ok("models", "show", f"{model}@champion", "--json", sandbox=sandbox))
    assert shown["version"] == 2 and shown["approval"] == "Approved"
    assert shown["aliases"] == {"champion": 2, "staging": 1} and shown["versions"] == [1, 2]
    assert shown["signature"]["inputs"] and shown["lineage"]["job_ids"]
    assert [(e["action"], e["to"]) for e in shown["history"]] == [
        ("registered", 2),
        ("alias", 2),
        ("approval", "Approved"),
    ]
    first = json.loads(ok("models", "show", f"{model}:1", "--json", sandbox=sandbox))
    assert first["approval"] == "Rejected"
    assert first["history"][-1]["actor"].startswith("cli:") and first["history"][-1]["reason"] == "superseded"
    assert "Approved" in ok("models", "show", model, sandbox=sandbox)

    stale = run_mltp(
        "models", "promote", f"{model}:2", "--alias", "staging", "--expected-version", "2", env=sandbox.env
    )
    assert stale.returncode == 2 and "points at version 1, not the expected version 2" in stale.stderr
    rejected = run_mltp("models", "promote", f"{model}:1", "--alias", "champion", env=sandbox.env)
    assert rejected.returncode == 2, rejected.stderr
    assert rejected.stderr.strip().splitlines() == [
        f"mltp: error: {model}:1 is Rejected (superseded, by {first['history'][-1]['actor']}): approve it "
        f"first (`mltp models approve {model}:1 --reason ...`) to point 'champion' at it"
    ]
    assert registry.aliases(sandbox.s3(), sandbox.status["buckets"]["models"], model)["champion"] == 2


def test_predict_checks_the_signature(sandbox, model, trained, tmp_path) -> None:
    frame = pd.read_csv(trained["csv"]).drop(columns="target")
    extra = tmp_path / "extra.csv"
    frame.assign(note="x").to_csv(extra, index=False)
    out = tmp_path / "out.csv"
    result = run_mltp("predict", f"{model}:2", str(extra), "-o", str(out), "--json", env=sandbox.env)
    assert result.returncode == 0, result.stderr
    assert "ignoring columns the model does not use: note" in result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == len(frame) and report["ignored_columns"] == ["note"]
    predicted = pd.read_csv(out)
    classes = trained["signature"]["classes"]
    assert list(predicted.columns) == [
        *frame.columns,
        "note",
        "prediction",
        *(f"probability_{c}" for c in classes),
    ]
    assert len(predicted) == len(frame)
    truth = pd.read_csv(trained["csv"])["target"]
    assert (predicted["prediction"] == truth).mean() > 0.9

    missing = tmp_path / "missing.csv"
    frame.drop(columns=[frame.columns[0], frame.columns[2]]).to_csv(missing, index=False)
    refused = run_mltp("predict", model, str(missing), "-o", str(tmp_path / "no.csv"), env=sandbox.env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"mltp: error: {missing} lacks columns the model needs: {frame.columns[0]}, {frame.columns[2]}"
    ]
    assert not (tmp_path / "no.csv").exists()


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{model}-nope", "no model named '{model}-nope'"),
        ("{model}:9", "has no version 9: versions are 1, 2"),
        ("{model}@gold", "has no alias 'gold': its aliases are none"),
        ("Bad/../name", "invalid model name"),
    ],
)
def test_unknown_or_bad_references_are_one_line_errors(sandbox, model, tmp_path, reference, message) -> None:
    reference, message = reference.format(model=model), message.format(model=model)
    inputs = tmp_path / "in.csv"
    inputs.write_text("a\n1\n")
    for args in (
        ("models", "show", reference),
        (
            "models",
            "approve",
            reference if ":" in reference or "@" in reference else reference + ":1",
            "--reason",
            "r",
        ),
        ("predict", reference, str(inputs), "-o", str(tmp_path / "out.csv")),
    ):
        result = run_mltp(*args, env=sandbox.env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)


def test_a_tampered_model_file_is_refused(sandbox, model, trained, tmp_path) -> None:
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    s3.put_object(Bucket=bucket, Key=f"models/{model}/versions/1/model.skops", Body=b"not the model")
    result = run_mltp(
        "predict", f"{model}:1", str(trained["csv"]), "-o", str(tmp_path / "o.csv"), env=sandbox.env
    )
    assert result.returncode == 1
    assert "has sha256" in result.stderr and "refusing to load it" in result.stderr
