"""The MCP server's tools and resources through the SDK's in-memory client, on moto's in-process mock:
schemas, annotations, structured output, one-line error results, the write guardrails and the audit.
`test_mcp_stdio.py` drives the real `mltp mcp serve` over stdio against the sandbox."""

from __future__ import annotations

import asyncio
import json
import math
import re

import mcp_types
import pandas as pd
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from sklearn import datasets as toy

from blocks.platform import build_blocks
from mltp import datasets, registry
from mltp.errors import MltpError
from mltp.jobs import build_job_spec, write_job
from mltp.mcp.options import ServeOptions
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
    "list_runs",
    "get_run",
    "wait_for_run",
    "diagnose_run",
}
WRITE_TOOLS = {
    "ingest_dataset",
    "promote_model",
    "approve_model",
    "reject_model",
    "predict",
    "start_training",
    "cancel_run",
}
ADDITIVE = {"ingest_dataset", "predict", "start_training"}  # they add; the other writes replace or stop


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
    evaluation = read_json(s3, MODELS, f"runs/{spec.job_id}/evaluation.json")[0]
    for metrics, evaluated in (
        (status["metrics"], None),
        ({**status["metrics"], "roc_auc": math.nan}, evaluation),
    ):
        registry.register_version(  # version 1 as registered before the trainer wrote evaluation.json
            s3, MODELS, "iris", model_uri=status["model_uri"], sha256=status["model_sha256"], metrics=metrics,
            primary_metric="accuracy", signature=written["signature"],
            lineage={"dataset": written["metrics"]["dataset"], "job_ids": [spec.job_id]}, actor="test:mcp",
            evaluation=evaluated,
        )  # fmt: skip
    registry.set_alias(s3, MODELS, "iris", "champion", 1, actor="test:mcp", reason="first")
    return Platform(blocks, audit_sink=AUDITED.append)


AUDITED: list[dict] = []


@pytest.fixture(autouse=True)
def _fresh_audit():
    AUDITED.clear()


def call(platform, tool: str, arguments: dict | None = None, options: ServeOptions | None = None):
    async def go():
        async with Client(build_server(platform, options)) as client:
            return await client.call_tool(tool, arguments or {})

    return asyncio.run(go())


def listing(platform):
    async def go():
        async with Client(build_server(platform)) as client:
            return (await client.list_tools()).tools, (
                await client.list_resource_templates()
            ).resource_templates

    return asyncio.run(go())


def read_text(platform, uri: str) -> tuple[str, str]:
    """A resource's text and MIME type."""

    async def go():
        async with Client(build_server(platform)) as client:
            return await client.read_resource(uri)

    [content] = asyncio.run(go()).contents
    return content.text, content.mime_type


def read(platform, uri: str) -> dict:
    return json.loads(read_text(platform, uri)[0])


def error_line(result) -> str:
    assert result.is_error, result
    [content] = result.content
    assert "\n" not in content.text and "Traceback" not in content.text, content.text
    return content.text


def test_every_tool_is_titled_described_typed_and_honestly_annotated(platform) -> None:
    tools, templates = listing(platform)
    assert {tool.name for tool in tools} == READ_TOOLS | WRITE_TOOLS
    for tool in tools:
        assert tool.title and tool.description, tool.name
        assert tool.annotations.read_only_hint is (tool.name in READ_TOOLS), tool.name
        # The same call again changes nothing more; but each start_training call starts one more run.
        assert tool.annotations.idempotent_hint is (tool.name != "start_training"), tool.name
        if tool.name in WRITE_TOOLS:
            assert tool.annotations.destructive_hint is (tool.name not in ADDITIVE), tool.name
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
        "mltp://models/{name}/{version}/card",
        "mltp://runs/{run_id}",
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
        ({"algorithm": "xgboost"}, "plan_training: algorithm: Input should be 'logistic_regression', "),
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
    assert message in error_line(result)


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("start_training", {"dataset": "iris", "algorithm": "knn", "folds": "many"},
         "start_training: folds: Input should be a valid integer, unable to parse string as an integer "
         "(got 'many'): fix the argument"),
        ("start_training", {"algorithm": "xgboost"},
         "start_training: dataset: Field required; algorithm: Input should be 'logistic_regression'"),
        ("predict", {"reference": "iris", "rows": "a,b\n1,2"},
         "predict: rows: Input should be a valid list (got 'a,b\\n1,2')"),
        ("wait_for_run", {"run_id": "x", "max_wait_s": 601}, "wait_for_run: max_wait_s: Input should be less "
         "than or equal to 600 (got 601)"),
        ("describe_model", {}, "describe_model: reference: Field required: fix the argument"),
    ],
)  # fmt: skip
def test_arguments_that_do_not_fit_the_schema_are_named_in_one_line(platform, tool, arguments, message):
    result = call(platform, tool, arguments, ServeOptions(allow_write=True))
    assert message in error_line(result)
    assert AUDITED[-1]["error"] == error_line(result)  # audited as the agent saw it


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


def test_a_model_card_is_a_resource(platform) -> None:
    from tests.test_evaluation_plots import CARD_SECTIONS, parse_card

    html, mime_type = read_text(platform, "mltp://models/iris/2/card")
    card = parse_card(html)
    assert mime_type == "text/html" and card.sections == list(CARD_SECTIONS) and card.external == []
    assert [image["alt"] for image in card.images][:2] == ["Confusion matrix", "ROC curve"]
    assert "accuracy by version" in [image["alt"] for image in card.images]
    old = parse_card(read_text(platform, "mltp://models/iris/1/card")[0])
    assert "Confusion matrix" not in [image["alt"] for image in old.images]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mltp://models/ghost/1/card", "no model named 'ghost'"),
        ("mltp://models/iris/9/card", "has no version 9"),
    ],
)
def test_an_unknown_model_card_is_a_one_line_error(platform, uri, message) -> None:
    with pytest.raises(ExceptionGroup) as refused:  # the client's task group carries the protocol error
        read_text(platform, uri)
    assert refused.group_contains(MCPError, match=rf"^[^\n]*{re.escape(message)}[^\n]*$")


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


WRITES = {
    "ingest_dataset": {"source": "iris.csv"},
    "promote_model": {"reference": "iris:2"},
    "approve_model": {"reference": "iris:2", "reason": "looks right"},
    "reject_model": {"reference": "iris:2", "reason": "drifted"},
    "predict": {"reference": "iris:1", "input_path": "batch.csv"},
    "start_training": {"dataset": "iris", "algorithm": "knn"},
    "cancel_run": {"run_id": "00000000-0000-0000-0000-000000000000"},
}


def registry_and_data(mock_clients) -> list[str]:
    return sorted(
        entry["Key"]
        for bucket in (DATA, MODELS)
        for entry in mock_clients("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    )


@pytest.mark.parametrize("tool", sorted(WRITES))
def test_a_write_tool_refuses_unless_the_server_allows_writes(platform, mock_clients, tool) -> None:
    before = registry_and_data(mock_clients)
    message = error_line(call(platform, tool, WRITES[tool]))
    assert f"{tool} changes the platform and this server is read-only" in message
    assert "--allow-write" in message
    assert registry_and_data(mock_clients) == before


def test_approve_reject_and_promote_with_writes_allowed(platform, tmp_path) -> None:
    writable = ServeOptions(allow_write=True, root=tmp_path)
    approved = call(platform, "approve_model", {"reference": "iris:2", "reason": "reviewed"}, writable)
    assert approved.structured_content == {"name": "iris", "version": 2, "approval": "Approved",
                                           "previous": "PendingManualApproval"}  # fmt: skip
    moved = call(platform, "promote_model", {"reference": "iris:2", "expected_version": 1}, writable)
    assert moved.structured_content == {"name": "iris", "alias": "champion", "version": 2, "previous": 1}
    call(platform, "reject_model", {"reference": "iris:1", "reason": "worse"}, writable)
    refused = error_line(call(platform, "promote_model", {"reference": "iris:1"}, writable))
    assert "iris:1 is Rejected (worse, by mcp:" in refused and "approve it first" in refused
    stale = error_line(
        call(platform, "promote_model", {"reference": "iris:2", "expected_version": 1}, writable)
    )
    assert "not the expected version 1" in stale
    unpinned = error_line(call(platform, "promote_model", {"reference": "iris"}, writable))
    assert "name the version, as NAME:VERSION" in unpinned
    history = call(platform, "model_history", {"name": "iris"}).structured_content["events"]
    assert history[-1]["actor"].startswith("mcp:")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("../outside.csv", "is outside the server's root"),
        ("link.csv", "is outside the server's root"),  # a symlink inside the root to a file outside it
        ("/etc/passwd", "is outside the server's root"),
        ("s3://someone-elses-bucket/data.csv", "is outside the data bucket s3://mcp-data"),
        (f"s3://{DATA}-other/data.csv", "is outside the data bucket"),
        ("missing.csv", "does not exist: check the path"),
    ],
)
def test_an_ingest_outside_what_the_server_may_read_is_refused(
    platform, mock_clients, tmp_path, source, message
):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.csv").write_text("a,b\n1,2\n")
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    before = registry_and_data(mock_clients)
    result = call(platform, "ingest_dataset", {"source": source}, ServeOptions(allow_write=True, root=root))
    assert message in error_line(result)
    assert registry_and_data(mock_clients) == before


def test_every_call_is_audited_with_secrets_redacted(platform) -> None:
    call(platform, "describe_dataset", {"name": "iris"})
    call(platform, "describe_dataset", {"name": "ghost"})
    call(platform, "plan_training", {"dataset": "iris", "algorithm": "knn",
                                     "hyperparameters": {"api_key": "s3cr3t", "n_neighbors": 3}})  # fmt: skip
    ok, refused, planned = AUDITED
    assert (ok["tool"], ok["outcome"], ok["error"], ok["arguments"]) == ("describe_dataset", "ok", None,
                                                                         {"name": "iris"})  # fmt: skip
    assert refused["outcome"] == "error" and "no dataset named 'ghost'" in refused["error"]
    assert planned["arguments"]["hyperparameters"] == {"api_key": "[redacted]", "n_neighbors": 3}
    assert all(record["duration_ms"] >= 0 and record["client"]["name"] for record in AUDITED)
    assert "s3cr3t" not in json.dumps(AUDITED)


def iris_rows(count: int = 5) -> list[dict]:
    frame = toy.load_iris(as_frame=True).frame.drop(columns="target")
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return frame.sample(count, random_state=1).to_dict(orient="records")


def test_predict_on_rows_given_in_the_call(platform, tmp_path) -> None:
    rows = [{**row, "note": "extra"} for row in iris_rows()]
    result = call(platform, "predict", {"reference": "iris@champion", "rows": rows},
                  ServeOptions(allow_write=True, root=tmp_path))  # fmt: skip
    answered = result.structured_content
    assert (answered["model"], answered["version"], answered["rows"], answered["output"]) == (
        "iris",
        1,
        5,
        None,
    )
    assert [
        set(row) >= {"prediction", "probability_0", "probability_2", "note"}
        for row in answered["predictions"]
    ]
    assert (
        answered["ignored_columns"] == ["note"]
        and "ignoring columns the model does not use: note" in (answered["warnings"][0])
    )
    assert {row["prediction"] for row in answered["predictions"]} <= {0, 1, 2}


def test_predict_on_a_file_under_the_root_writes_beside_it(platform, tmp_path) -> None:
    pd.DataFrame(iris_rows(30)).to_csv(tmp_path / "batch.csv", sep=";", index=False)
    result = call(platform, "predict", {"reference": "iris:1", "input_path": "batch.csv"},
                  ServeOptions(allow_write=True, root=tmp_path))  # fmt: skip
    answered = result.structured_content
    written = pd.read_csv(tmp_path / "batch.predictions.csv")
    assert (
        answered["output"] == str(tmp_path / "batch.predictions.csv")
        and len(written) == answered["rows"] == 30
    )
    assert len(answered["predictions"]) == 20  # a sample of a file's predictions
    assert list(written["prediction"][:20]) == [row["prediction"] for row in answered["predictions"]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"reference": "iris:1"}, "give either rows"),
        ({"reference": "iris:1", "rows": iris_rows(1), "input_path": "batch.csv"}, "give either rows"),
        ({"reference": "iris:1", "rows": iris_rows(1) * 1001}, "rows"),  # over the schema's 1,000
        ({"reference": "iris:1", "input_path": "../batch.csv"}, "is outside the server's root"),
        ({"reference": "iris:1", "input_path": f"s3://{DATA}/x.csv"}, "input_path is a local file"),
        ({"reference": "ghost", "rows": iris_rows(1)}, "no model named 'ghost'"),
        ({"reference": "iris:1", "rows": [{"sepal_length": 5.1}]}, "lacks columns the model needs"),
        ({"reference": "iris:1", "rows": [{**iris_rows(1)[0], "petal_width": "inf"}]},
         "column 'petal_width' has an infinite number in row 1"),
        ({"reference": "iris:1", "rows": [{**iris_rows(1)[0], "prediction": 1}]},
         "has column(s) the output adds: prediction"),
    ],
)  # fmt: skip
def test_a_prediction_that_cannot_be_made_is_a_one_line_error(platform, tmp_path, arguments, message) -> None:
    result = call(platform, "predict", arguments, ServeOptions(allow_write=True, root=tmp_path / "root"))
    assert result.is_error and message in result.content[0].text, result.content
    assert not list(tmp_path.glob("**/*.predictions.csv"))


def test_predicting_with_a_rejected_version_warns(platform, tmp_path) -> None:
    writable = ServeOptions(allow_write=True, root=tmp_path)
    call(platform, "reject_model", {"reference": "iris:2", "reason": "drifted"}, writable)
    answered = call(
        platform, "predict", {"reference": "iris:2", "rows": iris_rows(2)}, writable
    ).structured_content
    warning = f"iris:2 is Rejected (drifted, by {answered_actor(platform)}); predicting with it anyway"
    assert answered["warnings"] == [warning]


def answered_actor(platform) -> str:
    from mltp import registry

    s3, bucket = platform.models()
    return registry.audit_log(s3, bucket, "iris")[-1]["actor"]


@pytest.mark.parametrize(
    ("options", "arguments", "message"),
    [
        (ServeOptions(allow_write=True, max_cost_usd=0.0), {}, "estimated cost $0.0"),
        (ServeOptions(allow_write=True, max_cost_usd=0.0), {}, "over this server's cap of $0.00 a run"),
        (
            ServeOptions(allow_write=True, compute=("lambda",)),
            {"compute": "ec2"},
            "compute=ec2 is not allowed",
        ),
        (ServeOptions(allow_write=True, compute=("auto", "ec2")), {}, "the planner chose lambda, which this"),
        (ServeOptions(allow_write=True), {"algorithm": "ridge"}, "'ridge' does only regression"),
        (ServeOptions(allow_write=True), {"model_name": "Bad Name"}, "invalid model name 'Bad Name'"),
        (ServeOptions(allow_write=True), {"dataset": "ghost"}, "no dataset named 'ghost'"),
    ],
)
def test_a_training_run_is_planned_and_refused_before_anything_starts(platform, options, arguments, message):
    result = call(platform, "start_training", {"dataset": "iris", "algorithm": "knn", **arguments}, options)
    assert message in error_line(result)


@pytest.mark.parametrize("tool", ["get_run", "wait_for_run", "diagnose_run", "cancel_run"])
def test_a_run_id_that_is_not_one_is_refused(platform, tool) -> None:
    result = call(platform, tool, {"run_id": "../etc"}, ServeOptions(allow_write=True))
    assert "'../etc' is not a run id: use one start_training or list_runs gave" in error_line(result)


def test_tools_and_exclude_tools_narrow_what_an_agent_sees(platform) -> None:
    options = ServeOptions(
        allow_write=True, tools=("list_datasets", "predict", "get_run"), exclude_tools=("get_run",)
    )

    async def go():
        async with Client(build_server(platform, options)) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            return names, await client.call_tool("describe_dataset", {"name": "iris"})

    names, hidden = asyncio.run(go())
    assert names == ["list_datasets", "predict"]
    assert hidden.is_error and "describe_dataset" in hidden.content[0].text
    with pytest.raises(
        MltpError, match="unknown tool\\(s\\) bogus: the tools are list_datasets, describe_dataset"
    ):
        build_server(platform, ServeOptions(exclude_tools=("bogus",)))


def test_twenty_concurrent_read_calls_are_each_answered_correctly(platform) -> None:
    calls = [("describe_model", {"reference": f"iris:{1 + n % 2}"}) for n in range(10)] + [
        ("describe_dataset", {"name": "iris"}) for _ in range(10)
    ]

    async def go():
        async with Client(build_server(platform)) as client:
            return await asyncio.gather(*(client.call_tool(tool, arguments) for tool, arguments in calls))

    answers = asyncio.run(go())
    assert [a.structured_content["version"] for a in answers[:10]] == [1 + n % 2 for n in range(10)]
    assert all(a.structured_content["rows"] == 150 for a in answers[10:])


def start_with_confirmation(platform, answer: str | None) -> tuple[object, list[str]]:
    """start_training on a server that wants confirmation above $0; the client answers `answer` (accept
    with start=false, decline, cancel) or, with None, cannot be asked at all."""
    asked: list[str] = []

    async def elicit(context, params):
        asked.append(params.message)
        return mcp_types.ElicitResult(action=answer, content={"start": False} if answer == "accept" else None)

    async def go():
        server = build_server(platform, ServeOptions(allow_write=True, confirm_above_usd=0.0))
        async with Client(server, elicitation_callback=elicit if answer else None) as client:
            return await client.call_tool("start_training", {"dataset": "iris", "algorithm": "knn"})

    return asyncio.run(go()), asked


def test_above_the_confirmation_threshold_a_client_that_cannot_ask_is_refused(platform) -> None:
    result, asked = start_with_confirmation(platform, None)
    line = error_line(result)
    assert "estimated cost $0.0" in line and asked == []
    assert "over $0.00, which needs the user's confirmation, and this client cannot ask" in line
    assert "--confirm-above-usd" in line


@pytest.mark.parametrize("answer", ["accept", "decline", "cancel"])
def test_above_the_confirmation_threshold_the_user_is_asked_and_no_is_no(platform, answer) -> None:
    """The yes is test_mcp_stdio.py's: it starts a run."""
    result, asked = start_with_confirmation(platform, answer)
    assert "and the user did not confirm: nothing was started" in error_line(result)
    [question] = asked
    assert question.startswith("Start training on lambda for about ") and "estimated cost $0.0" in question
