"""`mltp sandbox up | down | status`: a moto server, the compute fleet and a Prefect server (API + UI)
on loopback, with the project's deployments and a worker that runs them; the Prefect server's state in
SQLite or PostgreSQL (the sandbox's own, as one more service, or the user's).

All state lives under the project's `.mltp/`: pid files in `run/`, logs in `logs/`, Prefect's home
(the SQLite database included) in `prefect/`, the PostgreSQL cluster in `postgres/`, `database.json` with
the database chosen, and `sandbox.json` with the endpoints of a running sandbox.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from mltp.errors import ConfigError, SandboxError, SandboxNotRunningError
from mltp.sandbox import database as databases
from mltp.sandbox.database import Database
from mltp.sandbox.deployments import (
    WORKER_POLL_S,
    DeployAll,
    drop_missed_runs,
    ensure_work_pool,
    project_dir,
    worker_argv,
    worker_name,
    worker_online,
)
from mltp.sandbox.postgres import DEFAULT_POSTGRES_PORT, Cluster, cluster_account, find_binaries
from mltp.sandbox.process import ManagedProcess, require_free_port

DEFAULT_AWS_PORT = 5055
DEFAULT_PREFECT_PORT = 4250
DEFAULT_FLEET_PORT = 5056
DEFAULT_MAX_TRAINERS = 4
MAX_WORKERS = 8
PREFECT_RECONNECT_S = 30  # a Prefect server whose database came back answers again within this
HOST = "127.0.0.1"
REGION = "us-east-1"
# moto accepts any key pair; fixed fake keys keep every process of the sandbox in one moto account.
ACCESS_KEY_ID = "mltp-sandbox"
SECRET_ACCESS_KEY = "mltp-sandbox-secret"
DATA_BUCKET = "mltp-sandbox-data"
MODELS_BUCKET = "mltp-sandbox-models"
TRAINER_ROLE = "mltp-sandbox-trainer"


@dataclass(frozen=True)
class Endpoints:
    aws_port: int
    prefect_port: int
    fleet_port: int
    postgres_port: int | None = None  # the sandbox's own PostgreSQL, when it has one

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://{HOST}:{self.aws_port}"

    @property
    def lambda_endpoint_url(self) -> str:
        return f"http://{HOST}:{self.fleet_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"


@dataclass(frozen=True)
class ServiceStatus:
    state: str  # running | stale | stopped
    pid: int | None
    port: int | None
    healthy: bool


@dataclass(frozen=True)
class SandboxStatus:
    home: Path
    running: bool
    endpoints: Endpoints | None
    services: dict[str, ServiceStatus]
    database: Database | None  # None: never started

    def as_json(self) -> dict:
        endpoints = self.endpoints
        return {
            "running": self.running,
            "home": str(self.home),
            "database": {"kind": self.database.kind, "description": self.database.describe()}
            if self.database
            else None,
            "aws_endpoint_url": endpoints.aws_endpoint_url if endpoints else None,
            "lambda_endpoint_url": endpoints.lambda_endpoint_url if endpoints else None,
            "prefect_api_url": endpoints.prefect_api_url if endpoints else None,
            "prefect_ui_url": endpoints.prefect_ui_url if endpoints else None,
            "region": REGION if endpoints else None,
            "buckets": {"data": DATA_BUCKET, "models": MODELS_BUCKET} if endpoints else None,
            "services": {name: asdict(service) for name, service in self.services.items()},
        }


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class Sandbox:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.state_file = home / "sandbox.json"
        run_dir, log_dir = home / "run", home / "logs"
        self.moto = ManagedProcess("moto", run_dir, log_dir)
        self.prefect = ManagedProcess("prefect", run_dir, log_dir)
        self.fleet = ManagedProcess("fleet", run_dir, log_dir)
        self.postgres = ManagedProcess("postgres", run_dir, log_dir)
        # Workers as on N machines, each with its own name, fork server, log, pid file and Prefect home.
        self.workers = [
            ManagedProcess("worker" if number == 1 else f"worker-{number}", run_dir, log_dir)
            for number in range(1, MAX_WORKERS + 1)
        ]
        # in the order they start
        self.every_service = (self.moto, self.fleet, self.postgres, self.prefect, *self.workers)

    def services(self, database: Database | None, workers: int | None = None) -> tuple[ManagedProcess, ...]:
        """The services a sandbox on `database` with `workers` workers runs (by default as many as run now,
        at least one), and any started before that still has a pid file (to be stopped)."""
        workers = workers or self.running_workers()
        own_postgres = (database is not None and database.own_postgres) or self.postgres.state() != "stopped"
        return tuple(
            each
            for each in self.every_service
            if (each is not self.postgres or own_postgres)
            and (each not in self.workers or self.workers.index(each) < workers or each.state() != "stopped")
        )

    def running_workers(self) -> int:
        """How many workers this sandbox has: the highest numbered one with a pid file, at least one."""
        started = [number for number, each in enumerate(self.workers, 1) if each.state() != "stopped"]
        return max(started, default=1)

    def cluster(self) -> Cluster | None:
        binaries = find_binaries()
        return Cluster(self.home, binaries, cluster_account()) if binaries else None

    # -- reading -------------------------------------------------------------------------------

    def endpoints(self) -> Endpoints | None:
        try:
            return Endpoints(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def status(self) -> SandboxStatus:
        endpoints, database = self.endpoints(), databases.recorded(self.home)
        services = {}
        for process in self.services(database):
            record, state = process.record(), process.state()
            running = state == "running"
            services[process.name] = ServiceStatus(
                state=state,
                pid=record.pid if record and running else None,
                port=(record.port or None) if record else None,
                healthy=running and endpoints is not None and self._answers(process, endpoints),
            )
        running = endpoints is not None and all(service.healthy for service in services.values())
        return SandboxStatus(self.home, running, endpoints if running else None, services, database)

    def _answers(self, process: ManagedProcess, endpoints: Endpoints) -> bool:
        if process is self.moto:
            return _get_ok(f"{endpoints.aws_endpoint_url}/moto-api/")
        if process is self.fleet:
            return _get_ok(f"{endpoints.lambda_endpoint_url}/fleet/health")
        if process is self.prefect:
            return _get_ok(f"{endpoints.prefect_api_url}/ready")
        if process is self.postgres:
            cluster = self.cluster()
            return bool(cluster and endpoints.postgres_port and cluster.ready(endpoints.postgres_port))
        return worker_online(endpoints.prefect_api_url, self._worker_name(process))

    def running_endpoints(self) -> Endpoints | None:
        """Endpoints of a running sandbox, without health calls (cheap enough for every command)."""
        endpoints = self.endpoints()
        services = self.services(databases.recorded(self.home))
        if endpoints and all(process.state() == "running" for process in services):
            return endpoints
        return None

    # -- changing ------------------------------------------------------------------------------

    def up(
        self,
        aws_port: int | None,
        prefect_port: int | None,
        fleet_port: int | None = None,
        max_trainers: int = DEFAULT_MAX_TRAINERS,
        *,
        database: str = "auto",
        database_url: str | None = None,
        postgres_port: int | None = None,
        workers: int | None = None,
    ) -> tuple[SandboxStatus, list[str]]:
        """Start whatever is not running, wait until healthy, then create the blocks and buckets.

        A service that is already running and healthy is kept (so are its ports); one that crashed or
        hangs is restarted. On any failure the services this call started are stopped again.
        """
        chosen, notes = databases.choose(self.home, database, database_url)
        workers = workers or self.running_workers()
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"--workers {workers}: the sandbox runs 1 to {MAX_WORKERS} workers")
        for extra in self.workers[workers:]:
            if extra.stop() == "running":
                notes.append(f"stopped {extra.name}: the sandbox now runs {workers} worker(s)")
        services = self.services(chosen, workers)
        current = self.status()
        known = self.endpoints()
        healthy = {name for name, service in current.services.items() if service.healthy}
        if known and healthy:
            _refuse_other_ports(known, aws_port, prefect_port, fleet_port, postgres_port)
        endpoints = (
            known
            if known and healthy
            else Endpoints(
                aws_port or DEFAULT_AWS_PORT,
                prefect_port or DEFAULT_PREFECT_PORT,
                fleet_port or DEFAULT_FLEET_PORT,
                (postgres_port or DEFAULT_POSTGRES_PORT) if chosen.own_postgres else None,
            )
        )
        notes += ["the sandbox was already running"] if current.running else []
        if (
            known
            and self.postgres in services
            and "postgres" not in healthy
            and self.prefect.state() == "running"
        ):
            notes += self._restore_database(known)
            healthy = {name for name, service in self.status().services.items() if service.healthy}
        if "moto" not in healthy and "fleet" in healthy:  # its instances and functions lived in that moto
            healthy.discard("fleet")
            self.fleet.stop()
            notes.append("restarted the fleet with the new moto server")
        if "prefect" not in healthy:
            for worker in self.workers[:workers]:
                if worker.name in healthy:
                    healthy.discard(worker.name)
                    worker.stop()
                    notes.append(f"restarted the {worker.name} with the new Prefect server")
        to_start = [process for process in services if process.name not in healthy]
        notes += self._clear(to_start)
        for process in to_start:
            if process not in self.workers:
                port, what, flag = self._port_of(process, endpoints)
                require_free_port(port, what=what, flag=flag)
        try:
            self._start(endpoints, chosen, to_start, max_trainers)
            notes += self._configure(endpoints, [each for each in self.workers if each in to_start])
        except BaseException:
            for process in reversed(to_start):
                process.stop()
            if len(to_start) == len(services):
                self.state_file.unlink(missing_ok=True)
            raise
        databases.record(self.home, chosen)
        return self.status(), notes

    def _restore_database(self, endpoints: Endpoints) -> list[str]:
        """The sandbox's PostgreSQL died under a running Prefect server: start it first. The server
        reconnects by itself, so it and the workers, with the flow runs they hold, are kept; restarting
        them would kill those runs while no database could record it (they would stay RUNNING)."""
        notes = self._clear([self.postgres])
        port, what, flag = self._port_of(self.postgres, endpoints)
        require_free_port(port, what=what, flag=flag)
        try:
            self._start_postgres(port)
        except BaseException:
            self.postgres.stop()
            raise
        deadline = time.monotonic() + PREFECT_RECONNECT_S
        while not self._answers(self.prefect, endpoints) and time.monotonic() < deadline:
            time.sleep(0.5)
        return notes

    def _port_of(self, process: ManagedProcess, endpoints: Endpoints) -> tuple[int, str, str]:
        if process is self.moto:
            return endpoints.aws_port, "moto (AWS) server", "--aws-port"
        if process is self.fleet:
            return endpoints.fleet_port, "compute fleet", "--fleet-port"
        if process is self.postgres:
            return endpoints.postgres_port or DEFAULT_POSTGRES_PORT, "sandbox's PostgreSQL", "--postgres-port"
        return endpoints.prefect_port, "Prefect server", "--prefect-port"

    def _clear(self, processes: list[ManagedProcess]) -> list[str]:
        notes = []
        for process in processes:
            found = process.stop()
            if found == "stale":
                notes.append(f"removed a stale {process.name} pid file left by a crashed sandbox")
            elif found == "running":
                notes.append(f"restarted the {process.name} server, which was not answering")
        return notes

    def _start(
        self, endpoints: Endpoints, database: Database, processes: list[ManagedProcess], max_trainers: int
    ) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".gitignore").write_text("*\n")
        self.state_file.write_text(json.dumps(asdict(endpoints)))
        if self.moto in processes:
            self.moto.start(
                [sys.executable, "-m", "mltp.sandbox.moto_server", "-H", HOST, "-p", str(endpoints.aws_port)],
                env=_service_env(),
                port=endpoints.aws_port,
            )
        if self.postgres in processes:
            self._start_postgres(endpoints.postgres_port or DEFAULT_POSTGRES_PORT)
        if self.prefect in processes:
            self.prefect.start(
                [
                    sys.executable,
                    "-m",
                    "mltp.sandbox.prefect_server",
                    "server",
                    "start",
                    "--host",
                    HOST,
                    "--port",
                    str(endpoints.prefect_port),
                    "--analytics-off",
                ],
                env=_service_env(
                    PREFECT_HOME=str(self.home / "prefect"),
                    PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    # The UI asks the server where the API is; without this it assumes port 4200.
                    PREFECT_UI_API_URL=endpoints.prefect_api_url,
                    PREFECT_UI_URL=endpoints.prefect_ui_url,
                    **database.prefect_server_env(endpoints.postgres_port),
                ),
                port=endpoints.prefect_port,
            )
        if self.moto in processes:
            self.moto.wait_healthy(lambda: _get_ok(f"{endpoints.aws_endpoint_url}/moto-api/"), timeout=30)
        if self.fleet in processes:
            self.fleet.start(
                [
                    sys.executable,
                    "-m",
                    "mltp.sandbox.fleet",
                    "--host",
                    HOST,
                    "--port",
                    str(endpoints.fleet_port),
                    "--moto-url",
                    endpoints.aws_endpoint_url,
                    "--state-dir",
                    str(self.home / "fleet"),
                    "--max-trainers",
                    str(max_trainers),
                ],
                env=_service_env(
                    AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
                    AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
                    AWS_DEFAULT_REGION=REGION,
                    AWS_EC2_METADATA_DISABLED="true",
                ),
                port=endpoints.fleet_port,
            )
            self.fleet.wait_healthy(
                lambda: _get_ok(f"{endpoints.lambda_endpoint_url}/fleet/health"), timeout=30
            )
        if self.prefect in processes:
            self.prefect.wait_healthy(
                lambda: _get_ok(f"{endpoints.prefect_api_url}/ready"), timeout=_start_timeout()
            )

    def _start_postgres(self, port: int) -> None:
        """The cluster (made on first use), its server, and the Prefect server's database in it."""
        cluster = self.cluster()
        if cluster is None:  # `choose` found the programs a moment ago
            raise SandboxError("the PostgreSQL server programs are gone: see `mltp sandbox status`")
        cluster.initialize(self.postgres.log_file)
        self.postgres.start(
            cluster.server_argv(port),
            env=_service_env(),
            port=port,
            **cluster.account.subprocess_options(),
        )
        self.postgres.wait_healthy(lambda: cluster.ready(port), timeout=60)
        cluster.create_database(port, self.postgres.log_file)

    def _init_blocks(self, endpoints: Endpoints) -> None:
        """Blocks and buckets, the trainer's role, and the trainer function deployed through the fleet."""
        from blocks.platform import init_blocks, load_blocks
        from mltp.compute.lambda_deploy import deploy_trainer_function
        from mltp.prefect_api import activated
        from mltp.settings import load_settings

        settings = load_settings(
            region=REGION,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            session_token=None,
            profile_name=None,
            endpoint_url=endpoints.aws_endpoint_url,
            data_bucket=DATA_BUCKET,
            models_bucket=MODELS_BUCKET,
            lambda_endpoint_url=endpoints.lambda_endpoint_url,
            lambda_role_arn=_trainer_role(endpoints),
            lambda_image_uri=None,
        )
        with activated(endpoints.prefect_api_url):
            init_blocks(settings)
            blocks = load_blocks()
            deploy_trainer_function(blocks.lambda_client(), **blocks.lambda_.deploy_settings())

    def _prefect_client_env(self, endpoints: Endpoints, prefect_home: str = "worker") -> dict[str, str]:
        return _service_env(
            PREFECT_API_URL=endpoints.prefect_api_url,
            PREFECT_UI_URL=endpoints.prefect_ui_url,
            PREFECT_HOME=str(self.home / prefect_home),
            AWS_EC2_METADATA_DISABLED="true",
        )

    def _configure(self, endpoints: Endpoints, workers: list[ManagedProcess]) -> list[str]:
        """Blocks, deployments (`prefect deploy --all` runs meanwhile, again on each `up`: prefect.yaml
        may have changed) and the `workers` to start: they start once the blocks their runs load exist
        and the runs missed while no worker ran are dropped."""
        ensure_work_pool(endpoints.prefect_api_url)
        deploying = DeployAll(
            self._prefect_client_env(endpoints), self.home / "logs" / "deploy.log", project_dir()
        )
        try:
            self._init_blocks(endpoints)
            dropped = drop_missed_runs(endpoints.prefect_api_url) if self.workers[0] in workers else {}
            for worker in workers:
                env = self._prefect_client_env(endpoints, prefect_home=worker.name)
                env["PREFECT_WORKER_QUERY_SECONDS"] = WORKER_POLL_S
                worker.start(worker_argv(self._worker_name(worker)), env=env, port=0)
            notes = [deploying.finish(), *_missed_runs_note(dropped)]
        finally:
            deploying.stop()
        for worker in workers:
            name = self._worker_name(worker)
            worker.wait_healthy(lambda name=name: worker_online(endpoints.prefect_api_url, name), timeout=60)
        return notes

    def _worker_name(self, worker: ManagedProcess) -> str:
        return worker_name(self.workers.index(worker) + 1)

    def down(self) -> list[str]:
        found = self.stop_all()
        if all(state == "stopped" for state in found.values()):
            raise SandboxNotRunningError(
                f"the sandbox is not running (no pid files in {self.home / 'run'}): nothing to stop"
            )
        notes = []
        for name, state in found.items():
            if state == "running":
                notes.append(f"stopped the {name} server")
            elif state == "stale":
                notes.append(f"removed a stale {name} pid file left by a crashed sandbox")
        return notes

    def stop_all(self) -> dict[str, str]:
        found = {process.name: process.stop() for process in reversed(self.every_service)}
        self.state_file.unlink(missing_ok=True)
        return found


def _missed_runs_note(dropped: dict[str, int]) -> list[str]:
    return [
        f"dropped {count} runs of {name} that fell due while no worker ran (its latest still runs)"
        for name, count in sorted(dropped.items())
    ]


def _start_timeout() -> float:
    """Seconds the Prefect server gets to become ready (a first database migration can be slow)."""
    raw = os.environ.get("MLTP_SANDBOX_START_TIMEOUT", "120")
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"MLTP_SANDBOX_START_TIMEOUT={raw!r} is not a number of seconds") from None


def _trainer_role(endpoints: Endpoints) -> str:
    """The role the trainer function runs as (moto does not enforce it, but Lambda requires one)."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoints.aws_endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    try:
        return iam.get_role(RoleName=TRAINER_ROLE)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        return iam.create_role(RoleName=TRAINER_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
            "Arn"
        ]


def _refuse_other_ports(
    endpoints: Endpoints,
    aws_port: int | None,
    prefect_port: int | None,
    fleet_port: int | None,
    postgres_port: int | None,
) -> None:
    if (
        (aws_port and aws_port != endpoints.aws_port)
        or (prefect_port and prefect_port != endpoints.prefect_port)
        or (fleet_port and fleet_port != endpoints.fleet_port)
        or (postgres_port and postgres_port != endpoints.postgres_port)
    ):
        postgres = f", {endpoints.postgres_port} (PostgreSQL)" if endpoints.postgres_port else ""
        raise ConfigError(
            f"the sandbox is already running on ports {endpoints.aws_port} (AWS), {endpoints.fleet_port} "
            f"(fleet){postgres} and {endpoints.prefect_port} (Prefect): run `mltp sandbox down` first to "
            "change ports"
        )


def _service_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "AWS_", "MOTO_")) and key != "INITIAL_NO_AUTH_ACTION_COUNT"
    }
    env["DO_NOT_TRACK"] = "1"
    env.update(extra)
    return env
