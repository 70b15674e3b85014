"""A background service process we started: pid file, health wait, and a stop that leaves nothing.

The pid file records when the process started too, so a pid reused by an unrelated process after a
crash (or a reboot) is recognised as stale instead of being killed. That start is counted from the boot
(the kernel's boot id and the process's start in seconds since it), not as wall-clock time: psutil's
`create_time()` adds the boot time the kernel derives from the wall clock, so a clock step (NTP, a
resumed VM) would make every running service look stale, and `up` would then orphan them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from mltp.errors import PortInUseError, SandboxError


@dataclass(frozen=True)
class PidRecord:
    pid: int
    boot_id: str
    started: float  # seconds after the boot when the process started
    port: int


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def started_after_boot(pid: int) -> float:
    """Seconds from the boot to the process's start (/proc/<pid>/stat's starttime): never changes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise psutil.NoSuchProcess(pid) from None
    fields_after_name = stat.rsplit(")", 1)[1].split()
    return int(fields_after_name[19]) / os.sysconf("SC_CLK_TCK")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def describe_port_holder(port: int) -> str:
    """Best effort "pid 123 (nginx)" for whoever listens on `port`; empty when the OS will not say."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return ""


def require_free_port(port: int, *, what: str, flag: str) -> None:
    if not port_is_free(port):
        raise PortInUseError(
            f"port {port} for the {what} is already in use{describe_port_holder(port)}: "
            f"stop that process or choose another port with {flag}",
            port=port,
        )


class ManagedProcess:
    """One named background process with its pid file in `run_dir` and its log in `log_dir`."""

    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def record(self) -> PidRecord | None:
        try:
            return PidRecord(**json.loads(self.pid_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # a truncated or foreign pid file is as good as stale
            return PidRecord(pid=-1, boot_id="", started=0.0, port=0)

    def _process(self, record: PidRecord) -> psutil.Process | None:
        try:
            process = psutil.Process(record.pid)
            if (
                record.boot_id != boot_id()
                or abs(started_after_boot(record.pid) - record.started) > 0.05
                or process.status() == psutil.STATUS_ZOMBIE
            ):
                return None
        except (psutil.NoSuchProcess, ValueError):
            return None
        return process

    def state(self) -> str:
        """`running`, `stale` (pid file of a process that is gone) or `stopped` (no pid file)."""
        record = self.record()
        if record is None:
            return "stopped"
        return "running" if self._process(record) else "stale"

    def start(self, argv: list[str], env: dict[str, str], port: int, **account: Any) -> PidRecord:
        """`account`: Popen's user, group and extra_groups, for a server that must not run as root."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            child = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: `stop` can take children down with it
                **account,
            )
        try:
            started = started_after_boot(child.pid)
        except psutil.NoSuchProcess:
            raise SandboxError(f"the {self.name} server exited at once: see {self.log_file}") from None
        record = PidRecord(pid=child.pid, boot_id=boot_id(), started=started, port=port)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.pid_file)
        return record

    def wait_healthy(self, is_healthy: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state() != "running":
                raise SandboxError(f"the {self.name} server exited during start-up: see {self.log_file}")
            if is_healthy():
                return
            time.sleep(0.25)
        raise SandboxError(
            f"the {self.name} server was not healthy after {timeout:.0f}s: see {self.log_file}"
        )

    def stop(self, timeout: float = 15.0) -> str:
        """Stop the process and every descendant; return what was found: running, stale or stopped."""
        record = self.record()
        if record is None:
            return "stopped"
        process = self._process(record)
        found = "running" if process else "stale"
        if process:
            _terminate_tree(process, timeout)
        self.pid_file.unlink(missing_ok=True)
        return found


def _terminate_tree(process: psutil.Process, timeout: float) -> None:
    family = [process, *process.children(recursive=True)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    for member in family:  # descendants that left the group get the signal too
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
