"""`prefect deploy --all` as `mltp sandbox up` runs it in the background: its failures are one clear line
and it never outlives `up`. (`up` running it against a sandbox: tests/test_sandbox.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mltp.errors import SandboxError
from mltp.sandbox.deployments import DeployAll


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
    }


def test_a_failing_deploy_names_its_log(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    broken = "deployments:\n  - name: broken\n    entrypoint: no_such_module:flow\n"
    (project / "prefect.yaml").write_text(broken)
    log = tmp_path / "logs" / "deploy.log"
    deploying = DeployAll(_env(tmp_path), log, project)
    with pytest.raises(SandboxError, match=f"^`prefect deploy --all` failed: see {log}$"):
        deploying.finish()
    assert log.read_text().strip()  # prefect's own account of why


def test_a_deploy_over_its_time_is_killed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "prefect.yaml").write_text("deployments: []\n")
    deploying = DeployAll(_env(tmp_path), tmp_path / "deploy.log", project)
    with pytest.raises(SandboxError, match=r"ran over 0 s: see .*deploy\.log$"):
        deploying.finish(timeout=0.01)
    deploying.stop()
    assert deploying.process.returncode is not None


def test_without_a_project_folder_nothing_runs(tmp_path: Path) -> None:
    deploying = DeployAll(_env(tmp_path), tmp_path / "deploy.log", None)
    assert deploying.process is None
    assert deploying.finish().startswith("no prefect.yaml beside the installed flows")
