"""What the MCP tools return: pydantic models, so every result has an output schema and structured
content an agent can rely on, beside a short text summary for the model to read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DatasetSummary(BaseModel):
    name: str
    latest: str = Field(description="The newest version (first 16 hex digits of its sha256)")
    versions: int = Field(description="How many versions the dataset has")
    rows: int = Field(description="Rows of the newest version")
    bytes: int = Field(description="Bytes of the newest version")
    created_at: str


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class ColumnProfile(BaseModel):
    name: str
    type: str = Field(
        description="empty, integer, float, boolean, datetime, string, nested (lists, structs) or other"
    )
    nulls: int
    distinct: int | None = Field(description="Distinct values (an estimate when distinct_exact is false)")
    distinct_exact: bool
    min: Any = None
    max: Any = None
    timezone: str | None = Field(None, description="UTC for timestamps written with a zone")


class DatasetManifest(BaseModel):
    name: str
    version: str
    sha256: str
    rows: int
    bytes: int
    file: str
    format: dict[str, Any]
    uri: str
    target: str | None
    task: str | None
    source: str
    created_at: str
    columns: list[ColumnProfile]


class TrainingPlan(BaseModel):
    backend: str = Field(description="lambda, ec2 or local")
    instance_type: str | None
    instances: int
    memory_mb: int = Field(description="Memory of the function or the instance type")
    estimated_memory_mb: int
    estimated_runtime_s: int
    estimated_cost_usd: float
    prices_as_of: str
    reasons: list[str] = Field(description="Why this compute, in plain words")
    task: str
    target: str
    candidates: list[dict[str, Any]] = Field(description="One hyperparameter set per candidate")


class ModelSummary(BaseModel):
    name: str
    latest_version: int
    versions: int
    aliases: dict[str, int]


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDescription(BaseModel):
    name: str
    version: int
    task: str
    target: str | None
    approval: str = Field(description="PendingManualApproval, Approved or Rejected")
    aliases: list[str] = Field(description="The aliases pointing at this version")
    primary_metric: str
    metrics: dict[str, float | None] = Field(description="null: not measured (e.g. roc_auc of one class)")
    champion: dict[str, Any] | None = Field(
        description="The champion's version and metrics, to compare with (null when there is none)"
    )
    created_at: str
    model_uri: str
    sha256: str
    signature: dict[str, Any] = Field(description="Input columns and types, the target, the classes")
    lineage: dict[str, Any] = Field(description="Dataset, jobs, flow run, code and library versions, cost")


class AuditEvent(BaseModel):
    at: str
    action: str
    actor: str
    reason: str | None = None
    details: dict[str, Any] = Field(
        default_factory=dict, description="What changed: version, alias, from, to"
    )


class ModelHistory(BaseModel):
    name: str
    events: list[AuditEvent]


class StatusCheck(BaseModel):
    name: str
    status: str = Field(description="ok, fail or skip")
    detail: str
    fix: str | None = None


class PlatformStatus(BaseModel):
    ok: bool
    prefect_api_url: str | None
    checks: list[StatusCheck]


class IngestedDataset(BaseModel):
    name: str
    version: str
    rows: int
    bytes: int
    uri: str
    created: bool = Field(description="False: these bytes were ingested before and nothing changed")
    announced_for_training: bool


class AliasMove(BaseModel):
    name: str
    alias: str
    version: int
    previous: int | None = Field(description="Where the alias pointed before (null: it was unset)")


class ApprovalChange(BaseModel):
    name: str
    version: int
    approval: str
    previous: str


class PredictionResult(BaseModel):
    model: str
    version: int
    rows: int
    output: str | None = Field(description="The predictions file written beside the input (null for rows)")
    predictions: list[dict[str, Any]] = Field(
        description="The input's cells with prediction and probability_<class>: every row given, or the "
        "first 20 of a file"
    )
    ignored_columns: list[str]
    warnings: list[str] = Field(description="E.g. the version is Rejected")


class RunStarted(BaseModel):
    flow_run_id: str
    name: str
    plan: TrainingPlan
    ui_url: str = Field(description="The run's page in the Prefect UI")


class RunSummary(BaseModel):
    flow_run_id: str
    name: str
    state: str = Field(
        description="SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLING, CANCELLED, ..."
    )
    state_message: str | None = Field(description="Why it ended as it did (a failure's one-line cause)")
    dataset: str | None
    parameters: dict[str, Any]
    started_at: str | None
    ended_at: str | None
    progress: float | None = Field(description="0..1 from the run's progress artifact, when it has one")
    eta_s: float | None = Field(None, description="Seconds left at its average rate so far, while it runs")
    ui_url: str
    last_log_lines: list[str] = Field(description="The flow's last log lines, trainers' lines included")
    # From the run's record and report in S3: get_run, wait_for_run and diagnose_run fill these, list_runs not
    run_id: str | None = Field(
        None, description="The platform's run id: its S3 folder runs/<run_id>/ and log streams <run_id>-*"
    )
    backend: str | None = Field(None, description="lambda, ec2 or local, as planned")
    jobs: list[dict[str, Any]] = Field(
        [],
        description="Each job (a share of the candidates on one instance or invocation): backend, handle, "
        "state, failure kind and message, metrics, duration and every attempt",
    )
    metrics: dict[str, float | None] | None = Field(None, description="The best candidate's holdout metrics")
    registered_version: int | None = Field(None, description="The model version it registered")
    cost_usd_estimate: float | None = Field(None, description="The plan's estimate")
    cost_usd_observed: float | None = Field(
        None, description="What the trainers' time cost at on-demand prices, once it ended"
    )


class RunList(BaseModel):
    runs: list[RunSummary]


class Diagnosis(BaseModel):
    run: RunSummary
    failure_kind: str | None = Field(
        description="user, trainer, lost, interrupted or timeout, as the flow decided"
    )
    job_id: str | None = Field(description="The failing job (its CloudWatch log stream)")
    error: str | None
    trainer_log_tail: list[str] = Field(description="The failing trainer's last CloudWatch log lines")
    attempts: list[dict[str, Any]] = Field(
        description="The failing job's attempts: the instance or Lambda request, when launched and "
        "settled, outcome, kind and message"
    )
    instances: list[dict[str, Any]] = Field(description="The run's EC2 instances: state and state reason")
    what_to_do: str
