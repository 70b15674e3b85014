"""The monitor: verdicts from a table of observations, the poll interval, the ETA, and one batched poll
against moto's in-process mock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mltp.compute.base import ComputeState, Launched
from mltp.monitor import (
    PROGRESS_REFRESH_S,
    LogCursor,
    MonitorSettings,
    assess,
    eta_seconds,
    poll,
    progress_changed,
    status_written,
)
from mltp.s3_json import put_json
from mltp.trainer.telemetry import LOG_GROUP, NAMESPACE

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SETTINGS = MonitorSettings(heartbeat_timeout_s=60, startup_timeout_s=300)
DEADLINE = NOW + timedelta(minutes=30)


def launched(seconds_ago: float = 100) -> Launched:
    return Launched("run-s1-a1", "ec2", 1, NOW - timedelta(seconds=seconds_ago), "i-0123")


ALIVE = ComputeState(True)


@pytest.mark.parametrize(
    ("status", "compute", "beat_s_ago", "deadline", "outcome", "kind", "words"),
    [
        ({"state": "succeeded"}, ALIVE, 5, DEADLINE, "succeeded", "", ""),
        (
            {"state": "failed", "kind": "user", "message": "bad target"},
            ALIVE,
            5,
            DEADLINE,
            "failed",
            "user",
            "bad target",
        ),
        (
            {"state": "failed", "kind": "infrastructure", "message": "Input contains NaN"},
            None,
            5,
            DEADLINE,
            "failed",
            "trainer",
            "Input contains NaN",
        ),
        # a status wins over everything else: the instance shut down after writing it
        (
            {"state": "succeeded"},
            ComputeState(False, "instance i-0123 is terminated"),
            None,
            NOW,
            "succeeded",
            "",
            "",
        ),
        (None, ALIVE, 5, NOW - timedelta(seconds=1), "timeout", "timeout", "raise max_runtime_minutes"),
        (
            None,
            ComputeState(False, "instance i-0123 is terminated"),
            5,
            DEADLINE,
            "lost",
            "lost",
            "before the trainer reported",
        ),
        (
            None,
            ComputeState(False, "instance i-0123 is terminated", interrupted=True),
            5,
            DEADLINE,
            "lost",
            "interrupted",
            "terminated",
        ),
        (None, ALIVE, 61, DEADLINE, "lost", "lost", "no heartbeat for 61 s"),
        (None, ALIVE, 59, DEADLINE, "running", "", ""),
        (None, ALIVE, None, DEADLINE, "running", "", ""),  # still booting, within the start-up wait
    ],
)
def test_verdicts(status, compute, beat_s_ago, deadline, outcome, kind, words) -> None:
    beat = None if beat_s_ago is None else NOW - timedelta(seconds=beat_s_ago)
    verdict = assess(launched(), status, compute, beat, deadline, SETTINGS, NOW)
    assert (verdict.outcome, verdict.kind) == (outcome, kind)
    assert words in verdict.message


def test_no_first_heartbeat_within_the_start_up_wait_is_lost() -> None:
    verdict = assess(launched(seconds_ago=301), None, ALIVE, None, DEADLINE, SETTINGS, NOW)
    assert (verdict.outcome, verdict.kind) == ("lost", "lost")
    assert "no heartbeat 301 s after launch" in verdict.message


def test_poll_interval_grows_with_age_up_to_the_cap() -> None:
    settings = MonitorSettings(poll_interval_s=2, max_poll_interval_s=30)
    intervals = [settings.interval(age) for age in (0, 60, 120, 600, 6000)]
    assert intervals == [2, 4, 6, 22, 30]
    assert intervals == sorted(intervals)


@pytest.mark.parametrize(
    ("first", "latest", "expected"),
    [
        ((0, 0.1), (10, 0.2), 80.0),
        ((0, 0.5), (10, 0.5), None),
        ((0, 0.2), (5, 1.0), 0.0),
        ((5, 0.1), (5, 0.2), None),
    ],
)
def test_eta_from_the_observed_rate(first, latest, expected) -> None:
    assert eta_seconds(first, latest) == (pytest.approx(expected) if expected else expected)


@pytest.mark.parametrize(
    ("progress", "seconds_later", "changed"),
    [
        (0.4, 1.0, False),  # the same progress, its estimate shown a moment ago
        (0.41, 0.5, True),  # new progress shows at once
        (0.4, PROGRESS_REFRESH_S, True),  # the time estimate beside it is refreshed now and then
        (1.0, 0.1, True),  # and so does the end
    ],
)
def test_progress_is_shown_when_it_changes(progress: float, seconds_later: float, changed: bool) -> None:
    assert progress_changed((0.4, 1000.0), progress, 1000.0 + seconds_later) is changed


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout_s"):
        MonitorSettings(heartbeat_timeout_s=0)


class FixedBackend:
    name = "fixed"

    def __init__(self, states):
        self.states, self.calls = states, 0

    def observe(self, items):
        self.calls += 1
        return {item.job_id: self.states[item.job_id] for item in items}


def test_one_poll_sees_statuses_metrics_and_log_lines_of_every_job(mock_clients) -> None:
    s3, cloudwatch, logs = mock_clients("s3"), mock_clients("cloudwatch"), mock_clients("logs")
    s3.create_bucket(Bucket="models")
    now = datetime.now(UTC)
    jobs = [Launched(f"run-s{n}-a1", "ec2", 1, now - timedelta(seconds=30), f"i-{n}") for n in (1, 2, 3)]
    put_json(s3, "models", "runs/run-s1-a1/status.json", {"state": "succeeded"})
    put_json(s3, "models", "runs/run-s2-a1/job.json", {})
    put_json(s3, "models", "runs/other-s1-a1/status.json", {"state": "failed"})  # another run
    for job_id, progress in (("run-s1-a1", 1.0), ("run-s2-a1", 0.4)):
        for name, value in (("TrainingProgress", progress), ("Heartbeat", 1.0)):
            cloudwatch.put_metric_data(
                Namespace=NAMESPACE,
                MetricData=[
                    {
                        "MetricName": name,
                        "Dimensions": [{"Name": "JobId", "Value": job_id}],
                        "Value": value,
                        "Timestamp": now - timedelta(seconds=10),
                        "StorageResolution": 1,
                    }
                ],
            )
    logs.create_log_group(logGroupName=LOG_GROUP)
    for job_id in ("run-s1-a1", "run-s2-a1", "other-s1-a1"):
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=job_id)
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=job_id,
            logEvents=[
                {
                    "timestamp": int((now - timedelta(seconds=5 - i)).timestamp() * 1000),
                    "message": f"{job_id} {i}",
                }
                for i in range(3)
            ],
        )
    backend = FixedBackend({job.job_id: ALIVE for job in jobs})
    cursor = LogCursor(after_ms=int((now - timedelta(minutes=1)).timestamp() * 1000))
    observation = poll(
        mock_clients, backend, jobs, "models", "runs/run", cursor, now - timedelta(minutes=1), 100, set()
    )
    assert backend.calls == 1
    assert set(observation.statuses) == {"run-s1-a1"}
    assert observation.progress == {"run-s1-a1": 1.0, "run-s2-a1": 0.4}
    assert set(observation.heartbeats) == {"run-s1-a1", "run-s2-a1"}
    streams = {stream for stream, _, _ in observation.log_lines}
    assert streams == {"run-s1-a1", "run-s2-a1"}  # only streams of jobs known to have started
    assert len(observation.log_lines) == 6

    again = poll(
        mock_clients,
        backend,
        jobs,
        "models",
        "runs/run",
        cursor,
        now - timedelta(minutes=1),
        100,
        {"run-s1-a1", "run-s2-a1"},
    )
    assert again.log_lines == []  # the cursor remembers what was relayed


def test_log_relay_stops_at_the_limit_and_resumes(mock_clients) -> None:
    logs = mock_clients("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="run-s1-a1")
    start = int(datetime.now(UTC).timestamp() * 1000) - 10_000
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName="run-s1-a1",
        logEvents=[{"timestamp": start + i, "message": f"line {i}"} for i in range(25)],
    )
    from mltp.monitor import _log_lines

    cursor = LogCursor(after_ms=start - 1)
    first, more = _log_lines(logs, ["run-s1-a1"], cursor, 10)
    second, _ = _log_lines(logs, ["run-s1-a1"], cursor, 10)
    third, _ = _log_lines(logs, ["run-s1-a1"], cursor, 10)
    assert more
    messages = [line for _, _, line in first + second + third]
    assert messages == [f"line {i}" for i in range(25)]


def test_log_relay_of_a_vanished_log_group_relays_nothing_instead_of_failing_the_poll(mock_clients) -> None:
    from mltp.monitor import _log_lines

    logs = mock_clients("logs")  # no log group: deleted, or an endpoint that lost its state
    cursor = LogCursor(after_ms=0)
    assert _log_lines(logs, ["run-s1-a1"], cursor, 10) == ([], False)
    assert cursor.after_ms == 0


def test_a_quick_look_finds_a_status_only_of_a_job_still_waited_for(mock_clients) -> None:
    s3 = mock_clients("s3")
    s3.create_bucket(Bucket="models")
    put_json(s3, "models", "runs/run-s1-a1/job.json", {})
    put_json(s3, "models", "runs/other-s1-a1/status.json", {"state": "failed"})  # another run
    assert not status_written(s3, "models", "runs/run", {"run-s1-a1", "run-s2-a1"})
    put_json(s3, "models", "runs/run-s2-a1/status.json", {"state": "succeeded"})
    assert not status_written(s3, "models", "runs/run", {"run-s1-a1"})  # s2 is settled already
    assert status_written(s3, "models", "runs/run", {"run-s1-a1", "run-s2-a1"})
