"""A model version's card as data: everything a colleague needs to judge it without the CLI.

The version, its approval and aliases, its metrics beside the champion's, the dataset it learnt from (with
the profile taken at ingest), its signature, its lineage, the trainer's evaluation data and the primary
metric over the model's versions. `mltp.model_card_html` renders it as one self-contained page.
"""

from __future__ import annotations

from typing import Any

from mltp import registry
from mltp.aws import ClientFactory
from mltp.errors import MltpError
from mltp.evaluation_plots import evaluation_note


def build_card(
    s3, models_bucket: str, data_clients: ClientFactory, data_bucket: str, reference: str
) -> dict[str, Any]:
    """The card of NAME, NAME:VERSION or NAME@ALIAS; a bad or unknown reference is a `RegistryError`."""
    name, number, alias = registry.parse_model_ref(reference)
    found = registry.get_version(s3, models_bucket, name, number, alias)
    pointers = registry.aliases(s3, models_bucket, name)
    history = registry.list_versions(s3, models_bucket, name, last=registry.HISTORY_VERSIONS)
    champion = next((v for v in history if v.version == pointers.get(registry.CHAMPION)), None)
    if champion is None and registry.CHAMPION in pointers:  # older than the versions the history holds
        champion = registry.get_version(s3, models_bucket, name, pointers[registry.CHAMPION])
    evaluation = registry.read_evaluation(s3, models_bucket, found)
    profile, profile_note = _dataset_profile(data_clients, data_bucket, found.lineage.get("dataset") or {})
    return {
        "name": found.name,
        "version": found.version,
        "created_at": found.created_at,
        "approval": found.approval,
        "aliases": sorted(a for a, v in pointers.items() if v == found.version),
        "task": found.task,
        "target": registry.target_of(found.signature),
        "primary_metric": found.primary_metric,
        "metrics": found.metrics,
        "champion": {"version": champion.version, "metrics": champion.metrics} if champion else None,
        "model": {"uri": found.model_uri, "sha256": found.sha256},
        "dataset": {**(found.lineage.get("dataset") or {}), "profile": profile, "note": profile_note},
        "signature": found.signature,
        "lineage": {key: value for key, value in found.lineage.items() if key != "dataset"},
        "evaluation": evaluation,
        "evaluation_note": evaluation_note(evaluation),
        "history": [
            {"version": v.version, "created_at": v.created_at, "approval": v.approval, "metrics": v.metrics}
            for v in history
        ],
        "events": [
            event
            for event in registry.audit_log(s3, models_bucket, name)
            if registry.concerns(event, found.version)
        ],
    }


def _dataset_profile(
    data_clients: ClientFactory, data_bucket: str, dataset: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """The ingest-time profile of the version trained on, or why it cannot be shown (the card still is)."""
    from mltp.dataset_catalog import get_manifest

    if not dataset.get("name") or not dataset.get("version"):
        return None, "the lineage names no dataset version"
    try:
        manifest = get_manifest(data_clients, data_bucket, dataset["name"], dataset["version"])
    except MltpError as error:
        return None, f"the dataset's profile is not available: {error}"
    keys = ("rows", "bytes", "format", "target", "task", "columns", "uri", "created_at")
    return {key: manifest.get(key) for key in keys}, None
