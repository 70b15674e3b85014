"""Which database the sandbox's Prefect server keeps its state in: SQLite under `.mltp/prefect/`, the
sandbox's own PostgreSQL (`.mltp/postgres/`), or a PostgreSQL of the user's (`--database-url`).

A sandbox keeps the database it was first started with, since its run history lives there: `auto`
means that one, and for a new sandbox PostgreSQL where it can run here, else SQLite. Asking for another
is refused, never silently mixed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mltp.errors import ConfigError
from mltp.sandbox.postgres import connection_url, unusable_reason

CHOICES = ("auto", "sqlite", "postgres")
RECORD = "database.json"


@dataclass(frozen=True)
class Database:
    kind: str  # sqlite | postgres (the sandbox's own) | external
    url: str | None = None  # external only

    @property
    def own_postgres(self) -> bool:
        return self.kind == "postgres"

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "SQLite (.mltp/prefect/prefect.db)"
        if self.kind == "postgres":
            return "PostgreSQL, the sandbox's own (.mltp/postgres)"
        return f"PostgreSQL at {_without_password(self.url or '')}"

    def state(self, home: Path) -> Path:
        """What holds this database's Prefect state in the sandbox's folder (delete it to start afresh)."""
        if self.kind == "sqlite":
            return home / "prefect"
        if self.kind == "postgres":
            return home / "postgres"
        return home / RECORD

    def prefect_server_env(self, postgres_port: int | None) -> dict[str, str]:
        if self.kind == "sqlite":
            # The late-runs service marks every run still waiting for a slot "Late", each in a transaction of
            # its own, every 5 s: in a burst of 20 runs 49 to 71 of those writes failed ("database is
            # locked"), write contention for a mark the sandbox does not need.
            return {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"}
        url = str(self.url) if self.kind == "external" else connection_url(postgres_port or 0)
        return {"PREFECT_API_DATABASE_CONNECTION_URL": url}


def external(raw_url: str) -> Database:
    """A user's PostgreSQL URL, for the asyncpg driver the Prefect server uses."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "give postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    try:
        url = make_url(raw_url)
    except ArgumentError:
        raise ConfigError(f"--database-url is not a URL: {example}", setting="--database-url") from None
    if url.get_backend_name() not in ("postgresql", "postgres") or not url.host or not url.database:
        shown = url.render_as_string(hide_password=True)
        raise ConfigError(
            f"--database-url {shown} is not a PostgreSQL database's URL: {example}", setting="--database-url"
        )
    asyncpg_url = url.set(drivername="postgresql+asyncpg")
    return Database("external", asyncpg_url.render_as_string(hide_password=False))


def recorded(home: Path) -> Database | None:
    """The database this sandbox was started with, while its state is still there."""
    try:
        database = Database(**json.loads((home / RECORD).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        database = Database("sqlite")  # sandboxes from before the choice existed kept SQLite
    if database.kind == "sqlite" and not (home / "prefect" / "prefect.db").exists():
        return None
    if database.kind == "postgres" and not (home / "postgres" / "data" / "PG_VERSION").exists():
        return None
    return database


def record(home: Path, database: Database) -> None:
    path = home / RECORD
    path.touch(mode=0o600)  # an external URL may carry a password
    path.write_text(json.dumps(asdict(database)))
    os.chmod(path, 0o600)


def choose(home: Path, requested: str = "auto", url: str | None = None) -> tuple[Database, list[str]]:
    """The database for `up`, and a note when `auto` could not have PostgreSQL. Raises ConfigError when
    the choice cannot run here or would leave the sandbox's state behind."""
    if requested not in CHOICES:
        raise ConfigError(f"--database {requested!r} is not one of {', '.join(CHOICES)}")
    current = recorded(home)
    if url is not None:
        if requested == "sqlite":
            raise ConfigError("--database-url names a PostgreSQL database: leave out --database sqlite")
        wanted = external(url)
    elif requested == "sqlite":
        wanted = Database("sqlite")
    elif requested == "postgres" or (requested == "auto" and current is None):
        reason = unusable_reason(home)
        if reason is None:
            wanted = Database("postgres")
        elif requested == "postgres":
            raise ConfigError(f"--database postgres: {reason}", setting="--database")
        else:
            return Database("sqlite"), [f"the Prefect server keeps its state in SQLite: {reason}"]
    else:
        return current, []  # auto, for a sandbox that has its database
    if current is not None and current != wanted:
        raise ConfigError(
            f"this sandbox keeps its Prefect state in {current.describe()}, and {wanted.describe()} would "
            f"start without it: leave out --database/--database-url, or run `mltp sandbox down` and delete "
            f"{current.state(home)} to start afresh",
            setting="--database",
        )
    return wanted, []


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
