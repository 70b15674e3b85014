"""The monitor suite: AWS API calls and wall time of one tick of `mltp.monitor.poll` over N running jobs,
next to a poller that asks about each job on its own (benchmarks/naive_monitor.py), against a private
sandbox. Ticks of ours and the baseline alternate; both must see every job alive, with progress, a
heartbeat and its log line (ours: up to its per-tick relay limit), or the suite fails. Every request ours
sends is checked against AWS's per-call limits, and the largest N is set against the account's default
API rate quotas: how many flows of that size one account sustains."""

from __future__ import annotations

import functools
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import fake_jobs
from benchmarks.api_calls import CallCounter, counted
from benchmarks.harness import sandbox
from benchmarks.naive_monitor import Seen, naive_tick
from benchmarks.report import DASH, summary
from benchmarks.results import Section, environment
from benchmarks.training import MODELS_BUCKET, sandbox_clients
from mltp.aws import ClientFactory
from mltp.compute.base import Launched
from mltp.compute.ec2 import FILTER_VALUES_MAX
from mltp.monitor import METRIC_PERIOD_S, LogCursor, MonitorSettings, poll
from mltp.trainer.telemetry import LOG_GROUP

SIZES = (1, 10, 50, 100, 250, 1000)
TICKS = 5  # measured, per side and size, after one untimed tick per side
# moto slows with N (it scans what it holds per request): where a side's untimed tick says TICKS would take
# more than BUDGET_S, that side is measured on as many ticks as fit, at least MIN_TICKS.
BUDGET_S = 60.0
MIN_TICKS = 2
# Above NAIVE_FULL_MAX jobs the naive poller asks about an evenly spaced NAIVE_SUBSET of them (moto holding
# all N) and its calls and time are scaled by N / NAIVE_SUBSET: 5 calls a job, one job after another.
NAIVE_FULL_MAX = 250
NAIVE_SUBSET = 50
PACKAGES = ("boto3", "botocore", "moto")
SIDES = ("ours", "naive")
OPERATIONS = (  # ours, in the order poll makes them
    "EC2.DescribeInstances",
    "S3.ListObjectsV2",
    "CloudWatch.GetMetricData",
    "CloudWatch Logs.FilterLogEvents",
)
# AWS's limit on one request, per operation: what `Sizes` measures against.
PER_CALL_LIMITS = {
    "EC2.DescribeInstances": (200, "instance ids"),  # filter values a call (FilterLimitExceeded)
    "CloudWatch.GetMetricData": (500, "queries"),  # MetricDataQueries a call
    "CloudWatch Logs.FilterLogEvents": (100, "streams"),  # logStreamNames a call (botocore model: max 100)
}
# Default rate quotas per account and Region (calls a second, sustained), and how AWS states them.
QUOTAS = {
    "CloudWatch Logs.FilterLogEvents": (5.0, "FilterLogEvents 5 TPS (not adjustable)"),
    "EC2.DescribeInstances": (20.0, "EC2's non-mutating (Describe*) token bucket refills 20 tokens/s"),
    "CloudWatch.GetMetricData": (50.0, "GetMetricData 50 TPS"),
}


class Sizes:
    """The largest request per operation, from the parameters botocore is about to send."""

    def __init__(self) -> None:
        self.largest: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        service = client.meta.service_model.service_id

        def measure(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name == "DescribeInstances":
                size = sum(len(item.get("Values", [])) for item in params.get("Filters", []))
                size += len(params.get("InstanceIds", []))
            elif model.name == "GetMetricData":
                size = len(params.get("MetricDataQueries", []))
            elif model.name == "FilterLogEvents":
                size = len(params.get("logStreamNames", []))
            else:
                return
            key = f"{service}.{model.name}"
            self.largest[key] = max(self.largest[key], size)

        client.meta.events.register("before-parameter-build", measure)

    def reset(self) -> None:
        self.largest.clear()


def sized(clients: ClientFactory, sizes: Sizes) -> ClientFactory:
    attached: set[str] = set()

    def client(service: str) -> Any:
        made = clients(service)
        if service not in attached:
            attached.add(service)
            sizes.attach(made)
        return made

    return client


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
    largest: Counter[str] = field(default_factory=Counter)  # ours: largest request per operation
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after this N's ticks
    setup_s: float = 0.0
    naive_asked: int = 0  # jobs the naive poller asked about (all of them up to NAIVE_FULL_MAX)


def our_tick(clients: ClientFactory, run: fake_jobs.FakeRun, start: datetime) -> tuple[Seen, bool]:
    """One tick as the flow's first one: the metric window a minute back, the log cursor where the run
    started, no job known to have started."""
    backend = fake_jobs.idle_backend(clients)
    cursor = LogCursor(after_ms=run.started_ms)
    seen = poll(
        clients, backend, run.launched, MODELS_BUCKET, f"runs/{run.run_id}", cursor, start, LINES, set()
    )
    found = Seen(
        {job for job, state in seen.compute.items() if state.alive},
        set(seen.statuses),
        set(seen.progress),
        set(seen.heartbeats),
        len(seen.log_lines),
    )
    return found, seen.more_log_lines


LINES = MonitorSettings().max_log_lines_per_tick


def check(side: str, seen: Seen, more: bool, asked: list[Launched]) -> None:
    """Naive sees every job's line; ours relays up to its per-tick limit and says when there is more."""
    jobs = {item.job_id for item in asked}
    lines = len(jobs) if side == "naive" else min(len(jobs), LINES)
    expected = Seen(jobs, set(), jobs, jobs, lines)
    if seen != expected or more != (side == "ours" and len(jobs) > LINES):
        missing = {name: len(jobs - getattr(seen, name)) for name in ("alive", "progress", "heartbeats")}
        raise RuntimeError(
            f"{side} did not see the {len(jobs)} running jobs as they are: missing {missing}, "
            f"{len(seen.statuses)} statuses, {seen.log_lines} log lines (expected {lines}), more={more}"
        )


def naive_subset(run: fake_jobs.FakeRun) -> list[Launched]:
    jobs = len(run.launched)
    return run.launched if jobs <= NAIVE_FULL_MAX else run.launched[:: jobs // NAIVE_SUBSET][:NAIVE_SUBSET]


def measure(
    clients: ClientFactory, counting: ClientFactory, counter: CallCounter, sizes: Sizes, jobs: int
) -> Sample:
    began = time.perf_counter()
    run = fake_jobs.start(clients, MODELS_BUCKET, jobs)
    sample = Sample(jobs, setup_s=time.perf_counter() - began)
    load_before = os.getloadavg()[0]
    asked = {"ours": run.launched, "naive": naive_subset(run)}
    scale = {side: jobs / len(asked[side]) for side in SIDES}
    sample.naive_asked = len(asked["naive"])
    ticks = dict.fromkeys(SIDES, TICKS)  # measured ticks per side, fixed after its untimed tick
    try:
        for tick in range(TICKS + 1):
            fake_jobs.beat(clients, run)  # every round: the trainers beat while they run
            start = datetime.now(UTC) - timedelta(minutes=1)
            for side in SIDES:
                if tick > ticks[side]:
                    continue
                counter.reset()
                sizes.reset()
                clock = time.perf_counter()
                if side == "ours":
                    seen, more = our_tick(counting, run, start)
                else:
                    end = datetime.now(UTC) + timedelta(seconds=METRIC_PERIOD_S)
                    seen = naive_tick(counting, asked[side], MODELS_BUCKET, start, end, run.started_ms)
                    more = False
                seconds = time.perf_counter() - clock
                check(side, seen, more, asked[side])
                if side == "ours":
                    for key, size in sizes.largest.items():
                        sample.largest[key] = max(sample.largest[key], size)
                if not tick:
                    ticks[side] = min(TICKS, max(MIN_TICKS, int(BUDGET_S // max(seconds, 1e-3))))
                    continue
                sample.calls[side].append(round(counter.total * scale[side]))
                sample.requests[side].append(round(counter.requests * scale[side]))
                sample.ms[side].append(1000 * seconds * scale[side])
                sample.operations[side] = Counter(
                    {key: round(count * scale[side]) for key, count in counter.calls.items()}
                )
                sample.seconds[side].update(
                    {key: value * scale[side] for key, value in counter.seconds.items()}
                )
    finally:
        sample.load = (load_before, os.getloadavg()[0])
        fake_jobs.stop(clients, run)
    print(
        f"  {jobs:4} jobs (set up in {sample.setup_s:.0f} s): ours {sample.calls['ours'][-1]} calls "
        f"{statistics.median(sample.ms['ours']):8.1f} ms over {len(sample.ms['ours'])} ticks, naive "
        f"{sample.calls['naive'][-1]} calls {statistics.median(sample.ms['naive']):8.1f} ms over "
        f"{len(sample.ms['naive'])} ticks of {sample.naive_asked} jobs, "
        f"load {sample.load[0]:.2f} -> {sample.load[1]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    return sample


def _count(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{statistics.median(values):g} [{low}{DASH}{high}]"


def _ms(values: list[float]) -> str:
    text = summary(values, "ms")
    return text if len(values) == TICKS else f"{text} ({len(values)} ticks)"


def _scaled(sample: Sample) -> str:
    return (
        ""
        if sample.naive_asked == sample.jobs
        else f" (x{sample.jobs // sample.naive_asked} of {sample.naive_asked} jobs)"
    )


def table(samples: list[Sample]) -> str:
    lines = [
        f"| jobs (N) | ours: calls/tick | naive: calls/tick | ratio ours/naive | ours: ms/tick (median "
        f"[min{DASH}max]) | naive: ms/tick (median [min{DASH}max]) | ratio ours/naive (medians) |",
        "|---|---|---|---|---|---|---|",
    ]
    for sample in samples:
        calls, ms = sample.calls, sample.ms
        lines.append(
            f"| {sample.jobs:,} | {_count(calls['ours'])} | {_count(calls['naive'])}{_scaled(sample)} "
            f"| {statistics.median(calls['ours']) / statistics.median(calls['naive']):.3f}x "
            f"| {_ms(ms['ours'])} | {_ms(ms['naive'])}{_scaled(sample)} "
            f"| {statistics.median(ms['ours']) / statistics.median(ms['naive']):.2f}x |"
        )
    return "\n".join(lines)


def _short(operation: str) -> str:
    return operation.rpartition(".")[2]


def by_api(samples: list[Sample]) -> str:
    """Ours, per operation: calls in a tick, the largest request against AWS's limit, and the time."""
    lines = [
        "| jobs (N) | "
        + " | ".join(f"ours: {_short(operation)}" for operation in OPERATIONS)
        + " | load average (1 min) before / after |",
        "|---|" + "---|" * len(OPERATIONS) + "---|",
    ]
    for sample in samples:
        cells = []
        for operation in OPERATIONS:
            count = sample.operations["ours"][operation]
            ticks = len(sample.ms["ours"])
            cell = f"{count} ({1000 * sample.seconds['ours'][operation] / ticks:.0f} ms)"
            if operation in PER_CALL_LIMITS:
                limit, unit = PER_CALL_LIMITS[operation]
                largest = sample.largest[operation]
                cell += f", {largest}/{limit} {unit}" + ("" if largest <= limit else " **OVER**")
            cells.append(cell)
        lines.append(
            f"| {sample.jobs:,} | {' | '.join(cells)} | {sample.load[0]:.2f} / {sample.load[1]:.2f} |"
        )
    return "\n".join(lines)


def header() -> str:
    return "\n".join(
        [
            *environment(PACKAGES),
            f"- For each N, N fake running jobs: a `runs/<job_id>/` prefix holding only job.json (no "
            "status.json yet), an instance launched with our `Ec2Backend`'s RunInstances request, empty "
            "user-data (the sandbox fleet leaves it idle) and our tags, one line in the job's stream of "
            f"`{LOG_GROUP}`, "
            "and a `Heartbeat` and a `TrainingProgress` datapoint (dimension JobId, 1-second storage "
            "resolution) published again before every round of ticks. The instances are terminated after "
            "each N.",
            "- Ours: one call of `mltp.monitor.poll` with an `Ec2Backend` over the N launched instances, as "
            "the flow's first tick (metric window one minute back, log cursor at the run's start). Naive "
            "(benchmarks/naive_monitor.py), per job: DescribeInstances(InstanceIds=[id]), HeadObject of "
            "its status.json, GetMetricStatistics for progress and for the heartbeat, GetLogEvents of its "
            "stream.",
            f"- API calls are counted by a botocore `before-call` handler registered on every client both "
            f"pollers use (one client per service, created once, as prefect-aws caches them); each "
            f"paginator page is a call. {TICKS} measured ticks per side and N, alternating, after one "
            f"untimed tick each; where a side's untimed tick says {TICKS} would take more than "
            f"{BUDGET_S:.0f} s, that side is measured on as many as fit (at least {MIN_TICKS}; the count is "
            "shown beside its time). Above "
            f"N={NAIVE_FULL_MAX} the naive poller asks about an evenly spaced {NAIVE_SUBSET} of the N "
            "jobs (moto holding all N, so each of its calls costs what it would in a full tick) and its "
            "calls and time are scaled by N/" + f"{NAIVE_SUBSET}" + ", as it makes the same 5 calls for "
            f"each job, one job after another (shown as x{SIZES[-1] // NAIVE_SUBSET} of {NAIVE_SUBSET} "
            f"jobs at N={SIZES[-1]:,}): its call counts are exact, its "
            "time an extrapolation. Both must see every job they ask about alive, with progress, a "
            "heartbeat, no status, and its log line (read from the run's start; ours relays at most "
            f"`max_log_lines_per_tick` = {LINES} lines a tick, as in a flow, and must say there are more "
            "when N exceeds it), or the suite fails.",
        ]
    )


def aws_describe_calls(jobs: int) -> int:
    """DescribeInstances calls of a tick on AWS: one per chunk of ids, an unpaginated call answered whole."""
    return math.ceil(jobs / FILTER_VALUES_MAX)


def capacity(sample: Sample) -> str:
    """What one flow of the largest N costs an account, against the default rate quotas."""
    settings = MonitorSettings()
    calls = Counter(sample.operations["ours"])
    calls["EC2.DescribeInstances"] = aws_describe_calls(sample.jobs)  # not moto's pages: see below
    slow = settings.max_poll_interval_s
    flows = {operation: quota * slow / calls[operation] for operation, (quota, _) in QUOTAS.items()}
    binding = min(flows, key=flows.__getitem__)
    sustained = math.floor(flows[binding])
    logs = "CloudWatch Logs.FilterLogEvents"
    fast = settings.poll_interval_s
    per_second = calls[logs] / fast
    streams_at_fast = int(QUOTAS[logs][0] * fast) * 100
    naive_ec2 = sample.jobs / QUOTAS["EC2.DescribeInstances"][0]
    others = ", ".join(
        f"{_short(operation)} {math.floor(flows[operation])}" for operation in QUOTAS if operation != binding
    )
    return (
        f"What one flow and one account can watch: at N={sample.jobs:,} one tick of ours asks "
        + ", ".join(f"{calls[operation]} {_short(operation)}" for operation in OPERATIONS)
        + f" ({sum(calls.values())} calls: measured above, DescribeInstances as AWS answers it). Against "
        "the default quotas per account and "
        f"Region ({'; '.join(text for _, text in QUOTAS.values())}), one account sustains "
        f"**{sustained} such flows ({sustained * sample.jobs:,} jobs)** polling at the monitor's "
        f"steady {slow:.0f} s interval (`max_poll_interval_s`, reached after "
        f"{(slow / settings.poll_interval_s - 1):.0f} min), {_short(binding)} binding first "
        f"({others} flows by the others). A flow's first ticks come every {fast:.0f} s "
        f"(`poll_interval_s`, growing by that much a minute): there one {sample.jobs:,}-job flow whose "
        f"jobs have all started asks {per_second:.0f} FilterLogEvents a second, "
        f"{per_second / QUOTAS[logs][0]:.0f}x the account's quota on its own (it fits up to "
        f"{streams_at_fast} started jobs at {fast:.0f} s, {2 * streams_at_fast:,} at 2 s) and is "
        f"throttled (botocore retries) until its interval grows; the naive poller's "
        f"{sample.jobs:,} DescribeInstances a tick would alone drain EC2's refill for "
        f"{naive_ec2:.0f} s."
    )


def moto_pages(samples: list[Sample]) -> str:
    paged = [
        f"{sample.operations['ours']['EC2.DescribeInstances']} at N={sample.jobs:,} "
        f"(AWS: {aws_describe_calls(sample.jobs)})"
        for sample in samples
        if sample.operations["ours"]["EC2.DescribeInstances"] != aws_describe_calls(sample.jobs)
    ]
    if not paged:
        return "DescribeInstances: one call per 200 ids at every N, as on AWS."
    return (
        "DescribeInstances pages: `Ec2Backend.observe` pages its filtered call without `MaxResults`, which "
        "AWS answers whole but moto 100 reservations a page, so moto's counts are "
        + ", ".join(paged)
        + ". Passing `MaxResults=1000` (AWS's advice for filtered describes) would make one page per "
        "200-id chunk on both."
    )


def footnotes(samples: list[Sample], total_seconds: float) -> str:
    retried = [
        f"{side} at N={sample.jobs}"
        for sample in samples
        for side in SIDES
        if sample.requests[side] != sample.calls[side]
    ]
    within = all(
        sample.largest[operation] <= limit
        for sample in samples
        for operation, (limit, _) in PER_CALL_LIMITS.items()
    )
    flat = [sample.jobs for sample in samples if len(set(sample.calls["ours"])) == 1]
    constant = [sample.jobs for sample in samples if sample.calls["ours"][0] == samples[0].calls["ours"][0]]
    largest = samples[-1]
    return "\n".join(
        [
            "Ours, per operation: calls per tick, (in brackets) the mean time per tick spent in them, and "
            "the largest request it sent against AWS's limit on one request (DescribeInstances: 200 "
            "filter values, `FilterLimitExceeded` beyond; GetMetricData: 500 queries; FilterLogEvents: "
            "100 log stream names, botocore's model). ListObjectsV2 pages 1,000 keys and counts every "
            "object under the run's prefix (a finished job leaves several); a job's status.json costs one "
            "GetObject, once: none of these jobs has one yet.",
            "",
            by_api(samples),
            "",
            f"Every request of ours within AWS's per-call limits: {'**yes**' if within else '**NO**'}. "
            f"Our calls per tick are the same at every tick of an N: "
            f"{'**yes**' if len(flat) == len(samples) else '**NO**'}; and the same as at N=1 up to "
            f"N={max(constant):,}, then one more call per chunk of AWS's per-call limits (table above): "
            "DescribeInstances per 200 jobs, GetMetricData per 250, FilterLogEvents per 100. "
            f"At N={largest.jobs:,} the naive poller's calls per tick and their "
            f"mean time: {_operations(largest, 'naive')}.",
            "",
            moto_pages(samples),
            "",
            capacity(largest),
            "",
            "HTTP requests (botocore `before-send`) equal the calls in every tick"
            + (": no retries." if not retried else f" except {', '.join(retried)}: retries."),
            "",
            f"AWS is moto on the same {os.cpu_count()}-core machine, with the sandbox fleet polling EC2 "
            "every 0.5 s beside it: the call counts are what AWS would see (but for DescribeInstances' "
            "pages, above), the times say more about "
            "moto (which scans every instance and datapoint it holds per request) than about AWS. Setting "
            "up the jobs took "
            + ", ".join(f"{sample.setup_s:.0f} s (N={sample.jobs:,})" for sample in samples[-2:])
            + ".",
            "",
            f"Whole suite (sandbox start and stop included): {total_seconds / 60:.1f} min.",
        ]
    )


def _operations(sample: Sample, side: str) -> str:
    """Each operation's calls per tick and the mean milliseconds per tick they took."""
    ticks = len(sample.ms[side])
    return ", ".join(
        f"{operation} {count} ({1000 * sample.seconds[side][operation] / ticks:.0f} ms)"
        for operation, count in sorted(sample.operations[side].items())
    )


def run() -> Section:
    started = time.monotonic()
    print("monitor: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox() as (endpoint, _):
        clients = functools.cache(sandbox_clients(endpoint))
        clients("s3").create_bucket(Bucket=MODELS_BUCKET)
        clients("logs").create_log_group(logGroupName=LOG_GROUP)
        counter, sizes = CallCounter(), Sizes()
        counting = sized(counted(sandbox_clients(endpoint), counter), sizes)
        samples = [measure(clients, counting, counter, sizes, jobs) for jobs in SIZES]
    body = [header(), table(samples), footnotes(samples, time.monotonic() - started)]
    return Section("monitor", "\n\n".join(body))
