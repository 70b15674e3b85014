"""A server that imported a set of modules once and forks a process of its own for each request.

A fresh Python process that runs Prefect's flow engine or the `mltp` command spends seconds of CPU on
imports before it does anything. Forked from a process that made those imports already, each request
still gets a process of its own, with the caller's arguments, environment, working folder, standard
streams and exit code; it only starts without the wait.

The protocol, over a Unix socket: the caller sends a header (the length of a JSON request) with three
file descriptors (the process's stdin, stdout and stderr), then the request. For each connection the
server forks a handler, which forks the process, reports `{"pid": N}`, waits for it and reports
`{"returncode": N}` (`-N` for signal N, as `subprocess` does). A caller that hangs up first (killed, say)
takes the process with it: the handler SIGKILLs the process's group. Only the standard library is
imported here, so a caller starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterable

HEADER = struct.Struct("!Q")  # length of the JSON request that follows the header and the three fds


class Started:
    """A process the server forked for us: its pid now, its return code when it ends."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.reports = bytearray()  # the handler's lines: the pid, then the return code
        while b"\n" not in self.reports:
            if not self.read_reports():
                raise ConnectionError("the fork server did not start the process")
        self.pid: int = json.loads(self.reports.splitlines()[0])["pid"]

    def read_reports(self) -> bool:
        """Read what the handler sent; False once it has hung up."""
        chunk = self.conn.recv(4096)
        self.reports += chunk
        return bool(chunk)

    @property
    def ended(self) -> bool:
        return self.reports.count(b"\n") >= 2

    def returncode(self) -> int:
        """Block until the handler reports the return code."""
        while not self.ended:
            if not self.read_reports():
                raise ConnectionError("the fork server's handler ended without a return code")
        return json.loads(self.reports.splitlines()[1])["returncode"]


def start(path: str, request: dict, fds: list[int]) -> Started:
    """Ask the server at `path` for a process with `fds` as its stdin, stdout and stderr."""
    payload = json.dumps(request).encode()
    conn = socket.socket(socket.AF_UNIX)
    try:
        conn.connect(path)
        socket.send_fds(conn, [HEADER.pack(len(payload))], fds)
        conn.sendall(payload)
        return Started(conn)
    except BaseException:
        conn.close()
        raise


def adopt(env: dict[str, str], cwd: str | None) -> None:
    """In a forked process: take on the caller's environment and working folder, and draw random numbers
    of its own (forked siblings would otherwise share one stream: the same retry jitter, say)."""
    os.environ.clear()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _read_exactly(conn: socket.socket, size: int, first: bytes = b"") -> bytes:
    data = first
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the caller hung up mid-request")
        data += chunk
    return data


def _handle(conn: socket.socket, run: Callable[[dict], object]) -> None:
    """In the handler's process: fork the process, report its pid, wait, report its return code. Returns
    only in the forked process, once `run` has returned (the caller then exits as an interpreter does)."""
    try:
        header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        header = _read_exactly(conn, HEADER.size, header)
        request = json.loads(_read_exactly(conn, HEADER.unpack(header)[0]))
        pid = os.fork()
    except BaseException:
        os._exit(1)
    if pid == 0:
        conn.close()
        os.setsid()  # its own group: a signal for it reaches what it starts too
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        run(request)
        return
    try:
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        exited = os.pidfd_open(pid)
        ready, _, _ = select.select([exited, conn], [], [])
        if exited not in ready:  # the caller hung up: nobody waits for the process any more
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def serve(path: str, preload: Iterable[str], run: Callable[[dict], object], parent: int) -> None:
    """Import `preload`, then fork `run(request)` for each request until the process `parent` (the one
    that started this server) is gone or it is sent SIGTERM; the socket goes with it (and its folder,
    left empty). Returns only in a forked process, once its `run` has returned."""
    server = os.getpid()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    listener = socket.socket(socket.AF_UNIX)
    # SIGTERM waits while the socket is made: delivered before the `try`, it would leave the socket behind
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    listener.bind(path)  # at once: a caller that comes during the imports waits in the backlog
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        listener.listen(64)
        listener.settimeout(1)
        for name in preload:
            importlib.import_module(name)
        gc.freeze()  # as the gc docs advise before forking: children neither copy nor scan what came before
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                conn.settimeout(None)
                if os.fork() == 0:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    listener.close()
                    _handle(conn, run)
                    return
                conn.close()
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
    finally:
        if os.getpid() == server:
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(os.path.dirname(path))


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # `down` signals the group and each process: once is enough
    raise SystemExit(0)
