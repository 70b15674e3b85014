"""The Prefect UI, opened in real headless Chromium, shows the sandbox's blocks and block types.

The UI learns the API address from the server (`/ui-settings`); on a non-default port that only works
because the sandbox configures it, which is what this test proves.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.servers, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a machine with no network beyond loopback: no background calls home, no sandboxing as root.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
]


def render(url: str, profile, *extra: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_blocks_page_lists_the_platform_blocks(sandbox, tmp_path) -> None:
    dom = render(f"{sandbox.status['prefect_ui_url']}/blocks", tmp_path / "profile", "--dump-dom")
    for name in ("mltp-aws", "mltp-datasets", "mltp-models", "mltp-ec2", "mltp-lambda"):
        assert name in dom, f"{name} not on the UI's blocks page"
    render(
        f"{sandbox.status['prefect_ui_url']}/blocks",
        tmp_path / "shot",
        "--window-size=1400,900",
        f"--screenshot={tmp_path / 'blocks.png'}",
    )
    assert (tmp_path / "blocks.png").stat().st_size > 10_000


def test_catalogue_lists_our_block_types(sandbox, tmp_path) -> None:
    dom = render(f"{sandbox.status['prefect_ui_url']}/blocks/catalog", tmp_path / "profile", "--dump-dom")
    assert "mltp EC2 Compute" in dom
    assert "mltp Lambda Compute" in dom


def test_dataset_profile_shows_in_the_ui(sandbox, tmp_path) -> None:
    from tests.conftest import run_mltp

    path = tmp_path / "ui-flowers.csv"
    path.write_text("petal_width,kind\n0.2,setosa\n1.8,virginica\n1.3,versicolor\n")
    assert run_mltp("datasets", "ingest", str(path), "--target", "kind", env=sandbox.env).returncode == 0
    artifact = sandbox.api(
        "/artifacts/filter", {"artifacts": {"key": {"any_": ["dataset-ui-flowers"]}}, "limit": 1}
    )[0]
    dom = render(
        f"{sandbox.status['prefect_ui_url']}/artifacts/artifact/{artifact['id']}",
        tmp_path / "profile",
        "--dump-dom",
    )
    for text in ("Dataset", "ui-flowers", "petal_width", "classification"):
        assert text in dom, f"{text!r} not on the artifact page"


def test_deployments_page_lists_every_deployment(sandbox, tmp_path) -> None:
    dom = render(f"{sandbox.status['prefect_ui_url']}/deployments", tmp_path / "profile", "--dump-dom")
    from tests.test_deployments import DEPLOYMENTS

    for name in DEPLOYMENTS:
        assert name in dom, f"{name} not on the UI's deployments page"
