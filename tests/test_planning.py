"""The planner's rules and guards, one table row each."""

from __future__ import annotations

import pytest

from mltp.planning import PlanError, PlannerSettings, Workload, plan_compute

SETTINGS = PlannerSettings()


def workload(
    rows=10_000, columns=10, algorithm="random_forest", candidates=1, bytes_per_row=100, **extra
) -> Workload:
    values = {
        "rows": rows,
        "bytes": rows * bytes_per_row,
        "columns": columns,
        "features": columns - 1,
        "candidates": candidates,
        "fits_per_candidate": 1,
        "algorithm": algorithm,
        "ensemble_size": 100,
    }
    return Workload(**{**values, **extra})


@pytest.mark.parametrize(
    ("case", "job", "settings", "forced", "backend", "instance_type", "instances", "reason"),
    [
        (
            "small goes to Lambda",
            workload(),
            SETTINGS,
            "auto",
            "lambda",
            None,
            1,
            "within the Lambda threshold",
        ),
        (
            "at the threshold stays on Lambda",
            workload(rows=100_000, columns=5, algorithm="ridge"),
            SETTINGS,
            "auto",
            "lambda",
            None,
            1,
            "within the Lambda threshold",
        ),
        (
            "over the threshold goes to EC2",
            workload(rows=100_001, algorithm="ridge"),
            SETTINGS,
            "auto",
            "ec2",
            "t3.medium",
            1,
            "over the Lambda threshold of 100,000",
        ),
        (
            "the threshold is a setting",
            workload(rows=50_000, algorithm="ridge"),
            PlannerSettings(lambda_max_rows=10_000),
            "auto",
            "ec2",
            "t3.medium",
            1,
            "over the Lambda threshold of 10,000",
        ),
        (
            "memory guard",
            workload(rows=90_000, columns=600, bytes_per_row=20),
            SETTINGS,
            "auto",
            "ec2",
            "t3.medium",
            1,
            "estimated memory",
        ),
        (
            "runtime guard",
            workload(rows=90_000, columns=200, bytes_per_row=10, algorithm="knn", candidates=4),
            PlannerSettings(lambda_timeout_s=60),
            "auto",
            "ec2",
            None,
            4,
            "timeout",
        ),
        (
            "ephemeral storage guard",
            workload(rows=50_000, columns=3, algorithm="ridge", bytes_per_row=40_000),
            PlannerSettings(lambda_memory_mb=10_240),
            "auto",
            "ec2",
            None,
            1,
            "ephemeral storage",
        ),
        (
            "grid split over instances",
            workload(rows=500_000, algorithm="ridge", candidates=6),
            SETTINGS,
            "auto",
            "ec2",
            None,
            4,
            "split over 4 instances",
        ),
        (
            "max_instances is a setting",
            workload(rows=500_000, algorithm="ridge", candidates=6),
            PlannerSettings(max_instances=2),
            "auto",
            "ec2",
            None,
            2,
            "max_instances=2",
        ),
        (
            "a small grid uses one instance each",
            workload(rows=500_000, algorithm="ridge", candidates=2),
            SETTINGS,
            "auto",
            "ec2",
            None,
            2,
            "split over 2 instances",
        ),
        (
            "bigger data, bigger instance",
            workload(rows=5_000_000, columns=30),
            SETTINGS,
            "auto",
            "ec2",
            None,
            1,
            "cheapest allowed type",
        ),
        (
            "allowed types are respected",
            workload(rows=500_000, algorithm="ridge"),
            PlannerSettings(allowed_instance_types=("c5.*",)),
            "auto",
            "ec2",
            "c5.large",
            1,
            "c5.large",
        ),
        (
            "forced EC2 for small data",
            workload(),
            SETTINGS,
            "ec2",
            "ec2",
            "t3.medium",
            1,
            "compute=ec2 was requested",
        ),
        (
            "forced Lambda for big data within limits",
            workload(rows=300_000, columns=4, algorithm="ridge", bytes_per_row=20),
            SETTINGS,
            "lambda",
            "lambda",
            None,
            1,
            "compute=lambda was requested",
        ),
        ("forced local", workload(rows=10_000_000), SETTINGS, "local", "local", None, 1, "compute=local"),
    ],
)
def test_rules(case, job, settings, forced, backend, instance_type, instances, reason) -> None:
    plan = plan_compute(job, settings, forced)
    assert plan.backend == backend, case
    if instance_type:
        assert plan.instance_type == instance_type, case
    assert plan.instances == instances, case
    assert any(reason in line for line in plan.reasons), (case, plan.reasons)
    assert plan.estimated_runtime_s > 0 and plan.estimated_memory_mb > 0
    assert plan.estimated_cost_usd >= 0
    if backend == "ec2":
        assert plan.memory_mb >= plan.estimated_memory_mb / 0.7


@pytest.mark.parametrize(
    ("job", "settings", "message"),
    [
        (workload(rows=2_000_000, columns=200), SETTINGS, "compute=lambda is refused: estimated memory"),
        (
            workload(rows=50_000, columns=100, algorithm="knn", candidates=20),
            PlannerSettings(lambda_timeout_s=30),
            "compute=lambda is refused: estimated runtime",
        ),
        (
            workload(rows=1_000, bytes_per_row=5_000_000, algorithm="ridge"),
            PlannerSettings(lambda_memory_mb=10_240),
            "compute=lambda is refused: the dataset's",
        ),
    ],
)
def test_forced_lambda_that_breaks_a_limit_is_refused(job, settings, message) -> None:
    with pytest.raises(PlanError, match=message):
        plan_compute(job, settings, "lambda")


def test_no_allowed_type_big_enough() -> None:
    with pytest.raises(PlanError, match="no allowed instance type has"):
        plan_compute(
            workload(rows=50_000_000, columns=50), PlannerSettings(allowed_instance_types=("t3.*",)), "ec2"
        )


def test_costs_follow_the_price_table() -> None:
    lambda_plan = plan_compute(workload(), SETTINGS)
    ec2_plan = plan_compute(workload(), SETTINGS, "ec2")
    assert lambda_plan.prices_as_of == ec2_plan.prices_as_of
    assert 0 < lambda_plan.estimated_cost_usd < ec2_plan.estimated_cost_usd  # EC2 bills a minute at least


def test_workload_from_a_manifest() -> None:
    manifest = {
        "rows": 1000,
        "bytes": 50_000,
        "target": "y",
        "columns": [
            {"name": "a", "type": "float", "distinct": 900},
            {"name": "city", "type": "string", "distinct": 300},
            {"name": "when", "type": "datetime", "distinct": 30},
            {"name": "y", "type": "integer", "distinct": 2},
        ],
    }
    job = Workload.of(manifest, "random_forest", [{"n_estimators": 300}, {}], folds=5)
    assert (job.features, job.candidates, job.fits_per_candidate, job.ensemble_size) == (
        1 + 50 + 5,
        2,
        6,
        300,
    )
