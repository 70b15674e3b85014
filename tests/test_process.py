"""The sandbox's process management, on plain `sleep` processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from mltp.errors import PortInUseError, SandboxError
from mltp.sandbox.process import ManagedProcess, boot_id, port_is_free, require_free_port
from tests.conftest import free_port

# A parent that starts a child in the same group, as uvicorn-style servers do.
PARENT_WITH_CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    time.sleep(300)
    """
)


@pytest.fixture
def managed(tmp_path) -> ManagedProcess:
    return ManagedProcess("demo", tmp_path / "run", tmp_path / "logs")


def test_stop_takes_the_whole_tree_down(managed) -> None:
    record = managed.start([sys.executable, "-c", PARENT_WITH_CHILD], env={}, port=1)
    parent = psutil.Process(record.pid)
    for _ in range(100):
        if parent.children():
            break
        psutil.wait_procs([], timeout=0.05)
    family = [parent, *parent.children(recursive=True)]
    assert len(family) == 2
    assert managed.state() == "running"
    assert managed.stop() == "running"
    assert not managed.pid_file.exists()
    assert all(not member.is_running() or member.status() == psutil.STATUS_ZOMBIE for member in family)
    assert managed.state() == "stopped"


def test_dead_pid_is_stale_and_cleaned(managed) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    managed.pid_file.parent.mkdir(parents=True)
    record = {"pid": dead.pid, "boot_id": boot_id(), "started": 1.0, "port": 1}
    managed.pid_file.write_text(json.dumps(record))
    assert managed.state() == "stale"
    assert managed.stop() == "stale"
    assert not managed.pid_file.exists()


def test_reused_pid_is_stale_and_the_stranger_survives(managed) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        managed.pid_file.parent.mkdir(parents=True)
        # Our pid file names a live pid, but one started at another time: not ours.
        record = {"pid": stranger.pid, "boot_id": boot_id(), "started": 1.0, "port": 1}
        managed.pid_file.write_text(json.dumps(record))
        assert managed.state() == "stale"
        assert managed.stop() == "stale"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_wall_clock_step_leaves_a_running_service_running(managed, monkeypatch) -> None:
    """NTP or a resumed VM steps the clock: psutil's create_time() moves with it, our record does not."""
    managed.start([sys.executable, "-c", "import time; time.sleep(60)"], env={}, port=1)
    try:
        pid = managed.record().pid
        before = psutil.Process(pid).create_time()
        real_boot_time = psutil.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real_boot_time + 30)
        assert psutil.Process(pid).create_time() > before + 29  # what the clock step does to psutil
        assert managed.state() == "running"
    finally:
        assert managed.stop() == "running"


def test_a_pid_file_from_another_boot_is_stale(managed) -> None:
    managed.start([sys.executable, "-c", "import time; time.sleep(60)"], env={}, port=1)
    record = json.loads(managed.pid_file.read_text())
    try:
        managed.pid_file.write_text(json.dumps({**record, "boot_id": "another-boot"}))
        assert managed.state() == "stale"
    finally:
        managed.pid_file.write_text(json.dumps(record))
        assert managed.stop() == "running"


def test_garbled_pid_file_is_stale(managed) -> None:
    managed.pid_file.parent.mkdir(parents=True)
    managed.pid_file.write_text("not json")
    assert managed.state() == "stale"


def test_a_process_that_dies_during_start_up_is_reported(managed) -> None:
    managed.start([sys.executable, "-c", "import sys; sys.exit(3)"], env={}, port=1)
    with pytest.raises(SandboxError, match=r"exited during start-up: see .*demo\.log"):
        managed.wait_healthy(lambda: False, timeout=10)


def test_port_in_use_names_the_port_and_the_flag() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        assert not port_is_free(port)
        with pytest.raises(
            PortInUseError, match=f"port {port} for the thing is already in use.*--thing-port"
        ):
            require_free_port(port, what="thing", flag="--thing-port")
