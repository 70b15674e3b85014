"""What ships to the Lambda trainer: the pinned requirements, the zip of our code and the image's Dockerfile.

Docker is not needed: the Dockerfile is checked statically against the zip builder and the block."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mltp.compute import lambda_package
from mltp.compute.lambda_deploy import HANDLER
from mltp.compute.lambda_package import ENTRY_POINTS, trainer_files, trainer_zip

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "deployments" / "trainer-requirements.txt"
DOCKERFILE = ROOT / "deployments" / "lambda" / "Dockerfile"
IMPORT_ENTRY_POINTS = f"import {', '.join(ENTRY_POINTS)}"


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version
    return found


def test_requirements_are_pinned_to_the_lock() -> None:
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line) for line in lines), lines
    locked = pins(ROOT / "requirements.lock")
    listed = pins(REQUIREMENTS)
    assert {name: locked.get(name) for name in listed} == listed


def test_requirements_include_what_each_listed_package_requires() -> None:
    """So installing the file pulls in nothing unpinned."""
    listed = pins(REQUIREMENTS)
    missing = {}
    for name in listed:
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if applies and canonicalize_name(requirement.name) not in listed:
                missing[requirement.name] = name
    assert not missing, f"required but not listed (-> by): {missing}"


def test_requirements_cover_every_module_the_trainer_imports() -> None:
    """Import the trainer with every other installed distribution hidden: it must still import, and each
    third-party module it loaded must come from a listed distribution. Hidden ones it only tries
    (pytest, rich, psutil: optional imports of scikit-learn, skops and joblib) are not needed."""
    listed = set(pins(REQUIREMENTS))
    owners = importlib.metadata.packages_distributions()
    hidden = sorted(
        top
        for top, names in owners.items()
        if top != "mltp" and not {canonicalize_name(name) for name in names} & listed
    )
    code = f"""
import importlib.abc, json, sys
from pathlib import Path
hidden, site = set(json.loads(sys.argv[1])), Path(sys.argv[2])
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
before = set(sys.modules)
sys.meta_path.insert(0, Hide())
{IMPORT_ENTRY_POINTS}
files = [Path(sys.modules[name].__file__) for name in set(sys.modules) - before
         if getattr(sys.modules[name], "__file__", None)]
print(json.dumps(sorted({{file.relative_to(site).parts[0] for file in files if file.is_relative_to(site)}})))
"""
    site = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(hidden), site], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # Top-level packages and modules (`six.py`, `_cffi_backend.cpython-311-....so`) of site-packages.
    third_party = {entry.partition(".")[0] for entry in json.loads(result.stdout)}
    unlisted = {
        top: owners.get(top)
        for top in third_party
        if not {canonicalize_name(name) for name in owners.get(top, [])} & listed
    }
    assert not unlisted, f"imported by the trainer but not in {REQUIREMENTS.name}: {unlisted}"
    assert {"boto3", "numpy", "pandas", "pyarrow", "sklearn", "skops", "pydantic"} <= third_party


def test_zip_holds_exactly_the_trainer_modules() -> None:
    names = zipfile.ZipFile(io.BytesIO(trainer_zip())).namelist()
    assert names == trainer_files() == sorted(names)
    assert {"mltp/__init__.py", "mltp/trainer/handler.py", "mltp/trainer/__main__.py", "mltp/aws.py"} <= set(
        names
    )
    assert not [name for name in names if name.startswith(("mltp/cli/", "mltp/sandbox/", "mltp/compute/"))]
    assert all(name.endswith(".py") for name in names)


def test_zip_is_byte_for_byte_reproducible() -> None:
    archive = zipfile.ZipFile(io.BytesIO(trainer_zip()))
    assert {entry.date_time for entry in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert {entry.external_attr >> 16 for entry in archive.infolist()} == {0o644}
    assert trainer_zip() == trainer_zip()


def test_zip_alone_is_enough_first_party_code(tmp_path: Path) -> None:
    """Unpacked into an empty directory, with site-packages but not this checkout on the path (-S keeps
    the editable install's finder out), the entry points import and every mltp module comes from it."""
    zipfile.ZipFile(io.BytesIO(trainer_zip())).extractall(tmp_path)
    code = (
        f"import json, sys; {IMPORT_ENTRY_POINTS};"
        "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.partition('.')[0] == 'mltp']))"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert files and all(Path(file).is_relative_to(tmp_path) for file in files), files


def test_walk_follows_every_form_of_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Absolute, relative, `from package import module` and imports inside functions are followed; names
    that are not modules, third-party imports and modules nobody imports are not."""
    sources = {
        "mltp/__init__.py": "",
        "mltp/trainer/__init__.py": "",
        "mltp/trainer/handler.py": "import os\nfrom mltp.trainer import runner\nfrom . import spec\n",
        "mltp/trainer/__main__.py": "from .runner import run\n",
        "mltp/trainer/runner.py": "import numpy\ndef run():\n    from mltp.lazy import helper\n",
        "mltp/trainer/spec.py": "import mltp.util.text as text\nfrom mltp.errors import MltpError\n",
        "mltp/lazy.py": "",
        "mltp/util/__init__.py": "",
        "mltp/util/text.py": "",
        "mltp/errors.py": "",
        "mltp/cli/__init__.py": "from mltp.trainer import handler\n",
        "mltp/unused.py": "",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(lambda_package, "_SOURCE_ROOT", tmp_path)
    assert trainer_files() == sorted(set(sources) - {"mltp/cli/__init__.py", "mltp/unused.py"})


# -- the Dockerfile ---------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def arguments(keyword: str) -> list[str]:
    return [args for key, args in instructions() if key == keyword]


def test_base_image_names_no_registry_host() -> None:
    [image] = arguments("FROM")
    first = image.split("/")[0]
    assert "/" in image and "." not in first and ":" not in first and first != "localhost", image


def test_image_runs_the_python_of_the_blocks_default_runtime() -> None:
    from blocks.compute import LambdaCompute

    runtime = LambdaCompute.model_fields["runtime"].default  # e.g. python3.11
    [entrypoint] = arguments("ENTRYPOINT")
    assert json.loads(entrypoint)[:3] == [runtime, "-m", "awslambdaric"]
    assert any(f"dnf install -y {runtime} " in run for run in arguments("RUN"))
    assert all(f"{runtime} -m pip install" in run for run in arguments("RUN") if "pip install" in run)


def test_every_copy_source_exists() -> None:
    for copy in arguments("COPY"):
        *sources, _ = shlex.split(copy)
        assert sources and all((ROOT / source).is_file() for source in sources), copy


def test_image_copies_the_same_modules_as_the_zip() -> None:
    copied = []
    for copy in arguments("COPY"):
        *sources, target = shlex.split(copy)
        if target.startswith("${LAMBDA_TASK_ROOT}/"):
            folder = target.removeprefix("${LAMBDA_TASK_ROOT}/")
            assert folder.endswith("/"), copy
            copied += [folder + Path(source).name for source in sources]
    assert sorted(copied) == trainer_files()


def test_image_installs_the_trainer_requirements() -> None:
    [copied_to] = [
        shlex.split(copy)[-1]
        for copy in arguments("COPY")
        if copy.startswith("deployments/trainer-requirements.txt ")
    ]
    assert any(f"--only-binary=:all: -r {copied_to}" in run for run in arguments("RUN"))


def test_cmd_names_the_trainer_handler() -> None:
    [cmd] = arguments("CMD")
    [handler] = json.loads(cmd)
    assert handler == HANDLER
    module, _, function = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))


def test_image_holds_no_credentials() -> None:
    text = " ".join(f"{key} {args}" for key, args in instructions())
    assert not re.search(r"(?i)AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)", text)
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)  # an access key id
    assert not [args for args in arguments("ENV") + arguments("ARG") if "AWS" in args.upper()]
