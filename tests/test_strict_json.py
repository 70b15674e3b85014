"""JSON that leaves the platform is strict (null, never NaN or Infinity), and every reader takes a null
metric as the NaN it replaced: not measured."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from typer.testing import CliRunner

from mltp import registry
from mltp.cli import models_cmd
from mltp.cli.output import emit_json
from mltp.evaluation_plots import draw
from mltp.gates import QualityGate
from mltp.s3_json import put_json, read_json
from mltp.trainer.spec import better
from tests.test_registry import MODELS, small_model_bytes, upload

NAN = float("nan")


def strict(text: str | bytes):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def s3(mock_clients):
    client = mock_clients("s3")
    client.create_bucket(Bucket=MODELS)
    return client


def test_a_status_with_an_undefined_roc_auc_is_stored_as_null_and_read_as_not_measured(s3) -> None:
    """What the trainer writes (through put_json) when roc_auc is undefined on the held-out rows, then
    the registry, the gates and the champion comparison reading it back."""
    model_uri, sha256 = upload(s3, "runs/job-1/model.skops", small_model_bytes())
    status = {"state": "succeeded", "metrics": {"accuracy": 0.9, "roc_auc": NAN}, "model_uri": model_uri}
    put_json(s3, MODELS, "runs/job-1/status.json", status)
    stored = strict(s3.get_object(Bucket=MODELS, Key="runs/job-1/status.json")["Body"].read())
    assert stored["metrics"] == {"accuracy": 0.9, "roc_auc": None}
    metrics = read_json(s3, MODELS, "runs/job-1/status.json")[0]["metrics"]

    registry.register_version(
        s3,
        MODELS,
        "auc",
        model_uri=model_uri,
        sha256=sha256,
        metrics=metrics,
        primary_metric="accuracy",
        signature={"inputs": [{"name": "x", "type": "float"}], "target": {"name": "y", "type": "integer"}},
        lineage={"dataset": {"name": "toy"}},
        actor="test:strict-json",
    )
    document = s3.get_object(Bucket=MODELS, Key="models/auc/versions/1/version.json")["Body"].read()
    assert strict(document)["metrics"]["roc_auc"] is None
    found = registry.get_version(s3, MODELS, "auc")
    assert found.metrics == {"accuracy": 0.9, "roc_auc": None}
    assert QualityGate.parse("roc_auc>=0.5").passes(found.metrics) is False
    assert QualityGate.parse("accuracy>=0.5").passes(found.metrics) is True

    by_auc = {"primary_metric": "roc_auc", "metrics": {"roc_auc": 0.8}}
    assert registry.promotion(by_auc, found.as_dict()) == (True, "roc_auc 0.8 beats champion v1 (n/a)")
    unmeasured = {"primary_metric": "roc_auc", "metrics": found.metrics}
    assert registry.promotion(unmeasured, {"version": 1, "metrics": {"roc_auc": 0.6}}) == (
        False,
        "roc_auc n/a does not beat champion v1 (0.6)",
    )


@pytest.mark.parametrize(
    ("metric", "candidate", "incumbent", "wins"),
    [
        ("roc_auc", None, 0.5, False),
        ("roc_auc", NAN, 0.5, False),
        ("roc_auc", None, None, False),
        ("roc_auc", NAN, NAN, False),
        ("roc_auc", 0.5, None, True),
        ("roc_auc", 0.5, NAN, True),
        ("rmse", 2.0, None, True),
        ("rmse", None, 2.0, False),
        ("rmse", 1.0, 2.0, True),
        ("accuracy", 0.8, 0.9, False),
    ],
)
def test_a_metric_not_measured_never_wins(metric, candidate, incumbent, wins) -> None:
    assert better(metric, candidate, incumbent) is wins


def test_cli_json_is_strict(capsys) -> None:
    emit_json({"metrics": {"roc_auc": NAN}, "columns": [{"max": math.inf}], "at": object})
    printed = strict(capsys.readouterr().out)
    assert printed["metrics"] == {"roc_auc": None} and printed["columns"] == [{"max": None}]


def test_the_registered_event_payload_is_strict(monkeypatch) -> None:
    from tasks import registry as registry_tasks

    sent, artifacts = [], []
    monkeypatch.setattr(registry_tasks, "emit_event", lambda event, **fields: sent.append(fields["payload"]))
    monkeypatch.setattr(registry_tasks, "create_markdown_artifact", lambda text, **_: artifacts.append(text))
    monkeypatch.setattr(registry_tasks, "metric_history", lambda blocks, version: None)
    version = {
        "name": "auc",
        "version": 2,
        "model_uri": "s3://models/models/auc/versions/2/model.skops",
        "sha256": "0" * 64,
        "primary_metric": "accuracy",
        "metrics": {"accuracy": 0.9, "roc_auc": NAN},
        "approval": "PendingManualApproval",
        "lineage": {
            "dataset": {"name": "toy", "version": "1" * 16, "sha256": "2" * 64},
            "job_id": "job-1",
            "params": {},
            "run_id": "run-1",
            "compute": {"backend": "local", "reasons": ["asked"]},
            "flow_run_id": "f",
            "flow_run_url": "http://ui/f",
            "code_version": "0",
            "duration_s": 1.0,
            "cost_usd_estimate": 0.0,
        },
    }
    champion = {"version": 1, "metrics": {"accuracy": 0.8, "roc_auc": None}}
    registry_tasks.announce(None, version, champion, None, draw(None))
    assert strict(json.dumps(sent[0], allow_nan=False))["metrics"] == {"accuracy": 0.9, "roc_auc": None}
    assert "| roc_auc | n/a | n/a |" in artifacts[0] and "| accuracy | 0.9 | 0.8 |" in artifacts[0]


def test_models_show_prints_a_metric_not_measured_as_n_a(s3, monkeypatch) -> None:
    model_uri, sha256 = upload(s3, "runs/job-2/model.skops", small_model_bytes())
    registry.register_version(
        s3,
        MODELS,
        "shown",
        model_uri=model_uri,
        sha256=sha256,
        metrics={"accuracy": 0.9, "roc_auc": NAN},
        primary_metric="accuracy",
        signature={"inputs": [{"name": "x", "type": "float"}], "target": {"name": "y", "type": "integer"}},
        lineage={},
        actor="test:strict-json",
    )
    monkeypatch.setattr(models_cmd, "prefect_connection", contextlib.nullcontext)
    monkeypatch.setattr(models_cmd, "models_bucket", lambda: (s3, MODELS))
    shown = CliRunner().invoke(models_cmd.app, ["show", "shown:1"])
    assert shown.exit_code == 0, shown.output
    assert "metrics (accuracy decides): accuracy=0.9, roc_auc=n/a" in shown.output
    assert "classification of target y" in shown.output
    printed = CliRunner().invoke(models_cmd.app, ["show", "shown:1", "--json"])
    assert strict(printed.output)["metrics"] == {"accuracy": 0.9, "roc_auc": None}
    assert strict(printed.output)["task"] == "classification"
