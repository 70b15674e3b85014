"""start_training: plan a training job and start it through the `train-model` deployment (the worker runs
it and it shows in the UI, so the agent's session may end while it trains). It is planned first, by the
SDK's resolvers before the tool's body runs: refused over the server's cost cap or outside the compute it
allows, and above --confirm-above-usd the user is asked (elicitation) or, where the client cannot ask,
refused.

No `from __future__ import annotations` here: the resolvers are closures, and the SDK evaluates the
tool's annotations (which name them) at registration.
"""

from dataclasses import dataclass
from functools import partial
from typing import Annotated

import anyio
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from mltp.mcp.answers import answer
from mltp.mcp.guards import require_write
from mltp.mcp.options import ServeOptions
from mltp.mcp.platform import Platform, platform_errors
from mltp.mcp.read_tools import (
    AlgorithmArgument,
    ComputeArgument,
    DatasetArgument,
    FoldsArgument,
    GridArgument,
    HyperparametersArgument,
    TargetArgument,
    TaskArgument,
    plan_request,
)
from mltp.mcp.results import RunStarted, TrainingPlan

TRAINING_DEPLOYMENT = "train-model/train-model"
START = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


class LaunchConfirmation(BaseModel):
    start: bool = Field(description="Start this training run")


@dataclass(frozen=True)
class PlannedStart:
    dataset: str
    version: str | None
    plan: TrainingPlan


def register_start_tool(server: MCPServer, platform: Platform, options: ServeOptions) -> None:
    def planned(
        dataset, algorithm, hyperparameters, grid, compute, target, task, folds, model_name
    ) -> PlannedStart:
        """The plan start_training would launch, or its refusal (the resolvers run before the body)."""
        require_write(options, "start_training")
        return _allowed_plan(
            platform,
            options,
            dataset,
            algorithm,
            hyperparameters,
            grid,
            compute,
            target,
            task,
            folds,
            model_name,
        )

    def confirmed(
        start: Annotated[PlannedStart, Resolve(planned)], ctx: Context
    ) -> LaunchConfirmation | Elicit[LaunchConfirmation]:
        """Above --confirm-above-usd the user decides, through the client (elicitation); a client that
        cannot ask gets a refusal, never a silent launch."""
        threshold, plan = options.confirm_above_usd, start.plan
        if threshold is None or plan.estimated_cost_usd <= threshold:
            return LaunchConfirmation(start=True)
        cost = f"the plan's estimated cost ${plan.estimated_cost_usd:.4f} is over ${threshold:.2f}"
        if ctx.client_capabilities is None or ctx.client_capabilities.elicitation is None:
            raise ToolError(
                f"{cost}, which needs the user's confirmation, and this client cannot ask: train less, use "
                "a client that supports elicitation, or start the server with a higher --confirm-above-usd"
            )
        where = f"{plan.instances} x {plan.instance_type}" if plan.backend == "ec2" else plan.backend
        return Elicit(
            f"Start training on {where} for about {plan.estimated_runtime_s:,} s? {cost}.", LaunchConfirmation
        )

    @server.tool(title="Start a training run", annotations=START)
    async def start_training(
        dataset: DatasetArgument,
        algorithm: AlgorithmArgument,
        start: Annotated[PlannedStart, Resolve(planned)],
        confirmation: Annotated[ElicitationResult[LaunchConfirmation], Resolve(confirmed)],
        target: TargetArgument = None,
        task: TaskArgument = None,
        hyperparameters: HyperparametersArgument = {},  # noqa: B006 - pydantic copies defaults
        grid: GridArgument = {},  # noqa: B006
        folds: FoldsArgument = None,
        compute: ComputeArgument = "auto",
        model_name: Annotated[str | None, Field(description="Model name (default: the dataset's)")] = None,
        max_runtime_minutes: Annotated[
            float, Field(gt=0, le=10080, description="Stop the job after this")
        ] = 60,
        promote: Annotated[bool, Field(description="Make the new version champion if it is better")] = False,
    ) -> Annotated[CallToolResult, RunStarted]:
        """Plan a training job and start it on the planned compute through the train-model deployment;
        returns at once with the flow run id, the plan, its cost estimate and the UI link. Follow it with
        get_run. A plan over the server's cost cap is refused; over its confirmation threshold the user is
        asked first."""
        from prefect.deployments import run_deployment

        from mltp.prefect_api import flow_run_url

        plan = start.plan
        if not (isinstance(confirmation, AcceptedElicitation) and confirmation.data.start):
            raise ToolError(
                f"the plan's estimated cost ${plan.estimated_cost_usd:.4f} is over "
                f"${options.confirm_above_usd:.2f} and the user did not confirm: nothing was started"
            )
        with platform_errors():
            run = await anyio.to_thread.run_sync(
                partial(
                    run_deployment,
                    TRAINING_DEPLOYMENT,
                    parameters={
                        "dataset": start.dataset, "dataset_version": start.version, "algorithm": algorithm,
                        "target": target, "task": task, "hyperparameters": hyperparameters, "grid": grid,
                        "folds": folds, "compute": compute, "model_name": model_name,
                        "max_runtime_minutes": max_runtime_minutes, "promote": promote,
                    },
                    timeout=0,
                    tags=["mcp"],
                )
            )  # fmt: skip
        started = RunStarted(
            flow_run_id=str(run.id), name=run.name, plan=plan, ui_url=flow_run_url(str(run.id))
        )
        return answer(
            started,
            f"started {run.name} ({run.id}) on {plan.backend}, about {plan.estimated_runtime_s:,} s and "
            f"${plan.estimated_cost_usd:.4f}: follow it with get_run",
        )


def _allowed_plan(
    platform: Platform, options: ServeOptions, dataset, algorithm, hyperparameters, grid, compute, target,
    task, folds, model_name,
):  # fmt: skip
    """The dataset's name, version and plan, or a refusal: a bad model name, compute the server does not
    allow, or an estimate over its cost cap."""
    if compute not in options.compute:
        raise ToolError(f"compute={compute} is not allowed by this server: use {', '.join(options.compute)}")
    from mltp.dataset_catalog import parse_reference
    from mltp.registry import model_name_for, validate_model_name

    with platform_errors():
        validate_model_name(model_name or model_name_for(parse_reference(dataset)[0]))
        name, version, plan = plan_request(
            platform, dataset, algorithm, hyperparameters, grid, compute, target, task, folds
        )
    if plan.backend not in options.compute and compute == "auto":
        raise ToolError(f"the planner chose {plan.backend}, which this server does not allow: "
                        f"pass compute={' or '.join(options.compute)}")  # fmt: skip
    if plan.estimated_cost_usd > options.max_cost_usd:
        raise ToolError(
            f"the plan's estimated cost ${plan.estimated_cost_usd:.4f} is over this server's cap "
            f"of ${options.max_cost_usd:.2f} a run: train less, or start the server with a higher "
            "--max-cost-usd"
        )
    return PlannedStart(name, version, plan)
