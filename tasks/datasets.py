"""Prefect tasks over `mltp.datasets`: retries for transient AWS errors, progress, the profile artifact."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect_aws import S3Bucket

from mltp import datasets
from mltp.dataset_catalog import column_name_shown, distinct_shown
from tasks.retries import AWS_RETRIES

# The CLI sets this to draw a progress bar; the task reports to it as well as to the UI.
progress_listener: ContextVar[Any] = ContextVar("mltp_ingest_progress", default=None)


class _Progress:
    """Reports bytes read to the UI (a progress artifact), the run log and the CLI, at a sane rate."""

    def __init__(self, label: str) -> None:
        self.logger = get_run_logger()
        self.label = label
        self.artifact = create_progress_artifact(0.0, description=f"Ingesting {label}")
        self.listener = progress_listener.get()
        self.last_percent, self.last_time, self.last_logged = 0.0, 0.0, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if self.listener:
            self.listener(done, total)
        if not total:
            return
        percent = 100.0 * done / total
        now = time.monotonic()
        if percent - self.last_logged >= 10 or (percent >= 100 > self.last_logged):
            self.logger.info("read %s of %s (%.0f%%)", f"{done:,}", f"{total:,}", percent)
            self.last_logged = percent
        if (percent - self.last_percent >= 2 and now - self.last_time >= 1) or percent >= 100:
            update_progress_artifact(self.artifact, min(percent, 100.0))
            self.last_percent, self.last_time = percent, now


@task(name="ingest-to-s3", cache_policy=NO_CACHE, **AWS_RETRIES)
def ingest_to_s3(
    source: str,
    name: str | None,
    target: str | None,
    max_size_mb: int,
    bucket: S3Bucket,
    other_target: Literal["refuse", "reuse"] = "refuse",
) -> dict[str, Any]:
    logger = get_run_logger()
    result = datasets.ingest(
        bucket.credentials.get_client,
        bucket.bucket_name,
        source,
        name=name,
        target=target,
        max_bytes=max_size_mb * 1024 * 1024,
        on_progress=_Progress(source),
        other_target=other_target,
    )
    manifest = result.manifest
    if result.created:
        logger.info(
            "ingested %s as %s@%s: %s rows", source, manifest["name"], manifest["version"], manifest["rows"]
        )
    else:
        logger.info("%s is already %s@%s: nothing to do", source, manifest["name"], manifest["version"])
    return {"created": result.created, **manifest}


def profile_markdown(manifest: dict[str, Any]) -> str:
    lines = [
        f"# Dataset `{manifest['name']}` version `{manifest['version']}`",
        "",
        f"- **rows**: {manifest['rows']:,}  **bytes**: {manifest['bytes']:,}  **format**: "
        f"{manifest['format']['kind']}{' (gzip)' if manifest['format']['compression'] else ''}",
        f"- **target**: {manifest['target'] or '-'}  **task**: {manifest['task'] or '-'}",
        f"- **sha256**: `{manifest['sha256']}`",
        f"- **stored at**: `{manifest['uri']}`  (from `{manifest['source']}`)",
        "",
        "| column | type | nulls | distinct | min | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for column in manifest["columns"]:
        distinct = distinct_shown(column, " (est.)")
        low = "" if column["min"] is None else column["min"]
        high = "" if column["max"] is None else column["max"]
        name = column_name_shown(column["name"]).replace("|", "\\|")
        lines.append(f"| {name} | {column['type']} | {column['nulls']:,} | {distinct} | {low} | {high} |")
    return "\n".join(lines)


@task(name="publish-dataset-profile", cache_policy=NO_CACHE)
def publish_profile(manifest: dict[str, Any]) -> None:
    create_markdown_artifact(
        profile_markdown(manifest),
        key=f"dataset-{manifest['name'].replace('_', '-')}",
        description=f"Profile of {manifest['name']}@{manifest['version']}",
    )
