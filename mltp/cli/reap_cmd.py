"""`mltp reap`: run the `reap-orphans` flow and show what it found."""

from __future__ import annotations

import typer
from rich.table import Column, Table

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json, quiet_prefect_console


def reap(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report the orphans; terminate nothing."),
    stale_after: float = typer.Option(
        10.0,
        "--stale-after",
        min=0.1,
        max=10080,
        help="Minutes a run may go unwatched (or an instance lack a run record) before it is abandoned.",
    ),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Terminate EC2 instances whose training flow run ended or died without stopping them."""
    quiet_prefect_console()
    with prefect_connection():
        from flows.reap import reap_orphans

        report = reap_orphans(dry_run=dry_run, stale_after_minutes=stale_after)
    if json:
        emit_json(report)
        return
    orphans, terminated = report["orphans"], set(report["terminated"])
    checked = f"{report['checked']} instance" + ("" if report["checked"] == 1 else "s")
    console.print(
        f"checked {checked}: {len(orphans)} orphaned, {len(terminated)} terminated"
        + (" (dry run)" if dry_run else "")
    )
    if not orphans:
        return
    table = Table(
        Column("instance", no_wrap=True),
        Column("job", overflow="fold"),
        Column("launched", no_wrap=True),
        "action",
        Column("reason", overflow="fold"),
    )
    for orphan in orphans:
        done = orphan["instance_id"] in terminated
        action = "would terminate" if dry_run else "terminated" if done else "not terminated"
        launched = orphan["launched_at"][:16].replace("T", " ")
        table.add_row(orphan["instance_id"], orphan["job_id"], launched, action, orphan["reason"])
    console.print(table)
