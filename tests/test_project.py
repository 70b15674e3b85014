"""The project's own contracts: the README's commands, the lock file, the env documentation and the
rule that the core library stays free of Prefect."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from mltp.settings import PlatformSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
# Modules of mltp/ that wire Prefect in; everything else must import without it (the trainer ships
# to Lambda and EC2 without Prefect).
PREFECT_WIRING = ("cli", "mcp", "sandbox", "prefect_api.py")


def test_readme_opens_with_exactly_the_two_commands() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    assert lines[1].split("#")[0].strip() == "make demo"
    assert lines[2].split("#")[0].strip() == "make test"
    assert not lines[3].startswith("    ")


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_lock_pins_every_dependency_inside_the_declared_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith(("#", " "))
    )
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    for spec in map(Requirement, declared):
        assert spec.name in pins, f"{spec.name} is not in requirements.lock: run `make lock`"
        assert spec.specifier.contains(pins[spec.name]), f"{spec.name}=={pins[spec.name]} outside {spec}"


def test_core_library_does_not_import_prefect() -> None:
    for path in (ROOT / "mltp").rglob("*.py"):
        relative = path.relative_to(ROOT / "mltp")
        if relative.parts[0] in PREFECT_WIRING:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not re.match(r"(prefect|prefect_aws|blocks|flows|tasks)(\.|$)", name), (
                    f"mltp/{relative} imports {name}"
                )


def _top_level_modules_loaded_by(modules: list[str]) -> set[str]:
    probe = (
        "import importlib, json, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(loaded.stdout))


def test_commands_and_flows_start_without_scikit_learn() -> None:
    """Importing scikit-learn costs a process a second or more: only fitting, predicting and checking
    hyperparameters need it, so neither the CLI nor a flow module may import it up front."""
    modules = [
        "mltp.cli",
        "flows.watch",
        "flows.reap",
        "flows.ingest",
        "flows.train",
        "flows.ingest_and_train",
    ]
    assert _top_level_modules_loaded_by(modules) & {"sklearn", "scipy", "skops"} == set()


def test_commands_and_the_training_flow_start_without_the_data_stack() -> None:
    """pandas, pyarrow and numpy cost most of a second more: what only reads manifests (every command
    at start, the training and reaping flows, the fleet) goes through `mltp.dataset_catalog`."""
    modules = ["mltp.cli", "flows.reap", "flows.train", "mltp.sandbox.fleet"]
    assert _top_level_modules_loaded_by(modules) & {"pandas", "pyarrow", "numpy"} == set()


def test_env_example_documents_exactly_the_variables_we_read() -> None:
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    read = set()
    for field in PlatformSettings.model_fields.values():
        alias = field.validation_alias
        read.add(alias.choices[0] if hasattr(alias, "choices") else alias)
    assert documented == read


def test_env_example_is_valid_as_written(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(ROOT / ".env.example")
    assert settings.data_bucket == "my-team-ml-data"


def test_generated_state_is_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {".venv/", ".mltp/", "__pycache__/"} <= set(ignored)
