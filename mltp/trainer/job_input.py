"""A job's spec and training data, read on a thread of their own from the moment the trainer starts.

The download and the CSV parse run in C (sockets, pyarrow's threads) while the interpreter imports
scikit-learn and skops, about a second each on a fresh process: nothing here imports scikit-learn, so
`python -m mltp.trainer` starts the read first and imports the rest of the trainer meanwhile.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import pandas as pd
from pydantic import ValidationError

from mltp import datasets
from mltp.aws import ClientFactory
from mltp.dataset_catalog import split_s3_uri
from mltp.model_inputs import as_model_inputs
from mltp.s3_json import read_json
from mltp.trainer.errors import TrainingInputError
from mltp.trainer.spec import JobSpec


@dataclass
class TrainingData:
    manifest: dict
    X: pd.DataFrame
    y: pd.Series
    dropped_missing_target: int
    read_s: float  # on the reading thread, from the manifest's request to the frame


@dataclass
class JobInput:
    """Futures: `spec` resolves first (the heartbeat starts with it), `data` when the frame is ready. A
    failure to read either is raised by `result()` where the trainer waits for it."""

    spec: Future[JobSpec] = field(default_factory=Future)
    data: Future[TrainingData] = field(default_factory=Future)


def start_reading(clients: ClientFactory, job_uri: str) -> JobInput:
    job = JobInput()
    threading.Thread(target=_read, args=(clients, job_uri, job), name="job-input", daemon=True).start()
    return job


def _read(clients: ClientFactory, job_uri: str, job: JobInput) -> None:
    for future, read in (
        (job.spec, lambda: load_spec(clients, job_uri)),
        (job.data, lambda: load_training_data(clients, job.spec.result())),
    ):
        try:
            future.set_result(read())
        except BaseException as error:  # the trainer raises it where it waits, and writes its status
            future.set_exception(error)
            if future is job.spec:
                job.data.set_exception(error)
            return


def load_spec(clients: ClientFactory, job_uri: str) -> JobSpec:
    bucket, key = split_s3_uri(job_uri)
    document, _ = read_json(clients("s3"), bucket, key)
    if document is None:
        raise TrainingInputError(f"no job spec at {job_uri}")
    try:
        return JobSpec.model_validate(document)
    except ValidationError as error:
        raise TrainingInputError(f"job spec {job_uri} is invalid: {error.errors()[0]['msg']}") from error


def load_training_data(clients: ClientFactory, spec: JobSpec) -> TrainingData:
    """Features and target, rows with a missing target dropped and counted."""
    started = time.monotonic()
    bucket, key = split_s3_uri(spec.dataset_manifest_uri)
    manifest, _ = read_json(clients("s3"), bucket, key)
    if manifest is None:
        raise TrainingInputError(f"no dataset manifest at {spec.dataset_manifest_uri}")
    frame = datasets.read_dataframe(clients, bucket, manifest["name"], manifest["version"])
    if spec.target not in frame.columns:
        raise TrainingInputError(f"target {spec.target!r} is not a column of {manifest['name']}")
    missing = frame[spec.target].isna()
    if missing.any():  # filtering copies the whole frame: only when there is something to drop
        frame = frame.loc[~missing]
    if frame.empty:
        raise TrainingInputError(f"target {spec.target!r} is empty in every row of {manifest['name']}")
    y = frame.pop(spec.target)
    check_target(y, spec.task, spec.target)
    types = {column["name"]: column["type"] for column in manifest["columns"]}
    X = as_model_inputs(frame, types)
    return TrainingData(manifest, X, y, int(missing.sum()), round(time.monotonic() - started, 3))


def check_target(y: pd.Series, task: str, name: str) -> None:
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise TrainingInputError(f"regression target {name!r} is not numeric ({y.dtype}): use classification")
    if task == "classification" and y.nunique() < 2:
        raise TrainingInputError(f"classification target {name!r} has a single class ({y.iloc[0]!r})")
    if task == "regression" and y.nunique() < 2:
        raise TrainingInputError(
            f"regression target {name!r} is {float(y.iloc[0]):g} in every row: there is nothing to learn"
        )
