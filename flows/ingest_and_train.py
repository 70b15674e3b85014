"""Flow `ingest-and-train`: one run from a file to a registered model (the Prefect UI form's flow).

Ingesting the same bytes again reuses the existing version, so re-running the form trains again on the
same data. The ingest announces the dataset without asking for automatic training: this run trains it.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from flows.ingest import ingest_dataset
from flows.parameters import (
    Algorithm,
    Compute,
    Folds,
    Grid,
    Holdout,
    Hyperparameters,
    MaxRuntimeMinutes,
    MinMetric,
    ModelName,
    Monitoring,
    PrimaryMetric,
    Promote,
    RegisterBest,
    Seed,
    Target,
    Task,
    document_parameters,
)
from flows.train import train_model
from mltp.dataset_catalog import DEFAULT_MAX_MB
from mltp.monitor import MonitorSettings
from mltp.registry import validate_model_name


@flow(name="ingest-and-train")
@document_parameters
def ingest_and_train(
    source: Annotated[
        str, Field(description="Local path or s3:// URI of a CSV (.csv/.tsv, optionally .gz) or Parquet file")
    ],
    target: Target = None,
    algorithm: Algorithm = "random_forest",
    compute: Compute = "auto",
    dataset_name: Annotated[
        str | None, Field(description="Dataset name; derived from the file name when empty")
    ] = None,
    max_size_mb: Annotated[int, Field(ge=1, description="Refuse files larger than this")] = DEFAULT_MAX_MB,
    task: Task = None,
    hyperparameters: Hyperparameters = {},  # noqa: B006 - Prefect copies parameters
    grid: Grid = {},  # noqa: B006
    max_runtime_minutes: MaxRuntimeMinutes = 60,
    model_name: ModelName = None,
    primary_metric: PrimaryMetric = None,
    folds: Folds = None,
    holdout: Holdout = 0.2,
    seed: Seed = 0,
    monitoring: Monitoring = MonitorSettings(),
    register_best: RegisterBest = True,
    min_metric: MinMetric = None,
    promote: Promote = False,
) -> dict[str, Any]:
    """Ingest a dataset file (or reuse the version holding the same bytes), then train and register."""
    if model_name:  # a typo in it is refused before the file is read, not after it is ingested
        validate_model_name(model_name)
    manifest = ingest_dataset(  # the bytes may be a version of another target: training uses this one
        source=source, name=dataset_name, target=target, max_size_mb=max_size_mb, reuse_with_other_target=True
    )
    report = train_model(
        dataset=manifest["name"],
        dataset_version=manifest["version"],
        algorithm=algorithm,
        target=target,
        task=task,
        hyperparameters=hyperparameters,
        grid=grid,
        compute=compute,
        max_runtime_minutes=max_runtime_minutes,
        model_name=model_name,
        primary_metric=primary_metric,
        folds=folds,
        holdout=holdout,
        seed=seed,
        monitoring=monitoring,
        register_best=register_best,
        min_metric=min_metric,
        promote=promote,
    )
    return {"dataset": {"name": manifest["name"], "version": manifest["version"]}, **report}
