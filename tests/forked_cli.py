"""The tests' way of running the `mltp` command: each call a process of its own, forked from one process
that imported the command once.

A fresh `mltp` process spends ~4 s of CPU importing Prefect, prefect-aws and the CLI before it does
anything, and as much again importing scikit-learn, skops and pandas when it trains or reads a model;
the suite runs a few hundred of them on two cores. Here each call is still a separate
process with the caller's arguments, environment, working folder, standard streams and exit code, running
the console script's own `main()`; only those imports happened before the fork. Prefect reads its
settings and configures logging when it is imported, so each child reads them again from its own
environment first. `ForkedCli.start` gives a started command the part of `subprocess.Popen` tests use
(its pid, `kill`, `communicate`).

The server: `python tests/forked_cli.py SOCKET`. For each connection it forks a handler, which forks the
command, tells the caller the command's pid, waits for it and sends its return code (`-N` for signal N,
as `subprocess` does).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HEADER = struct.Struct("!Q")  # length of the JSON request that follows the header and the three fds


def _read_exactly(conn: socket.socket, size: int, first: bytes = b"") -> bytes:
    data = first
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the caller hung up mid-request")
        data += chunk
    return data


def _run_command(request: dict, fds: list[int]) -> None:
    """In the command's process: become what the console script would be, then run its `main()`."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()  # every child would otherwise draw the same retry jitter as its siblings

    import prefect.context
    import prefect.logging.configuration

    from mltp.cli.app import ENVIRONMENT_DEFAULTS, main

    for name, value in ENVIRONMENT_DEFAULTS.items():  # before Prefect reads them, as in a fresh process
        os.environ.setdefault(name, value)
    prefect.context.refresh_global_settings_context()
    prefect.logging.configuration.setup_logging(incremental=False)
    sys.argv = [request["argv0"], *request["args"]]
    main()  # raises SystemExit: the interpreter then exits as the console script's would


def _handle(conn: socket.socket) -> None:
    """In the handler's process: fork the command, report its pid, wait, report its return code. Returns
    only in the command's process, whose `main()` then exits."""
    try:
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        header = _read_exactly(conn, HEADER.size, header)
        request = json.loads(_read_exactly(conn, HEADER.unpack(header)[0]))
        pid = os.fork()
    except BaseException:
        os._exit(1)
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    try:
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def serve(path: str) -> None:
    from mltp.sandbox.trainer_processes import PRELOADED  # what training and reading a model import

    commands = ("prefect", "prefect_aws", "mltp.cli", "flows.ingest_and_train", "flows.reap", "flows.watch")
    for name in (*commands, *PRELOADED):
        importlib.import_module(name)  # the imports every child inherits
    gc.freeze()  # as the gc docs advise before forking: children neither copy nor scan what came before
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(1)
    while os.getppid() == parent:  # the test process that started us is gone: stop
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            conn = None
        if conn is not None:
            conn.settimeout(None)
            if os.fork() == 0:
                listener.close()
                _handle(conn)
            conn.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


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
                [sys.executable, __file__, self.path],
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
        request = json.dumps({"argv0": self.argv0, "args": args, "env": env, "cwd": os.getcwd()}).encode()
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(self.path)
        try:
            socket.send_fds(conn, [HEADER.pack(len(request))], [stdin, out_write, err_write])
            conn.sendall(request)
        finally:
            for fd in (stdin, out_write, err_write):
                os.close(fd)
        return ForkedCommand([self.argv0, *args], conn, out_read, err_read)


class ForkedCommand:
    """A started command: the part of `subprocess.Popen` (text mode, both streams piped) tests use."""

    def __init__(self, args: list[str], conn: socket.socket, out_read: int, err_read: int) -> None:
        self.args = args
        self.returncode: int | None = None
        self._conn, self._out, self._err = conn, out_read, err_read
        self._reports = bytearray()
        self._streams = {out_read: bytearray(), err_read: bytearray(), conn.fileno(): self._reports}
        while b"\n" not in self._reports:  # the handler's first report: the command's pid
            chunk = conn.recv(4096)
            if not chunk:
                raise RuntimeError("the forked-CLI server did not start the command")
            self._reports += chunk
        self.pid: int = json.loads(self._reports.splitlines()[0])["pid"]

    def kill(self) -> None:
        if self._reports.count(b"\n") < 2:  # no return code reported yet: the pid is still the command's
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
        with selectors.DefaultSelector() as selector:
            for fd in self._streams:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                ready = selector.select(max(0.0, deadline - time.monotonic()))
                if not ready and time.monotonic() >= deadline:
                    self.kill()
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        self._streams[key.fd] += chunk
                    else:
                        selector.unregister(key.fd)
        self._conn.close()
        os.close(self._out)
        os.close(self._err)
        self.returncode = json.loads(self._reports.splitlines()[-1])["returncode"]


if __name__ == "__main__":
    serve(sys.argv[1])
