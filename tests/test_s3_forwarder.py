"""The S3 -> Prefect event forwarder (deployments/aws/s3_forwarder/handler.py): what it makes of S3
notifications, what it sends to a local HTTP server, and an event read back from a real Prefect server."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import logging
import threading
import urllib.error
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
HANDLER = ROOT / "deployments" / "aws" / "s3_forwarder" / "handler.py"
BUCKET = "team-data"


def load_forwarder():
    spec = importlib.util.spec_from_file_location("mltp_s3_forwarder", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


forwarder = load_forwarder()


def record(
    key: str,
    *,
    event: str = "ObjectCreated:Put",
    size: int = 1234,
    etag: str = "0123456789abcdef0123456789abcdef",
    time: str = "2026-11-25T10:00:00.000Z",
) -> dict:
    """One record as S3 delivers it to Lambda (the key URL-encoded, as S3 does)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": time,
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": {"key": key, "size": size, "eTag": etag, "sequencer": "0055AED6DCD90281E5"},
        },
    }


@dataclass
class FakeApi:
    url: str
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """An HTTP server on loopback that records every request and answers with `api.status`."""
    fake = FakeApi(url="")

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(fake.status)
            for name, value in fake.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def environment(monkeypatch, api: FakeApi) -> FakeApi:
    monkeypatch.setenv("PREFECT_API_URL", api.url + "/")
    for name in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "MLTP_INCOMING_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return api


def test_keys_are_decoded_and_only_new_files_under_the_prefix_become_events() -> None:
    notification = {
        "Records": [
            record("incoming/churn/My+Data%2B2026.csv", size=42, etag="e1"),
            record("incoming/caf%C3%A9+menu.csv.gz", event="ObjectCreated:CompleteMultipartUpload"),
            record("incoming/churn/"),  # a "folder" made in the console
            record("elsewhere/x.csv"),
            record("incomingx.csv"),
            record("incoming/gone.csv", event="ObjectRemoved:Delete"),
        ]
    }
    events = forwarder.to_events(notification, "incoming/")
    assert [event["payload"]["key"] for event in events] == [
        "incoming/churn/My Data+2026.csv",
        "incoming/café menu.csv.gz",
    ]
    first = events[0]
    assert first["event"] == "mltp.incoming.created"
    assert first["resource"] == {
        "prefect.resource.id": f"mltp.incoming.{BUCKET}/incoming/churn/My Data+2026.csv",
        "prefect.resource.name": "incoming/churn/My Data+2026.csv",
    }
    assert first["payload"] == {
        "bucket": BUCKET,
        "key": "incoming/churn/My Data+2026.csv",
        "size": 42,
        "etag": "e1",
        "event_time": "2026-11-25T10:00:00.000Z",
    }
    assert first["occurred"] == "2026-11-25T10:00:00.000Z" and first["related"] == []
    assert uuid.UUID(first["id"]).version == 5 and first["id"] != events[1]["id"]


def test_a_retried_notification_keeps_its_event_id() -> None:
    first = forwarder.to_events({"Records": [record("incoming/a.csv")]}, "incoming/")
    retried = forwarder.to_events({"Records": [record("incoming/a.csv")]}, "incoming/")
    other = forwarder.to_events({"Records": [record("incoming/b.csv")]}, "incoming/")
    assert first[0]["id"] == retried[0]["id"] != other[0]["id"]
    assert uuid.UUID(first[0]["id"]).version == 5


def test_records_delivered_through_sns_are_unwrapped() -> None:
    wrapped = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "Sns": {"Message": json.dumps({"Records": [record("incoming/a.csv")]})},
            }
        ]
    }
    assert [event["payload"]["key"] for event in forwarder.to_events(wrapped, "incoming/")] == [
        "incoming/a.csv"
    ]


def test_one_post_with_every_event_and_the_api_key_as_bearer_token(environment, monkeypatch, caplog) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_secret_key")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:ignored-when-a-key-is-set")
    notification = {
        "Records": [record("incoming/a.csv"), record("incoming/b%20c.csv"), record("other/d.csv")]
    }
    with caplog.at_level(logging.INFO, logger="mltp.s3_forwarder"):
        assert forwarder.handler(notification, None) == {"forwarded": 2}
    [sent] = environment.requests
    assert sent["path"] == "/api/events"
    assert sent["headers"]["Authorization"] == "Bearer pnu_secret_key"
    assert sent["headers"]["Content-Type"] == "application/json"
    body = json.loads(sent["body"])
    assert [event["resource"]["prefect.resource.name"] for event in body] == [
        "incoming/a.csv",
        "incoming/b c.csv",
    ]
    assert all(set(event) == {"id", "occurred", "event", "resource", "payload", "related"} for event in body)
    lines = [message for message in caplog.messages if message.startswith("forwarded")]
    assert len(lines) == 2 and f"mltp.incoming.{BUCKET}/incoming/b c.csv" in lines[1]
    assert "secret" not in caplog.text and "ignored" not in caplog.text


def test_a_self_hosted_servers_auth_string_is_sent_as_basic_auth(environment, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:p4ss:word")
    forwarder.handler({"Records": [record("incoming/a.csv")]}, None)
    expected = base64.b64encode(b"admin:p4ss:word").decode()
    assert environment.requests[0]["headers"]["Authorization"] == f"Basic {expected}"


def test_no_credentials_means_no_authorization_header(environment) -> None:
    forwarder.handler({"Records": [record("incoming/a.csv")]}, None)
    assert "Authorization" not in environment.requests[0]["headers"]


def test_the_prefix_comes_from_the_environment(environment, monkeypatch) -> None:
    monkeypatch.setenv("MLTP_INCOMING_PREFIX", "drops/")
    assert forwarder.handler({"Records": [record("incoming/a.csv"), record("drops/b.csv")]}, None) == {
        "forwarded": 1
    }
    assert json.loads(environment.requests[0]["body"])[0]["payload"]["key"] == "drops/b.csv"


def test_nothing_to_forward_sends_nothing(environment) -> None:
    assert forwarder.handler({"Records": [record("other/a.csv")]}, None) == {"forwarded": 0}
    assert forwarder.handler({}, None) == {"forwarded": 0}
    assert environment.requests == []


@pytest.mark.parametrize("status", [500, 401, 422])
def test_an_error_answer_raises_so_lambda_retries(environment, status) -> None:
    environment.status = status
    with pytest.raises(urllib.error.HTTPError) as raised:
        forwarder.handler({"Records": [record("incoming/a.csv")]}, None)
    assert raised.value.code == status


def test_a_redirect_is_not_followed_but_raises(environment) -> None:
    environment.status, environment.headers = 307, {"Location": environment.url + "/elsewhere"}
    with pytest.raises(urllib.error.HTTPError):
        forwarder.handler({"Records": [record("incoming/a.csv")]}, None)
    assert len(environment.requests) == 1


def test_an_unreachable_api_raises(monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    with pytest.raises(urllib.error.URLError):
        forwarder.handler({"Records": [record("incoming/a.csv")]}, None)


def test_the_watch_incoming_deployment_fires_on_what_the_forwarder_sends() -> None:
    from flows.watch import INCOMING_PREFIX

    assert forwarder.DEFAULT_PREFIX == INCOMING_PREFIX
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    [watch] = [deployment for deployment in deployments if deployment["name"] == "watch-incoming"]
    triggers = [trigger for trigger in watch["triggers"] if forwarder.EVENT in trigger.get("expect", [])]
    [event] = forwarder.to_events({"Records": [record(f"{INCOMING_PREFIX}churn/a.csv")]}, INCOMING_PREFIX)
    assert triggers and all(trigger.get("enabled", True) for trigger in triggers)
    # Prefect matches a trailing `*` as a prefix, as fnmatch does
    for trigger in triggers:
        assert fnmatchcase(event["resource"]["prefect.resource.id"], trigger["match"]["prefect.resource.id"])


@pytest.mark.servers
def test_a_forwarded_event_reaches_a_real_prefect_server(sandbox, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", sandbox.prefect_api_url)
    for name in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "MLTP_INCOMING_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    key = f"incoming/forwarder-{uuid.uuid4().hex[:8]}/new+file.csv"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert forwarder.handler({"Records": [record(key, size=99, etag="feed", time=now)]}, None) == {
        "forwarded": 1
    }
    decoded = key.replace("+", " ")
    query = {
        "filter": {
            "event": {"name": ["mltp.incoming.created"]},
            "resource": {"id": [f"mltp.incoming.{BUCKET}/{decoded}"]},
        },
        "limit": 10,
    }

    def stored() -> list[dict]:
        return sandbox.api("/events/filter", query)["events"]

    [event] = wait_for(stored, timeout=60, every=0.5)
    assert event["event"] == "mltp.incoming.created"
    assert event["resource"]["prefect.resource.name"] == decoded
    assert event["payload"] == {
        "bucket": BUCKET,
        "key": decoded,
        "size": 99,
        "etag": "feed",
        "event_time": now,
    }
