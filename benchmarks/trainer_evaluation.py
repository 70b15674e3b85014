"""What `evaluation.json` (the numbers behind the plots, mltp/trainer/evaluation.py) adds to the trainer's
time: on breast cancer here and on the 1,000,000-row set in the speed runs (trainer_speed.py), each job
run as the compute runs it, `python -m mltp.trainer run --job ...` in a fresh process. The trainer's time
is that process's wall time; the evaluation records its own `seconds`, so
the ratio trainer / (trainer - seconds) comes from one run: no second run without the evaluation, whose
noise would swamp a few percent. Against fitting and scoring alone (`timings.fit_s`) for information."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.datasets import load_breast_cancer

from benchmarks.harness import measure
from benchmarks.report import Row
from benchmarks.training import ingest, job_outputs, new_job
from mltp.aws import ClientFactory
from mltp.dataset_catalog import split_s3_uri
from mltp.s3_json import read_json

ALGORITHM, REPS = "hist_gradient_boosting", 5
TARGET = 1.10  # issue 24: the evaluation adds under a tenth to the trainer's time


@dataclass(frozen=True)
class Cost:
    trainer_s: float
    fit_s: float
    evaluation_s: float
    bytes: int
    rows_scored: int
    importance_skipped: int


def evaluation_of(clients: ClientFactory, summary: dict[str, Any], trainer_s: float) -> Cost:
    """The evaluation a finished job (its metrics summary `summary`, `trainer_s` its whole time) wrote."""
    bucket, key = split_s3_uri(summary["evaluation_uri"])
    document, _ = read_json(clients("s3"), bucket, key)
    if document is None or "error" in document:
        raise RuntimeError(f"job {summary['job_id']} has no evaluation: {document and document['error']}")
    size = len(clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    skipped = len(document["permutation_importance"]["skipped"])
    return Cost(
        trainer_s, summary["timings"]["fit_s"], document["seconds"], size, document["rows_scored"], skipped
    )


def run(clients: ClientFactory, scratch: Path, env: dict[str, str]) -> list[Cost]:
    bunch = load_breast_cancer(as_frame=True)
    path = scratch / "breast-cancer-evaluation.csv"
    bunch.frame.to_csv(path, index=False)
    manifest = ingest(clients, path, target="target", name="breast-cancer-evaluation")
    costs = []
    for rep in range(REPS):
        job_uri = new_job(clients, manifest, ALGORITHM)
        measured = measure([sys.executable, "-m", "mltp.trainer", "run", "--job", job_uri], env, False)
        summary, _ = job_outputs(clients, job_uri)
        costs.append(evaluation_of(clients, summary, measured.seconds))
        print(
            f"  breast cancer run {rep + 1}/{REPS}: trainer {costs[-1].trainer_s:.3f} s, fit+score "
            f"{costs[-1].fit_s:.3f} s, evaluation {costs[-1].evaluation_s:.3f} s",
            file=sys.stderr,
            flush=True,
        )
    return costs


def rows(label: str, costs: list[Cost]) -> list[Row]:
    return [
        Row(
            f"evaluation.json (numbers for plots), {label}: the trainer's time, vs the same runs less the "
            f"evaluation's own seconds ({len(costs)} runs)⁵",
            [cost.trainer_s for cost in costs],
            [cost.trainer_s - cost.evaluation_s for cost in costs],
            "s",
            f"≤ {TARGET:.2f}x",
            lambda ours, base: statistics.median(ours) / statistics.median(base) <= TARGET,
        ),
        Row(
            f"for information: evaluation.json, {label}: fitting and scoring plus the evaluation, vs fitting "
            "and scoring alone (the same runs)⁵",
            [cost.fit_s + cost.evaluation_s for cost in costs],
            [cost.fit_s for cost in costs],
            "s",
        ),
    ]


def footnote(breast_cancer: list[Cost], large: list[Cost], large_rows: int) -> str:
    def facts(costs: list[Cost]) -> str:
        sizes = sorted({round(cost.bytes / 1000, 1) for cost in costs})
        return (
            f"evaluation {statistics.median(c.evaluation_s for c in costs):.3f} s (median), fitting and "
            f"scoring {statistics.median(c.fit_s for c in costs):.3f} s, "
            f"{costs[0].rows_scored:,} rows scored, evaluation.json {'/'.join(map(str, sizes))} KB, "
            f"{max(cost.importance_skipped for cost in costs)} column(s) skipped by the importance's deadline"
        )

    return (
        "⁵ The trainer's time is the wall time of the trainer process the compute runs (`python -m "
        "mltp.trainer run --job ...`: starting, reading from S3, fitting, scoring, the evaluation, writing "
        "the results); the evaluation's time is the `seconds` evaluation.json records "
        "(confusion matrix, per-class figures, ROC and precision-recall curves on the holdout, permutation "
        "importance of every input column on at most 2,000 holdout rows, 3 repeats), measured in the same "
        "run, so the ratio needs no second run. Against fitting and scoring alone (`timings.fit_s`) for "
        "information: on a small set both are fractions of a second. "
        f"Breast cancer ({ALGORITHM}, {len(breast_cancer)} runs): "
        f"{facts(breast_cancer)}. {large_rows:,}-row set (the speed runs above): "
        f"{facts(large)}."
    )
