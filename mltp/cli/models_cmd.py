"""`mltp models list | show | report | promote | approve | reject`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mltp import registry
from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json
from mltp.output_file import check_destination, write_output
from mltp.s3_json import strict_dumps

app = typer.Typer(help="Registered models: versions, aliases, approvals and their history.")
JSON = typer.Option(False, "--json", help="Print JSON.")
REASON = typer.Option(..., "--reason", help="Why: kept in the audit log.")


def models_bucket():
    """The S3 client and the models bucket, from the blocks."""
    from blocks.platform import load_blocks

    blocks = load_blocks()
    return blocks.client("s3"), blocks.models.bucket_name


@app.command("list")
def list_(json: bool = JSON) -> None:
    """Every registered model with its latest version and aliases."""
    with prefect_connection():
        s3, bucket = models_bucket()
        found = registry.list_models(s3, bucket)
    if json:
        emit_json(found)
        return
    if not found:
        console.print(f"no models in s3://{bucket} yet")
        return
    table = Table("name", "latest", "versions", "aliases")
    for entry in found:
        shown = ", ".join(f"{alias}={version}" for alias, version in entry["aliases"].items())
        table.add_row(entry["name"], str(entry["latest_version"]), str(entry["versions"]), shown or "-")
    console.print(table)


@app.command()
def show(
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"), json: bool = JSON
) -> None:
    """One version (the latest by default): metrics, signature, lineage, approval, aliases, history."""
    name, version, alias = registry.parse_model_ref(reference)
    with prefect_connection():
        s3, bucket = models_bucket()
        found = registry.get_version(s3, bucket, name, version, alias)
        pointers = registry.aliases(s3, bucket, name)
        numbers = [v.version for v in registry.list_versions(s3, bucket, name)]
        history = [e for e in registry.audit_log(s3, bucket, name) if registry.concerns(e, found.version)]
    if json:
        emit_json({**found.as_dict(), "aliases": pointers, "versions": numbers, "history": history})
        return
    console.print(
        f"{found.name}:{found.version}  {found.approval}  created {found.created_at}  "
        f"aliases: {', '.join(a for a, v in pointers.items() if v == found.version) or '-'}"
    )
    console.print(f"  {found.model_uri}\n  sha256 {found.sha256}")
    console.print(f"  {found.task} of target {registry.target_of(found.signature) or '-'}")
    metrics = ", ".join(f"{metric}={registry.shown_metric(value)}" for metric, value in found.metrics.items())
    console.print(f"  metrics ({found.primary_metric} decides): {metrics or '-'}")
    inputs = ", ".join(f"{i['name']}:{i['type']}" for i in found.signature.get("inputs", []))
    console.print(f"  inputs: {inputs or '-'}")
    for event in history:
        console.print(
            f"  {event['at']}  {event['action']} {event.get('alias') or ''} {event['from']} -> {event['to']}"
            f"  by {event['actor']}: {event['reason'] or ''}"
        )
    console.print("versions: " + ", ".join(map(str, numbers)))


@app.command()
def report(
    reference: str = typer.Argument(..., help="NAME (the latest version), NAME:VERSION or NAME@ALIAS"),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Where to write the card [default: NAME-vVERSION.html, or stdout with --json].",
    ),
    json: bool = typer.Option(False, "--json", help="The card's content as JSON instead of HTML."),
) -> None:
    """A model card: one self-contained HTML page (plots embedded, opens offline) to share a version."""
    from blocks.platform import load_blocks
    from mltp.model_card import build_card
    from mltp.model_card_html import render_card

    registry.parse_model_ref(reference)  # a bad reference is refused before anything connects
    if output is not None:
        check_destination(output)
    with prefect_connection():
        blocks = load_blocks()
        card = build_card(
            blocks.client("s3"),
            blocks.models.bucket_name,
            blocks.client,
            blocks.datasets.bucket_name,
            reference,
        )
    if json and output is None:
        emit_json(card)
        return
    destination = output or Path(f"{card['name']}-v{card['version']}.html")
    text = strict_dumps(card, indent=2) + "\n" if json else render_card(card)
    write_output(destination, lambda handle: handle.write(text))
    plots = "" if json else f", {text.count('<img ')} plot(s)"
    console.print(f"{card['name']}:{card['version']} card written to {destination}{plots}")


@app.command()
def promote(
    reference: str = typer.Argument(..., help="NAME:VERSION (or NAME@ALIAS) to point the alias at"),
    alias: str = typer.Option(..., "--alias", help="The alias to move, e.g. champion or staging."),
    reason: str | None = typer.Option(None, "--reason", help="Why: kept in the audit log."),
    expected: int | None = typer.Option(
        None, "--expected-version", min=1, help="Move only if the alias still points at this version."
    ),
) -> None:
    """Point an alias at a version (compare-and-swap; every move is in the audit log)."""
    registry.parse_pinned_ref(reference)  # a bad reference is refused before anything connects
    with prefect_connection():
        name, target, previous = registry.point_alias(
            *models_bucket(),
            reference,
            alias,
            actor=registry.cli_actor(),
            reason=reason,
            expected_version=expected,
        )
    moved = "already there" if previous == target else f"was {previous or 'unset'}"
    console.print(f"{name}@{alias} -> version {target} ({moved})")


def _set_approval(reference: str, status: str, reason: str) -> None:
    registry.parse_pinned_ref(reference)  # a bad reference is refused before anything connects
    with prefect_connection():
        name, target, previous = registry.change_approval(
            *models_bucket(), reference, status, actor=registry.cli_actor(), reason=reason
        )
    console.print(f"{name}:{target} {status} (was {previous})")


@app.command()
def approve(
    reference: str = typer.Argument(..., help="NAME:VERSION or NAME@ALIAS"), reason: str = REASON
) -> None:
    """Mark a version Approved."""
    _set_approval(reference, "Approved", reason)


@app.command()
def reject(
    reference: str = typer.Argument(..., help="NAME:VERSION or NAME@ALIAS"), reason: str = REASON
) -> None:
    """Mark a version Rejected."""
    _set_approval(reference, "Rejected", reason)
