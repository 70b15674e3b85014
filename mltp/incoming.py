"""Exactly-once pick-up of files dropped under `incoming/` in the data bucket.

Every dropped object (its key and ETag: a new upload under the same key is a new drop) has two markers
under `watch/incoming/`: `claims/<id>.json`, written only if absent (`If-None-Match`), so one watcher
owns the drop however many run at once; and `done/<id>.json`, written when its ingest ended (ingested
or rejected), so no later run looks at it again. A claim whose owner died is taken over after its lease
(compare-and-swap on the claim's ETag), so a crash delays a drop but never loses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from mltp.aws import error_code
from mltp.dataset_catalog import derive_name, detect_format, validate_name
from mltp.s3_json import lost_race, put_json, read_json

MARKERS = "watch/incoming/"
CLAIMS = f"{MARKERS}claims/"
DONE = f"{MARKERS}done/"


@dataclass(frozen=True)
class Drop:
    """One object under the incoming prefix."""

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.key}\n{self.etag}".encode()).hexdigest()[:32]

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def dataset_name(self, prefix: str) -> str:
        """`incoming/<name>/<file>` names the dataset; `incoming/<file>` is named after the file."""
        *folders, filename = self.key.removeprefix(prefix).split("/")
        return validate_name(folders[0]) if folders else derive_name(filename, detect_format(filename))


@dataclass(frozen=True)
class Claim:
    drop: Drop
    took_over: bool  # the previous owner's lease ran out: it may have ingested without finishing


def _objects(s3, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def pending_drops(s3, bucket: str, prefix: str) -> list[Drop]:
    """Drops with no `done` marker, oldest first (two listings, however many drops there are)."""
    done = {entry["Key"].removeprefix(DONE).removesuffix(".json") for entry in _objects(s3, bucket, DONE)}
    drops = [
        Drop(bucket, entry["Key"], entry["ETag"].strip('"'), entry["Size"], entry["LastModified"])
        for entry in _objects(s3, bucket, prefix)
        if not entry["Key"].endswith("/")
    ]
    return sorted((drop for drop in drops if drop.id not in done), key=lambda drop: drop.last_modified)


def claim(s3, drop: Drop, owner: str, lease: timedelta, now: datetime | None = None) -> Claim | None:
    """Take the drop for `owner`; None when another watcher holds it (or finished it meanwhile)."""
    now = now or datetime.now(UTC)
    document = {"key": drop.key, "etag": drop.etag, "owner": owner, "claimed_at": now.isoformat()}
    try:
        put_json(s3, drop.bucket, _claim(drop.id), document, create=True)
        return Claim(drop, took_over=False)
    except ClientError as error:
        if not lost_race(error):
            raise
    held, etag = read_json(s3, drop.bucket, _claim(drop.id))
    if held is None:  # released meanwhile: the next run tries again
        return None
    if held["owner"] == owner:  # our own claim, whose answer was lost and retried
        return Claim(drop, took_over=False)
    if now - datetime.fromisoformat(held["claimed_at"]) < lease or _is_done(s3, drop):
        return None
    try:
        put_json(s3, drop.bucket, _claim(drop.id), document, etag=etag)
    except ClientError as error:
        if lost_race(error):  # another watcher took it over first
            return None
        raise
    return Claim(drop, took_over=True)


def finish(s3, drop: Drop, outcome: dict[str, Any]) -> None:
    """Record how the drop ended (`ingested` or `rejected`): no run looks at it again."""
    put_json(s3, drop.bucket, _done(drop.id), {"key": drop.key, "etag": drop.etag, **outcome})


def release(s3, drop: Drop) -> None:
    """Give the drop back after a failure that was not its fault: the next run tries again."""
    s3.delete_object(Bucket=drop.bucket, Key=_claim(drop.id))


def _is_done(s3, drop: Drop) -> bool:
    try:
        s3.head_object(Bucket=drop.bucket, Key=_done(drop.id))
    except ClientError as error:
        if error_code(error) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _claim(drop_id: str) -> str:
    return f"{CLAIMS}{drop_id}.json"


def _done(drop_id: str) -> str:
    return f"{DONE}{drop_id}.json"
