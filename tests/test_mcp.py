"""The MCP server's read-only tools and resources through the SDK's in-memory client, on moto's in-process
mock: schemas, annotations, structured output, one-line error results. `test_mcp_stdio.py` drives the
real `mltp mcp serve` over stdio against the sandbox."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from mcp import Client
from sklearn import datasets as toy

from blocks.platform import build_blocks
from mltp import datasets, registry
from mltp.jobs import build_job_spec, write_job
from mltp.mcp.platform import Platform
from mltp.mcp.server import build_server
from mltp.s3_json import read_json
from mltp.settings import PlatformSettings
from mltp.trainer.algorithms import ALGORITHMS
from mltp.trainer.runner import run_job

DATA, MODELS = "mcp-data", "mcp-models"
READ_TOOLS = {
    "list_datasets",
    "describe_dataset",
    "plan_training",
    "list_models",
    "describe_model",
    "model_history",
    "platform_status",
}


@pytest.fixture
def platform(mock_clients, tmp_path, monkeypatch):
    """Blocks on the mock, an iris dataset, and model `iris` with version 1 (champion) and version 2."""
    monkeypatch.setenv("MLTP_HOME", str(tmp_path / "home"))  # no sandbox: platform_status finds no API
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for bucket in (DATA, MODELS):
        mock_clients("s3").create_bucket(Bucket=bucket)
    settings = PlatformSettings(
        data_bucket=DATA, models_bucket=MODELS, access_key_id="x", secret_access_key="x"
    )
    blocks = build_blocks(settings)
    frame = toy.load_iris(as_frame=True).frame
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    manifest = datasets.ingest(mock_clients, DATA, str(path), target="target").manifest
    spec = build_job_spec(manifest, algorithm="knn", candidates=[{}], models_bucket=MODELS)
    status = run_job(write_job(mock_clients, spec), mock_clients)
    s3 = mock_clients("s3")
    written = {
        leaf: read_json(s3, MODELS, f"runs/{spec.job_id}/{leaf}.json")[0] for leaf in ("metrics", "signature")
    }
    for metrics in (status["metrics"], {**status["metrics"], "roc_auc": math.nan}):
        registry.register_version(
            s3, MODELS, "iris", model_uri=status["model_uri"], sha256=status["model_sha256"], metrics=metrics,
            primary_metric="accuracy", signature=written["signature"],
            lineage={"dataset": written["metrics"]["dataset"], "job_ids": [spec.job_id]}, actor="test:mcp",
        )  # fmt: skip
    registry.set_alias(s3, MODELS, "iris", "champion", 1, actor="test:mcp", reason="first")
    return Platform(blocks)


def call(platform, tool: str, arguments: dict | None = None):
    async def go():
        async with Client(build_server(platform)) as client:
            return await client.call_tool(tool, arguments or {})

    return asyncio.run(go())


def listing(platform):
    async def go():
        async with Client(build_server(platform)) as client:
            return (await client.list_tools()).tools, (
                await client.list_resource_templates()
            ).resource_templates

    return asyncio.run(go())


def read(platform, uri: str) -> dict:
    async def go():
        async with Client(build_server(platform)) as client:
            return await client.read_resource(uri)

    return json.loads(asyncio.run(go()).contents[0].text)


def error_line(result) -> str:
    assert result.is_error, result
    [content] = result.content
    assert "\n" not in content.text and "Traceback" not in content.text, content.text
    return content.text


def test_every_tool_is_read_only_titled_described_and_typed(platform) -> None:
    tools, templates = listing(platform)
    assert {tool.name for tool in tools} == READ_TOOLS
    for tool in tools:
        assert tool.title and tool.description, tool.name
        assert tool.annotations.read_only_hint and tool.annotations.idempotent_hint, tool.name
        assert tool.annotations.open_world_hint is False, tool.name
        assert tool.output_schema and tool.output_schema["type"] == "object", tool.name
        for name, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), (tool.name, name)
    plan = next(tool for tool in tools if tool.name == "plan_training").input_schema["properties"]
    assert plan["algorithm"]["enum"] == list(ALGORITHMS)
    assert plan["compute"]["enum"] == ["auto", "lambda", "ec2", "local"]
    assert (plan["folds"]["anyOf"][0]["minimum"], plan["folds"]["anyOf"][0]["maximum"]) == (2, 20)
    assert sorted(t.uri_template for t in templates) == [
        "mltp://datasets/{name}",
        "mltp://models/{name}/{version}",
    ]


def test_datasets_are_listed_and_described(platform) -> None:
    listed = call(platform, "list_datasets")
    assert not listed.is_error
    [entry] = listed.structured_content["datasets"]
    assert (entry["name"], entry["rows"], entry["versions"]) == ("iris", 150, 1)
    assert listed.content[0].text == "1 dataset(s): iris"
    described = call(platform, "describe_dataset", {"name": "iris", "version": entry["latest"]})
    manifest = described.structured_content
    assert (manifest["target"], manifest["task"], len(manifest["columns"])) == ("target", "classification", 5)
    assert described.content[0].text.startswith(f"iris@{entry['latest']}: 150 rows, 5 columns, target target")
    assert read(platform, "mltp://datasets/iris")["sha256"] == manifest["sha256"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"name": "ghost"}, "no dataset named 'ghost'"),
        ({"name": "Bad Name"}, "dataset name 'Bad Name' is not allowed"),
        ({"name": "iris", "version": "0000000000000000"}, "iris@0000000000000000 does not exist"),
    ],
)
def test_an_unknown_dataset_is_a_one_line_error_result(platform, arguments, message) -> None:
    assert message in error_line(call(platform, "describe_dataset", arguments))


def test_a_plan_says_where_how_long_what_it_costs_and_why(platform) -> None:
    planned = call(platform, "plan_training", {"dataset": "iris", "algorithm": "random_forest",
                                                "grid": {"max_depth": [4, 8]}})  # fmt: skip
    plan = planned.structured_content
    assert (plan["backend"], plan["task"], plan["target"]) == ("lambda", "classification", "target")
    assert plan["candidates"] == [{"max_depth": 4}, {"max_depth": 8}]
    assert plan["estimated_cost_usd"] > 0 and "within the Lambda threshold" in plan["reasons"][0]
    assert planned.content[0].text.startswith("lambda (3008 MB): about ")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"algorithm": "xgboost"}, "algorithm"),  # not in the enum: the schema refuses it
        ({"algorithm": "knn", "folds": 1}, "folds"),
        ({"algorithm": "knn", "hyperparameters": {"n_neighbors": -1}}, "Got -1 instead"),
        ({"algorithm": "ridge"}, "'ridge' does only regression, but the task is classification"),
        ({"algorithm": "knn", "target": "colour"}, "target 'colour' is not a column"),
        ({"algorithm": "random_forest", "compute": "lambda", "hyperparameters": {"n_estimators": 100_000}},
         "compute=lambda is refused"),
    ],
)  # fmt: skip
def test_a_plan_that_cannot_be_made_is_a_one_line_error_result(platform, arguments, message) -> None:
    result = call(platform, "plan_training", {"dataset": "iris", **arguments})
    assert result.is_error and message in result.content[0].text, result.content


def test_models_are_described_beside_the_champion_with_strict_json(platform) -> None:
    listed = call(platform, "list_models").structured_content["models"]
    assert listed == [{"name": "iris", "latest_version": 2, "versions": 2, "aliases": {"champion": 1}}]
    described = call(platform, "describe_model", {"reference": "iris"})
    card = described.structured_content
    assert (card["version"], card["task"], card["target"], card["aliases"]) == (
        2,
        "classification",
        "target",
        [],
    )
    assert card["metrics"]["roc_auc"] is None and card["champion"]["version"] == 1  # NaN is null
    assert "roc_auc=n/a" in described.content[0].text
    champion = call(platform, "describe_model", {"reference": "iris@champion"}).structured_content
    assert champion["aliases"] == ["champion"] and champion["approval"] == "PendingManualApproval"
    assert read(platform, "mltp://models/iris/1")["version"] == 1


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("ghost", "no model named 'ghost'"),
        ("iris:9", "has no version 9"),
        ("iris@gold", "has no alias 'gold'"),
    ],
)
def test_an_unknown_model_reference_is_a_one_line_error_result(platform, reference, message) -> None:
    assert message in error_line(call(platform, "describe_model", {"reference": reference}))


def test_a_models_history_lists_its_audit_log(platform) -> None:
    history = call(platform, "model_history", {"name": "iris"}).structured_content
    assert [event["action"] for event in history["events"]] == ["registered", "registered", "alias"]
    assert history["events"][-1]["details"]["alias"] == "champion"
    assert "no model named 'ghost'" in error_line(call(platform, "model_history", {"name": "ghost"}))


def test_platform_status_reports_a_missing_prefect_api_with_its_fix(platform) -> None:
    status = call(platform, "platform_status")
    assert not status.is_error and status.structured_content["ok"] is False
    first = status.structured_content["checks"][0]
    assert (first["name"], first["status"]) == ("prefect-api", "fail") and first["fix"]
    assert status.content[0].text == "failed: prefect-api"


def test_results_are_strict_json(platform) -> None:
    card = call(platform, "describe_model", {"reference": "iris:2"})
    assert json.loads(json.dumps(card.structured_content, allow_nan=False)) == card.structured_content
