"""The local backend: the trainer as a subprocess of this machine, with the same spec, status and
metrics as on EC2 or Lambda. For small data and development."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable


class LocalRun:
    def __init__(self, job_uri: str, env: dict[str, str]) -> None:
        self.job_uri = job_uri
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mltp.trainer", "run", "--job", job_uri],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, on_line: Callable[[str], None] = lambda line: None) -> int:
        """Pass each log line to `on_line` until the trainer exits (it enforces the job's deadline
        itself); its exit code: 0, 1 (infrastructure) or 2 (the user's data or parameters)."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            on_line(line.rstrip())
        return self.process.wait()
