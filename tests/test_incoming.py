"""`mltp.incoming`: each dropped object is claimed by exactly one watcher and finished once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from mltp import incoming

BUCKET = "drops"
LEASE = timedelta(minutes=30)


@pytest.fixture
def s3(mock_clients):
    client = mock_clients("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def drop(s3, key: str, body: bytes = b"a,b\n1,2\n") -> incoming.Drop:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return next(found for found in incoming.pending_drops(s3, BUCKET, "incoming/") if found.key == key)


def test_pending_drops_are_the_unfinished_files_oldest_first(s3) -> None:
    first = drop(s3, "incoming/a.csv")
    drop(s3, "incoming/b/b.csv")
    s3.put_object(Bucket=BUCKET, Key="incoming/folder/", Body=b"")  # a console "folder": not a drop
    s3.put_object(Bucket=BUCKET, Key="elsewhere/c.csv", Body=b"x")
    assert [found.key for found in incoming.pending_drops(s3, BUCKET, "incoming/")] == [
        "incoming/a.csv",
        "incoming/b/b.csv",
    ]
    incoming.finish(s3, first, {"state": "ingested"})
    assert [found.key for found in incoming.pending_drops(s3, BUCKET, "incoming/")] == ["incoming/b/b.csv"]


def test_a_new_upload_under_the_same_key_is_a_new_drop(s3) -> None:
    old = drop(s3, "incoming/a.csv", b"x,y\n1,2\n")
    incoming.finish(s3, old, {"state": "ingested"})
    new = drop(s3, "incoming/a.csv", b"x,y\n3,4\n")
    assert new.id != old.id


def test_dataset_name_comes_from_the_folder_or_the_file(s3) -> None:
    assert drop(s3, "incoming/churn/2026-11.csv").dataset_name("incoming/") == "churn"
    assert drop(s3, "incoming/Sales Q3.parquet").dataset_name("incoming/") == "sales-q3"


def test_only_one_of_many_concurrent_watchers_claims_a_drop(s3, monkeypatch) -> None:
    from moto.s3.models import S3Backend

    found = drop(s3, "incoming/a.csv")
    store = S3Backend.put_object

    def slow_store(*args, **kwargs):  # widen the window between S3's precondition check and the write
        time.sleep(0.05)
        return store(*args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_store)
    barrier = threading.Barrier(8)
    claims = []

    def watcher(owner: str) -> None:
        barrier.wait()
        claims.append(incoming.claim(s3, found, owner, LEASE))

    threads = [threading.Thread(target=watcher, args=(f"run-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(claim is not None for claim in claims) == 1


def test_a_retried_claim_whose_answer_was_lost_is_still_ours(s3) -> None:
    found = drop(s3, "incoming/a.csv")
    assert incoming.claim(s3, found, "run-1", LEASE) == incoming.Claim(found, took_over=False)
    assert incoming.claim(s3, found, "run-1", LEASE) == incoming.Claim(found, took_over=False)
    assert incoming.claim(s3, found, "run-2", LEASE) is None


def test_a_dead_owners_claim_is_taken_over_after_the_lease(s3) -> None:
    found = drop(s3, "incoming/a.csv")
    assert incoming.claim(s3, found, "crashed", LEASE, now=datetime.now(UTC) - timedelta(hours=1))
    assert incoming.claim(s3, found, "run-2", LEASE) == incoming.Claim(found, took_over=True)
    assert incoming.claim(s3, found, "run-3", LEASE) is None  # run-2's claim is fresh


def test_a_finished_drop_is_never_taken_over(s3) -> None:
    found = drop(s3, "incoming/a.csv")
    incoming.claim(s3, found, "run-1", LEASE, now=datetime.now(UTC) - timedelta(hours=1))
    incoming.finish(s3, found, {"state": "ingested"})
    assert incoming.claim(s3, found, "run-2", LEASE) is None


def test_a_released_drop_is_claimed_again(s3) -> None:
    found = drop(s3, "incoming/a.csv")
    assert incoming.claim(s3, found, "run-1", LEASE)
    incoming.release(s3, found)
    assert incoming.claim(s3, found, "run-2", LEASE) == incoming.Claim(found, took_over=False)
