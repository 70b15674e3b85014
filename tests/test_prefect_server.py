"""The sandbox's Prefect server (mltp/sandbox/prefect_server.py) begins its SQLite transactions IMMEDIATE:
while one is open, another connection cannot begin a write, where Prefect's own DEFERRED begin would let
it write first and leave the open transaction to fail with "database is locked" at its first write. And
it answers 503 (retried by clients) when its database cannot be reached; tests/test_sandbox_postgres.py
sees that on a crashed PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration

from mltp.sandbox import prefect_server


def another_writer_can_begin(path: Path, *, immediate: bool) -> bool:
    """Whether a second connection can begin a write while a Prefect transaction that has only read is
    open."""

    async def check() -> bool:
        if immediate:
            prefect_server.begin_writes_immediately()
        config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
        engine = await config.engine()
        try:
            async with await config.session(engine) as session, config.begin_transaction(session):
                await session.execute(sa.text("SELECT count(*) FROM runs"))
                other = sqlite3.connect(path, timeout=0, isolation_level=None)
                try:
                    other.execute("BEGIN IMMEDIATE")
                    other.execute("INSERT INTO runs VALUES (2)")
                    other.execute("COMMIT")
                    return True
                except sqlite3.OperationalError as error:
                    assert "locked" in str(error)
                    return False
                finally:
                    other.close()
        finally:
            await engine.dispose()

    return asyncio.run(check())


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "prefect.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER)")
        connection.execute("INSERT INTO runs VALUES (1)")
    return path


def test_prefect_alone_lets_another_writer_in_during_a_transaction(database, monkeypatch) -> None:
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    assert another_writer_can_begin(database, immediate=False)


def test_the_sandbox_s_server_holds_the_write_lock_from_the_start(database, monkeypatch) -> None:
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    assert not another_writer_can_begin(database, immediate=True)
    begun = AioSqliteConfiguration.begin_transaction
    prefect_server.begin_writes_immediately()  # twice: still one wrapper
    assert AioSqliteConfiguration.begin_transaction is begun


def test_an_unreachable_database_is_retryable_and_other_errors_stay_as_they_were(monkeypatch) -> None:
    from prefect.server.api import server

    monkeypatch.setattr(server, "is_client_retryable_exception", server.is_client_retryable_exception)
    assert not server.is_client_retryable_exception(ConnectionRefusedError(111, "Connect call failed"))
    prefect_server.retry_while_the_database_is_away()
    prefect_server.retry_while_the_database_is_away()  # twice: one wrapper
    retryable = server.is_client_retryable_exception
    assert retryable(ConnectionRefusedError(111, "Connect call failed"))
    assert retryable(ConnectionResetError())
    assert not retryable(ValueError("a bad parameter"))
    prefect_server.retry_while_the_database_is_away()
    assert server.is_client_retryable_exception is retryable


def test_the_module_runs_prefect_s_own_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mltp.sandbox.prefect_server", "server", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


@pytest.mark.servers
def test_the_sandbox_runs_its_prefect_server_through_the_module(sandbox) -> None:
    import psutil

    server = psutil.Process(sandbox.status["services"]["prefect"]["pid"])
    assert server.cmdline()[1:5] == ["-m", "mltp.sandbox.prefect_server", "server", "start"]
