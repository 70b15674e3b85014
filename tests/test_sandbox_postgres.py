"""The sandbox on its own PostgreSQL with two workers (`mltp sandbox up --database postgres --workers 2`),
through the console script and real servers: a pipeline runs on it, each flow run is run by exactly one
worker, a killed worker is restarted, `up` twice is harmless, a crashed PostgreSQL is restarted with
the Prefect state intact, one crashed under a training run leaves no half-registered model and `up` brings
the sandbox back, switching databases is refused, a taken port is one line, `down` leaves no
process and no port; and the choice of database in-process (auto, the record, URLs, missing programs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sklearn.datasets import load_iris

from mltp import registry
from mltp.errors import ConfigError
from mltp.sandbox import database as databases
from mltp.sandbox import postgres
from mltp.sandbox.database import Database
from mltp.sandbox.process import port_is_free
from tests.conftest import RunningSandbox, free_port, run_mltp, sandbox_up, wait_for
from tests.test_deployments import (
    LIVE,
    PREFECT,
    final_state,
    finished,
    instances_of,
    model,
    prefect_env,
    seed,
    start_training,
)
from tests.test_train_on_aws import ec2_trainers

pytestmark = pytest.mark.servers
SUBMITTED = re.compile(r"Worker '[^']+' submitting flow run '([0-9a-f-]{36})'")
ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")  # another worker had it first


def reachable_home() -> Path:
    """A folder the `postgres` user can enter too (for root, PostgreSQL runs as that user)."""
    folder = Path(tempfile.mkdtemp(prefix="mltp-pg-", dir="/tmp"))
    folder.chmod(0o755)
    return folder / ".mltp"


def env_of(home: Path) -> dict[str, str]:
    return {"MLTP_HOME": str(home), "MLTP_SANDBOX_DATABASE": "auto"}  # the default, not the suite's sqlite


def up(home: Path, *flags: str) -> subprocess.CompletedProcess:
    return sandbox_up(home, *flags, env=env_of(home))


def status(home: Path) -> dict:
    result = run_mltp("sandbox", "status", "--json", env=env_of(home))
    return json.loads(result.stdout)


def cluster_processes(home: Path) -> list[psutil.Process]:
    data = str(home / "postgres" / "data")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if data in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def pg_sandbox() -> Iterator[tuple[RunningSandbox, int]]:
    home = reachable_home()
    reason = postgres.unusable_reason(home)
    if reason and postgres.find_binaries() is None:
        pytest.skip(reason)  # CI installs PostgreSQL; a machine without it still runs the rest
    port = free_port()
    result = up(home, "--database", "postgres", "--postgres-port", str(port), "--workers", "2")
    assert result.returncode == 0, result.stderr
    running = RunningSandbox(home, json.loads(result.stdout))
    running.stop_polling_incoming()
    yield running, port
    run_mltp("sandbox", "down", env=env_of(home))
    shutil.rmtree(home.parent, ignore_errors=True)


def test_a_pipeline_runs_on_the_sandbox_s_own_postgres(pg_sandbox, tmp_path) -> None:
    sandbox, port = pg_sandbox
    assert sandbox.status["database"]["kind"] == "postgres"
    assert sandbox.status["services"]["postgres"]["port"] == port
    assert sandbox.status["services"]["postgres"]["healthy"] is True
    assert not (sandbox.home / "prefect" / "prefect.db").exists()  # nothing went to SQLite
    prefect_server = psutil.Process(sandbox.status["services"]["prefect"]["pid"])
    assert prefect_server.environ()["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(
        f"127.0.0.1:{port}/prefect"
    )
    path = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    result = subprocess.run(
        [PREFECT, "deployment", "run", "ingest-and-train/ingest-and-train", "--param", f"source={path}",
         "--param", "target=target", "--param", "dataset_name=iris-pg", "--param", "compute=lambda",
         "--watch", "--watch-timeout", "240"],
        env=prefect_env(sandbox), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and "Completed" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-2000:]
    )
    assert model(sandbox, "iris-pg")["version"] == 1


def started_by_workers(home: Path) -> Counter[str]:
    """Flow run id -> how many workers started it: their submissions less the ones the server refused."""
    started: Counter[str] = Counter()
    for log in (home / "logs").glob("worker*.log"):
        text = log.read_text()
        started.update(SUBMITTED.findall(text))
        started.subtract(ABORTED.findall(text))
    return started


def test_two_workers_run_each_flow_run_exactly_once(pg_sandbox) -> None:
    sandbox, _ = pg_sandbox
    workers = sandbox.api("/work_pools/mltp/workers/filter", {})
    online = {worker["name"] for worker in workers if worker["status"] == "ONLINE"}
    assert {"mltp-sandbox-worker", "mltp-sandbox-worker-2"} <= online
    reaper = sandbox.api("/deployments/filter", {"deployments": {"name": {"any_": ["reap-orphans"]}}})[0]
    ids = [sandbox.api(f"/deployments/{reaper['id']}/create_flow_run", {})["id"] for _ in range(8)]
    for run_id in ids:
        finished(sandbox, run_id)
    started = started_by_workers(sandbox.home)
    assert {run_id: started[run_id] for run_id in ids} == dict.fromkeys(ids, 1)
    for run_id in ids:
        states = sandbox.api(f"/flow_run_states/?flow_run_id={run_id}", method="GET")
        assert [state["type"] for state in states].count("RUNNING") == 1


def test_a_killed_worker_is_restarted_by_up(pg_sandbox) -> None:
    sandbox, _ = pg_sandbox
    killed = psutil.Process(status(sandbox.home)["services"]["worker-2"]["pid"])
    killed.kill()
    killed.wait(timeout=30)
    assert status(sandbox.home)["services"]["worker-2"]["state"] == "stale"
    result = run_mltp("sandbox", "up", "--json", env=env_of(sandbox.home))
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert "removed a stale worker-2 pid file left by a crashed sandbox" in again["notes"]
    assert again["running"] is True and again["services"]["worker-2"]["healthy"] is True


def test_up_again_is_harmless_and_keeps_every_process(pg_sandbox) -> None:
    sandbox, _ = pg_sandbox
    before = {name: service["pid"] for name, service in status(sandbox.home)["services"].items()}
    result = run_mltp("sandbox", "up", "--database", "postgres", "--json", env=env_of(sandbox.home))
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert "the sandbox was already running" in again["notes"]
    assert {name: service["pid"] for name, service in again["services"].items()} == before


def test_another_database_for_the_same_sandbox_is_refused(pg_sandbox) -> None:
    sandbox, _ = pg_sandbox
    for flags in (
        ["--database", "sqlite"],
        ["--database-url", "postgresql://someone:pw@db.internal/prefect"],
    ):
        result = run_mltp("sandbox", "up", *flags, env=env_of(sandbox.home))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "keeps its Prefect state in PostgreSQL, the sandbox's own" in lines[0]
        assert "pw@" not in lines[0]  # a password in a URL is never shown
    assert status(sandbox.home)["running"] is True


def crash_postgres_then_up(sandbox: RunningSandbox) -> dict:
    """kill -9 the sandbox's PostgreSQL, then `mltp sandbox up`: its answer. Meanwhile the API answers 503,
    which Prefect's clients retry, not 500 (mltp/sandbox/prefect_server.py); `up` starts PostgreSQL alone
    again: the Prefect server reconnects and the workers keep their runs."""
    services = status(sandbox.home)["services"]
    kept = {name: services[name]["pid"] for name in ("prefect", "worker", "worker-2")}
    os.kill(services["postgres"]["pid"], signal.SIGKILL)
    psutil.wait_procs(cluster_processes(sandbox.home), timeout=30)
    crashed = status(sandbox.home)
    assert crashed["running"] is False and crashed["services"]["postgres"]["state"] == "stale"
    assert httpx.post(f"{sandbox.prefect_api_url}/flow_runs/filter", json={}, timeout=30).status_code == 503
    result = run_mltp("sandbox", "up", "--json", env=env_of(sandbox.home), timeout=600)
    assert result.returncode == 0, result.stderr
    restarted = json.loads(result.stdout)
    assert restarted["running"] is True, restarted["services"]
    assert all(service["healthy"] for service in restarted["services"].values()), restarted["services"]
    assert {name: restarted["services"][name]["pid"] for name in kept} == kept
    return restarted


def test_a_crashed_postgres_is_restarted_by_up_with_the_state_kept(pg_sandbox) -> None:
    sandbox, port = pg_sandbox
    completed = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 200}  # not overdue
    runs_before = {run["id"] for run in sandbox.api("/flow_runs/filter", completed)}  # ones, which up drops
    restarted = crash_postgres_then_up(sandbox)
    assert restarted["services"]["postgres"]["port"] == port
    assert "removed a stale postgres pid file left by a crashed sandbox" in restarted["notes"]
    runs_after = {run["id"] for run in sandbox.api("/flow_runs/filter", completed)}
    assert runs_before and runs_before <= runs_after  # the runs survived in the cluster


@pytest.mark.timeout(900)  # a minute of training and `up` after a crash: minutes on a loaded machine
def test_postgres_crashed_under_a_training_run_then_up_brings_the_sandbox_back(pg_sandbox, tmp_path) -> None:
    sandbox, _ = pg_sandbox
    name = f"pg-crash-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    seed(sandbox, path, name)
    # A minute of trees: the job outlasts the outage, so a run that survives it has nothing to retry.
    run_id = start_training(sandbox, name, compute="ec2", hyperparameters={"n_estimators": 8000})["id"]
    instance = wait_for(lambda: instances_of(sandbox, run_id, LIVE), timeout=180)[0]
    wait_for(lambda: instance in ec2_trainers(sandbox), timeout=120)  # the flow is monitoring its job

    crash_postgres_then_up(sandbox)

    wait_for(lambda: not instances_of(sandbox, run_id, LIVE), timeout=300)  # its job ended, either way
    ended = final_state(sandbox, run_id, timeout=60)  # not left RUNNING with its process gone
    assert ended["state_type"] == "COMPLETED" or ended["state"]["message"], ended["state"]
    claimed, complete = registry.version_numbers(sandbox.s3(), sandbox.status["buckets"]["models"], name)
    assert claimed == complete  # a version is all there or absent
    if ended["state_type"] == "COMPLETED":
        assert model(sandbox, name)["lineage"]["flow_run_id"] == run_id

    fresh = start_training(sandbox, name, compute="lambda")["id"]
    finished(sandbox, fresh)
    assert model(sandbox, name)["lineage"]["flow_run_id"] == fresh


def test_down_leaves_no_process_and_no_port(pg_sandbox) -> None:
    sandbox, port = pg_sandbox
    assert cluster_processes(sandbox.home)
    services = status(sandbox.home)["services"]
    pids = [services[name]["pid"] for name in ("worker", "worker-2", "prefect", "moto", "fleet")]
    result = run_mltp("sandbox", "down", env=env_of(sandbox.home))
    assert result.returncode == 0, result.stderr
    assert "stopped the postgres server" in result.stdout
    assert cluster_processes(sandbox.home) == []
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert "stopped the worker-2 server" in result.stdout
    assert port_is_free(port) and not (sandbox.home / "run" / "postgres.pid").exists()
    assert (sandbox.home / "postgres" / "data" / "PG_VERSION").exists()  # the state stays for the next up
    result = up(sandbox.home, "--postgres-port", str(port))  # back for the teardown: auto keeps PostgreSQL
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"]["kind"] == "postgres"


def test_a_taken_postgres_port_is_one_line_and_nothing_starts() -> None:
    home = reachable_home()
    if postgres.unusable_reason(home):
        pytest.skip(postgres.unusable_reason(home))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        result = up(home, "--database", "postgres", "--postgres-port", str(taken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {taken} for the sandbox's PostgreSQL is already in use" in lines[0]
    assert "--postgres-port" in lines[0]
    assert not (home / "run").exists() or not list((home / "run").glob("*.pid"))
    assert not (home / "postgres").exists()
    shutil.rmtree(home.parent, ignore_errors=True)


# -- the choice, in-process ---------------------------------------------------------------------------


def test_auto_takes_postgres_where_it_runs_else_sqlite_with_the_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(databases, "unusable_reason", lambda home: None)
    assert databases.choose(tmp_path) == (Database("postgres"), [])
    monkeypatch.setattr(databases, "unusable_reason", lambda home: "no PostgreSQL server programs")
    chosen, notes = databases.choose(tmp_path)
    assert chosen == Database("sqlite") and notes == [
        "the Prefect server keeps its state in SQLite: no PostgreSQL server programs"
    ]
    with pytest.raises(ConfigError, match=r"^--database postgres: no PostgreSQL server programs$"):
        databases.choose(tmp_path, "postgres")


def test_auto_keeps_the_database_a_sandbox_was_started_with(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(databases, "unusable_reason", lambda home: None)
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "prefect.db").touch()  # a sandbox from before the choice: SQLite
    assert databases.choose(tmp_path) == (Database("sqlite"), [])
    with pytest.raises(ConfigError, match=r"keeps its Prefect state in SQLite .*delete .*/prefect to start"):
        databases.choose(tmp_path, "postgres")
    shutil.rmtree(tmp_path / "prefect")  # deleted, as the message says: a fresh choice
    assert databases.choose(tmp_path, "postgres") == (Database("postgres"), [])


def test_an_external_url_is_recorded_privately_and_never_shown_with_its_password(tmp_path) -> None:
    chosen, _ = databases.choose(
        tmp_path, "auto", "postgresql://prefect:s3cret@db.internal:5433/orchestration"
    )
    assert chosen.url == "postgresql+asyncpg://prefect:s3cret@db.internal:5433/orchestration"
    assert (
        chosen.describe() == "PostgreSQL at postgresql+asyncpg://prefect:***@db.internal:5433/orchestration"
    )
    databases.record(tmp_path, chosen)
    assert stat.S_IMODE((tmp_path / "database.json").stat().st_mode) == 0o600
    assert databases.recorded(tmp_path) == chosen
    assert chosen.prefect_server_env(None) == {"PREFECT_API_DATABASE_CONNECTION_URL": chosen.url}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "--database-url is not a URL"),
        ("mysql://root:pw@db/prefect", r"--database-url mysql://root:\*\*\*@db/prefect is not a PostgreSQL"),
        ("postgresql://db.internal", "is not a PostgreSQL database's URL"),  # no database
        ("postgresql:///prefect", "is not a PostgreSQL database's URL"),  # no host
    ],
)
def test_bad_database_urls_are_one_line(tmp_path, url, message) -> None:
    with pytest.raises(ConfigError, match=message):
        databases.choose(tmp_path, "auto", url)


def test_a_url_with_database_sqlite_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="leave out --database sqlite"):
        databases.choose(tmp_path, "sqlite", "postgresql://db.internal/prefect")


def test_the_server_programs_are_found_on_path_or_in_debian_s_folder(tmp_path, monkeypatch) -> None:
    def install(folder: Path, tools=postgres.TOOLS) -> Path:
        folder.mkdir(parents=True)
        for tool in tools:
            (folder / tool).write_text("#!/bin/sh\n")
            (folder / tool).chmod(0o755)
        return folder

    monkeypatch.setattr(postgres, "DEBIAN_ROOT", tmp_path / "lib")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert postgres.find_binaries() is None
    assert "apt-get install postgresql" in (postgres.unusable_reason(tmp_path) or "")
    install(tmp_path / "lib" / "13" / "bin")
    newest = install(tmp_path / "lib" / "16" / "bin")
    install(tmp_path / "lib" / "17" / "bin", tools=("initdb",))  # incomplete: skipped
    assert postgres.find_binaries() == postgres.Binaries(newest)
    on_path = install(tmp_path / "opt" / "pg" / "bin")
    monkeypatch.setenv("PATH", str(on_path))
    assert postgres.find_binaries() == postgres.Binaries(on_path)


def test_sqlite_sandboxes_do_without_the_late_runs_service() -> None:
    assert Database("sqlite").prefect_server_env(None) == {
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"
    }
    assert Database("postgres").prefect_server_env(5057) == {
        "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://mltp@127.0.0.1:5057/prefect"
    }
