"""Printing helpers shared by the commands: JSON for machines, short lines for people."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from mltp.s3_json import strict_dumps

console = Console(highlight=False, soft_wrap=True)


def emit_json(payload: Any) -> None:
    print(strict_dumps(payload, indent=2, sort_keys=True, default=str))


def quiet_prefect_console() -> None:
    """Keep Prefect's console handler to critical messages: it would repeat as tracebacks the errors a
    command reports in one line (its logs still reach the API and the UI). A level the user set wins.
    Prefect reads the level when it sets its logging up, on import: if that happened already, again."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is not None and configuration.PROCESS_LOGGING_CONFIG:
        configuration.setup_logging()
