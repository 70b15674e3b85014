"""Prefect tasks over `mltp.incoming`: the S3 calls of `watch-incoming`, retried when transient."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.platform import PlatformBlocks
from mltp import incoming
from mltp.dataset_catalog import get_manifest
from mltp.errors import DatasetNotFoundError
from tasks.retries import AWS_RETRIES


@task(name="find-drops", cache_policy=NO_CACHE, **AWS_RETRIES)
def find_drops(blocks: PlatformBlocks, prefix: str) -> list[incoming.Drop]:
    return incoming.pending_drops(blocks.client("s3"), blocks.datasets.bucket_name, prefix)


@task(name="claim-drop", cache_policy=NO_CACHE, **AWS_RETRIES)
def claim_drop(
    blocks: PlatformBlocks, drop: incoming.Drop, owner: str, lease: timedelta
) -> incoming.Claim | None:
    return incoming.claim(blocks.client("s3"), drop, owner, lease)


@task(name="finish-drop", cache_policy=NO_CACHE, **AWS_RETRIES)
def finish_drop(blocks: PlatformBlocks, drop: incoming.Drop, outcome: dict[str, Any]) -> None:
    incoming.finish(blocks.client("s3"), drop, outcome)


@task(name="release-drop", cache_policy=NO_CACHE, **AWS_RETRIES)
def release_drop(blocks: PlatformBlocks, drop: incoming.Drop) -> None:
    incoming.release(blocks.client("s3"), drop)


@task(name="previous-target", cache_policy=NO_CACHE, **AWS_RETRIES)
def previous_target(blocks: PlatformBlocks, name: str) -> str | None:
    """The target column of the dataset's latest version, if it has one."""
    try:
        return get_manifest(blocks.client, blocks.datasets.bucket_name, name)["target"]
    except DatasetNotFoundError:
        return None
