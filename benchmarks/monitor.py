"""The monitor suite: AWS API calls and wall time of one tick of `mltp.monitor.poll` over N running jobs,
next to a poller that asks about each job on its own (benchmarks/naive_monitor.py), against a private
sandbox. Ticks of ours and the baseline alternate; both must see every job alive, with progress, a
heartbeat and its log line, or the suite fails."""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from benchmarks import fake_jobs
from benchmarks.api_calls import CallCounter, counted
from benchmarks.harness import sandbox
from benchmarks.naive_monitor import Seen, naive_tick
from benchmarks.report import DASH, summary
from benchmarks.results import Section, environment
from benchmarks.training import MODELS_BUCKET, sandbox_clients
from mltp.aws import ClientFactory
from mltp.monitor import METRIC_PERIOD_S, LogCursor, MonitorSettings, poll
from mltp.trainer.telemetry import LOG_GROUP

SIZES = (1, 10, 50, 100)
TICKS = 5  # measured, per side and size, after one untimed tick per side
PACKAGES = ("boto3", "botocore", "moto")
SIDES = ("ours", "naive")


@dataclass
class Sample:
    jobs: int
    calls: dict[str, list[int]] = field(default_factory=lambda: {side: [] for side in SIDES})
    requests: dict[str, list[int]] = field(default_factory=lambda: {side: [] for side in SIDES})
    ms: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    operations: dict[str, Counter[str]] = field(default_factory=dict)  # per side, calls in the last tick
    seconds: dict[str, Counter[str]] = field(  # per side and operation, summed over the measured ticks
        default_factory=lambda: {side: Counter() for side in SIDES}
    )


def our_tick(clients: ClientFactory, run: fake_jobs.FakeRun, start: datetime) -> Seen:
    """One tick as the flow's first one: a fresh log cursor one minute back, no job known to have started."""
    backend = fake_jobs.idle_backend(clients)
    cursor = LogCursor(after_ms=int(start.timestamp() * 1000))
    lines = MonitorSettings().max_log_lines_per_tick
    seen = poll(
        clients, backend, run.launched, MODELS_BUCKET, f"runs/{run.run_id}", cursor, start, lines, set()
    )
    return Seen(
        {job for job, state in seen.compute.items() if state.alive},
        set(seen.statuses),
        set(seen.progress),
        set(seen.heartbeats),
        len(seen.log_lines),
    )


def check(side: str, seen: Seen, run: fake_jobs.FakeRun) -> None:
    jobs = {item.job_id for item in run.launched}
    expected = Seen(jobs, set(), jobs, jobs, len(jobs))
    if seen != expected:
        raise RuntimeError(f"{side} did not see the {len(jobs)} running jobs as they are: {seen}")


def measure(clients: ClientFactory, counting: ClientFactory, counter: CallCounter, jobs: int) -> Sample:
    run = fake_jobs.start(clients, MODELS_BUCKET, jobs)
    sample = Sample(jobs)
    try:
        for tick in range(TICKS + 1):
            fake_jobs.beat(clients, run)  # every round: the trainers beat while they run
            start = datetime.now(UTC) - timedelta(minutes=1)
            for side in SIDES:
                counter.reset()
                started = time.perf_counter()
                if side == "ours":
                    seen = our_tick(counting, run, start)
                else:
                    end = datetime.now(UTC) + timedelta(seconds=METRIC_PERIOD_S)
                    seen = naive_tick(counting, run.launched, MODELS_BUCKET, start, end)
                seconds = time.perf_counter() - started
                check(side, seen, run)
                if tick:
                    sample.calls[side].append(counter.total)
                    sample.requests[side].append(counter.requests)
                    sample.ms[side].append(1000 * seconds)
                    sample.operations[side] = Counter(counter.calls)
                    sample.seconds[side].update(counter.seconds)
    finally:
        fake_jobs.stop(clients, run)
    print(
        f"  {jobs:3} jobs: ours {sample.calls['ours'][-1]} calls "
        f"{statistics.median(sample.ms['ours']):7.1f} ms, naive {sample.calls['naive'][-1]} calls "
        f"{statistics.median(sample.ms['naive']):7.1f} ms",
        file=sys.stderr,
        flush=True,
    )
    return sample


def _count(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{statistics.median(values):g} [{low}{DASH}{high}]"


def table(samples: list[Sample]) -> str:
    lines = [
        f"| jobs (N) | ours: calls/tick | naive: calls/tick | ratio ours/naive | ours: ms/tick (median "
        f"[min{DASH}max]) | naive: ms/tick (median [min{DASH}max]) | ratio ours/naive (medians) |",
        "|---|---|---|---|---|---|---|",
    ]
    for sample in samples:
        calls, ms = sample.calls, sample.ms
        lines.append(
            f"| {sample.jobs} | {_count(calls['ours'])} | {_count(calls['naive'])} "
            f"| {statistics.median(calls['ours']) / statistics.median(calls['naive']):.3f}x "
            f"| {summary(ms['ours'], 'ms')} | {summary(ms['naive'], 'ms')} "
            f"| {statistics.median(ms['ours']) / statistics.median(ms['naive']):.2f}x |"
        )
    return "\n".join(lines)


def _operations(sample: Sample, side: str) -> str:
    """Each operation's calls per tick and the mean milliseconds per tick they took."""
    return ", ".join(
        f"{operation} {count} ({1000 * sample.seconds[side][operation] / TICKS:.0f} ms)"
        for operation, count in sorted(sample.operations[side].items())
    )


def header() -> str:
    return "\n".join(
        [
            *environment(PACKAGES),
            f"- For each N, N fake running jobs: a `runs/<job_id>/` prefix holding only job.json (no "
            f"status.json yet), an instance launched by our `Ec2Backend` with empty user-data (the "
            f"sandbox fleet leaves it idle) and our tags, one line in the job's stream of `{LOG_GROUP}`, "
            "and a `Heartbeat` and a `TrainingProgress` datapoint (dimension JobId, 1-second storage "
            "resolution) published again before every round of ticks. The instances are terminated after "
            "each N.",
            "- Ours: one call of `mltp.monitor.poll` with an `Ec2Backend` over the N launched instances, as "
            "the flow's first tick (log cursor and metric window one minute back). Naive "
            "(benchmarks/naive_monitor.py), per job: DescribeInstances(InstanceIds=[id]), HeadObject of "
            "its status.json, GetMetricStatistics for progress and for the heartbeat, GetLogEvents of its "
            "stream.",
            f"- API calls are counted by a botocore `before-call` handler registered on every client both "
            f"pollers use (one client per service, created once, as prefect-aws caches them); each "
            f"paginator page is a call. {TICKS} measured ticks per side and N, alternating, after one "
            "untimed tick each. Both must see every job alive, with progress, a heartbeat and its log "
            "line, and no status, or the suite fails.",
        ]
    )


def footnotes(samples: list[Sample], total_seconds: float) -> str:
    flat = all(len(set(sample.calls["ours"])) == 1 for sample in samples)
    constant = flat and len({sample.calls["ours"][0] for sample in samples}) == 1
    retried = [
        f"{side} at N={sample.jobs}"
        for sample in samples
        for side in SIDES
        if sample.requests[side] != sample.calls[side]
    ]
    largest = samples[-1]
    return "\n".join(
        [
            f"Our calls per tick are the same at every N: {'**yes**' if constant else '**NO**'}. At "
            f"N={largest.jobs}, calls per tick and (in brackets) the mean time per tick spent in them: ours "
            f"{_operations(largest, 'ours')}; naive {_operations(largest, 'naive')}.",
            "",
            "HTTP requests (botocore `before-send`) equal the calls in every tick"
            + (": no retries." if not retried else f" except {', '.join(retried)}: retries."),
            "",
            "Where ours stops being constant (AWS's limits, which mltp/monitor.py chunks by): "
            "DescribeInstances takes 200 instance ids a call, GetMetricData 500 queries (250 jobs), "
            "FilterLogEvents 100 streams, and ListObjectsV2 returns 1,000 keys a page, counting every "
            "object under the run's prefix (a finished job leaves several). A job's status.json costs one "
            "GetObject, once: none of these jobs has one yet.",
            "",
            f"AWS is moto on the same {os.cpu_count()}-core machine, with the sandbox fleet polling EC2 "
            "every 0.5 s beside it: the call counts are what AWS would see, the times say more about "
            "moto than about AWS.",
            "",
            f"Whole suite (sandbox start and stop included): {total_seconds / 60:.1f} min.",
        ]
    )


def run() -> Section:
    started = time.monotonic()
    print("monitor: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox() as (endpoint, _):
        clients = functools.cache(sandbox_clients(endpoint))
        clients("s3").create_bucket(Bucket=MODELS_BUCKET)
        clients("logs").create_log_group(logGroupName=LOG_GROUP)
        counter = CallCounter()
        counting = counted(sandbox_clients(endpoint), counter)
        samples = [measure(clients, counting, counter, jobs) for jobs in SIZES]
    body = [header(), table(samples), footnotes(samples, time.monotonic() - started)]
    return Section("monitor", "\n\n".join(body))
