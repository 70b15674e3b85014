"""Shared fixtures.

Unit tests use moto's in-process `mock_aws`. Everything marked `servers` goes through real servers the
way a user's run does: the `mltp` command in a process of its own, a moto server and a Prefect server
on loopback, all started by `mltp sandbox up` into a temporary `.mltp/`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
import pytest

from tests.forked_cli import ForkedCli, ForkedCommand

MLTP = str(Path(sys.executable).parent / "mltp")
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake AWS credentials and a private Prefect home: nothing a test does can reach a real account,
    a real Prefect server or the developer's `~/.prefect`."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(("AWS_", "PREFECT_", "MLTP_", "ML_", "EC2_", "LAMBDA_")):
            del os.environ[key]
    os.environ.update(FAKE_AWS)
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["MLTP_HOME"] = str(tmp_path_factory.mktemp("mltp-home-default"))
    # One database for the suite's sandboxes wherever it runs (as root, `auto` would find pytest's folders
    # closed to PostgreSQL's user): tests/test_sandbox_postgres.py starts PostgreSQL ones on purpose.
    os.environ["MLTP_SANDBOX_DATABASE"] = "sqlite"
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def mock_clients():
    """A client factory on moto's in-process mock, one client per service (as the credentials block
    caches them), so event hooks registered by a test apply to every call."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        session = boto3.Session(region_name="us-east-1")
        made = {}

        def client(service: str):
            if service not in made:
                made[service] = session.client(service)
            return made[service]

        yield client


@contextmanager
def threaded_moto_server() -> Iterator[str]:
    """A moto server in this process on a free loopback port: its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def packages_imported_by(statements: str, packages: set[str]) -> list[str]:
    """Which of `packages` a fresh interpreter has imported once it ran `statements`."""
    loaded = "sorted({name.split('.')[0] for name in sys.modules})"
    code = f"import json, sys\n{statements}\nprint(json.dumps({loaded}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return sorted(set(json.loads(result.stdout.splitlines()[-1])) & packages)


def wait_for(predicate, timeout: float = 90, every: float = 0.1):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


_FORKED_CLI: ForkedCli | None = None


def forked_cli() -> ForkedCli:
    global _FORKED_CLI
    if _FORKED_CLI is None:
        _FORKED_CLI = ForkedCli(Path(tempfile.mkdtemp(prefix="mltp-cli-")), MLTP)
    return _FORKED_CLI


def run_mltp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Run the `mltp` command in a process of its own, as a user would: forked from a process that has
    imported it already (see tests/forked_cli.py), which saves seconds of CPU per call."""
    return forked_cli().run(list(args), {**os.environ, **(env or {})}, timeout)


def start_mltp(*args: str, env: dict[str, str] | None = None) -> ForkedCommand:
    """Start the `mltp` command as `run_mltp` runs it, without waiting for it (like `subprocess.Popen`)."""
    return forked_cli().start(list(args), {**os.environ, **(env or {})})


def run_console_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Run the installed `mltp` console script itself."""
    return subprocess.run(
        [MLTP, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def prefect_http(api_url: str) -> httpx.Client:
    """An HTTP client for a Prefect API that retries what Prefect's own client retries (the sandbox's
    SQLite-backed server answers 503 "database is locked" now and then) and raises on other errors."""
    from prefect.client.base import PrefectHttpxSyncClient

    return PrefectHttpxSyncClient(base_url=f"{api_url}/", timeout=60)


@dataclass(frozen=True)
class RunningSandbox:
    home: Path
    status: dict

    @property
    def env(self) -> dict[str, str]:
        return {"MLTP_HOME": str(self.home)}

    @property
    def aws_endpoint_url(self) -> str:
        return self.status["aws_endpoint_url"]

    @property
    def prefect_api_url(self) -> str:
        return self.status["prefect_api_url"]

    @cached_property
    def prefect(self) -> httpx.Client:
        return prefect_http(self.prefect_api_url)

    def api(self, path: str, body: dict | list | None = None, method: str = "POST"):
        """One call to the sandbox's Prefect API: the answer's JSON, or None for an empty answer."""
        answer = self.prefect.request(method, path.lstrip("/"), json=body)
        return answer.json() if answer.content else None

    def add_schedule(self, deployment_id: str, schedule: dict, parameters: dict | None = None) -> str:
        """Give the deployment one more active schedule; returns its id. Prefect's scheduler looks at
        every deployment once a minute, and every 5 s at those updated in the last few seconds: the
        deployment is touched (paused stays false) so the new schedule's runs exist within seconds."""
        [added] = self.api(
            f"/deployments/{deployment_id}/schedules",
            [{"schedule": schedule, "active": True, "parameters": parameters or {}}],
        )
        self.api(f"/deployments/{deployment_id}", {"paused": False}, "PATCH")
        return added["id"]

    def stop_polling_incoming(self) -> None:
        """Turn watch-incoming's every-minute schedule off. Each poll is a flow process of its own (~8 s
        of CPU): over the suite, the test sandboxes' idle polls were a seventh of all CPU time. Tests that
        watch `incoming/` start their watcher themselves; `prefect deploy` turns the schedule back on."""
        watcher = self.api("/deployments/name/watch-incoming/watch-incoming", method="GET")
        for schedule in watcher["schedules"]:
            self.api(f"/deployments/{watcher['id']}/schedules/{schedule['id']}", {"active": False}, "PATCH")

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="mltp-sandbox",  # the sandbox's one moto account
            aws_secret_access_key="mltp-sandbox-secret",
        )

    def s3(self):
        return self.client("s3")

    def live_instances(self) -> list[str]:
        pages = (
            self.client("ec2")
            .get_paginator("describe_instances")
            .paginate(
                Filters=[
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
                ]
            )
        )
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def sandbox_up(home: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mltp sandbox up --json` in `home`, on free ports."""
    ports = ["--aws-port", str(free_port()), "--prefect-port", str(free_port())]
    ports += ["--fleet-port", str(free_port())]
    return run_mltp("sandbox", "up", *ports, *flags, "--json", env={"MLTP_HOME": str(home), **(env or {})})


def start_sandbox(home: Path) -> RunningSandbox:
    result = sandbox_up(home)
    assert result.returncode == 0, result.stderr
    running = RunningSandbox(home, json.loads(result.stdout))
    running.stop_polling_incoming()
    return running


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """One sandbox shared by the tests that only read it or write under names of their own."""
    running = start_sandbox(tmp_path_factory.mktemp("mltp-home"))
    yield running
    left = running.live_instances()
    run_mltp("sandbox", "down", env=running.env)
    assert not left, f"instances left running in moto after the tests: {left}"


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory) -> Path:
    """Iris as a CSV file, its label in column `target`."""
    from sklearn.datasets import load_iris

    path = tmp_path_factory.mktemp("deployments") / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def scratch_prefect() -> Iterator[str]:
    """A second real Prefect server whose blocks a test may break: `prefect_test_harness` runs one in a
    subprocess, shared by a module's tests that point the CLI at it with PREFECT_API_URL, and stopped when
    the module is done (an idle server still costs CPU)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


def pytest_configure(config: pytest.Config) -> None:
    # Every moto this test process runs (the in-process mock, ThreadedMotoServers) applies each S3 PUT
    # atomically, as S3 and the sandbox's moto server do.
    from mltp.sandbox.moto_server import make_puts_atomic

    make_puts_atomic()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _FORKED_CLI is not None:
        _FORKED_CLI.stop()


# The slowest files (measured on 2 cores: from 40 s to 5.5 min each), started first so that the workers,
# which take whole files, end close together instead of one running the last slow file alone.
SLOWEST_FILES = (
    "test_deployments_postgres.py",
    "test_deployments.py",
    "test_ui_deployments.py",
    "test_sandbox_postgres.py",
    "test_train_on_aws.py",
    "test_bad_input.py",
    "test_sandbox_lifecycle.py",
    "test_blocks_and_doctor.py",
    "test_datasets_cli.py",
    "test_model_pictures.py",
    "test_pipeline.py",
    "test_train_cli.py",
    "test_security.py",
    "test_load.py",
    "test_process_faults.py",
    "test_models_cli.py",
)


def _slowness_rank(item: pytest.Item) -> int:
    name = item.path.name
    return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Run the quick in-process tests first: a broken unit fails fast before servers start.
    items.sort(
        key=lambda item: ("servers" in item.keywords or "browser" in item.keywords, _slowness_rank(item))
    )
