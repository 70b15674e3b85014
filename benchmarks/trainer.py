"""The trainer suite: our trainer's holdout quality next to plain scikit-learn (figure 1), and its wall
time and peak RSS on 1,000,000 rows next to a plain script doing the same work, and for information a
minimal one (figure 2), against a private sandbox."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import trainer_evaluation, trainer_quality, trainer_speed
from benchmarks.files import cached_csv
from benchmarks.harness import sandbox
from benchmarks.report import table
from benchmarks.results import Section, environment
from benchmarks.training import create_buckets, sandbox_clients

PACKAGES = ("scikit-learn", "pandas", "numpy", "pyarrow", "skops", "boto3", "moto")


def header() -> str:
    return "\n".join(
        [
            *environment(PACKAGES),
            "- Ours is `mltp.trainer`: it reads the ingested dataset from S3, builds a scikit-learn Pipeline "
            "(the feature plan of mltp/trainer/features.py, then the estimator), fits it on an 80/20 split "
            "(stratified for classification, `random_state=0`), scores the holdout and writes the model, "
            "metrics and status back to S3. Datasets are ingested first, untimed.",
            "- Quality rows: ours runs in process (`run_job`); the plain script fits the same scikit-learn "
            "class with default parameters and `random_state=0` on the raw numeric features with the same "
            "split. Both are deterministic: one run each.",
            "- Speed rows: every run is a fresh process against a local moto server started by "
            "`mltp sandbox up` (loopback, same machine); runs of ours, the same-work script (the baseline "
            "the targets judge) and the minimal script (for information) are interleaved.",
        ]
    )


def footnotes(
    runs: trainer_speed.Runs,
    scores: list[trainer_quality.Score],
    costs: list[trainer_evaluation.Cost],
    total_seconds: float,
) -> str:
    lines = [trainer_quality.footnote(scores), "", *trainer_speed.footnotes(runs)]
    lines += ["", trainer_evaluation.footnote(costs, trainer_speed.evaluations(runs), trainer_speed.ROWS)]
    return "\n".join(
        [
            *lines,
            "",
            "Peak RSS is the child's `ru_maxrss` from `os.wait4`, so it includes the interpreter and its "
            f"imports. The S3 endpoint is moto on the same {os.cpu_count()}-core machine: while ours reads "
            "its data and sends telemetry, the server's CPU work competes with the trainer's.",
            "",
            f"Whole suite (data file, sandbox start and stop included): {total_seconds / 60:.1f} min.",
        ]
    )


def run() -> Section:
    started = time.monotonic()
    print(f"trainer: preparing the {trainer_speed.ROWS:,}-row data file ...", file=sys.stderr, flush=True)
    cached_csv(trainer_speed.ROWS)
    print("trainer: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox() as (endpoint, env), tempfile.TemporaryDirectory(prefix="mltp-bench-data-") as scratch:
        clients = sandbox_clients(endpoint)
        create_buckets(clients)
        print("trainer: quality on scikit-learn's bundled datasets", file=sys.stderr, flush=True)
        scores = trainer_quality.run(clients, Path(scratch))
        print("trainer: what evaluation.json adds, on breast cancer", file=sys.stderr, flush=True)
        costs = trainer_evaluation.run(
            clients, Path(scratch), trainer_speed.trainer_environment(env, endpoint)
        )
        print(f"trainer: speed and memory on {trainer_speed.ROWS:,} rows", file=sys.stderr, flush=True)
        runs = trainer_speed.run(clients, endpoint, env)
    rows = [
        *trainer_quality.rows(scores),
        *trainer_speed.rows(runs),
        *trainer_evaluation.rows("breast cancer", costs),
    ]
    body = [header(), table(rows), footnotes(runs, scores, costs, time.monotonic() - started)]
    return Section("trainer", "\n\n".join(body))
