"""Flow `watch-incoming`: every file dropped under `incoming/` of the data bucket is ingested exactly once.

Run on a schedule (the poll) and on `mltp.incoming.created` events (the push: the S3 forwarder Lambda in
`deployments/aws/`). Overlapping runs and restarts are safe: `mltp.incoming` holds the markers. A
dataset whose target is known is ingested with `auto_train`, which starts `train-on-new-dataset`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from pydantic import Field

from blocks.platform import load_blocks
from flows.ingest import announce_dataset, ingest_dataset
from flows.parameters import document_parameters
from mltp.errors import MltpError
from tasks.incoming import claim_drop, find_drops, finish_drop, previous_target, release_drop

INCOMING_PREFIX = "incoming/"


@flow(name="watch-incoming")
@document_parameters
def watch_incoming(
    prefix: Annotated[
        str, Field(min_length=1, description="Folder of the data bucket where new files land")
    ] = INCOMING_PREFIX,
    targets: Annotated[
        dict[str, str],
        Field(description="Target column per dataset name; otherwise the previous version's target"),
    ] = {},  # noqa: B006 - Prefect copies parameters
    max_files: Annotated[
        int, Field(ge=1, le=1000, description="Files ingested per run at most; the rest wait for the next")
    ] = 20,
    claim_lease_minutes: Annotated[
        float, Field(gt=0, le=1440, description="A claim this old whose run died is taken over")
    ] = 30,
) -> dict[str, Any]:
    """Ingest each new file under the incoming folder once; datasets with a known target get trained."""
    logger = get_run_logger()
    owner = str(get_run_context().flow_run.id)
    blocks = load_blocks()
    prefix = prefix if prefix.endswith("/") else f"{prefix}/"
    report: dict[str, list] = {"ingested": [], "rejected": [], "held_elsewhere": [], "left_for_later": []}
    for drop in find_drops(blocks, prefix):
        if len(report["ingested"]) + len(report["rejected"]) >= max_files:
            report["left_for_later"].append(drop.key)
            continue
        claim = claim_drop(blocks, drop, owner, timedelta(minutes=claim_lease_minutes))
        if claim is None:
            report["held_elsewhere"].append(drop.key)
            continue
        try:
            name = drop.dataset_name(prefix)
            target = targets.get(name) or previous_target(blocks, name)
            manifest = ingest_dataset(
                source=drop.uri, name=name, target=target, auto_train=target is not None
            )
        except MltpError as error:
            if error.exit_code != 2:  # not the file's fault: give it back for the next run
                release_drop(blocks, drop)
                raise
            logger.error("rejected %s: %s", drop.uri, error)
            finish_drop(blocks, drop, {"state": "rejected", "error": str(error), **_stamp(owner)})
            report["rejected"].append({"key": drop.key, "error": str(error)})
            continue
        except BaseException:
            release_drop(blocks, drop)
            raise
        if claim.took_over and not manifest["created"]:  # its first owner may have died before announcing
            announce_dataset(manifest, auto_train=bool(target))
        if not target:
            logger.warning(
                "ingested %s as %s@%s without training: no target known (set `targets` or ingest a "
                "version with --target)",
                drop.uri,
                manifest["name"],
                manifest["version"],
            )
        outcome = {"state": "ingested", "dataset": manifest["name"], "version": manifest["version"]}
        finish_drop(blocks, drop, {**outcome, "created": manifest["created"], **_stamp(owner)})
        report["ingested"].append({"key": drop.key, **outcome, "train": bool(target)})
    logger.info(
        "%d ingested, %d rejected, %d held by another run, %d left for the next run",
        *(len(report[key]) for key in ("ingested", "rejected", "held_elsewhere", "left_for_later")),
    )
    return report


def _stamp(owner: str) -> dict[str, str]:
    return {"flow_run_id": owner, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
