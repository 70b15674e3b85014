"""The trainer as a wheel in S3, content-addressed: `code/trainer/<source_sha256>/`.

The hash covers every file that goes into the wheel plus the pinned requirements installed beside it,
so unchanged code is never rebuilt and a changed pin never reuses stale requirements. The wheel is built
from a private copy of exactly the hashed bytes, so an edit made during the build cannot end up under
the old hash, and the source tree gets no `build/` or `*.egg-info` litter.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import mltp
from mltp.errors import ConfigError, MltpError
from mltp.s3_json import SSE

PREFIX = "code/trainer/"
REQUIREMENTS = "deployments/trainer-requirements.txt"
DISTRIBUTION = "ml-training-platform"
BUILD_TIMEOUT_SECONDS = 600
ALWAYS_EXCLUDED = ("ez_setup", "*__pycache__")  # setuptools' PackageFinder.ALWAYS_EXCLUDE


@dataclass(frozen=True)
class TrainerCode:
    wheel_uri: str
    requirements_uri: str
    source_sha256: str


def publish_trainer_code(s3_client, bucket: str, project_root: Path | None = None) -> TrainerCode:
    """Upload the trainer wheel and its requirements unless this exact source is already there.

    Two callers racing may both build and upload; each object is one `put_object`, so a reader never
    sees a partial file, and the requirements go first so that a wheel's presence means both are there.
    """
    sources = read_sources(project_root or find_project_root())
    digest = sources_sha256(sources)
    prefix = f"{PREFIX}{digest}/"
    requirements_key = f"{prefix}trainer-requirements.txt"
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    wheel_key = next((item["Key"] for item in listed if item["Key"].endswith(".whl")), None)
    if wheel_key is None:
        with tempfile.TemporaryDirectory(prefix="mltp-wheel-") as scratch:
            wheel = _build_wheel(sources, Path(scratch))
            s3_client.put_object(Bucket=bucket, Key=requirements_key, Body=sources[REQUIREMENTS], **SSE)
            wheel_key = f"{prefix}{wheel.name}"
            s3_client.put_object(Bucket=bucket, Key=wheel_key, Body=wheel.read_bytes(), **SSE)
    return TrainerCode(f"s3://{bucket}/{wheel_key}", f"s3://{bucket}/{requirements_key}", digest)


def find_project_root() -> Path:
    """The source checkout the running `mltp` package is imported from (an editable install)."""
    root = Path(mltp.__file__).resolve().parent.parent
    if _project_name(root / "pyproject.toml") != DISTRIBUTION:
        raise ConfigError(
            f"mltp is imported from {root}, which is not a source checkout of {DISTRIBUTION}: run from a "
            "source checkout (make install), or use an AMI with the trainer preinstalled "
            "(EC2_TRAINER_PREINSTALLED=true)",
            setting="EC2_TRAINER_PREINSTALLED",
        )
    return root


def read_sources(project_root: Path) -> dict[str, bytes]:
    """Relative POSIX path -> bytes, in sorted path order: pyproject.toml, the readme it names, the
    trainer requirements and every file of the packages that setuptools' discovery finds."""
    pyproject_path = project_root / "pyproject.toml"
    pyproject = tomllib.loads(pyproject_path.read_text())
    requirements = project_root / REQUIREMENTS
    if not requirements.is_file():
        raise ConfigError(
            f"{requirements} is missing: the trainer's pinned requirements must be in the checkout"
        )
    paths = [pyproject_path, requirements]
    readme = pyproject["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        paths.append(project_root / readme)
    paths += _package_files(project_root, pyproject["tool"]["setuptools"]["packages"]["find"])
    return {path.relative_to(project_root).as_posix(): path.read_bytes() for path in sorted(paths)}


def sources_sha256(sources: dict[str, bytes]) -> str:
    """SHA-256 over one line per file, `<path> NUL <sha256 of its bytes>`, in the order given."""
    digest = hashlib.sha256()
    for path, content in sources.items():
        digest.update(f"{path}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()


def _package_files(project_root: Path, find: dict) -> list[Path]:
    where = project_root / find.get("where", ["."])[0]
    packages = find_packages(
        where, find.get("include", ["*"]), find.get("exclude", []), find.get("namespaces", True)
    )
    return [
        path
        for package in packages
        for path in (where / package.replace(".", "/")).iterdir()
        if path.is_file() and path.suffix not in {".pyc", ".pyo"}
    ]


def find_packages(where: Path, include: list[str], exclude: list[str], namespaces: bool = True) -> list[str]:
    """The packages setuptools' discovery puts in the wheel (`find_namespace_packages`, which pyproject's
    `find` table uses by default, or `find_packages`), found the same way: every folder below `where`
    whose name has no dot (and, without namespaces, that holds an `__init__.py`), as a dotted name, kept
    when it matches an `include` pattern and no `exclude` one (nor setuptools' own). Importing
    setuptools for it cost every EC2 run 0.15 s of CPU; tests/test_ec2_bootstrap.py proves the two
    agree."""
    found = []
    for folder, subfolders, _ in os.walk(where, followlinks=True):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if "." not in name and (namespaces or os.path.isfile(os.path.join(folder, name, "__init__.py")))
        )
        for name in subfolders:
            package = Path(folder, name).relative_to(where).as_posix().replace("/", ".")
            if any(fnmatchcase(package, pattern) for pattern in include) and not any(
                fnmatchcase(package, pattern) for pattern in (*ALWAYS_EXCLUDED, *exclude)
            ):
                found.append(package)
    return found


def _build_wheel(sources: dict[str, bytes], scratch: Path) -> Path:
    """Build with this environment's setuptools: no build isolation and no index, so no network."""
    tree, out = scratch / "src", scratch / "dist"
    for relative, content in sources.items():
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        (tree / relative).write_bytes(content)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--check-build-dependencies",
        "--disable-pip-version-check",
        "--quiet",
        "-w",
        str(out),
        str(tree),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
    )
    wheels = sorted(out.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = next(
            (line for line in lines if line.startswith("ERROR:")), lines[-1] if lines else "no wheel"
        )
        raise MltpError(
            f"building the trainer wheel failed ({reason}): this environment needs setuptools>=70.1 (or "
            "setuptools>=69 and wheel) to build offline, or use an AMI with the trainer preinstalled "
            "(EC2_TRAINER_PREINSTALLED=true)"
        )
    return wheels[0]


def _project_name(pyproject: Path) -> str | None:
    if not pyproject.is_file():
        return None
    return tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
