"""The fork server (mltp/sandbox/fork_server.py) and the flow-run launcher the sandbox's work pool runs
(mltp/sandbox/flow_runs.py): each request a process of its own, with its streams and exit code, killed
with its caller, and a launcher that stands in for it towards Prefect's worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mltp.sandbox import fork_server
from mltp.sandbox.flow_runs import LAUNCH_COMMAND, SERVER_ENV
from tests.conftest import wait_for

# A server whose processes run the Python code they are given as their first argument.
SERVER = """
import sys
from mltp.sandbox import fork_server

def run(request):
    exec(request["args"][0], {})

fork_server.serve(sys.argv[1], ["json"], run, parent=int(sys.argv[2]))
"""


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen]]:
    folder = tempfile.mkdtemp(prefix="mltp-test-forks-")
    path = os.path.join(folder, "server.sock")
    argv = [sys.executable, "-c", SERVER, path, str(os.getpid())]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(path), timeout=30, every=0.05)
    yield path, process
    process.terminate()
    process.wait(timeout=10)


def _launch(path: str, code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*LAUNCH_COMMAND, code],
        env={**os.environ, SERVER_ENV: path},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _child_of_server(server: subprocess.Popen) -> psutil.Process:
    """The one process a handler of the server forked (the server's grandchild)."""
    return wait_for(
        lambda: next(iter(psutil.Process(server.pid).children(recursive=True)[1:]), None), timeout=30
    )


def test_a_request_gets_a_process_of_its_own_with_its_streams_and_exit_code(server, tmp_path: Path) -> None:
    path, process = server
    out = tmp_path / "out"
    code = "import os, sys; print(os.getppid() != os.getpid(), os.getsid(0) == os.getpid()); sys.exit(3)"
    with out.open("w") as stdout:
        started = fork_server.start(path, {"args": [code]}, [0, stdout.fileno(), 2])
    assert started.pid not in (process.pid, os.getpid())
    assert started.returncode() == 3
    assert out.read_text() == "True True\n"  # its own session: a signal for it reaches what it starts


def test_the_launcher_passes_its_exit_code_and_output_on(server) -> None:
    path, _ = server
    code = "import sys; print('from the run'); print('and its errors', file=sys.stderr); sys.exit(7)"
    launched = _launch(path, code)
    out, err = launched.communicate(timeout=30)
    assert (launched.returncode, out, err) == (7, "from the run\n", "and its errors\n")


def test_a_cancelled_launcher_passes_the_signal_on_and_dies_of_it(server) -> None:
    path, process = server
    launched = _launch(path, "import time; time.sleep(120)")
    run = _child_of_server(process)
    launched.send_signal(signal.SIGTERM)  # how Prefect's worker cancels a flow run's process
    assert launched.wait(timeout=30) == -signal.SIGTERM
    wait_for(lambda: not run.is_running(), timeout=10)


def test_a_killed_launcher_takes_its_run_with_it(server) -> None:
    path, process = server
    launched = _launch(path, "import time; time.sleep(120)")
    run = _child_of_server(process)
    launched.kill()
    launched.wait(timeout=10)
    wait_for(lambda: not run.is_running(), timeout=10)


def test_the_server_stops_on_sigterm_and_leaves_no_socket(server) -> None:
    path, process = server
    process.terminate()
    assert process.wait(timeout=10) == 0
    assert not os.path.exists(os.path.dirname(path))


def test_a_server_whose_parent_died_during_its_imports_stops(tmp_path: Path) -> None:
    """The worker may be killed while its new server still imports: the server must not outlive it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = str(tmp_path / "server.sock")
    server = subprocess.Popen([sys.executable, "-c", SERVER, path, str(gone.pid)], stdin=subprocess.DEVNULL)
    assert server.wait(timeout=30) == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("server_env", [None, "/nonexistent/server.sock"], ids=["no server", "server gone"])
def test_without_a_server_the_launcher_becomes_the_engine(server_env: str | None) -> None:
    env = {key: value for key, value in os.environ.items() if key != SERVER_ENV}
    if server_env:
        env[SERVER_ENV] = server_env
    result = subprocess.run(
        [*LAUNCH_COMMAND, "not-a-flow-run-id"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Invalid flow run id. Received arguments: ['" in result.stderr + result.stdout
    assert "not-a-flow-run-id" in result.stderr + result.stdout
