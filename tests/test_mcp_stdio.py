"""`mltp mcp serve` started the way an agent's MCP client starts it (a child process over stdio, with only
the environment the client passes), against the sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import mcp_types
import pytest
from mcp import Client, StdioServerParameters
from sklearn import datasets as toy

from tests.conftest import MLTP, wait_for
from tests.test_evaluation_plots import parse_card

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def iris(sandbox, tmp_path_factory) -> str:
    from mltp import datasets

    path = tmp_path_factory.mktemp("mcp") / "iris.csv"
    toy.load_iris(as_frame=True).frame.to_csv(path, index=False)
    name = f"mcp-iris-{uuid.uuid4().hex[:6]}"
    datasets.ingest(sandbox.client, sandbox.status["buckets"]["data"], str(path), name=name, target="target")
    return name


def session(sandbox, calls):
    """Start the server as a client would, and run `calls(client)` against it."""
    parameters = StdioServerParameters(command=MLTP, args=["mcp", "serve"], env=sandbox.env)

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    return asyncio.run(go())


def test_a_stdio_client_lists_plans_and_checks_the_platform(sandbox, iris) -> None:
    async def calls(client):
        tools = [tool.name for tool in (await client.list_tools()).tools]
        listed = await client.call_tool("list_datasets", {})
        plan = await client.call_tool("plan_training", {"dataset": iris, "algorithm": "random_forest"})
        status = await client.call_tool("platform_status", {})
        refused = await client.call_tool("describe_dataset", {"name": f"{iris}-ghost"})
        return tools, listed, plan, status, refused

    tools, listed, plan, status, refused = session(sandbox, calls)
    assert {"list_datasets", "plan_training", "describe_model", "platform_status"} <= set(tools)
    assert iris in [entry["name"] for entry in listed.structured_content["datasets"]]
    assert (plan.structured_content["backend"], plan.structured_content["target"]) == ("lambda", "target")
    assert status.structured_content["ok"], status.structured_content
    assert refused.is_error and f"no dataset named '{iris}-ghost'" in refused.content[0].text


def test_with_writes_allowed_an_agent_ingests_under_the_root_and_every_call_is_an_event(
    sandbox, tmp_path
) -> None:
    root = tmp_path / "work"
    root.mkdir()
    toy.load_wine(as_frame=True).frame.to_csv(root / "wine.csv", index=False)
    name = f"mcp-wine-{uuid.uuid4().hex[:6]}"
    parameters = StdioServerParameters(
        command=MLTP, args=["mcp", "serve", "--allow-write", "--root", str(root)], env=sandbox.env
    )

    async def calls(client):
        ingested = await client.call_tool(
            "ingest_dataset", {"source": "wine.csv", "name": name, "target": "target"}
        )
        again = await client.call_tool("ingest_dataset", {"source": str(root / "wine.csv"), "name": name})
        escaped = await client.call_tool("ingest_dataset", {"source": "../wine.csv"})
        return ingested, again, escaped

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    ingested, again, escaped = asyncio.run(go())
    assert not ingested.is_error, ingested.content
    assert (ingested.structured_content["name"], ingested.structured_content["rows"]) == (name, 178)
    assert ingested.structured_content["created"] and not again.structured_content["created"]
    assert escaped.is_error and "is outside the server's root" in escaped.content[0].text
    runs = sandbox.api("/flow_runs/filter", {"flows": {"name": {"any_": ["ingest-dataset"]}}})
    assert any(run["parameters"].get("name") == name for run in runs)  # the flow ran, as the CLI runs it

    def audited():
        query = {"filter": {"event": {"name": ["mltp.mcp.tool-called"]},
                            "resource": {"id": ["mltp.mcp.ingest_dataset"]}}}  # fmt: skip
        sources = ("wine.csv", str(root / "wine.csv"), "../wine.csv")
        events = sandbox.api("/events/filter", query)["events"]
        return [event for event in events if event["payload"]["arguments"].get("source") in sources]

    events = wait_for(lambda: len(found := audited()) >= 3 and found, timeout=30)
    assert sorted(e["payload"]["outcome"] for e in events) == ["error", "ok", "ok"]


@pytest.mark.parametrize("compute", ["lambda", "ec2"])
def test_the_whole_loop_from_an_agent(sandbox, tmp_path, compute) -> None:
    """Ingest a CSV -> plan -> start training (the user confirms its cost when asked) -> wait with progress
    notifications -> get_run and the run's report -> list and describe models -> predict, on `compute`."""
    frame = toy.load_iris(as_frame=True).frame
    frame.to_csv(tmp_path / "flowers.csv", index=False)
    name = f"mcp-loop-{compute}-{uuid.uuid4().hex[:6]}"
    parameters = StdioServerParameters(
        command=MLTP,
        args=["mcp", "serve", "--allow-write", "--root", str(tmp_path), "--confirm-above-usd", "0"],
        env=sandbox.env,
    )
    questions, answers = [], iter([("decline", None), ("accept", {"start": True})])

    async def confirm(context, params):
        questions.append(params.message)
        action, content = next(answers)
        return mcp_types.ElicitResult(action=action, content=content)

    async def calls(client):
        ingested = await client.call_tool(
            "ingest_dataset", {"source": "flowers.csv", "name": name, "target": "target"}
        )
        request = {"dataset": name, "algorithm": "knn", "compute": compute}
        plan = await client.call_tool("plan_training", request)
        declined = await client.call_tool("start_training", request)
        started = await client.call_tool("start_training", request)
        assert not started.is_error, started.content
        run_id = started.structured_content["flow_run_id"]
        seen = []  # the agent's session could end here: the worker runs the training

        async def progress(value, total, message):
            seen.append((value, total, message))

        waited = await client.call_tool(
            "wait_for_run", {"run_id": run_id, "max_wait_s": 240}, progress_callback=progress
        )
        run = await client.call_tool("get_run", {"run_id": run_id})
        report = await client.read_resource(f"mltp://runs/{run_id}")
        listed = await client.call_tool("list_runs", {"dataset": name})
        models = await client.call_tool("list_models", {})
        described = await client.call_tool("describe_model", {"reference": name})
        card = await client.read_resource(f"mltp://models/{name}/1/card")
        rows = frame.drop(columns="target").head(3).to_dict(orient="records")
        predicted = await client.call_tool("predict", {"reference": f"{name}:1", "rows": rows})
        ended = await client.call_tool("cancel_run", {"run_id": run_id})
        return (ingested, plan, declined, started, seen, waited, run, report, listed, models, described,
                card, predicted, ended)  # fmt: skip

    async def go():
        async with Client(parameters, elicitation_callback=confirm) as client:
            return await calls(client)

    (ingested, plan, declined, started, seen, waited, run, report, listed, models, described, card,
     predicted, ended) = asyncio.run(go())  # fmt: skip
    assert not ingested.is_error and ingested.structured_content["rows"] == 150, ingested.content
    assert plan.structured_content["backend"] == compute
    assert "the user did not confirm: nothing was started" in declined.content[0].text
    assert len(questions) == 2 and questions[0].startswith("Start training on ") and "$0.00" in questions[0]
    assert started.structured_content["plan"] == plan.structured_content
    assert seen and all(total == 1.0 for _, total, _ in seen), seen
    answered = run.structured_content
    assert waited.structured_content["state"] == answered["state"] == "COMPLETED", answered
    assert started.structured_content["ui_url"].endswith(answered["flow_run_id"])
    assert answered["parameters"]["dataset"] == name and answered["last_log_lines"]
    assert (answered["backend"], answered["registered_version"]) == (compute, 1)
    [job] = answered["jobs"]
    assert (job["state"], job["backend"], len(job["attempts"])) == ("succeeded", compute, 1)
    assert answered["metrics"]["accuracy"] > 0.8 and answered["cost_usd_observed"] >= 0
    assert answered["cost_usd_estimate"] == plan.structured_content["estimated_cost_usd"]
    assert f"registered version 1; ${answered['cost_usd_observed']:.4f}" in run.content[0].text
    assert json.loads(report.contents[0].text)["jobs"] == answered["jobs"]
    assert answered["flow_run_id"] in [r["flow_run_id"] for r in listed.structured_content["runs"]]
    assert {"name": name, "latest_version": 1} in [
        {key: m[key] for key in ("name", "latest_version")} for m in models.structured_content["models"]
    ]
    assert described.structured_content["lineage"]["flow_run_id"] == answered["flow_run_id"]
    [page] = card.contents  # the trainer's evaluation.json came back from the compute, with the model
    assert page.mime_type == "text/html" and answered["flow_run_id"] in page.text
    images = [image["alt"] for image in parse_card(page.text).images]
    assert images[:3] == ["Confusion matrix", "ROC curve", "Precision-recall curve"], images
    assert not predicted.is_error, predicted.content
    assert [row["prediction"] for row in predicted.structured_content["predictions"]] == [0, 0, 0]
    assert (
        ended.is_error
        and "has already ended (COMPLETED): there is nothing to cancel" in ended.content[0].text
    )


def test_three_concurrent_starts_each_run_and_register(sandbox, iris) -> None:
    parameters = StdioServerParameters(command=MLTP, args=["mcp", "serve", "--allow-write"], env=sandbox.env)
    models = [f"{iris}-together-{n}" for n in range(3)]

    async def calls(client):
        requests = [{"dataset": iris, "algorithm": "knn", "compute": "local", "model_name": model}
                    for model in models]  # fmt: skip
        started = await asyncio.gather(*(client.call_tool("start_training", r) for r in requests))
        assert not any(answer.is_error for answer in started), [answer.content for answer in started]
        run_ids = [answer.structured_content["flow_run_id"] for answer in started]
        waits = (
            client.call_tool("wait_for_run", {"run_id": run_id, "max_wait_s": 300}) for run_id in run_ids
        )
        return run_ids, await asyncio.gather(*waits)

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    run_ids, runs = asyncio.run(go())
    assert len(set(run_ids)) == 3
    answered = [run.structured_content for run in runs]
    assert [run["flow_run_id"] for run in answered] == run_ids
    assert [
        (run["state"], run["parameters"]["model_name"], run["registered_version"]) for run in answered
    ] == [("COMPLETED", model, 1) for model in models], answered


def test_an_agent_cancels_a_run_on_ec2_and_its_instances_are_terminated(sandbox, iris) -> None:
    ec2 = sandbox.client("ec2")
    parameters = StdioServerParameters(
        command=MLTP, args=["mcp", "serve", "--allow-write", "--max-cost-usd", "5"], env=sandbox.env
    )

    def instances(run_id: str, states: list[str]) -> list[str]:
        filters = [{"Name": "tag:mltp:flow-run-id", "Values": [run_id]},
                   {"Name": "instance-state-name", "Values": states}]  # fmt: skip
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]

    async def calls(client):
        slow = {"dataset": iris, "algorithm": "random_forest", "compute": "ec2", "model_name": f"{iris}-slow",
                "hyperparameters": {"n_estimators": 4000},  # seconds a candidate, many candidates
                "grid": {"max_depth": list(range(2, 30))}}  # fmt: skip
        started = await client.call_tool("start_training", slow)
        assert not started.is_error, started.content
        run_id = started.structured_content["flow_run_id"]
        launched = await anyio_to_thread(
            lambda: wait_for(lambda: instances(run_id, ["pending", "running"]), 120)
        )
        cancelled = await client.call_tool("cancel_run", {"run_id": run_id})
        ended = await client.call_tool("wait_for_run", {"run_id": run_id, "max_wait_s": 90})
        return run_id, launched, cancelled, ended

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    run_id, launched, cancelled, ended = asyncio.run(go())
    assert not cancelled.is_error and cancelled.structured_content["state"] in ("CANCELLING", "CANCELLED")
    assert ended.structured_content["state"] == "CANCELLED", ended.structured_content
    wait_for(lambda: not instances(run_id, ["pending", "running", "stopping", "stopped"]), timeout=60)
    assert set(launched) <= set(instances(run_id, ["shutting-down", "terminated"]))


async def anyio_to_thread(function):
    import anyio

    return await anyio.to_thread.run_sync(function)


def test_an_agent_diagnoses_a_run_that_failed_on_the_trainer(sandbox, iris) -> None:
    parameters = StdioServerParameters(command=MLTP, args=["mcp", "serve", "--allow-write"], env=sandbox.env)
    refused_only_by_the_trainer = {"penalty": "elasticnet", "solver": "lbfgs"}

    async def calls(client):
        request = {"dataset": iris, "algorithm": "logistic_regression", "compute": "local",
                   "hyperparameters": refused_only_by_the_trainer, "model_name": f"{iris}-bad"}  # fmt: skip
        started = await client.call_tool("start_training", request)
        assert not started.is_error, started.content
        run_id = started.structured_content["flow_run_id"]
        await client.call_tool("wait_for_run", {"run_id": run_id, "max_wait_s": 240})
        return await client.call_tool("diagnose_run", {"run_id": run_id})

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    diagnosis = asyncio.run(go()).structured_content
    assert diagnosis["run"]["state"] == "FAILED" and diagnosis["failure_kind"] == "user", diagnosis
    assert "Solver lbfgs supports only 'l2' or None penalties" in diagnosis["error"]
    assert any("Solver lbfgs supports only" in line for line in diagnosis["trainer_log_tail"]), diagnosis
    assert diagnosis["what_to_do"].startswith("the data or the parameters: fix what the error names")


def test_an_agent_diagnoses_a_run_whose_trainers_were_killed(sandbox, iris) -> None:
    """Each attempt's trainer is killed (kill -9, as an out-of-memory kill does): the instance is lost, the
    job relaunched up to max_relaunches (2), then the run fails; diagnose_run shows every attempt."""
    from tests.test_train_on_aws import ec2_trainers

    parameters = StdioServerParameters(
        command=MLTP, args=["mcp", "serve", "--allow-write", "--max-cost-usd", "5"], env=sandbox.env
    )
    ec2 = sandbox.client("ec2")

    def trainers_of(run_id: str) -> dict[str, int]:
        ours = ec2.describe_instances(Filters=[{"Name": "tag:mltp:flow-run-id", "Values": [run_id]}])
        ids = {i["InstanceId"] for r in ours["Reservations"] for i in r["Instances"]}
        return {instance: pid for instance, pid in ec2_trainers(sandbox).items() if instance in ids}

    def new_trainer(run_id: str, known: list[str]) -> tuple[str, int] | None:
        return next(((i, pid) for i, pid in trainers_of(run_id).items() if i not in known), None)

    def kill_every_attempt(run_id: str) -> list[str]:
        killed: list[str] = []
        while len(killed) < 3:
            instance, pid = wait_for(lambda: new_trainer(run_id, killed), timeout=120, every=0.05)
            os.kill(pid, signal.SIGKILL)
            killed.append(instance)
        return killed

    async def calls(client):
        slow = {"dataset": iris, "algorithm": "random_forest", "compute": "ec2", "model_name": f"{iris}-oom",
                "hyperparameters": {"n_estimators": 4000}}  # fmt: skip
        started = await client.call_tool("start_training", slow)
        assert not started.is_error, started.content
        run_id = started.structured_content["flow_run_id"]
        killed = await anyio_to_thread(lambda: kill_every_attempt(run_id))
        await client.call_tool("wait_for_run", {"run_id": run_id, "max_wait_s": 240})
        return killed, await client.call_tool("diagnose_run", {"run_id": run_id})

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    killed, answered = asyncio.run(go())
    diagnosis = answered.structured_content
    assert diagnosis["run"]["state"] == "FAILED" and diagnosis["failure_kind"] == "lost", diagnosis
    assert "is terminated" in diagnosis["error"] and "after 3 attempts" in diagnosis["error"]
    assert [attempt["handle"] for attempt in diagnosis["attempts"]] == killed
    assert {attempt["kind"] for attempt in diagnosis["attempts"]} == {"lost"}
    assert {i["instance_id"]: i["state"] for i in diagnosis["instances"]} == dict.fromkeys(
        killed, "terminated"
    )
    assert diagnosis["what_to_do"].startswith("its compute was lost and relaunched up to max_relaunches")


def test_refused_starts_create_no_flow_run_and_write_nothing(sandbox, iris) -> None:
    parameters = StdioServerParameters(
        command=MLTP, args=["mcp", "serve", "--allow-write", "--max-cost-usd", "0.0001"], env=sandbox.env
    )
    refused = {
        "not in the enum": {"dataset": iris, "algorithm": "xgboost"},
        "a wrong type": {"dataset": iris, "algorithm": "knn", "folds": "many"},
        "over the cap": {"dataset": iris, "algorithm": "random_forest", "compute": "ec2"},
        "an unknown dataset": {"dataset": f"{iris}-ghost", "algorithm": "knn"},
        "a bad model name": {"dataset": iris, "algorithm": "knn", "model_name": "Not A Name"},
    }

    def training_runs() -> int:
        return len(
            sandbox.api("/flow_runs/filter", {"flows": {"name": {"any_": ["train-model"]}}, "limit": 200})
        )

    def models_bucket() -> list[str]:
        listed = sandbox.s3().list_objects_v2(Bucket=sandbox.status["buckets"]["models"])
        return sorted(entry["Key"] for entry in listed.get("Contents", []))

    async def calls(client):
        return {case: await client.call_tool("start_training", request) for case, request in refused.items()}

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    runs, keys = training_runs(), models_bucket()
    answers = asyncio.run(go())
    assert {case: answer.is_error for case, answer in answers.items()} == dict.fromkeys(refused, True)
    assert "over this server's cap of $0.00 a run" in answers["over the cap"].content[0].text
    assert f"no dataset named '{iris}-ghost'" in answers["an unknown dataset"].content[0].text
    assert all("\n" not in answer.content[0].text for answer in answers.values())
    assert (training_runs(), models_bucket()) == (runs, keys)
