"""Echoing a flow run's log lines (ours, not the engine's chatter) while it runs in this process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mltp.cli.output import console


@contextmanager
def echo_run_log(enabled: bool) -> Iterator[None]:
    """Print the flow's and tasks' log messages as plain lines while the flow runs in this process."""
    if not enabled:
        yield
        return
    handler = _LineHandler()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


class _LineHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0] if record.getMessage() else ""
        ours = "/prefect/" not in record.pathname.replace("\\", "/")  # not the engine's own chatter
        if message and (ours or message.startswith("View at")):
            console.print(f"  {message}", markup=False, highlight=False)
