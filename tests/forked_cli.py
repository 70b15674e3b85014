"""The tests' way of running the `mltp` command: each call a process of its own, forked from one process
that imported the command once (mltp/sandbox/fork_server.py, which the sandbox's worker uses for its
flow runs).

A fresh `mltp` process spends ~4 s of CPU importing Prefect, prefect-aws and the CLI before it does
anything, and as much again importing scikit-learn, skops and pandas when it trains or reads a model;
the suite runs a few hundred of them on two cores. Here each call is still a separate
process with the caller's arguments, environment, working folder, standard streams and exit code, running
the console script's own `main()`; only those imports happened before the fork. Prefect reads its
settings and configures logging when it is imported, so each child reads them again from its own
environment first. `ForkedCli.start` gives a started command the part of `subprocess.Popen` tests use
(its pid, `kill`, `communicate`).

The server: `python tests/forked_cli.py SOCKET PARENT_PID`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from mltp.sandbox import fork_server


def _run_command(request: dict) -> None:
    """In the command's process: become what the console script would be, then run its `main()`."""
    from mltp.cli.app import ENVIRONMENT_DEFAULTS, main
    from mltp.prefect_api import reread_prefect_settings

    fork_server.adopt(request["env"], request["cwd"])
    for name, value in ENVIRONMENT_DEFAULTS.items():  # before Prefect reads them, as in a fresh process
        os.environ.setdefault(name, value)
    reread_prefect_settings()
    sys.argv = [request["argv0"], *request["args"]]
    main()  # raises SystemExit: the interpreter then exits as the console script's would


def serve(path: str, parent: str) -> None:
    from mltp.sandbox.trainer_processes import PRELOADED  # what training and reading a model import

    commands = ("prefect", "prefect_aws", "mltp.cli", "flows.ingest_and_train", "flows.reap", "flows.watch")
    fork_server.serve(path, [*commands, *PRELOADED], _run_command, parent=int(parent))


def _text(output: bytes) -> str:
    """As `subprocess.run(text=True)` decodes: universal newlines."""
    return output.decode().replace("\r\n", "\n").replace("\r", "\n")


class ForkedCli:
    """The caller's side: one server per test process, started on first use."""

    def __init__(self, folder: Path, argv0: str) -> None:
        self.path = str(folder / "mltp-cli.sock")
        self.argv0 = argv0
        self.server: subprocess.Popen | None = None

    def _started(self) -> None:
        if self.server is None:
            self.server = subprocess.Popen(
                [sys.executable, __file__, self.path, str(os.getpid())],
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 120
        while not os.path.exists(self.path):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the forked-CLI server did not start (exit {self.server.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        command = self.start(args, env)
        out, err = command.communicate(timeout)
        return subprocess.CompletedProcess([self.argv0, *args], command.returncode, out, err)

    def start(self, args: list[str], env: dict[str, str]) -> ForkedCommand:
        """Start the command and return once it runs (its pid known), as `subprocess.Popen` does."""
        self._started()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        request = {"argv0": self.argv0, "args": args, "env": env, "cwd": os.getcwd()}
        try:
            started = fork_server.start(self.path, request, [stdin, out_write, err_write])
        finally:
            for fd in (stdin, out_write, err_write):
                os.close(fd)
        return ForkedCommand([self.argv0, *args], started, out_read, err_read)


class ForkedCommand:
    """A started command: the part of `subprocess.Popen` (text mode, both streams piped) tests use."""

    def __init__(self, args: list[str], started: fork_server.Started, out_read: int, err_read: int) -> None:
        self.args = args
        self.returncode: int | None = None
        self.pid: int = started.pid
        self._started, self._out, self._err = started, out_read, err_read
        self._streams = {out_read: bytearray(), err_read: bytearray()}

    def kill(self) -> None:
        if not self._started.ended:  # no return code reported yet: the pid is still the command's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 300) -> int:
        self.communicate(timeout)
        return self.returncode

    def communicate(self, timeout: float) -> tuple[str, str]:
        """Read stdout, stderr and the handler's reports until all three end, or kill at the timeout."""
        if self.returncode is None:
            self._collect(timeout)
        return _text(self._streams[self._out]), _text(self._streams[self._err])

    def _collect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        conn = self._started.conn
        with selectors.DefaultSelector() as selector:
            for fd in (*self._streams, conn.fileno()):
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                ready = selector.select(max(0.0, deadline - time.monotonic()))
                if not ready and time.monotonic() >= deadline:
                    self.kill()
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in ready:
                    if key.fd == conn.fileno():
                        more = self._started.read_reports()
                    else:
                        chunk = os.read(key.fd, 65536)
                        self._streams[key.fd] += chunk
                        more = bool(chunk)
                    if not more:
                        selector.unregister(key.fd)
        conn.close()
        os.close(self._out)
        os.close(self._err)
        self.returncode = self._started.returncode()


if __name__ == "__main__":
    serve(*sys.argv[1:])
