"""`mltp datasets ingest | list | show`."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from mltp.cli.context import prefect_connection
from mltp.cli.output import console, emit_json, quiet_prefect_console
from mltp.dataset_catalog import (
    DEFAULT_MAX_MB,
    column_name_shown,
    distinct_shown,
    get_manifest,
    list_datasets,
    parse_reference,
    versions,
)
from mltp.errors import ConfigError

app = typer.Typer(help="Ingest datasets into the data bucket and look at what is there.")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _data_bucket():
    from prefect_aws import S3Bucket

    from blocks.platform import DATASETS, load_block

    bucket = load_block(S3Bucket, DATASETS)
    return bucket.credentials.get_client, bucket.bucket_name


def _progress_bar():
    if not sys.stderr.isatty():
        return nullcontext(None)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console.__class__(stderr=True),
        transient=True,
    )


@app.command()
def ingest(
    path: str = typer.Argument(..., help="CSV (.csv/.tsv, optionally .gz) or Parquet file, local or s3://"),
    name: str | None = typer.Option(None, "--name", help="Dataset name (default: from the file name)."),
    target: str | None = typer.Option(None, "--target", help="Target column."),
    max_size_mb: int = typer.Option(
        DEFAULT_MAX_MB, "--max-size-mb", envvar="MLTP_MAX_DATASET_MB", min=1, help="Refuse larger files."
    ),
    auto_train: bool = typer.Option(
        False,
        "--auto-train",
        help="Have the train-on-new-dataset deployment train the new version (needs a target).",
    ),
    json: bool = JSON,
) -> None:
    """Upload, hash and profile a dataset in one pass; identical bytes again change nothing."""
    if auto_train and not target:
        raise ConfigError("--auto-train needs --target: training needs to know which column to predict")
    quiet_prefect_console()
    with prefect_connection(), _progress_bar() as bar:
        from prefect.events.worker import EventsWorker

        from flows.ingest import announce_dataset, ingest_dataset
        from tasks.datasets import progress_listener

        if bar is not None:
            task_id = bar.add_task(Path(path).name, total=None)
            progress_listener.set(lambda done, total: bar.update(task_id, completed=done, total=total))
        manifest = ingest_dataset(
            source=path, name=name, target=target, max_size_mb=max_size_mb, auto_train=auto_train
        )
        if auto_train and not manifest["created"]:  # asked to train bytes ingested before: train them
            announce_dataset(manifest, auto_train=True)
        EventsWorker.drain_all(timeout=10)  # the event must leave before this short process does
    if json:
        emit_json(manifest)
        return
    if manifest["created"]:
        console.print(
            f"ingested {manifest['name']}@{manifest['version']}: {manifest['rows']:,} rows, "
            f"{manifest['bytes']:,} bytes -> {manifest['uri']}"
        )
        if auto_train:
            console.print("announced for training: the train-on-new-dataset deployment trains it")
    elif auto_train:
        console.print(
            f"already ingested as {manifest['name']}@{manifest['version']}: announced for training, "
            "the train-on-new-dataset deployment trains it"
        )
    else:
        console.print(f"already ingested as {manifest['name']}@{manifest['version']}: nothing changed")
    _print_columns(manifest)


@app.command("list")
def list_(json: bool = JSON) -> None:
    """Every dataset with its latest version."""
    with prefect_connection():
        clients, bucket = _data_bucket()
        found = list_datasets(clients, bucket)
    if json:
        emit_json(found)
        return
    if not found:
        console.print(f"no datasets in s3://{bucket} yet: `mltp datasets ingest FILE` adds one")
        return
    table = Table("name", "latest", "versions", "rows", "bytes", "created")
    for entry in found:
        table.add_row(
            entry["name"],
            entry["latest"],
            str(entry["versions"]),
            f"{entry['rows']:,}",
            f"{entry['bytes']:,}",
            entry["created_at"],
        )
    console.print(table)


@app.command()
def show(reference: str = typer.Argument(..., help="NAME or NAME@VERSION"), json: bool = JSON) -> None:
    """A dataset's manifest: where it is, its size and the profile of every column."""
    name, version = parse_reference(reference)
    with prefect_connection():
        clients, bucket = _data_bucket()
        manifest = get_manifest(clients, bucket, name, version)
        history = versions(clients, bucket, name)
    if json:
        emit_json({**manifest, "versions": history})
        return
    console.print(
        f"{manifest['name']}@{manifest['version']}  {manifest['rows']:,} rows  {manifest['bytes']:,} bytes"
        f"  target: {manifest['target'] or '-'}  task: {manifest['task'] or '-'}"
    )
    console.print(f"  {manifest['uri']}\n  sha256 {manifest['sha256']}  created {manifest['created_at']}")
    _print_columns(manifest)
    console.print("versions: " + ", ".join(f"{v['version']} ({v['created_at']})" for v in history))


def _print_columns(manifest: dict) -> None:
    table = Table("column", "type", "nulls", "distinct", "min", "max")
    for column in manifest["columns"]:
        table.add_row(
            column_name_shown(column["name"]),
            column["type"],
            f"{column['nulls']:,}",
            distinct_shown(column, "~"),
            "" if column["min"] is None else str(column["min"]),
            "" if column["max"] is None else str(column["max"]),
        )
    console.print(table)
