"""The local backend: the trainer as a subprocess of this machine, with the same spec, status and
metrics as on EC2 or Lambda. For small data and development."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from mltp.errors import MltpError


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

    def wait(self, on_line: Callable[[str], None] = lambda line: None, timeout: float | None = None) -> int:
        """Pass each log line to `on_line` until the trainer exits; its exit code (0, 1 or 2)."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            on_line(line.rstrip())
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.process.kill()
            raise MltpError(
                f"the local trainer for {self.job_uri} did not finish in {timeout:.0f}s"
            ) from error
