"""The tests run `mltp` forked from a process that imported it once (tests/forked_cli.py): it must behave
as the console script does, or the suite would test something users never run."""

from __future__ import annotations

import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.conftest import free_port, run_console_script, run_mltp, start_mltp

CALLS = [
    ["--version"],
    [],  # the help screen, exit 2
    ["train", "--no-such-option"],  # a usage error
    ["models", "list"],  # imports Prefect and finds no API to use
]


@pytest.mark.parametrize("args", CALLS, ids=lambda args: " ".join(args) or "no arguments")
def test_a_forked_call_prints_and_exits_as_the_console_script(args) -> None:
    forked, script = run_mltp(*args), run_console_script(*args)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        script.returncode,
        script.stdout,
        script.stderr,
    )


def test_each_call_reads_its_own_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    forked = run_mltp("models", "list", env={"PREFECT_API_URL": url})
    script = run_console_script("models", "list", env={"PREFECT_API_URL": url})
    assert forked.returncode == script.returncode == 1
    assert forked.stderr == script.stderr and f"{url} (from PREFECT_API_URL)" in forked.stderr
    assert "no Prefect API is configured" in run_mltp("models", "list").stderr  # nothing carried over


def test_calls_run_side_by_side() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_mltp("--version"), range(4)))
    assert {(r.returncode, r.stdout) for r in results} == {(0, results[0].stdout)}


def test_a_call_past_its_timeout_is_killed() -> None:
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        with pytest.raises(subprocess.TimeoutExpired):
            run_mltp("models", "list", env={"PREFECT_API_URL": url}, timeout=3)
    assert run_mltp("--version").returncode == 0  # the server goes on serving


def test_a_started_command_runs_under_its_own_pid_until_killed() -> None:
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        command = start_mltp("models", "list", env={"PREFECT_API_URL": url})
        assert psutil.Process(command.pid).is_running() and command.returncode is None
        command.kill()
        assert command.wait(30) == -signal.SIGKILL
    finished = start_mltp("--version")
    assert finished.communicate(30) == (run_mltp("--version").stdout, "") and finished.returncode == 0
