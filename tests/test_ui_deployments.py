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
RUNS_TAB = re.compile(r"/deployments/deployment/[0-9a-f-]{36}\?tab=Runs$")
SUBMISSIONS = 20


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


def species_csv(path: Path) -> Path:
    """Iris with its label as the species' names, in column `species`."""
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


def server_errors(page) -> list[str]:
    """The API's 5xx answers to the UI from now on, as they come."""
    failed: list[str] = []
    page.on("response", lambda answer: answer.status >= 500 and failed.append(describe(answer)))
    return failed


def worker_log(sandbox) -> str:
    return (sandbox.home / "logs" / "worker.log").read_text()[-4000:]


def open_custom_run_form(page, sandbox) -> None:
    """The deployment's page, "Run" -> "Custom run", as a user gets to the form."""
    page.goto(f"{sandbox.status['prefect_ui_url']}/deployments")
    page.locator("a[href*='/deployments/deployment/']", has_text="ingest-and-train").click()
    custom_run_again(page)


def custom_run_again(page) -> None:
    """From the deployment's page (where a submitted form returns), "Run" -> "Custom run" once more."""
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("link", name="Custom run").click()
    wait_for_form(page)


def wait_for_form(page) -> None:
    """The form has loaded once the UI has drawn a run name."""
    from playwright.sync_api import expect

    expect(form_field(page, "Run Name").get_by_role("textbox")).not_to_have_value("")
    expect(form_field(page, "source")).to_be_visible()


def fill_pipeline(page, run_name: str, source: str, target: str, dataset_name: str) -> None:
    """The run's name (ours, unique, finds the run afterwards) and the pipeline's required fields."""
    form_field(page, "Run Name").get_by_role("textbox").fill(run_name)
    form_field(page, "source").get_by_role("textbox").fill(source)
    fill_optional_text(page, "target", target)
    fill_optional_text(page, "dataset_name", dataset_name)


def submitted(page) -> bool:
    """Submit the form: accepted, the UI returns to the deployment's runs and toasts "<name> scheduled to
    start now" (for 5 s, too short to count on on a busy machine: the tests find the run by its name)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page.get_by_role("button", name="Submit").click()
    try:
        page.wait_for_url(RUNS_TAB, timeout=20_000)
    except PlaywrightTimeoutError:
        return False
    return True


def test_custom_run_form_trains_and_registers_a_model(page, sandbox, tmp_path) -> None:
    from playwright.sync_api import expect

    from flows.parameters import Compute
    from mltp import registry
    from mltp.trainer.algorithms import ALGORITHMS

    source = str(species_csv(tmp_path / f"{DATASET}.csv"))
    run_name = f"{DATASET}-{uuid.uuid4().hex[:8]}"

    open_custom_run_form(page, sandbox)
    fill_pipeline(page, run_name, source, "species", DATASET)
    choose(page, "algorithm", "random_forest", "logistic_regression", offered=list(ALGORITHMS))
    choose(page, "compute", "auto", "lambda", offered=list(get_args(get_args(Compute)[0])))
    page.screenshot(path=tmp_path / "form.png")
    assert (tmp_path / "form.png").stat().st_size > 20_000

    failed = server_errors(page)
    assert submitted(page), f"the UI did not accept the form; the API answered it: {failed or 'no 5xx'}"
    assert failed == []
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


@pytest.mark.timeout(600)  # 20 times the form, and a training run in the background, on 2 busy cores
def test_the_form_submitted_20_times_while_a_run_trains_never_fails(page, sandbox, iris_csv) -> None:
    """A user (or a few) submitting the form again and again while a training run writes its states, logs
    and metrics: every submission accepted at once, no 5xx answer to the UI, each run created once."""
    from tests.test_deployments import cancel_and_check_instances_terminated, seed, start_slow_ec2_training

    name = f"ui-busy-{uuid.uuid4().hex[:6]}"
    seed(sandbox, iris_csv, name)
    trainings: list[dict] = []

    def training_under_way() -> None:
        """Submit only while a training run is RUNNING: a new one when the last has ended."""
        last = trainings and sandbox.api(f"/flow_runs/{trainings[-1]['id']}", method="GET")
        if not last or last["state_type"] in FINAL:
            trainings.append(start_slow_ec2_training(sandbox, name))
        run_id = trainings[-1]["id"]
        wait_for(lambda: sandbox.api(f"/flow_runs/{run_id}", method="GET")["state_type"] == "RUNNING", 120)

    failed = server_errors(page)
    names, refused = [f"{name}-{number:02}" for number in range(SUBMISSIONS)], []
    on_the_deployment = False
    try:
        for run_name in names:
            training_under_way()
            if on_the_deployment:  # where the last submission returned: on, as a user does (no reload)
                custom_run_again(page)
            else:
                open_custom_run_form(page, sandbox)
            fill_pipeline(page, run_name, str(iris_csv), "target", name)
            on_the_deployment = submitted(page)
            if not on_the_deployment:
                refused.append(run_name)
        assert (refused, failed) == ([], [])
        created = sandbox.api("/flow_runs/filter", {"flow_runs": {"name": {"any_": names}}})
        assert sorted(run["name"] for run in created) == names
    finally:
        stop_runs_named(sandbox, names)
        running = [
            run
            for run in trainings
            if sandbox.api(f"/flow_runs/{run['id']}", method="GET")["state_type"] not in FINAL
        ]
        cancel_and_check_instances_terminated(sandbox, running)


def stop_runs_named(sandbox, names: list[str]) -> None:
    """Cancel the form's runs still waiting or running (the worker ends those it runs)."""
    runs = sandbox.api("/flow_runs/filter", {"flow_runs": {"name": {"any_": names}}})
    for run in runs:
        if run["state_type"] not in FINAL:
            cancelled = "CANCELLED" if run["state_type"] == "SCHEDULED" else "CANCELLING"
            sandbox.api(f"/flow_runs/{run['id']}/set_state", {"state": {"type": cancelled}, "force": True})
    ids = [run["id"] for run in runs]
    wait_for(
        lambda: all(
            run["state_type"] in FINAL
            for run in sandbox.api("/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
        ),
        timeout=120,
        every=1,
    )
