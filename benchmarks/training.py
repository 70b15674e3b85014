"""Our trainer on the sandbox, as the trainer suite drives it: buckets, a job per run, and what a job
leaves behind (its metrics summary and model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import skops.io as sio

from mltp import datasets
from mltp.aws import ClientFactory, botocore_config
from mltp.jobs import build_job_spec, write_job
from mltp.s3_json import read_json

DATA_BUCKET, MODELS_BUCKET = "bench-data", "bench-models"
SEED = 0


def sandbox_clients(endpoint: str) -> ClientFactory:
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    return lambda service: session.client(service, endpoint_url=endpoint, config=botocore_config())


def create_buckets(clients: ClientFactory) -> None:
    for bucket in (DATA_BUCKET, MODELS_BUCKET):
        clients("s3").create_bucket(Bucket=bucket)


def ingest(clients: ClientFactory, path: Path, target: str, name: str | None = None) -> dict[str, Any]:
    """The dataset's manifest, once `path` is in the data bucket."""
    return datasets.ingest(clients, DATA_BUCKET, str(path), name=name, target=target).manifest


def new_job(clients: ClientFactory, manifest: dict[str, Any], algorithm: str, task: str | None = None) -> str:
    """A fresh job (its own id) with default hyperparameters and a 20% holdout; returns its job.json URI."""
    spec = build_job_spec(
        manifest, algorithm=algorithm, candidates=[{}], models_bucket=MODELS_BUCKET, task=task, seed=SEED
    )
    return write_job(clients, spec)


def job_outputs(clients: ClientFactory, job_uri: str) -> tuple[dict[str, Any], Any]:
    """The metrics summary a finished job wrote, and its fitted model."""
    bucket, _, key = job_uri.removeprefix("s3://").partition("/")
    prefix = key.rsplit("/", 1)[0]
    summary, _ = read_json(clients("s3"), bucket, f"{prefix}/metrics.json")
    if summary is None:
        raise RuntimeError(f"job {job_uri} left no metrics.json")
    data = clients("s3").get_object(Bucket=bucket, Key=f"{prefix}/model.skops")["Body"].read()
    return summary, sio.loads(data, trusted=sio.get_untrusted_types(data=data))  # our own model: trusted
