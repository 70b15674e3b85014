"""The evaluation plots where users look for them, through the real servers: a classification and a
regression model trained in the sandbox through the CLI, their training report and model artifact opened
in the Prefect UI in headless Chromium, and `mltp models report` cards opened with the network off."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from sklearn import datasets as toy

from mltp import registry
from tests import test_ui_deployments
from tests.conftest import run_mltp
from tests.test_evaluation_plots import (
    CARD_SECTIONS,
    CLASSIFICATION_PLOTS,
    REGRESSION_PLOTS,
    card_images,
    parse_card,
)

pytestmark = [pytest.mark.servers, pytest.mark.browser]

browser = test_ui_deployments.browser  # the fixture: the module's Chromium
EACH_TASK = pytest.mark.parametrize(  # the primary metric each task defaults to
    ("task", "plots", "metric"),
    [("classification", CLASSIFICATION_PLOTS, "accuracy"), ("regression", REGRESSION_PLOTS, "r2")],
)
LOADED = "document.images.length >= {count} && Array.from(document.images).every(i => i.complete)"


def ok(sandbox, *args: str) -> str:
    result = run_mltp(*args, env=sandbox.env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def trained(sandbox, tmp_path_factory) -> dict[str, dict]:
    """Two models, each trained twice (a grid, then the champion's metric history has two points):
    classification on a holdout, regression on out-of-fold predictions."""
    folder, token = tmp_path_factory.mktemp("pictures"), uuid.uuid4().hex[:6]
    runs = {
        "classification": (toy.load_iris, ["--algorithm", "random_forest", "--grid", "max_depth=2,4"]),
        "regression": (toy.load_diabetes, ["--algorithm", "ridge", "--grid", "alpha=0.1,10", "--folds", "3"]),
    }
    models = {}
    for task, (load, options) in runs.items():
        dataset = f"pictures-{task[:5]}-{token}"
        path = folder / f"{dataset}.csv"
        load(as_frame=True).frame.to_csv(path, index=False)
        ok(sandbox, "datasets", "ingest", str(path), "--target", "target")
        reports = [
            json.loads(
                ok(
                    sandbox,
                    "train",
                    "--dataset",
                    dataset,
                    *options,
                    "--compute",
                    "local",
                    "--promote",
                    "--json",
                )
            )
            for _ in range(2)
        ]
        models[task] = {"name": reports[-1]["model"]}
    return models


def artifact_page(sandbox, browser, key: str, expected: list[str], tmp_path: Path) -> list[list]:
    """The newest artifact under `key` opened in the UI: each image's alt text and decoded size."""
    [artifact] = sandbox.api(
        "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    )
    sources = re.findall(r"!\[[^\]]*\]\(([^)]{0,40})", artifact["data"])
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources), sources
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{sandbox.status['prefect_ui_url']}/artifacts/artifact/{artifact['id']}")
        page.wait_for_function(LOADED.format(count=len(expected)), timeout=60_000)
        page.screenshot(path=tmp_path / f"{key}.png")
        return page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
    finally:
        context.close()


@EACH_TASK
def test_the_training_report_and_the_model_artifact_show_their_plots(
    sandbox, browser, trained, task, plots, metric, tmp_path
) -> None:
    name = trained[task]["name"]
    expected = {f"training-{name}": plots, f"model-{name}": [*plots, f"{metric} by version"]}
    for key, titles in expected.items():
        images = artifact_page(sandbox, browser, key, titles, tmp_path)
        assert [alt for alt, _, _ in images if alt in titles] == titles, images
        assert all(width > 300 and height > 200 for alt, width, height in images if alt in titles), images


@EACH_TASK
def test_the_card_has_every_section_and_opens_offline(
    sandbox, browser, trained, task, plots, metric, tmp_path
) -> None:
    name = trained[task]["name"]
    card_path = tmp_path / "card.html"
    printed = ok(sandbox, "models", "report", f"{name}@champion", "-o", str(card_path))
    assert str(card_path) in printed
    html = card_path.read_text()
    parser = parse_card(html)
    assert parser.sections == list(CARD_SECTIONS) and parser.external == []
    assert list(card_images(parse_card(html))) == [*plots, f"{metric} by version"]

    context = browser.new_context(offline=True)
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    try:
        page.goto(card_path.as_uri())
        page.wait_for_function(LOADED.format(count=len(plots) + 1), timeout=30_000)
        sizes = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    finally:
        context.close()
    assert sizes and all(width > 300 for width in sizes)
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []

    as_data = json.loads(ok(sandbox, "models", "report", f"{name}@champion", "--json"))
    assert as_data["name"] == name and as_data["evaluation"]["task"] == task
    assert as_data["dataset"]["profile"]["columns"] and as_data["signature"]["inputs"]
    assert {"champion", "metrics", "lineage", "history", "events"} <= set(as_data)
    assert as_data["lineage"]["run_id"] in html and as_data["dataset"]["sha256"] in html


def test_a_version_registered_without_evaluation_gets_a_card_and_a_note(sandbox, trained, tmp_path) -> None:
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    newest = registry.get_version(s3, bucket, trained["classification"]["name"])
    old = registry.register_version(  # as registrations before evaluation.json did
        s3,
        bucket,
        f"pictures-old-{uuid.uuid4().hex[:6]}",
        model_uri=newest.model_uri,
        sha256=newest.sha256,
        metrics=newest.metrics,
        primary_metric=newest.primary_metric,
        signature=newest.signature,
        lineage={"dataset": newest.lineage["dataset"], "job_ids": ["old-job"]},
        actor="test:pictures",
    )
    card_path = tmp_path / "old.html"
    ok(sandbox, "models", "report", old.name, "-o", str(card_path))
    html = card_path.read_text()
    assert parse_card(html).sections == list(CARD_SECTIONS)
    assert card_images(parse_card(html)) == {} and "trained before the trainer wrote evaluation.json" in html


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no-such-model", "no model named 'no-such-model'"),
        ("{name}:99", "has no version 99"),
        ("{name}@staging", "has no alias 'staging'"),
        ("{name}:0", "must be a positive whole number"),
        ("Bad Name!", "invalid model name"),
        ("{name}:1@champion", "not both"),
    ],
)
def test_bad_references_are_one_line_errors_and_write_nothing(
    sandbox, trained, reference, message, tmp_path
) -> None:
    card_path = tmp_path / "card.html"
    result = run_mltp(
        "models",
        "report",
        reference.format(name=trained["classification"]["name"]),
        "-o",
        str(card_path),
        env=sandbox.env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_does_not_exist_is_refused_before_connecting(sandbox, tmp_path) -> None:
    result = run_mltp(
        "models", "report", "anything", "-o", str(tmp_path / "no" / "card.html"), env=sandbox.env
    )
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
