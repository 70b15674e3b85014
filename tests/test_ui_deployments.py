"""The `ingest-and-train` deployment's form in the Prefect UI, driven in real headless Chromium.

A user opens the deployment, picks "Run" -> "Custom run", fills the form (a local CSV, its target column,
an algorithm and a compute from their dropdowns) and submits; the worker runs the flow to the end and a
model is registered. Playwright drives Debian's chromium: no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, get_args

import pytest

from tests.conftest import wait_for
from tests.test_ui import CHROMIUM
from tests.test_ui import FLAGS as UI_FLAGS

pytestmark = [pytest.mark.servers, pytest.mark.browser]

# test_ui.py's flags for a closed network; playwright runs headless itself, in real time
FLAGS = [flag for flag in UI_FLAGS if not flag.startswith(("--headless", "--virtual-time-budget"))]
DATASET = "ui-form-iris"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def missing(what: str, how: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; {how}")
    pytest.skip(f"{what} is not installed ({how})")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None:
        missing("chromium", ".ci/run installs it with apt-get")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "make install")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
    with contextlib.suppress(Exception):  # where the browser was when the test ended, pass or fail
        opened.screenshot(path=tmp_path / "last.png")
    context.close()


def iris_csv(path: Path) -> Path:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = iris.target.map(dict(enumerate(iris.target_names)))
    frame.to_csv(path, index=False)
    return path


def form_field(page, name: str):
    """One field of the form with its label ("name" or "name (Optional)") and inputs. The UI's <label>s
    point at ids that no input has, so `get_by_label` finds nothing: match the label's text instead."""
    label = page.locator(".p-label__label").filter(
        has_text=re.compile(rf"^{re.escape(name)}( \(Optional\))?$")
    )
    return page.locator(".p-label").filter(has=label)


def fill_optional_text(page, name: str, value: str) -> None:
    """An optional string starts as None: switch it to `str`, then type."""
    field = form_field(page, name)
    field.get_by_role("button", name="str", exact=True).click()
    field.get_by_role("textbox").fill(value)


def choose(page, name: str, current: str, value: str, offered: list[str]) -> None:
    """Open the dropdown of parameter `name` (showing `current`), check it offers exactly `offered`, and
    pick `value`.

    The dropdown is opened from the keyboard: in this UI build a mouse click on the select's text opens it
    and closes it again at once (the button and its wrapper both toggle it; the chevron alone works).
    """
    from playwright.sync_api import expect

    select = form_field(page, name).get_by_role("button", name=current, exact=True)
    select.focus()
    select.press("ArrowDown")
    listbox = page.get_by_role("listbox")
    expect(listbox.get_by_role("option")).to_have_text(offered)
    listbox.get_by_role("option", name=value, exact=True).click()
    expect(listbox).to_be_hidden()
    expect(form_field(page, name).get_by_role("button", name=value, exact=True)).to_be_visible()


def describe(answer) -> str:
    """A failed API response, e.g. `503 POST .../create_flow_run: {"exception_message": ...}`."""
    return f"{answer.status} {answer.request.method} {answer.url}: {answer.text()[:300]}"


def worker_log(sandbox) -> str:
    return (sandbox.home / "logs" / "worker.log").read_text()[-4000:]


def test_custom_run_form_trains_and_registers_a_model(page, sandbox, tmp_path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    from flows.parameters import Compute
    from mltp import registry
    from mltp.trainer.algorithms import ALGORITHMS

    source = str(iris_csv(tmp_path / f"{DATASET}.csv"))
    run_name = f"{DATASET}-{uuid.uuid4().hex[:8]}"

    page.goto(f"{sandbox.status['prefect_ui_url']}/deployments")
    page.locator("a[href*='/deployments/deployment/']", has_text="ingest-and-train").click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("link", name="Custom run").click()

    # The form has loaded once the UI has drawn a run name; ours, unique, finds the run afterwards.
    name_input = form_field(page, "Run Name").get_by_role("textbox")
    expect(name_input).not_to_have_value("")
    expect(form_field(page, "source")).to_be_visible()
    name_input.fill(run_name)
    form_field(page, "source").get_by_role("textbox").fill(source)
    fill_optional_text(page, "target", "species")
    fill_optional_text(page, "dataset_name", DATASET)
    choose(page, "algorithm", "random_forest", "logistic_regression", offered=list(ALGORITHMS))
    choose(page, "compute", "auto", "lambda", offered=list(get_args(get_args(Compute)[0])))
    page.screenshot(path=tmp_path / "form.png")
    assert (tmp_path / "form.png").stat().st_size > 20_000

    failed = []  # the API's 5xx answers to the UI, for the message if the form is not accepted
    page.on("response", lambda answer: answer.status >= 500 and failed.append(describe(answer)))
    # Accepted, the UI returns to the deployment and toasts "<name> scheduled to start now" with a link
    # to the run; the toast lasts 5 s, too short to count on on a busy machine: find the run by its name.
    # The sandbox's SQLite-backed server sometimes answers the form's create_flow_run with 503 ("database
    # is locked"; nothing is created); Prefect's UI does not retry, so a user submits again, as does this.
    for attempt in range(3):
        page.get_by_role("button", name="Submit").click()
        try:
            page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]{36}\?tab=Runs$"), timeout=20_000)
            break
        except PlaywrightTimeoutError:
            if not any(answer.startswith("503 POST") for answer in failed) or attempt == 2:
                pytest.fail(f"the UI did not accept the form; the API answered it: {failed or 'no 5xx'}")
    if failed:
        warnings.warn(f"the form was submitted again after: {failed}", stacklevel=1)
    deployment_id = page.url.split("/")[-1].split("?")[0]
    named = {"flow_runs": {"name": {"any_": [run_name]}}}
    created = wait_for(lambda: sandbox.api("/flow_runs/filter", named), timeout=30)
    assert [(run["deployment_id"], run["name"]) for run in created] == [(deployment_id, run_name)]
    run_id = created[0]["id"]

    def finished() -> dict | None:
        run = sandbox.api(f"/flow_runs/{run_id}", method="GET")
        return run if run["state"]["type"] in FINAL else None

    try:
        run = wait_for(finished, timeout=180, every=1)
    except AssertionError:
        pytest.fail(f"flow run {run_id} not finished within 3 minutes\n{worker_log(sandbox)}")
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{worker_log(sandbox)}"
    assert {key: run["parameters"].get(key) for key in ("source", "target", "dataset_name")} == {
        "source": source,
        "target": "species",
        "dataset_name": DATASET,
    }
    assert (run["parameters"]["algorithm"], run["parameters"]["compute"]) == ("logistic_regression", "lambda")
    page.goto(f"{sandbox.status['prefect_ui_url']}/runs/flow-run/{run_id}")
    expect(page.get_by_text(run_name).first).to_be_visible()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()

    # The model registered is this run's: its train-model subflow fitted the algorithm chosen, on Lambda.
    children = sandbox.api("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
    trained = {child["id"]: child["parameters"] for child in children}
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    assert DATASET in {entry["name"] for entry in registry.list_models(s3, bucket)}
    fitted, version = registry.load_model(s3, bucket, DATASET)
    assert type(fitted.steps[-1][1]).__name__ == "LogisticRegression"
    assert version.lineage["flow_run_id"] in trained, "the latest version is not this run's"
    assert trained[version.lineage["flow_run_id"]]["algorithm"] == "logistic_regression"
    assert version.lineage["compute"]["backend"] == "lambda"
    assert (version.lineage["dataset"]["name"], version.lineage["dataset"]["rows"]) == (DATASET, 150)
    assert version.signature["target"]["name"] == "species"
