"""`mltp demo`: the whole platform on the sandbox in one command.

Starts the sandbox if it is not running, ingests a real public dataset (scikit-learn's breast cancer,
which the planner sends to Lambda) and a deterministic generated one of 120,000 rows (which goes to EC2,
its small grid split over three instances), trains and registers both, promotes the first, predicts a
few rows with the registered champion, and ends with a summary table and the Prefect UI's address.
Running it again reuses both datasets (same bytes, same versions) and registers new model versions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer

from mltp.cli.output import console, emit_json, quiet_prefect_console
from mltp.cli.runlog import echo_run_log
from mltp.home import mltp_home

GENERATED_ROWS = 120_000


def _breast_cancer(folder: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    path = folder / "breast-cancer.csv"
    load_breast_cancer(as_frame=True).frame.rename(columns={"target": "malignant"}).to_csv(path, index=False)
    return path


def _generated(folder: Path) -> Path:
    """Customer churn with a known signal; the same bytes on every run (seeded, fixed float format)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2026)
    rows = GENERATED_ROWS
    tenure = rng.integers(1, 72, rows)
    charges = rng.normal(65, 20, rows).round(2)
    calls = rng.poisson(1.5, rows)
    plan = rng.choice(["basic", "plus", "premium"], rows, p=[0.5, 0.3, 0.2])
    risk = -0.04 * tenure + 0.03 * (charges - 65) + 0.6 * calls + np.where(plan == "basic", 0.5, 0.0)
    churned = (risk + rng.normal(0, 1, rows) > 0.3).astype(int)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "plan": plan,
            "churned": churned,
        }
    )
    path = folder / "demo-churn.csv"
    frame.to_csv(path, index=False, float_format="%.2f")
    return path


JOBS = [
    {
        "file": _breast_cancer,
        "name": "breast-cancer",
        "target": "malignant",
        "algorithm": "random_forest",
        "hyperparameters": {"n_estimators": 100},
        "grid": {},
        "promote": True,
    },
    {
        "file": _generated,
        "name": "demo-churn",
        "target": "churned",
        "algorithm": "hist_gradient_boosting",
        "hyperparameters": {},
        "grid": {"max_iter": [20, 40, 60]},
        "promote": False,
    },
]


def demo(json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Run the main job on the sandbox: ingest, plan, train on Lambda and EC2, register, predict."""
    from mltp.prefect_api import activated
    from mltp.sandbox.lifecycle import Sandbox

    quiet_prefect_console()
    say = (lambda text: None) if json else console.print
    sandbox = Sandbox(mltp_home())
    endpoints = sandbox.running_endpoints()
    if endpoints is None:
        say("starting the sandbox (moto, the fleet, Prefect)...")
        status, _ = sandbox.up(None, None)
        endpoints = status.endpoints
    with activated(endpoints.prefect_api_url), tempfile.TemporaryDirectory() as folder:
        from prefect.events.worker import EventsWorker

        from flows.ingest import ingest_dataset
        from flows.train import train_model

        rows = []
        for job in JOBS:
            path = job["file"](Path(folder))
            manifest = ingest_dataset(source=str(path), name=job["name"], target=job["target"])
            say(
                f"dataset {manifest['name']}@{manifest['version']}: {manifest['rows']:,} rows"
                + ("" if manifest["created"] else " (already ingested: same bytes, same version)")
            )
            say(f"training {job['algorithm']} on {manifest['name']}...")
            with echo_run_log(enabled=not json):
                report = train_model(
                    dataset=manifest["name"],
                    algorithm=job["algorithm"],
                    hyperparameters=job["hyperparameters"],
                    grid=job["grid"],
                    promote=job["promote"],
                )
            rows.append(_summary_row(manifest, report))
        prediction = _predict_with_champion(JOBS[0]["name"], Path(folder) / "breast-cancer.csv")
        EventsWorker.drain_all(timeout=10)
    ui = endpoints.prefect_ui_url
    if json:
        emit_json({"runs": rows, "prediction": prediction, "prefect_ui_url": ui})
        return
    _print_summary(rows, prediction, ui)


def _summary_row(manifest: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    compute = report["compute"]
    where = compute["backend"] + (
        f" ({compute['instances']} x {compute['instance_type']})" if compute["backend"] == "ec2" else ""
    )
    metric = report["primary_metric"]
    return {
        "dataset": manifest["name"],
        "rows": manifest["rows"],
        "compute": where,
        "why": compute["reasons"][0],
        "duration_s": report["duration_s"],
        "metric": metric,
        "value": report["metrics"][metric],
        "model": report["model"],
        "version": report["version"],
        "promoted": report["promoted"],
    }


def _predict_with_champion(name: str, csv: Path) -> dict[str, Any]:
    from blocks.platform import load_blocks
    from mltp.predict import predict_registered, read_input

    blocks = load_blocks()
    s3, bucket = blocks.client("s3"), blocks.models.bucket_name
    prediction = predict_registered(s3, bucket, f"{name}@champion", read_input(csv))  # the target is ignored
    sample = prediction.result.sample(5, random_state=7)  # both classes, the same rows every run
    return {
        "model": f"{name}@champion (v{prediction.version.version})",
        "name": name,
        "rows": len(sample),
        "predicted": [int(value) for value in sample["prediction"]],
        "actual": [int(value) for value in sample["malignant"]],
    }


def _print_summary(rows: list[dict[str, Any]], prediction: dict[str, Any], ui: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mltp demo")
    for column in ("dataset", "rows", "compute and why", "duration", "metric", "model"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["dataset"],
            f"{row['rows']:,}",
            f"{row['compute']}: {row['why']}",
            f"{row['duration_s']:.0f} s",
            f"{row['metric']} {row['value']:.3f}",
            f"{row['model']} v{row['version']}" + (" (champion)" if row["promoted"] else ""),
        )
    # Piped or logged output gets room for the reasons instead of rich's 80-column default.
    (console if console.is_terminal else Console(highlight=False, width=160)).print(table)
    console.print(
        f"{prediction['model']} on {prediction['rows']} rows: predicted {prediction['predicted']}, "
        f"actual {prediction['actual']}"
    )
    console.print(f"Prefect UI (runs, artifacts with the evaluation plots, blocks): {ui}")
    console.print(
        f"a model card to share: .venv/bin/mltp models report {prediction['name']}@champion "
        f"-o {prediction['name']}.html"
    )
