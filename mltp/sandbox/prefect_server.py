"""The sandbox's Prefect server: `prefect server start` with two changes to how it meets its database.

Its SQLite write transactions begin IMMEDIATE. On SQLite, Prefect begins its write transactions
DEFERRED: the write lock is taken at the first write. A transaction that read first, while another
connection wrote and committed meanwhile, cannot take it (its snapshot is stale), so SQLite answers
SQLITE_BUSY at once, without waiting out the busy timeout, and the API answers 503 "database is locked".
Prefect's clients retry that after seconds; the UI does not, so a form submitted during a training run
failed now and then. BEGIN IMMEDIATE takes the write lock up front, where the busy timeout (60 s) makes
writers wait their turn instead: SQLite lets one write at a time either way.

A request that cannot reach the database (the sandbox's PostgreSQL crashed, and `up` starts it again in
seconds) is answered 503, which Prefect's clients retry for about a minute, instead of 500, which they
do not: a flow run then rides out the restart instead of failing on its next call.

Run as `python -m mltp.sandbox.prefect_server` with `prefect server start`'s arguments.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from prefect.server.database.configurations import AioSqliteConfiguration


def begin_writes_immediately() -> None:
    """Begin every SQLite transaction of this process's Prefect server as Prefect begins those it
    reads `FOR UPDATE`: IMMEDIATE (idempotent)."""
    begin_transaction = AioSqliteConfiguration.begin_transaction
    if getattr(begin_transaction, "immediate", False):
        return

    @asynccontextmanager
    async def begin_immediately(self, session, with_for_update: bool = False) -> AsyncGenerator:
        async with begin_transaction(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_immediately.immediate = True
    AioSqliteConfiguration.begin_transaction = begin_immediately


def retry_while_the_database_is_away() -> None:
    """Count a refused or dropped database connection among the errors the API answers with 503
    (idempotent)."""
    from prefect.server.api import server

    is_retryable = server.is_client_retryable_exception
    if getattr(is_retryable, "database_away", False):
        return

    def retryable(exc: Exception) -> bool:
        return isinstance(exc, ConnectionError) or is_retryable(exc)

    retryable.database_away = True
    server.is_client_retryable_exception = retryable


def main() -> None:
    from prefect.cli import app

    begin_writes_immediately()
    retry_while_the_database_is_away()
    app()


if __name__ == "__main__":
    main()
