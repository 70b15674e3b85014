"""Flow `ingest-dataset`: a file (local or s3://) becomes a versioned, profiled dataset."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.events import emit_event
from prefect_aws import S3Bucket
from pydantic import Field

from blocks.platform import DATASETS, load_block
from flows.parameters import document_parameters
from mltp.dataset_catalog import DEFAULT_MAX_MB
from tasks.datasets import ingest_to_s3, publish_profile

INGESTED_EVENT = "mltp.dataset.ingested"
# The resource label the `train-on-new-dataset` trigger matches: "true" asks for a training run.
AUTO_TRAIN_LABEL = "mltp.auto-train"


@flow(name="ingest-dataset")
@document_parameters
def ingest_dataset(
    source: Annotated[
        str, Field(description="Local path or s3:// URI of a CSV (.csv/.tsv, optionally .gz) or Parquet file")
    ],
    name: Annotated[
        str | None, Field(description="Dataset name; derived from the file name when empty")
    ] = None,
    target: Annotated[str | None, Field(description="Target column for training, if known")] = None,
    max_size_mb: Annotated[int, Field(ge=1, description="Refuse files larger than this")] = DEFAULT_MAX_MB,
    bucket_block: Annotated[str, Field(description="S3 bucket block of the data bucket")] = DATASETS,
    auto_train: Annotated[
        bool, Field(description="Ask the train-on-new-dataset deployment to train the new version")
    ] = False,
    reuse_with_other_target: Annotated[
        bool,
        Field(
            description="Reuse the version holding the same bytes though it was ingested with another "
            "target (the caller trains with its own); otherwise that is refused"
        ),
    ] = False,
) -> dict[str, Any]:
    """Stream a CSV or Parquet file into the data bucket as a new, profiled dataset version."""
    bucket = load_block(S3Bucket, bucket_block)
    other_target = "reuse" if reuse_with_other_target else "refuse"
    manifest = ingest_to_s3(source, name, target, max_size_mb, bucket, other_target)
    publish_profile(manifest)
    if manifest["created"]:  # the same bytes again change nothing, and announce nothing
        announce_dataset(manifest, auto_train)
    return manifest


def announce_dataset(manifest: dict[str, Any], auto_train: bool) -> None:
    """Emit `mltp.dataset.ingested`; with `auto_train`, the train-on-new-dataset deployment trains it."""
    emit_event(
        INGESTED_EVENT,
        resource={
            "prefect.resource.id": f"mltp.dataset.{manifest['name']}",
            "prefect.resource.name": manifest["name"],
            AUTO_TRAIN_LABEL: str(auto_train).lower(),
        },
        payload={
            field: manifest[field]
            for field in (
                "name",
                "version",
                "uri",
                "manifest_uri",
                "rows",
                "bytes",
                "sha256",
                "target",
                "task",
            )
        },
    )
