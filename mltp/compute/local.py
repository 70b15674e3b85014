"""Local backend: the trainer as a subprocess of this machine, with the same spec, status, metrics and
logs as on EC2 or Lambda. For small data and development."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

from mltp.compute.base import ComputeState, JobLaunch, Launched


class LocalBackend:
    name = "local"

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}

    def launch(self, job: JobLaunch) -> Launched:
        if job.job_id not in self.processes:
            self.processes[job.job_id] = subprocess.Popen(
                [sys.executable, "-m", "mltp.trainer", "run", "--job", job.job_uri],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # its log lines reach CloudWatch Logs, like on AWS
                start_new_session=True,
            )
        process = self.processes[job.job_id]
        return Launched(job.job_id, self.name, job.attempt, datetime.now(UTC), f"pid-{process.pid}")

    def observe(self, launched: list[Launched]) -> dict[str, ComputeState]:
        states = {}
        for item in launched:
            process = self.processes.get(item.job_id)
            code = process.poll() if process else -1
            states[item.job_id] = (
                ComputeState(True)
                if code is None
                else ComputeState(False, f"trainer process exited with {code}")
            )
        return states

    def terminate(self, launched: list[Launched]) -> list[str]:
        stopped = []
        for item in launched:
            process = self.processes.get(item.job_id)
            if process and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                stopped.append(item.handle)
        return stopped
