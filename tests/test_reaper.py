"""The reaper: its rules as a table, `reap()` on moto, and `mltp reap` through the sandbox."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from mltp.compute.ec2 import CLEANUP_STATES, TAG_EXPIRES, TAG_FLOW_RUN, TAG_JOB, TAG_RUN
from mltp.reaper import Orphan, find_orphans, reap
from mltp.runs import write_run_record
from tests.conftest import run_mltp

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STALE = timedelta(minutes=10)
FLOW_RUN = "5f0c8e3a-4a55-4e0c-9a1e-6c1f2d3b4a5c"
AMI = "ami-03cf127a"  # one of moto's default images
MODELS = "mltp-test-models"


def described(
    state: str = "running", launched: timedelta = timedelta(minutes=30), **changes: str | None
) -> dict:
    """An instance as DescribeInstances shows it; `changes` set (or, with None, drop) our tags."""
    tags = {
        TAG_JOB: "iris-rf-1-s1-a1",
        TAG_RUN: "iris-rf-1",
        TAG_FLOW_RUN: FLOW_RUN,
        TAG_EXPIRES: (NOW + timedelta(hours=1)).isoformat(timespec="seconds"),
    }
    names = {"job": TAG_JOB, "run": TAG_RUN, "flow_run": TAG_FLOW_RUN, "expires": TAG_EXPIRES}
    for name, value in changes.items():
        tags.pop(names[name])
        if value is not None:
            tags[names[name]] = value
    return {
        "InstanceId": "i-0123456789abcdef0",
        "State": {"Name": state},
        "LaunchTime": NOW - launched,
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }


WATCHED_NOW = {"iris-rf-1": NOW - timedelta(seconds=20)}
WATCHED_LONG_AGO = {"iris-rf-1": NOW - timedelta(minutes=11)}
EXPIRED = (NOW - timedelta(minutes=5)).isoformat(timespec="seconds")


@pytest.mark.parametrize(
    ("instance", "state", "watched", "reason"),
    [
        # a run that its flow still watches is left alone, whatever it is doing
        (described(), "RUNNING", WATCHED_NOW, None),
        (described(), "PENDING", WATCHED_NOW, None),
        (described(), "CANCELLING", WATCHED_NOW, None),
        (described(state="stopped"), "RUNNING", WATCHED_NOW, None),
        (described(launched=timedelta(minutes=2)), "RUNNING", {}, None),  # young: its record may lag
        # past its expiry, even while watched
        (described(expires=EXPIRED), "RUNNING", WATCHED_NOW, "it expired 5 min ago"),
        (described(state="stopped", expires=EXPIRED), "RUNNING", WATCHED_NOW, "it expired"),
        # an expiry without a zone is UTC
        (described(expires="2026-03-01T11:59:00"), "RUNNING", WATCHED_NOW, "it expired 60 s ago"),
        # the flow run is gone or over
        (described(), None, WATCHED_NOW, f"its flow run {FLOW_RUN} is unknown to Prefect"),
        (described(), "COMPLETED", WATCHED_NOW, f"its flow run {FLOW_RUN} is COMPLETED"),
        (described(), "FAILED", WATCHED_NOW, "is FAILED"),
        (described(), "CANCELLED", WATCHED_NOW, "is CANCELLED"),
        (described(), "CRASHED", WATCHED_NOW, "is CRASHED"),
        # the flow run still says it runs, but nothing has watched the run for too long
        (described(), "RUNNING", WATCHED_LONG_AGO, "says RUNNING but run iris-rf-1 was last watched 11 min"),
        (described(), "PENDING", WATCHED_LONG_AGO, "says PENDING but"),
        (described(), "PAUSED", WATCHED_LONG_AGO, "says PAUSED but"),
        (described(), "RUNNING", {"iris-rf-1": None}, "run iris-rf-1 has no run record and it was launched"),
        (described(), "RUNNING", {}, "has no run record and it was launched 30 min ago"),
        (described(run=None), "RUNNING", WATCHED_NOW, "it has no run id and it was launched 30 min ago"),
        # without a flow-run tag the run record alone decides
        (described(flow_run=None), None, WATCHED_NOW, None),
        (described(flow_run=None), None, WATCHED_LONG_AGO, "run iris-rf-1 was last watched 11 min ago"),
        # a malformed or missing expires-at is not by itself a reason...
        (described(expires="soon"), "RUNNING", WATCHED_NOW, None),
        (described(expires=None), "RUNNING", WATCHED_NOW, None),
        (described(expires=""), "RUNNING", WATCHED_NOW, None),
        # ...but the other rules still apply
        (described(expires="soon"), "COMPLETED", WATCHED_NOW, "is COMPLETED"),
        (described(expires=None), None, WATCHED_NOW, "unknown to Prefect"),
        (described(expires="2026-13-45T99:00:00Z"), "RUNNING", WATCHED_LONG_AGO, "last watched"),
        # not ours, or no longer costing money: never touched
        (described(job=None, expires=EXPIRED), None, {}, None),
        (described(state="terminated", expires=EXPIRED), None, {}, None),
        (described(state="shutting-down", expires=EXPIRED), None, {}, None),
    ],
)
def test_decision_table(instance: dict, state: str | None, watched: dict, reason: str | None) -> None:
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    states = {tags[TAG_FLOW_RUN]: state} if TAG_FLOW_RUN in tags else {}
    orphans = find_orphans([instance], states, watched, NOW, STALE)
    if reason is None:
        assert orphans == []
    else:
        assert len(orphans) == 1 and reason in orphans[0].reason, orphans


def test_a_flow_run_missing_from_the_answer_counts_as_unknown() -> None:
    [orphan] = find_orphans([described()], {}, WATCHED_NOW, NOW, STALE)
    assert "unknown to Prefect" in orphan.reason


def test_an_orphan_says_what_it_is() -> None:
    [orphan] = find_orphans([described()], {FLOW_RUN: "CRASHED"}, WATCHED_NOW, NOW, STALE)
    assert orphan == Orphan(
        "i-0123456789abcdef0",
        "iris-rf-1-s1-a1",
        "iris-rf-1",
        FLOW_RUN,
        f"its flow run {FLOW_RUN} is CRASHED",
        NOW - timedelta(minutes=30),
    )
    assert orphan.as_dict()["launched_at"] == "2026-03-01T11:30:00+00:00"


# -- reap() on moto ---------------------------------------------------------------------------------


@pytest.fixture
def aws(mock_clients):
    mock_clients("s3").create_bucket(Bucket=MODELS)
    return mock_clients


def launch(ec2, *, run_id: str, flow_run_id: str, expires_at: datetime | None = None) -> str:
    tags = [
        {"Key": TAG_JOB, "Value": f"{run_id}-s1-a1"},
        {"Key": TAG_RUN, "Value": run_id},
        {"Key": TAG_FLOW_RUN, "Value": flow_run_id},
        {"Key": TAG_EXPIRES, "Value": (expires_at or datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    ]
    reservation = ec2.run_instances(
        ImageId=AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return reservation["Instances"][0]["InstanceId"]


def state_of(ec2, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


class Prefect:
    """Stands in for the flow's Prefect lookup: fixed states, and the calls it was asked."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states, self.calls = states, []

    def __call__(self, ids: list[str]) -> dict[str, str | None]:
        self.calls.append(ids)
        return {flow_run_id: self.states.get(flow_run_id) for flow_run_id in ids}


def count_calls(clients) -> Counter:
    calls = Counter()
    for service in ("ec2", "s3"):
        clients(service).meta.events.register(
            f"before-call.{service}", lambda model, **_: calls.update([model.name])
        )
    return calls


@pytest.fixture
def fleet(aws) -> dict[str, str]:
    """A watched run, a finished one, one Prefect never heard of, one past its expiry, and a stranger."""
    ec2, s3 = aws("ec2"), aws("s3")
    live, done, lost = (str(uuid.uuid4()) for _ in range(3))
    for run_id, flow_run_id in (("live-run", live), ("done-run", done)):
        write_run_record(s3, MODELS, run_id, {"run_id": run_id, "flow_run_id": flow_run_id})
    ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)  # not ours: no mltp tags
    return {
        "live_flow_run": live,
        "done_flow_run": done,
        "live": launch(ec2, run_id="live-run", flow_run_id=live),
        "done": launch(ec2, run_id="done-run", flow_run_id=done),
        "lost": launch(ec2, run_id="lost-run", flow_run_id=lost),
        "expired": launch(
            ec2, run_id="live-run", flow_run_id=live, expires_at=datetime.now(UTC) - timedelta(minutes=1)
        ),
    }


def test_reap_terminates_the_orphans_and_leaves_the_watched_run(aws, fleet) -> None:
    ec2 = aws("ec2")
    prefect = Prefect({fleet["live_flow_run"]: "RUNNING", fleet["done_flow_run"]: "COMPLETED"})
    calls = count_calls(aws)
    report = reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE)
    # one listing, one record read per run, one question to Prefect, one termination
    assert calls == {"DescribeInstances": 1, "GetObject": 3, "TerminateInstances": 1}
    assert len(prefect.calls) == 1 and len(prefect.calls[0]) == 3
    orphans = {orphan.instance_id: orphan.reason for orphan in report.orphans}
    assert set(orphans) == {fleet["done"], fleet["lost"], fleet["expired"]}
    assert "is COMPLETED" in orphans[fleet["done"]]
    assert "unknown to Prefect" in orphans[fleet["lost"]]
    assert "expired" in orphans[fleet["expired"]]
    assert sorted(report.terminated) == sorted(orphans) and report.checked == 4
    assert state_of(ec2, fleet["live"]) == "running"
    assert all(state_of(ec2, instance_id) not in CLEANUP_STATES for instance_id in orphans)
    again = reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE)
    assert (again.checked, again.orphans, again.terminated) == (1, [], [])


def test_dry_run_reports_and_terminates_nothing(aws, fleet) -> None:
    ec2 = aws("ec2")
    calls = count_calls(aws)
    report = reap(aws, MODELS, Prefect({}), dry_run=True, stale_after=STALE)
    assert len(report.orphans) == 4 and report.terminated == [] and report.dry_run
    assert "TerminateInstances" not in calls
    assert all(state_of(ec2, fleet[name]) == "running" for name in ("live", "done", "lost", "expired"))
    assert report.as_dict() == {
        "checked": 4,
        "dry_run": True,
        "orphans": [orphan.as_dict() for orphan in report.orphans],
        "terminated": [],
    }
    assert set(report.as_dict()["orphans"][0]) == {
        "instance_id",
        "job_id",
        "run_id",
        "flow_run_id",
        "reason",
        "launched_at",
    }


def test_a_run_without_record_is_reaped_once_its_instance_is_old(aws) -> None:
    ec2 = aws("ec2")
    flow_run_id = str(uuid.uuid4())
    instance_id = launch(ec2, run_id="unrecorded", flow_run_id=flow_run_id)
    prefect = Prefect({flow_run_id: "RUNNING"})
    assert reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE).orphans == []
    later = datetime.now(UTC) + timedelta(minutes=11)
    report = reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE, now=later)
    assert report.terminated == [instance_id]
    assert "no run record" in report.orphans[0].reason


def test_a_run_whose_watcher_stopped_is_reaped(aws) -> None:
    ec2, s3 = aws("ec2"), aws("s3")
    flow_run_id = str(uuid.uuid4())
    write_run_record(s3, MODELS, "abandoned", {"flow_run_id": flow_run_id})
    instance_id = launch(ec2, run_id="abandoned", flow_run_id=flow_run_id)
    prefect = Prefect({flow_run_id: "RUNNING"})
    later = datetime.now(UTC) + timedelta(minutes=9)
    assert reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE, now=later).orphans == []
    later = datetime.now(UTC) + timedelta(minutes=11)
    report = reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE, now=later)
    assert report.terminated == [instance_id] and "last watched" in report.orphans[0].reason


def test_nothing_to_check_asks_prefect_nothing(aws) -> None:
    prefect = Prefect({})
    report = reap(aws, MODELS, prefect, dry_run=False, stale_after=STALE)
    assert (report.checked, report.orphans, report.terminated, prefect.calls) == (0, [], [], [])


class ManyInstances:
    """An EC2 client with 2,500 of our expired instances (too many to start in moto for a unit test)."""

    def __init__(self) -> None:
        self.instances = [described(expires=EXPIRED, run=None) for _ in range(2500)]
        for number, instance in enumerate(self.instances):
            instance["InstanceId"] = f"i-{number:017x}"
        self.terminate_calls: list[int] = []

    def get_paginator(self, operation: str):
        assert operation == "describe_instances"
        return self

    def paginate(self, **_) -> list[dict]:
        return [{"Reservations": [{"Instances": self.instances}]}]

    def terminate_instances(self, InstanceIds: list[str]) -> dict:
        self.terminate_calls.append(len(InstanceIds))
        return {"TerminatingInstances": [{"InstanceId": instance_id} for instance_id in InstanceIds]}


def test_termination_takes_one_call_per_thousand_instances() -> None:
    ec2 = ManyInstances()
    report = reap(lambda service: ec2, MODELS, Prefect({}), dry_run=False, stale_after=STALE, now=NOW)
    assert ec2.terminate_calls == [1000, 1000, 500] and len(report.terminated) == 2500


# -- `mltp reap` through the sandbox ---------------------------------------------------------------


def sandbox_client(sandbox, service: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=sandbox.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="mltp-sandbox",
        aws_secret_access_key="mltp-sandbox-secret",
    )


def reap_json(sandbox, *flags: str) -> dict:
    result = run_mltp("reap", "--json", *flags, env=sandbox.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.servers
def test_mltp_reap_through_the_sandbox(sandbox) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed, Running

    @flow(name="reaper-test-watched")
    def watched() -> None:
        """Only its flow run is used: created RUNNING through the API, never executed."""

    ec2, s3 = sandbox_client(sandbox, "ec2"), sandbox_client(sandbox, "s3")
    run_id = f"reaper-test-{uuid.uuid4().hex[:8]}"  # only instances tagged with it are ours to touch
    with temporary_settings(updates={PREFECT_API_URL: sandbox.prefect_api_url}):
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run(watched, state=Running())
        ids: dict[str, str] = {}
        try:
            write_run_record(
                s3, sandbox.status["buckets"]["models"], run_id, {"flow_run_id": str(flow_run.id)}
            )
            ids["live"] = launch(ec2, run_id=run_id, flow_run_id=str(flow_run.id))
            ids["unknown"] = launch(ec2, run_id=run_id, flow_run_id=str(uuid.uuid4()))
            ids["not_a_uuid"] = launch(ec2, run_id=run_id, flow_run_id="not-a-uuid")
            ids["expired"] = launch(
                ec2,
                run_id=run_id,
                flow_run_id=str(flow_run.id),
                expires_at=datetime.now(UTC) - timedelta(minutes=1),
            )
            orphans = {"unknown", "not_a_uuid", "expired"}

            dry = reap_json(sandbox, "--dry-run")
            reasons = {orphan["instance_id"]: orphan["reason"] for orphan in dry["orphans"]}
            assert dry["dry_run"] and dry["terminated"] == []
            assert {ids[name] for name in orphans} <= set(reasons) and ids["live"] not in reasons
            assert "unknown to Prefect" in reasons[ids["unknown"]]
            assert "unknown to Prefect" in reasons[ids["not_a_uuid"]]
            assert "expired" in reasons[ids["expired"]]
            assert all(state_of(ec2, instance_id) == "running" for instance_id in ids.values())

            real = reap_json(sandbox)
            assert {ids[name] for name in orphans} <= set(real["terminated"])
            assert ids["live"] not in real["terminated"]
            assert all(state_of(ec2, ids[name]) not in CLEANUP_STATES for name in orphans)
            assert state_of(ec2, ids["live"]) == "running"

            again = reap_json(sandbox)
            assert not set(ids.values()) & {orphan["instance_id"] for orphan in again["orphans"]}
        finally:
            mine = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_RUN}", "Values": [run_id]}])
            leftover = [
                instance["InstanceId"]
                for reservation in mine["Reservations"]
                for instance in reservation["Instances"]
            ]
            if leftover:
                ec2.terminate_instances(InstanceIds=leftover)
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run.id, Completed(), force=True)
