"""`mltp sandbox up | down | status | env`."""

from __future__ import annotations

import shlex
from typing import Any

import typer

from mltp.cli.output import console, emit_json
from mltp.home import mltp_home
from mltp.sandbox import lifecycle
from mltp.sandbox.database import CHOICES
from mltp.sandbox.deployments import WORK_POOL
from mltp.sandbox.lifecycle import Sandbox, SandboxStatus
from mltp.sandbox.postgres import DEFAULT_POSTGRES_PORT

app = typer.Typer(
    help="Run the local sandbox: a moto server for AWS, a fleet that runs the trainers, and a Prefect "
    "server with its UI."
)


def _port_option(flag: str, what: str, default: int) -> Any:
    """`--NAME-port`, also read from MLTP_SANDBOX_NAME_PORT."""
    variable = "MLTP_SANDBOX_" + flag.removeprefix("--").replace("-", "_").upper()
    return typer.Option(
        None, flag, envvar=variable, min=1, max=65535, help=f"Port of {what} [default: {default}]."
    )


AWS_PORT = _port_option("--aws-port", "the moto (AWS) server", lifecycle.DEFAULT_AWS_PORT)
PREFECT_PORT = _port_option("--prefect-port", "the Prefect server and UI", lifecycle.DEFAULT_PREFECT_PORT)
FLEET_PORT = _port_option("--fleet-port", "the compute fleet's Lambda endpoint", lifecycle.DEFAULT_FLEET_PORT)
DATABASE = typer.Option(
    "auto",
    "--database",
    envvar="MLTP_SANDBOX_DATABASE",
    help=f"Where the Prefect server keeps its state: {', '.join(CHOICES)}. postgres runs the sandbox's own "
    "PostgreSQL from the server programs on this machine; auto is the database the sandbox was started "
    "with, and for a new one postgres where it can run, else sqlite.",
)
DATABASE_URL = typer.Option(
    None,
    "--database-url",
    envvar="MLTP_SANDBOX_DATABASE_URL",
    help="Keep the Prefect server's state in this PostgreSQL instead (postgresql://USER:PASSWORD@HOST/DB).",
    show_default=False,
)
POSTGRES_PORT = _port_option("--postgres-port", "the sandbox's own PostgreSQL", DEFAULT_POSTGRES_PORT)
WORKERS = typer.Option(
    None,
    "--workers",
    envvar="MLTP_SANDBOX_WORKERS",
    min=1,
    max=lifecycle.MAX_WORKERS,
    help="Prefect workers on the work pool, each its own process as on its own machine [default: as many "
    "as run now, else 1].",
    show_default=False,
)
MAX_TRAINERS = typer.Option(
    lifecycle.DEFAULT_MAX_TRAINERS,
    "--max-trainers",
    envvar="MLTP_SANDBOX_MAX_TRAINERS",
    min=1,
    max=64,
    help="Trainers the fleet runs at once; further instances and invocations wait, as for capacity.",
)
JSON = typer.Option(False, "--json", help="Print the status as JSON.")


def _print_status(status: SandboxStatus) -> None:
    console.print(f"sandbox: {'running' if status.running else 'not running'}  (state in {status.home})")
    if status.database:
        console.print(f"  database {status.database.describe()}")
    for name, service in status.services.items():
        detail = (
            f"pid {service.pid}" + (f", port {service.port}" if service.port else "") if service.pid else ""
        )
        health = "healthy" if service.healthy else "not healthy"
        state = f"{service.state}, {health}" if service.state == "running" else service.state
        console.print(f"  {name:<8} {state:<20} {detail}")
    if status.endpoints:
        endpoints = status.endpoints
        console.print(f"  AWS endpoint   {endpoints.aws_endpoint_url}  (region {lifecycle.REGION})")
        console.print(f"  Lambda (fleet) {endpoints.lambda_endpoint_url}")
        console.print(f"  Prefect API    {endpoints.prefect_api_url}")
        console.print(f"  Prefect UI     {endpoints.prefect_ui_url}")
        console.print(f"  buckets        s3://{lifecycle.DATA_BUCKET}  s3://{lifecycle.MODELS_BUCKET}")
    elif any(service.state == "stale" for service in status.services.values()):
        console.print(
            "  stale pid files from a crashed sandbox: `mltp sandbox up` restarts it, `down` cleans up"
        )


@app.command()
def up(
    aws_port: int | None = AWS_PORT,
    prefect_port: int | None = PREFECT_PORT,
    fleet_port: int | None = FLEET_PORT,
    max_trainers: int = MAX_TRAINERS,
    database: str = DATABASE,
    database_url: str | None = DATABASE_URL,
    postgres_port: int | None = POSTGRES_PORT,
    workers: int | None = WORKERS,
    json: bool = JSON,
) -> None:
    """Start the sandbox (harmless when it is already running), create its blocks and buckets, deploy
    the trainer function and prefect.yaml's deployments, and start a worker for them."""
    status, notes = Sandbox(mltp_home()).up(
        aws_port,
        prefect_port,
        fleet_port,
        max_trainers,
        database=database,
        database_url=database_url,
        postgres_port=postgres_port,
        workers=workers,
    )
    if json:
        emit_json({**status.as_json(), "notes": notes})
        return
    for note in notes:
        console.print(note)
    _print_status(status)
    console.print(
        "blocks: aws-credentials/mltp-aws, s3-bucket/mltp-datasets, s3-bucket/mltp-models, "
        "mltp-ec2-compute/mltp-ec2, mltp-lambda-compute/mltp-lambda"
    )
    console.print(
        f"deployments (work pool {WORK_POOL}, run by the sandbox's worker): ingest-and-train, "
        "retrain-nightly, train-on-new-dataset, watch-incoming, reap-orphans"
    )
    console.print('other shells and tools (prefect, aws): eval "$(mltp sandbox env)"')


@app.command()
def down() -> None:
    """Stop exactly the processes `up` started (the worker and its flow runs first) and remove their pid
    files."""
    for note in Sandbox(mltp_home()).down():
        console.print(note)


@app.command()
def status(json: bool = JSON) -> None:
    """Show whether the sandbox runs, every endpoint and the UI URL."""
    current = Sandbox(mltp_home()).status()
    if json:
        emit_json(current.as_json())
    else:
        _print_status(current)


@app.command()
def env() -> None:
    """Print `export` lines pointing the prefect and aws CLIs at the running sandbox."""
    endpoints = Sandbox(mltp_home()).running_endpoints()
    if endpoints is None:
        from mltp.errors import SandboxNotRunningError

        raise SandboxNotRunningError("the sandbox is not running: start it with `mltp sandbox up`")
    variables = {
        "PREFECT_API_URL": endpoints.prefect_api_url,
        "AWS_ENDPOINT_URL": endpoints.aws_endpoint_url,
        "AWS_ENDPOINT_URL_LAMBDA": endpoints.lambda_endpoint_url,  # the aws CLI's per-service override
        "LAMBDA_ENDPOINT_URL": endpoints.lambda_endpoint_url,
        "AWS_REGION": lifecycle.REGION,
        "AWS_DEFAULT_REGION": lifecycle.REGION,  # the name boto3 reads
        "AWS_ACCESS_KEY_ID": lifecycle.ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": lifecycle.SECRET_ACCESS_KEY,
        "ML_DATA_BUCKET": lifecycle.DATA_BUCKET,
        "ML_MODELS_BUCKET": lifecycle.MODELS_BUCKET,
    }
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
