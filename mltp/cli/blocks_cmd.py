"""`mltp blocks init`: create or update every block, and the buckets, from environment variables."""

from __future__ import annotations

from pathlib import Path

import typer

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json
from mltp.settings import load_settings

app = typer.Typer(help="Create and inspect the Prefect blocks the platform runs on.")


@app.command()
def init(
    env_file: Path | None = typer.Option(
        None, "--env-file", help="Read variables from this file too (the environment wins)."
    ),
    json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create or update all blocks from the environment; create missing buckets encrypted and private."""
    settings = load_settings(env_file)  # every variable is checked before anything is written
    with prefect_connection() as target:
        from blocks.platform import init_blocks

        report = init_blocks(settings)
    if json:
        emit_json(
            {
                "prefect_api_url": target.url,
                "account": report.account,
                "buckets": report.buckets,
                "blocks": report.blocks,
            }
        )
        return
    for bucket, outcome in report.buckets.items():
        console.print(f"bucket  s3://{bucket}  {outcome}")
    console.print(f"blocks  {', '.join(report.blocks)}  saved to {target.url}")
