"""`mltp mcp serve` started the way an agent's MCP client starts it (a child process over stdio, with only
the environment the client passes), against the sandbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from mcp import Client, StdioServerParameters
from sklearn import datasets as toy

from tests.conftest import MLTP, wait_for

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


def test_an_agent_starts_a_training_run_follows_it_and_finds_the_model(sandbox, iris) -> None:
    model = f"{iris}-agent"
    parameters = StdioServerParameters(command=MLTP, args=["mcp", "serve", "--allow-write"], env=sandbox.env)

    async def calls(client):
        request = {"dataset": iris, "algorithm": "knn", "compute": "local", "model_name": model}
        started = await client.call_tool("start_training", request)
        assert not started.is_error, started.content
        run_id = started.structured_content["flow_run_id"]
        seen = []  # the agent's session could end here: the worker runs the training

        async def progress(value, total, message):
            seen.append((value, total, message))

        run = await client.call_tool(
            "wait_for_run", {"run_id": run_id, "max_wait_s": 240}, progress_callback=progress
        )
        assert seen and all(total == 1.0 for _, total, _ in seen), seen
        listed = await client.call_tool("list_runs", {"dataset": iris})
        described = await client.call_tool("describe_model", {"reference": model})
        ended = await client.call_tool("cancel_run", {"run_id": run_id})
        return started, run, listed, described, ended

    async def go():
        async with Client(parameters) as client:
            return await calls(client)

    started, run, listed, described, ended = asyncio.run(go())
    plan, answered = started.structured_content["plan"], run.structured_content
    assert plan["backend"] == "local" and started.structured_content["ui_url"].endswith(
        answered["flow_run_id"]
    )
    assert answered["state"] == "COMPLETED", answered
    assert answered["parameters"]["dataset"] == iris and answered["last_log_lines"]
    assert answered["flow_run_id"] in [r["flow_run_id"] for r in listed.structured_content["runs"]]
    assert described.structured_content["lineage"]["flow_run_id"] == answered["flow_run_id"]
    assert (
        ended.is_error
        and "has already ended (COMPLETED): there is nothing to cancel" in ended.content[0].text
    )


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
