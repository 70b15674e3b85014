"""The fleet's trainer processes, forked from a server that imported their libraries once.

A fresh trainer spends seconds of CPU importing scikit-learn, pandas, pyarrow, skops and boto3 before
it reads its job: on a sandbox training a grid on several instances at once, that is most of its start.
The fleet starts trainers through a `multiprocessing` fork server that imported those libraries once
(`PRELOADED`), so each one starts in a fraction of that. Each is still its own process in its own
session, with its own command line, environment, working directory, stdin and log, and exits with its
own code. Only third-party libraries are inherited: mltp's modules are imported afresh by each child, so
an invocation runs the code deployed to its function, not the fleet's copy.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import sys
import tempfile
import types
from pathlib import Path

from mltp.sandbox import fork_server

PRELOADED = [
    "numpy",
    "pandas",
    "pyarrow.csv",
    "pyarrow.compute",
    "pyarrow.parquet",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.neighbors",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
    "skops.io",
    "boto3",
    "pydantic",
]


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


class TrainerProcess:
    """A started trainer, with the part of `subprocess.Popen` the fleet uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

    def kill(self) -> None:
        """SIGKILL its session (it and what it started) and itself: just started, it may not have left
        the fork server's session yet."""
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill(self.pid, signal.SIGKILL)


def warm_up() -> None:
    """Start the fork server now, so it imports `PRELOADED` while the fleet waits for work."""
    _context()
    multiprocessing.forkserver.ensure_running()


def start(
    argv: list[str], env: dict[str, str], cwd: str | None, stdin: bytes, log_path: Path
) -> TrainerProcess:
    """Start `argv` (`python -m module ...` or `python -c code ...`) as the interpreter would run it."""
    if len(argv) < 3 or argv[0] != sys.executable or argv[1] not in ("-m", "-c"):
        raise ValueError(f"a trainer is `{sys.executable} -m module` or `-c code`, not {argv!r}")
    process = _context().Process(
        target=_run, args=(argv[1:], env, cwd, stdin, str(log_path)), name=log_path.stem
    )
    process.start()
    return TrainerProcess(process)


def _run(command: list[str], env: dict[str, str], cwd: str | None, stdin: bytes, log_path: str) -> None:
    os.setsid()  # a terminated "machine" takes all its processes with it
    with tempfile.TemporaryFile() as payload, open(log_path, "ab") as log:
        payload.write(stdin)
        payload.seek(0)
        os.dup2(payload.fileno(), 0)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115  multiprocessing replaced it
    fork_server.adopt(env, cwd)
    for name in [name for name in sys.modules if name.partition(".")[0] in ("mltp", "__mp_main__")]:
        del sys.modules[name]
    option, target, *arguments = command
    if option == "-m":
        sys.argv = [target, *arguments]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *arguments]
        sys.path[0] = ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(target, "<string>", "exec"), main.__dict__)
