"""The fleet's trainer processes: each started from the fork server as the interpreter would run its command
line, with its own arguments, environment, folder, stdin, log, session and exit code."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mltp.sandbox import trainer_processes


def started(tmp_path: Path, argv: list[str], env: dict | None = None, cwd=None, stdin: bytes = b""):
    log = tmp_path / "trainer.log"
    return trainer_processes.start(argv, env or {}, cwd and str(cwd), stdin, log), log


def test_a_program_gets_its_arguments_environment_folder_and_stdin_and_its_exit_code(tmp_path: Path) -> None:
    code = (
        "import json, os, sys; print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), "
        "'env': dict(os.environ), 'stdin': json.loads(sys.stdin.read())})); "
        "print('to stderr', file=sys.stderr); sys.exit(3)"
    )
    process, log = started(
        tmp_path, [sys.executable, "-c", code, "a1"], {"ONLY": "this"}, tmp_path, b'{"job": 1}'
    )
    assert process.wait(60) == 3 and process.returncode == 3
    printed, stderr = log.read_text().splitlines()
    assert json.loads(printed) == {
        "argv": ["-c", "a1"], "cwd": str(tmp_path), "env": {"ONLY": "this"}, "stdin": {"job": 1}
    }  # fmt: skip
    assert stderr == "to stderr"


def test_a_module_runs_from_its_folder_as_python_m_would(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(
        "import sys\nprint(__name__, sys.argv[1:])\nsys.exit(int(sys.argv[1]))"
    )
    process, log = started(tmp_path, [sys.executable, "-m", "probe", "4"], cwd=tmp_path)
    assert process.wait(60) == 4
    assert log.read_text() == "__main__ ['4']\n"


def test_deployed_code_named_mltp_is_what_runs_not_the_fleets_copy(tmp_path: Path) -> None:
    (tmp_path / "mltp").mkdir()
    (tmp_path / "mltp" / "__init__.py").write_text("DEPLOYED = True\n")
    code = "import sys, mltp; print(getattr(mltp, 'DEPLOYED', False), 'sklearn' in sys.modules)"
    process, log = started(tmp_path, [sys.executable, "-c", code], cwd=tmp_path)
    assert process.wait(60) == 0
    assert log.read_text() == "True True\n"  # and the libraries came preloaded


def test_each_trainer_has_its_own_session_and_dies_with_it(tmp_path: Path) -> None:
    process, _ = started(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    deadline = time.monotonic() + 30
    while os.getsid(process.pid) != process.pid and time.monotonic() < deadline:
        time.sleep(0.05)  # setsid is the child's first step
    assert os.getsid(process.pid) == process.pid != os.getsid(0)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(30) == -signal.SIGKILL


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_a_trainer_killed_as_it_starts_dies(tmp_path: Path, stopped: bool) -> None:
    process, _ = started(tmp_path, [sys.executable, "-c", "import time; time.sleep(60)"])
    if stopped:  # frozen before it could leave the fork server's session
        os.kill(process.pid, signal.SIGSTOP)
    process.kill()
    assert process.wait(30) == -signal.SIGKILL


def test_an_uncaught_exception_exits_1_with_its_traceback_in_the_log(tmp_path: Path) -> None:
    process, log = started(tmp_path, [sys.executable, "-c", "raise RuntimeError('boom')"])
    assert process.wait(60) == 1
    assert "RuntimeError: boom" in log.read_text()


def test_siblings_do_not_share_random_streams(tmp_path: Path) -> None:
    code = "import random, numpy; print(random.random(), numpy.random.random())"
    draws = []
    for number in range(2):
        (tmp_path / str(number)).mkdir()
        process, log = started(tmp_path / str(number), [sys.executable, "-c", code])
        assert process.wait(60) == 0
        draws.append(log.read_text().split())
    assert draws[0][0] != draws[1][0] and draws[0][1] != draws[1][1]


@pytest.mark.parametrize("argv", [["/bin/echo", "-c", "x"], [sys.executable, "script.py"], [sys.executable]])
def test_anything_but_python_m_or_c_is_refused(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(ValueError, match="-m module"):
        trainer_processes.start(argv, {}, None, b"", tmp_path / "log")
