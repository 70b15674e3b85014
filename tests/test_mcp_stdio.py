"""`mltp mcp serve` started the way an agent's MCP client starts it (a child process over stdio, with only
the environment the client passes), against the sandbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from mcp import Client, StdioServerParameters
from sklearn import datasets as toy

from tests.conftest import MLTP

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
