"""A burst of pipelines started at once against the sandbox: the CI variant of `python -m benchmarks load`
(benchmarks/load.py holds the scenario and the promises; the benchmark runs 20 pipelines, this three)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.load import Burst, Pipeline, Target, run_burst, violations

PIPELINES = 3  # one more than the deployment's two slots: the queue, the limit and the registry all work


@pytest.mark.servers
def test_pipelines_started_at_once_all_end_within_the_limit_with_consecutive_versions(
    sandbox, tmp_path
) -> None:
    burst = run_burst(Target(sandbox.prefect_api_url, sandbox.client), tmp_path, PIPELINES, timeout_s=280)

    assert len(burst.pipelines) == PIPELINES
    assert violations(burst) == []
    assert burst.most_running >= 1  # the sampling saw runs go: the limit was checked, not assumed


LINEAGE = {1: {"dataset": "data-2", "pipeline": "run-2"}, 2: {"dataset": "data-1", "pipeline": "run-1"}}


def burst(runs: dict[int, dict] | None = None, **changes) -> Burst:
    """Three runs that kept every promise (two completed: versions 1 and 2; one failed with a reason),
    with `changes` to the burst and `runs` (index -> field changes) to its runs."""
    pipelines = [
        Pipeline("run-1", "data-1", "COMPLETED", "", 0.0, 1.0, 9.0),
        Pipeline("run-2", "data-2", "COMPLETED", "", 0.0, 2.0, 8.0),
        Pipeline("run-3", "data-3", "FAILED", "training failed (user): no column y", 0.0, 3.0, 4.0),
    ]
    for number, fields in (runs or {}).items():
        pipelines[number] = dataclasses.replace(pipelines[number], **fields)
    kept = {
        "most_running": 2, "most_slotted": 2, "samples": 30, "claimed": {1, 2}, "complete": {1, 2},
        "lineage": LINEAGE, "launched": ["i-1", "i-2", "i-3"],
    }  # fmt: skip
    return Burst("m", 2, 0.0, pipelines, **{**kept, **changes})


@pytest.mark.parametrize(
    ("broken", "found"),
    [
        (burst({2: {"message": ""}}), "data-3 ended FAILED without a reason"),
        (burst({2: {"state": "CRASHED"}}), "data-3 ended CRASHED"),
        (burst({0: {"state": "FAILED", "message": "x"}, 1: {"state": "FAILED", "message": "x"}}),
         "no pipeline completed"),
        (burst(most_running=3), "3 runs were RUNNING at once, over the limit of 2"),
        (burst(claimed={1, 2, 3}), "versions [1, 2] complete, [1, 2, 3] claimed"),
        (burst(claimed={1, 3}, complete={1, 3}), "expected exactly [1, 2]"),
        (burst(lineage={**LINEAGE, 2: LINEAGE[1]}), "lineage names the runs"),
        (burst(lineage={**LINEAGE, 1: {"dataset": "data-1", "pipeline": "run-2"}}),
         "version 1 was trained on data-1, not on its run's dataset"),
        (burst(launched=["i-1"]), "1 instances launched for 2 completed runs"),
        (burst(live=["i-2"]), "instances left running: ['i-2']"),
    ],
)  # fmt: skip
def test_each_broken_promise_of_a_burst_is_named(broken, found) -> None:
    assert violations(burst()) == []
    assert any(found in violation for violation in violations(broken)), violations(broken)
