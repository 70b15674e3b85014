"""Registering a trained model: the version, the champion comparison, the event and the artifact."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.platform import PlatformBlocks
from mltp import __version__, registry
from mltp.dataset_catalog import split_s3_uri
from mltp.evaluation_plots import DrawnEvaluation, Plot, history_plot, markdown_section
from mltp.s3_json import finite, read_json
from tasks.retries import AWS_RETRIES

REGISTERED_EVENT = "mltp.model.registered"


@task(name="metric-history", cache_policy=NO_CACHE, **AWS_RETRIES)
def metric_history(blocks: PlatformBlocks, version: dict[str, Any]) -> Plot | None:
    """The primary metric over the model's latest versions, the champion marked."""
    s3, bucket = blocks.client("s3"), blocks.models.bucket_name
    versions = registry.list_versions(s3, bucket, version["name"], last=registry.HISTORY_VERSIONS)
    champion = registry.aliases(s3, bucket, version["name"]).get(registry.CHAMPION)
    return history_plot([v.as_dict() for v in versions], version["primary_metric"], champion)


def code_version() -> str:
    """The git commit of the source tree this runs from, else the package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}"


@task(name="check-model-name", cache_policy=NO_CACHE, **AWS_RETRIES)
def check_model_name(blocks: PlatformBlocks, name: str, task: str, target: str) -> None:
    """Refuse a run whose model the name cannot hold (another task or target), before any compute."""
    registry.check_holds(blocks.client("s3"), blocks.models.bucket_name, name, task, target)


# No task retries: a retried registration whose first answer was lost would allocate a second version.
@task(name="register-model", cache_policy=NO_CACHE)
def register_model(
    blocks: PlatformBlocks,
    name: str,
    report: dict[str, Any],
    flow_run_id: str,
    flow_run_url: str,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    s3, bucket = blocks.client("s3"), blocks.models.bucket_name
    best = report["best"]
    signature, _ = read_json(s3, *split_s3_uri(best["model_uri"].rsplit("/", 1)[0] + "/signature.json"))
    summary = report.get("summary") or {}
    lineage = {
        "dataset": report["dataset"],
        "run_id": report["run_id"],
        "job_id": best["job_id"],
        "jobs": [job["job_id"] for job in report["jobs"]],
        "params": best["params"],
        "flow_run_id": flow_run_id,
        "flow_run_url": flow_run_url,
        "code_version": code_version(),
        "versions": summary.get("versions", {}),
        "compute": {
            key: report["compute"][key] for key in ("backend", "instance_type", "instances", "reasons")
        },
        "duration_s": report["duration_s"],
        "cost_usd_estimate": report["cost_usd_estimate"],
        "cost_usd_observed": report["cost_usd_observed"],
    }
    version = registry.register_version(
        s3,
        bucket,
        name,
        model_uri=best["model_uri"],
        sha256=best["model_sha256"],
        metrics=best["metrics"],
        primary_metric=report["primary_metric"],
        signature=signature or {},
        lineage=lineage,
        actor=f"flow-run:{flow_run_id}",
        evaluation=evaluation,
    )
    get_run_logger().info("registered %s version %d", name, version.version)
    return version.as_dict()


@task(name="promote-if-better", cache_policy=NO_CACHE)
def promote_if_better(blocks: PlatformBlocks, version: dict[str, Any], flow_run_id: str) -> dict[str, Any]:
    """Move `champion` to the new version when it beats the current one on the primary metric."""
    s3, bucket = blocks.client("s3"), blocks.models.bucket_name
    name = version["name"]
    champion = current_champion(blocks, name)
    promote, reason = registry.promotion(version, champion)
    if not promote:
        get_run_logger().info("not promoted: %s", reason)
        return {"promoted": False, "reason": reason, "champion": champion}
    registry.set_alias(
        s3,
        bucket,
        name,
        registry.CHAMPION,
        version["version"],
        actor=f"flow-run:{flow_run_id}",
        reason=reason,
        expected_version=champion["version"] if champion else None,
        require_expected=True,
    )
    get_run_logger().info("promoted %s v%d to %s: %s", name, version["version"], registry.CHAMPION, reason)
    return {"promoted": True, "reason": reason, "champion": champion}


def current_champion(blocks: PlatformBlocks, name: str) -> dict[str, Any] | None:
    s3, bucket = blocks.client("s3"), blocks.models.bucket_name
    if registry.CHAMPION not in registry.aliases(s3, bucket, name):
        return None
    return registry.get_version(s3, bucket, name, alias=registry.CHAMPION).as_dict()


def announce(
    blocks: PlatformBlocks,
    version: dict[str, Any],
    champion: dict[str, Any] | None,
    promotion: dict[str, Any] | None,
    evaluation: DrawnEvaluation,
) -> None:
    """The `mltp.model.registered` event and the model's markdown artifact (its plots and the metric over
    its versions, the champion marked)."""
    name = version["name"]
    emit_event(
        REGISTERED_EVENT,
        resource={"prefect.resource.id": f"mltp.model.{name}", "prefect.resource.name": name},
        payload=finite(
            {
                "name": name,
                "version": version["version"],
                "model_uri": version["model_uri"],
                "primary_metric": version["primary_metric"],
                "metrics": version["metrics"],
                "dataset": version["lineage"]["dataset"],
                "promoted": bool(promotion and promotion["promoted"]),
            }
        ),
    )
    lineage = version["lineage"]
    dataset = lineage["dataset"]
    held = champion["metrics"] if champion else {}
    rows = [
        f"| {metric} | {registry.shown_metric(value)} | "
        f"{registry.shown_metric(held[metric]) if metric in held else ''} |"
        for metric, value in version["metrics"].items()
    ]
    champion_header = f"champion v{champion['version']}" if champion else "champion (none yet)"
    lines = [
        f"# {name} version {version['version']}",
        "",
        f"Approval: {version['approval']}"
        + (
            f"; champion: {'moved here' if promotion['promoted'] else 'kept'} ({promotion['reason']})"
            if promotion
            else ""
        ),
        "",
        f"| metric | v{version['version']} | {champion_header} |",
        "|---|---|---|",
        *rows,
        "",
        "## Lineage",
        "",
        f"- dataset {dataset['name']}@{dataset['version']} (sha256 {dataset['sha256'][:12]}...)",
        f"- job {lineage['job_id']} with {lineage['params']}, run {lineage['run_id']}",
        f"- compute {lineage['compute']['backend']}: {'; '.join(lineage['compute']['reasons'])}",
        f"- flow run [{lineage['flow_run_id']}]({lineage['flow_run_url']}), code {lineage['code_version']}",
        f"- {lineage['duration_s']:.0f} s, estimated ${lineage['cost_usd_estimate']:.4f}",
        f"- model `{version['model_uri']}` sha256 {version['sha256'][:12]}...",
        "",
        f"To share it as one HTML page: `mltp models report {name}:{version['version']} -o {name}.html`",
        "",
        *markdown_section(evaluation, [plot for plot in [metric_history(blocks, version)] if plot]),
    ]
    create_markdown_artifact(
        "\n".join(lines), key=f"model-{name}", description=f"Model {name} v{version['version']}"
    )
