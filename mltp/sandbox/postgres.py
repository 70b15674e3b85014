"""The sandbox's own PostgreSQL: one cluster under `.mltp/postgres/`, run from the server binaries already
on the machine (Debian's `postgresql` package), holding the Prefect server's state.

It listens on loopback only, with no Unix socket, and trusts its one role (`mltp`) as the Prefect API on
the same loopback trusts its callers. PostgreSQL refuses to run as root: for root the cluster belongs to,
and runs as, the `postgres` system user the package creates, which must therefore reach its folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mltp.errors import SandboxError

HOST = "127.0.0.1"
DEFAULT_POSTGRES_PORT = 5057
ROLE = "mltp"
DATABASE = "prefect"
TOOLS = ("initdb", "postgres", "pg_isready", "createdb")
DEBIAN_ROOT = Path("/usr/lib/postgresql")  # <version>/bin: Debian's server programs, not linked onto PATH
PACKAGE_HINT = (
    "install PostgreSQL's server (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install "
    "postgresql@15`)"
)


@dataclass(frozen=True)
class Binaries:
    folder: Path

    def __call__(self, tool: str) -> str:
        return str(self.folder / tool)


def find_binaries() -> Binaries | None:
    """`initdb` on PATH (the folder it really lives in holds the rest), else the newest
    /usr/lib/postgresql/<version>/bin, where Debian puts them without linking them onto PATH."""
    folders = []
    if on_path := shutil.which("initdb"):
        folders.append(Path(on_path).resolve().parent)
    versions = [found for found in DEBIAN_ROOT.glob("*/bin") if found.parent.name.isdigit()]
    folders += sorted(versions, key=lambda folder: int(folder.parent.name), reverse=True)
    for folder in folders:
        if all(os.access(folder / tool, os.X_OK) for tool in TOOLS):
            return Binaries(folder)
    return None


@dataclass(frozen=True)
class Account:
    """Who the cluster's programs run as: the current user, or for root the `postgres` system user."""

    uid: int | None = None
    gid: int | None = None

    def subprocess_options(self) -> dict:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def cluster_account() -> Account:
    if os.geteuid() != 0:
        return Account()
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise SandboxError(
            "PostgreSQL will not run as root and there is no `postgres` user to run it as: run mltp as an "
            "ordinary user, or choose --database sqlite"
        ) from None
    return Account(entry.pw_uid, entry.pw_gid)


def _can_enter(folder: Path, account: Account) -> bool:
    mode = folder.stat()
    if mode.st_uid == account.uid:
        return bool(mode.st_mode & stat.S_IXUSR)
    if mode.st_gid == account.gid:
        return bool(mode.st_mode & stat.S_IXGRP)
    return bool(mode.st_mode & stat.S_IXOTH)


def unusable_reason(home: Path) -> str | None:
    """Why the sandbox cannot run its own PostgreSQL here, or None when it can."""
    if find_binaries() is None:
        return (
            f"no PostgreSQL server programs ({', '.join(TOOLS)}) on PATH or under {DEBIAN_ROOT}: "
            + PACKAGE_HINT
        )
    try:
        account = cluster_account()
    except SandboxError as error:
        return str(error)
    if account.uid is None:
        return None
    for folder in reversed([home, *home.parents]):
        if folder.exists() and not _can_enter(folder, account):
            return (
                f"PostgreSQL runs as the `postgres` user, who cannot enter {folder}: `chmod o+x {folder}` "
                "or set MLTP_HOME to a folder it can reach"
            )
    return None


class Cluster:
    """The cluster's files under `.mltp/postgres/` and the commands that make and check it."""

    def __init__(self, home: Path, binaries: Binaries, account: Account) -> None:
        self.folder, self.binaries, self.account = home / "postgres", binaries, account
        self.data = self.folder / "data"

    def exists(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def initialize(self, log: Path) -> None:
        """`initdb` once; a folder left by an `initdb` that was interrupted is made again. A crashed
        server is waited for until its process is reaped."""
        if self.exists():
            self._wait_for_crashed_server()
            return
        shutil.rmtree(self.data, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.account.uid is not None:
            os.chown(self.folder, self.account.uid, self.account.gid)
        initdb = [self.binaries("initdb"), "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8"]
        try:
            self._run([*initdb, "--locale=C", "--no-instructions"], log)
        except SandboxError:
            shutil.rmtree(self.data, ignore_errors=True)
            raise

    def _wait_for_crashed_server(self, timeout: float = 10.0) -> None:
        """A server killed a moment ago (`up` restarts PostgreSQL first, at once) may still exist, as a
        zombie: a new server would take the pid file it left for a running server's and exit."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def server_argv(self, port: int) -> list[str]:
        return [
            self.binaries("postgres"),
            "-D",
            str(self.data),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "unix_socket_directories=",
        ]

    def ready(self, port: int) -> bool:
        check = [self.binaries("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-U", ROLE, "-d", "postgres"]
        try:
            return subprocess.run(check, capture_output=True, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def create_database(self, port: int, log: Path) -> None:
        """The Prefect server's database, unless it exists already."""
        created = subprocess.run(
            [self.binaries("createdb"), "-h", HOST, "-p", str(port), "-U", ROLE, DATABASE],
            capture_output=True,
            text=True,
            **self.account.subprocess_options(),
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            with log.open("a") as out:
                out.write(created.stderr)
            raise SandboxError(f"could not create the {DATABASE} database in PostgreSQL: see {log}")

    def _run(self, argv: list[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd="/", **self.account.subprocess_options()
            )
        if done.returncode != 0:
            raise SandboxError(f"{Path(argv[0]).name} failed for the sandbox's PostgreSQL: see {log}")


def connection_url(port: int) -> str:
    return f"postgresql+asyncpg://{ROLE}@{HOST}:{port}/{DATABASE}"
