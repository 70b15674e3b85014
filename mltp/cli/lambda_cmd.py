"""`mltp lambda deploy`: create or update the Lambda trainer function from the mltp-lambda block."""

from __future__ import annotations

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json

app = typer.Typer(help="Deploy the Lambda trainer function.")


@app.command()
def deploy(
    role_arn: str | None = typer.Option(
        None,
        "--role-arn",
        help="IAM role for the function, instead of the block's (the block is not changed).",
    ),
    json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create the trainer function, or update its code and settings; unchanged ones are left alone."""
    with prefect_connection():
        from blocks.platform import load_blocks
        from mltp.compute.lambda_deploy import deploy_trainer_function

        blocks = load_blocks()
        settings = blocks.lambda_.deploy_settings()
        if role_arn:
            settings["role_arn"] = role_arn
        report = deploy_trainer_function(blocks.lambda_client(), **settings)
    if json:
        emit_json(report)
        return
    console.print(
        f"{report['action']} {report['function_name']} ({report['package_type']}, "
        f"code sha256 {report['code_sha256']}): {report['arn']}"
    )
