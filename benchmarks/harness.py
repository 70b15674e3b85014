"""What the benchmark runs on: a private sandbox, the AWS CLI in its own venv, and measured child
processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.files import REPO

MLTP = REPO / ".venv" / "bin" / "mltp"
TOOLS = REPO / ".mltp" / "bench-tools"
AWS_CLI = TOOLS / "bin" / "aws"
SPAWN = Path(__file__).with_name("spawn.py")
RETRYABLE_LOGGED = "Encountered retryable exception in request"  # prefect.server.api.server, before a 503


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    output: dict


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Setup:
    """A sandbox's Prefect server database and worker count, as `mltp sandbox up` takes them."""

    label: str
    database: str
    workers: int


# What the suites compare: the baseline, then the production shape (issue 23).
SETUPS = (Setup("SQLite, 1 worker", "sqlite", 1), Setup("PostgreSQL, 2 workers", "postgres", 2))


@contextmanager
def sandbox(database: str | None = None, workers: int | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """`mltp sandbox up` on free ports in a temporary MLTP_HOME; always `down` again. Yields the AWS
    endpoint and an environment with fake credentials and no user AWS configuration. `database` and
    `workers` are `up`'s --database and --workers; without them `up` decides (and MLTP_SANDBOX_DATABASE,
    MLTP_SANDBOX_WORKERS where the caller set them)."""
    with tempfile.TemporaryDirectory(prefix="mltp-bench-") as home:
        # Open to other users as a project folder is, so that for root too `auto` can run the sandbox's
        # PostgreSQL (as the postgres user): the database a user's sandbox gets where PostgreSQL is installed.
        os.chmod(home, 0o755)
        log_retryable_errors(Path(home))
        env = {
            **os.environ,
            "MLTP_HOME": home,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": f"{home}/no-aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": f"{home}/no-aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_SESSION_TOKEN", None)
        up = [MLTP, "sandbox", "up", "--aws-port", str(free_port()), "--prefect-port", str(free_port())]
        up += ["--fleet-port", str(free_port())]
        up += ["--database", database] if database else []
        up += ["--workers", str(workers)] if workers else []
        try:
            status = json.loads(
                subprocess.run([*up, "--json"], env=env, check=True, capture_output=True).stdout
            )
            yield status["aws_endpoint_url"], env
        finally:
            subprocess.run([MLTP, "sandbox", "down"], env=env, capture_output=True)


def log_retryable_errors(home: Path) -> None:
    """Have the sandbox's Prefect server log each 503 it answers (a retryable database error), which it
    does not by default. `up` passes no PREFECT_* variable on to the server, but the server reads the
    active profile in its PREFECT_HOME, `.mltp/prefect/`."""
    profiles = home / "prefect" / "profiles.toml"
    profiles.parent.mkdir()
    profiles.write_text('active = "bench"\n[profiles.bench]\nPREFECT_SERVER_LOG_RETRYABLE_ERRORS = "true"\n')


def server_503s(home: Path) -> int:
    """The 503 answers the Prefect server of the sandbox at `home` has logged so far (see
    `log_retryable_errors`)."""
    log = home / "logs" / "prefect.log"
    return log.read_text(errors="replace").count(RETRYABLE_LOGGED) if log.exists() else 0


def ensure_aws_cli() -> str:
    """AWS CLI v1 pins its own botocore, so it lives in a venv of its own; installed on first use."""
    if not AWS_CLI.exists():
        python = shutil.which("python3.11") or sys.executable
        subprocess.run([python, "-m", "venv", "--clear", TOOLS], check=True)
        pip = [TOOLS / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "awscli"], check=True)
    return subprocess.run([AWS_CLI, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def measure(
    argv: list[str | Path], env: dict[str, str], timed_inside: bool, json_stdout: bool = False
) -> Measurement:
    """Run `argv` in a fresh process, started by `spawn.py` so that its peak RSS (from `os.wait4`) is its
    own. With `timed_inside` the child prints JSON with its own "seconds"; otherwise the whole command
    is timed (from its spawn to its exit), and with `json_stdout` the JSON it prints is kept as output."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        launcher = [sys.executable, "-I", "-S", SPAWN, report, *argv]
        done = subprocess.run(launcher, env=env, cwd=REPO, capture_output=True)
        spawned = json.loads(report.read_text()) if report.exists() else {"exit": done.returncode}
    if done.returncode != 0 or spawned["exit"] != 0:
        raise RuntimeError(
            f"{argv} failed ({spawned['exit']}):\n{done.stderr.decode(errors='replace')[-3000:]}"
        )
    output = json.loads(done.stdout) if timed_inside or json_stdout else {}
    seconds = output["seconds"] if timed_inside else spawned["seconds"]
    return Measurement(seconds, spawned["maxrss_kb"] / 1024, output)  # ru_maxrss is in KiB on Linux


def database_of(env: dict[str, str]) -> str:
    """The Prefect server's database in the sandbox at env's MLTP_HOME, for a section's description."""
    from mltp.sandbox.database import recorded

    database = recorded(Path(env["MLTP_HOME"]))
    return database.describe() if database else "unknown"
