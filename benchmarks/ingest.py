"""The ingestion suite: `mltp.datasets.ingest` against a private sandbox, next to boto3 `upload_file` and
`aws s3 cp`.

Every measured operation runs in a fresh process (so its peak RSS is its own), interleaved with the
baselines.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.files import cached_csv
from benchmarks.harness import AWS_CLI, Measurement, ensure_aws_cli, measure, sandbox
from benchmarks.report import Row, table
from benchmarks.results import Section, environment

BUCKET = "bench-data"
SMALL_ROWS, LARGE_ROWS = 2_000_000, 11_500_000  # ~178 MB and ~1 GB
SMALL_REPS = {"ours": 5, "boto3": 5, "cli": 5}
LARGE_REPS = {"ours": 2, "boto3": 2, "cli": 1}
RSS_LIMIT_MB, RSS_GROWTH = 300, 1.10
PACKAGES = ("pyarrow", "boto3", "botocore", "moto")

Results = dict[str, list[Measurement]]


def run_once(operation: str, path: Path, key: str, endpoint: str, env: dict[str, str]) -> Measurement:
    if operation == "cli":
        argv = [AWS_CLI, "s3", "cp", path, f"s3://{BUCKET}/{key}", "--endpoint-url", endpoint]
        return measure([*argv, "--only-show-errors", "--no-progress"], env, timed_inside=False)
    argv = [sys.executable, "-m", "benchmarks.child", operation, endpoint, BUCKET, str(path), key]
    return measure(argv, env, timed_inside=True)


def check_and_empty(s3: Any, path: Path, rows: int, operation: str, measurement: Measurement) -> None:
    """The upload really happened (an object of the file's size; for ours a new manifest with every
    row), then delete everything so moto does not accumulate gigabytes between runs."""
    objects = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    if not any(item["Size"] == path.stat().st_size for item in objects):
        raise RuntimeError(f"{operation} left no object of {path.stat().st_size} bytes in {BUCKET}")
    if operation == "ours" and (not measurement.output["created"] or measurement.output["rows"] != rows):
        raise RuntimeError(f"ingest did not create a new version of all {rows} rows: {measurement.output}")
    if objects:
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": item["Key"]} for item in objects]})


def run_plan(s3: Any, endpoint: str, env: dict[str, str], rows: int, reps: dict[str, int]) -> Results:
    """Interleaved repetitions (ours, boto3, cli, ours, ...), each under a fresh dataset name and key."""
    path = cached_csv(rows)
    with path.open("rb") as file:  # warm the page cache so no run pays for the first disk read
        while file.read(64 * 1024 * 1024):
            pass
    results: Results = defaultdict(list)
    for rep in range(max(reps.values())):
        for operation, count in reps.items():
            if rep >= count:
                continue
            key = f"bench-{rows}-{operation}-{rep}"
            measurement = run_once(operation, path, key, endpoint, env)
            check_and_empty(s3, path, rows, operation, measurement)
            results[operation].append(measurement)
            print(
                f"  {path.stat().st_size / 1e6:,.0f} MB  {operation:5} run {rep + 1}/{count}: "
                f"{measurement.seconds:6.2f} s  peak RSS {measurement.peak_rss_mb:4.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    return results


def rows_of(small: Results, large: Results) -> list[Row]:
    def seconds(results: Results, operation: str) -> list[float]:
        return [m.seconds for m in results[operation]]

    def rss(results: Results, operation: str) -> list[float]:
        return [m.peak_rss_mb for m in results[operation]]

    small_rss = rss(small, "ours")
    return [
        Row(
            "ingest wall time, 175 MB vs boto3 upload_file (5 runs each)",
            seconds(small, "ours"),
            seconds(small, "boto3"),
            "s",
            "≤ 1.5x",
            lambda ours, base: statistics.median(ours) / statistics.median(base) <= 1.5,
        ),
        Row(
            "ingest wall time, 175 MB vs aws s3 cp¹ (5 runs each)",
            seconds(small, "ours"),
            seconds(small, "cli"),
            "s",
        ),
        Row(
            "ingest wall time, 1 GB vs boto3 upload_file (2 runs each)",
            seconds(large, "ours"),
            seconds(large, "boto3"),
            "s",
        ),
        Row(
            "ingest wall time, 1 GB vs aws s3 cp¹ (1 run)", seconds(large, "ours"), seconds(large, "cli"), "s"
        ),
        Row(
            "peak RSS of the ingest process, 175 MB vs boto3 upload_file",
            small_rss,
            rss(small, "boto3"),
            "MB",
            f"≤ {RSS_LIMIT_MB} MB in every run",
            lambda ours, base: max(ours) <= RSS_LIMIT_MB,
        ),
        Row(
            "peak RSS of the ingest process, 1 GB vs boto3 upload_file",
            rss(large, "ours"),
            rss(large, "boto3"),
            "MB",
            f"≤ {RSS_LIMIT_MB} MB in every run, and not growing with size (median ≤ {RSS_GROWTH:.2f}x "
            "the 175 MB median)",
            lambda ours, base: (
                max(ours) <= RSS_LIMIT_MB
                and statistics.median(ours) <= RSS_GROWTH * statistics.median(small_rss)
            ),
        ),
    ]


def header(aws_version: str) -> str:
    cli = " ".join(word for word in aws_version.split() if word.startswith(("aws-cli/", "botocore/")))
    return "\n".join(
        [
            *environment(PACKAGES, extra=f"; baseline CLI: {cli}"),
            "- Ours (`mltp.datasets.ingest`) does more than copy bytes: it SHA-256-hashes the file (a "
            "pre-pass to skip duplicates, and again while streaming), parses and profiles every row with "
            "pyarrow, and writes a manifest and the `latest.json` pointer.",
            "- Every run is a fresh process against one local moto server started by `mltp sandbox up` "
            "(loopback, same machine); runs of ours and the baselines are interleaved.",
        ]
    )


def footnotes(total_seconds: float) -> str:
    return "\n".join(
        [
            "Wall times of ours and of boto3 `upload_file` are measured inside the child process around the "
            "call alone (interpreter start, imports and client creation excluded). Peak RSS is the "
            "child's `ru_maxrss` from `os.wait4`, so it includes the interpreter and its imports "
            "(pyarrow for ours).",
            "",
            "¹ `aws s3 cp` cannot be timed from inside: its wall time is the whole command, including "
            "starting the CLI's interpreter and imports.",
            "",
            f"The S3 endpoint is moto on the same {os.cpu_count()}-core machine, so the server's own CPU "
            "work competes with the client: absolute times say little about real S3, the ratios more.",
            "",
            f"Whole suite (data files, sandbox start and stop included): {total_seconds / 60:.1f} min.",
        ]
    )


def run() -> Section:
    started = time.monotonic()
    print("ingest: preparing data files and the AWS CLI ...", file=sys.stderr, flush=True)
    cached_csv(SMALL_ROWS), cached_csv(LARGE_ROWS)
    aws_version = ensure_aws_cli()
    print("ingest: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox() as (endpoint, env):
        session = boto3.Session(
            region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        s3 = session.client("s3", endpoint_url=endpoint, config=Config(retries={"mode": "standard"}))
        s3.create_bucket(Bucket=BUCKET)
        small = run_plan(s3, endpoint, env, SMALL_ROWS, SMALL_REPS)
        large = run_plan(s3, endpoint, env, LARGE_ROWS, LARGE_REPS)
    body = [header(aws_version), table(rows_of(small, large)), footnotes(time.monotonic() - started)]
    return Section("ingest", "\n\n".join(body))
