"""Flow `reap-orphans`: terminate the EC2 instances whose training flow run can no longer stop them.

The last of three layers (the train-model flow's own cleanup, its hooks, this); the rules are in
`mltp.reaper`. Safe to run at any time and from anywhere: a watched run's instances are left alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from blocks.platform import load_blocks
from flows.parameters import document_parameters
from mltp.reaper import ReapReport
from tasks.reap import reap_instances

ARTIFACT_KEY = "reap-orphans"


@flow(name="reap-orphans")
@document_parameters
def reap_orphans(
    dry_run: Annotated[bool, Field(description="Only report the orphans; terminate nothing")] = False,
    stale_after_minutes: Annotated[
        float,
        Field(
            gt=0,
            le=10080,
            description="A run unwatched this long (or an instance this old without a run record) is "
            "abandoned; keep it above the training flow's poll interval",
        ),
    ] = 10,
) -> dict[str, Any]:
    """Terminate the EC2 instances no training run watches any more."""
    logger = get_run_logger()
    report = reap_instances(load_blocks(), dry_run, timedelta(minutes=stale_after_minutes))
    action = "would terminate" if dry_run else "terminating"
    for orphan in report.orphans:
        logger.warning("%s %s (job %s): %s", action, orphan.instance_id, orphan.job_id, orphan.reason)
    logger.info(
        "checked %d instances: %d orphaned, %d terminated, %d left alone",
        report.checked,
        len(report.orphans),
        len(report.terminated),
        report.checked - len(report.orphans),
    )
    create_markdown_artifact(_markdown(report), key=ARTIFACT_KEY, description="Orphaned EC2 instances")
    return report.as_dict()


def _markdown(report: ReapReport) -> str:
    mode = " (dry run: nothing terminated)" if report.dry_run else ""
    lines = [
        f"# Orphaned instances{mode}",
        "",
        f"Checked {report.checked} instances, {len(report.orphans)} orphaned, "
        f"{len(report.terminated)} terminated.",
    ]
    if report.orphans:
        terminated = set(report.terminated)
        lines += [
            "",
            "| instance | job | flow run | launched | terminated | reason |",
            "|---|---|---|---|---|---|",
            *[
                f"| {orphan.instance_id} | {orphan.job_id} | {orphan.flow_run_id or ''} | "
                f"{orphan.launched_at:%Y-%m-%d %H:%M} | "
                f"{'yes' if orphan.instance_id in terminated else 'no'} | {orphan.reason} |"
                for orphan in report.orphans
            ],
        ]
    return "\n".join(lines)
