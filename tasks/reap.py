"""Prefect task of `reap-orphans`: `mltp.reaper.reap` with retries, fed the flow runs' states by Prefect."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.platform import PlatformBlocks
from mltp.reaper import ReapReport, reap
from tasks.retries import AWS_RETRIES

FLOW_RUNS_PER_CALL = 200  # the Prefect server's default page limit; it refuses a larger `limit`


def flow_run_states(flow_run_ids: list[str]) -> dict[str, str | None]:
    """Flow run id -> state type (`RUNNING`, `COMPLETED`, ...); None for an id Prefect does not know.

    One API call per 200 ids (one call in practice): a page cut short would make live runs look unknown.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    parsed = {value: _as_uuid(value) for value in flow_run_ids}
    valid = sorted({flow_run_id for flow_run_id in parsed.values() if flow_run_id}, key=str)
    found: dict[uuid.UUID, str] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(valid), FLOW_RUNS_PER_CALL):
            chunk = valid[start : start + FLOW_RUNS_PER_CALL]
            for flow_run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            ):
                # a known run without a state is not "unknown": the run record decides for it
                found[flow_run.id] = flow_run.state_type.value if flow_run.state_type else "UNSET"
    return {value: found.get(flow_run_id) for value, flow_run_id in parsed.items()}


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@task(name="reap-instances", cache_policy=NO_CACHE, **AWS_RETRIES)
def reap_instances(blocks: PlatformBlocks, dry_run: bool, stale_after: timedelta) -> ReapReport:
    """Retrying is safe: an instance terminated by a failed attempt is no longer listed by the next."""
    return reap(
        blocks.client,
        blocks.models.bucket_name,
        flow_run_states,
        dry_run=dry_run,
        stale_after=stale_after,
    )
