"""Top-level `mltp` app: sub-command groups and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click
from typer.exceptions import Abort

from mltp import __version__
from mltp.cli import (
    blocks_cmd,
    datasets_cmd,
    demo_cmd,
    doctor_cmd,
    lambda_cmd,
    mcp_cmd,
    models_cmd,
    predict_cmd,
    reap_cmd,
    sandbox_cmd,
    train_cmd,
)
from mltp.errors import MltpError

app = typer.Typer(
    name="mltp",
    help="ml-training-platform: train scikit-learn models on AWS compute with Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sandbox_cmd.app, name="sandbox")
app.add_typer(blocks_cmd.app, name="blocks")
app.add_typer(datasets_cmd.app, name="datasets")
app.add_typer(lambda_cmd.app, name="lambda")
app.add_typer(models_cmd.app, name="models")
app.add_typer(mcp_cmd.app, name="mcp")
app.command("demo")(demo_cmd.demo)
app.command("doctor")(doctor_cmd.doctor)
app.command("plan")(train_cmd.plan)
app.command("train")(train_cmd.train)
app.command("reap")(reap_cmd.reap)
app.command("predict")(predict_cmd.predict)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mltp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Train scikit-learn models on AWS compute, orchestrated by Prefect."""


ENVIRONMENT_DEFAULTS = {
    # Prefect's client telemetry reaches the internet; off unless the user explicitly turns it on.
    "DO_NOT_TRACK": "1",
    # Never let Prefect start a hidden throw-away server (e.g. from a thread that lost our settings).
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
}


def main() -> None:
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        # Not standalone: typer would print a usage error as a boxed panel, we print every error as one line.
        result = app(standalone_mode=False)
    except MltpError as error:
        print(f"mltp: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except NoArgsIsHelpError as error:  # `mltp datasets` alone: the group's help, as in standalone mode
        error.show()
        sys.exit(error.exit_code)
    except UsageError as error:
        hint = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
        print(f"mltp: error: {error.format_message()}{hint}", file=sys.stderr)
        sys.exit(error.exit_code)
    except ClickException as error:
        print(f"mltp: error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code)
    except Abort:
        print("mltp: aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
