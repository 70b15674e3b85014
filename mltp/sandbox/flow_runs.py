"""The sandbox worker's flow runs, forked from a server that imported Prefect and the flows once.

Prefect's process worker starts each flow run as `python -m prefect.engine` (behind a workspace
supervisor, another interpreter): about ten seconds of CPU on imports before the flow's first line, on
every run. The sandbox's work pool runs `python -m mltp.sandbox.flow_runs launch` instead, which asks the
worker's fork server (started beside the worker by `python -m mltp.sandbox.flow_runs worker ...`) for a
process that runs the engine exactly as `python -m prefect.engine` would: the run's environment, working
folder, standard streams and exit code, its own session; Prefect's settings and logging are read again
from that environment first. The launcher stands in for that process towards the worker: it passes on
SIGTERM and SIGINT (a cancellation), exits with its code, and if it is killed the server kills the run.
Without a reachable server (a worker started by hand on the pool) it becomes `python -m prefect.engine`.

Only the standard library is imported at the top: the launcher must start in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import subprocess
import sys
import tempfile

SERVER_ENV = "MLTP_FLOW_RUN_SERVER"  # the fork server's socket, in the worker's (so each run's) environment
ENGINE = [sys.executable, "-m", "prefect.engine"]
LAUNCH_COMMAND = [sys.executable, "-m", "mltp.sandbox.flow_runs", "launch"]
FLOWS = ["prefect.engine", "prefect.flow_engine", "flows.ingest_and_train", "flows.watch", "flows.reap"]


def _run_engine(request: dict) -> None:
    """In the forked process: become what `python -m prefect.engine` would be, then run it."""
    from mltp.prefect_api import reread_prefect_settings
    from mltp.sandbox.fork_server import adopt

    adopt(request["env"], request["cwd"])
    reread_prefect_settings()
    sys.argv = ["prefect.engine", *request["args"]]
    sys.path[0] = os.getcwd()
    del sys.modules["prefect.engine"]  # preloaded for what it imports; it runs afresh as __main__
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    sys.exit(0)


def serve(path: str, worker_pid: str) -> None:
    from mltp.sandbox.fork_server import serve as serve_forks
    from mltp.sandbox.trainer_processes import PRELOADED  # what the flows' tasks import when they run

    serve_forks(path, [*FLOWS, *PRELOADED], _run_engine, parent=int(worker_pid))


def start_worker(worker_argv: list[str]) -> None:
    """Start the fork server beside the worker, then become the worker (the same pid): the server stops
    when the worker's process is gone (and is stopped with it, being in its process group)."""
    folder = tempfile.mkdtemp(prefix="mltp-flow-runs-")  # a short path: Unix sockets allow ~100 bytes
    path = os.path.join(folder, "server.sock")
    server = [sys.executable, "-m", "mltp.sandbox.flow_runs", "serve", path, str(os.getpid())]
    subprocess.Popen(server, stdin=subprocess.DEVNULL)
    os.environ[SERVER_ENV] = path
    os.execv(worker_argv[0], worker_argv)


def launch(args: list[str]) -> None:
    """The work pool's command: run this flow run in a process forked by the worker's server."""
    from mltp.sandbox.fork_server import start

    try:
        run = start(
            os.environ[SERVER_ENV], {"args": args, "env": dict(os.environ), "cwd": os.getcwd()}, [0, 1, 2]
        )
    except (KeyError, OSError):  # no server, or it is gone
        os.execv(ENGINE[0], [*ENGINE, *args])
    for forwarded in (signal.SIGTERM, signal.SIGINT):
        signal.signal(forwarded, lambda signum, _: _signal_group(run.pid, signum))
    returncode = run.returncode()
    if returncode < 0:  # die of the same signal, as the worker expects of the engine's process
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    sys.exit(returncode)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def main(argv: list[str]) -> None:
    command, *rest = argv or ["launch"]
    if command == "launch":
        launch(rest)
    elif command == "serve":
        serve(*rest)
    elif command == "worker":
        start_worker(rest)
    else:
        sys.exit("usage: python -m mltp.sandbox.flow_runs launch | serve SOCKET PID | worker ARGV")


if __name__ == "__main__":
    main(sys.argv[1:])
