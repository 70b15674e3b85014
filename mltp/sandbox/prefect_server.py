"""The sandbox's Prefect server, with its SQLite write transactions begun IMMEDIATE.

On SQLite, Prefect begins its write transactions DEFERRED: the write lock is taken at the first write.
A transaction that read first, while another connection wrote and committed meanwhile, cannot take it
(its snapshot is stale), so SQLite answers SQLITE_BUSY at once, without waiting out the busy timeout, and
the API answers 503 "database is locked". Prefect's clients retry that after seconds; the UI does not, so
a form submitted during a training run failed now and then. BEGIN IMMEDIATE takes the write lock up front,
where the busy timeout (60 s) makes writers wait their turn instead: SQLite lets one write at a time
either way. PostgreSQL is untouched. Run as `python -m mltp.sandbox.prefect_server` with
`prefect server start`'s arguments.
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


def main() -> None:
    from prefect.cli import app

    begin_writes_immediately()
    app()


if __name__ == "__main__":
    main()
