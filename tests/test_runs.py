"""Runs: sharding a grid, attempt job ids, relaunch budget, picking the best shard, observed cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mltp.compute.base import Launched
from mltp.monitor import Verdict
from mltp.runs import Shard, attempt_spec, best_shard, job_id_of, observed_cost_usd, split_candidates
from mltp.trainer.spec import JobSpec


def spec(job_id: str = "run-x-s1-a1", metric: str = "accuracy") -> JobSpec:
    return JobSpec(
        job_id=job_id,
        dataset_manifest_uri="s3://data/datasets/d/v/manifest.json",
        target="y",
        task="classification" if metric == "accuracy" else "regression",
        algorithm="random_forest",
        primary_metric=metric,
        output_prefix=f"s3://models/runs/{job_id}/",
    )


@pytest.mark.parametrize(
    ("count", "shards", "sizes"),
    [(1, 3, [1]), (3, 3, [1, 1, 1]), (7, 3, [3, 2, 2]), (4, 1, [4]), (2, 4, [1, 1])],
)
def test_candidates_are_split_round_robin(count, shards, sizes) -> None:
    candidates = [{"n_estimators": n} for n in range(count)]
    split = split_candidates(candidates, shards)
    assert [len(chunk) for chunk in split] == sizes
    assert sorted(c["n_estimators"] for chunk in split for c in chunk) == list(range(count))


def test_each_attempt_is_its_own_job_with_its_own_prefix() -> None:
    base = spec()
    second = attempt_spec(base, "run-x", 1, 2, "models")
    assert second.job_id == job_id_of("run-x", 1, 2) == "run-x-s1-a2"
    assert second.output_prefix == "s3://models/runs/run-x-s1-a2/"
    assert second.candidates == base.candidates and base.job_id == "run-x-s1-a1"


def test_longest_job_id_fits_the_spec() -> None:
    from mltp.jobs import new_job_id

    run_id = new_job_id("a-very-long-dataset-name-that-goes-on", "hist_gradient_boosting")
    spec(job_id_of(run_id, 100, 11))  # validates the 63-character limit


@pytest.mark.parametrize(
    ("kind", "attempts", "allowed"),
    [
        ("lost", 1, True),
        ("interrupted", 2, True),
        ("capacity", 3, False),
        ("user", 1, False),
        ("timeout", 1, False),
    ],
)
def test_relaunch_budget(kind, attempts, allowed) -> None:
    shard = Shard(1, [{}], spec())
    for _ in range(attempts):
        shard.record_attempt(Verdict("lost", kind, "gone"))
    assert shard.may_relaunch(Verdict("lost", kind, "gone"), max_relaunches=2) is allowed


@pytest.mark.parametrize(
    ("metric", "values", "best"), [("accuracy", [0.8, 0.9, 0.85], 2), ("rmse", [3.0, 2.0, 2.5], 2)]
)
def test_best_shard_follows_the_metrics_direction(metric, values, best) -> None:
    shards = []
    for number, value in enumerate(values, start=1):
        shard = Shard(number, [{}], spec(f"run-x-s{number}-a1", metric))
        shard.finish(Verdict("succeeded"), {"metrics": {metric: value}})
        shards.append(shard)
    failed = Shard(9, [{}], spec("run-x-s9-a1", metric))
    failed.finish(Verdict("failed", "user", "bad"))
    assert best_shard([*shards, failed], metric).number == best
    assert best_shard([failed], metric) is None


def test_observed_cost() -> None:
    assert observed_cost_usd("ec2", "m5.large", 8192, [30.0, 3600.0]) == pytest.approx(
        0.096 * (60 + 3600) / 3600
    )
    assert observed_cost_usd("lambda", None, 2048, [10.0]) == pytest.approx(10 * 2 * 0.0000166667, abs=1e-6)
    assert observed_cost_usd("local", None, 0, [100.0]) == 0.0


def test_an_attempt_records_when_it_was_launched_and_settled() -> None:
    shard = Shard(1, [{}], spec())
    launched_at = datetime.now(UTC) - timedelta(seconds=30)
    shard.launched = Launched("run-x-s1-a1", "ec2", 1, launched_at, "i-1")
    before = datetime.now(UTC)
    shard.record_attempt(Verdict("lost", "lost", "instance i-1 is terminated"))
    [attempt] = shard.attempts
    assert abs(datetime.fromisoformat(attempt["launched_at"]) - launched_at) < timedelta(milliseconds=1)
    settled_at = datetime.fromisoformat(attempt["settled_at"])
    assert before - timedelta(milliseconds=1) <= settled_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("messages", "note"),
    [
        (["instance i-1 vanished"], "after 1 attempts"),
        (["instance i-1 is terminated", "instance i-2 is terminated"], "after 2 attempts"),
        (
            ["no heartbeat for 9 s", "instance i-2 is terminated", "instance i-3 is terminated"],
            "after 3 attempts; the first: no heartbeat for 9 s",
        ),
    ],
)
def test_a_lost_shard_names_its_first_loss_when_the_later_ones_differ(messages, note) -> None:
    shard = Shard(1, [{}], spec())
    for number, message in enumerate(messages, start=1):
        shard.launched = Launched("run-x-s1-a1", "ec2", number, datetime.now(UTC), f"i-{number}")
        shard.record_attempt(Verdict("lost", "lost", message))
    assert shard.attempts_note() == note
