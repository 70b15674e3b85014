"""The model registry: numbered versions, aliases, approvals, an audit log, and loading that trusts nothing.

Layout in the models bucket (a contract other parts rely on):

    models/<name>/model.json                  the task and target the name holds, written by its first
                                              registration with If-None-Match: one task and target per name
    models/<name>/versions/<n>/claim.json     the number, taken with If-None-Match: whoever creates it owns n
    models/<name>/versions/<n>/model.skops    the trained model's verified bytes, SSE-encrypted
    models/<name>/versions/<n>/approval.json  PendingManualApproval | Approved | Rejected (compare-and-swap)
    models/<name>/versions/<n>/version.json   written last, once: sha256, metrics, signature, lineage
    models/<name>/aliases.json                {"aliases": {alias: n}}, moved with If-Match on its ETag
    models/<name>/audit/<time>-<uuid>.json    one object per event, created only if absent: append-only

A version exists when its `version.json` does: registration first reads the trained model and checks its
sha256 and types, and that the name holds the same task and target or none yet (a refused file or model
claims no number), then claims the number, stores those same bytes and writes that document last, so a
registration that fails in between (a failed upload, a crash) leaves a claim without a document. Such a
number is never reused (the next registration counts past it), never listed, and `get_version` names it
as incomplete; a failed upload removes its own model file. Before writing the document it checks that the
claim, the model and the approval are all still there; if the claim vanished (an emptied bucket, a
restarted sandbox) it removes what it wrote and fails.

Loading reads the bytes, checks their sha256 against the version's, then checks that every type named in
the skops file is in `TRUSTED_TYPES` before skops builds anything. Nothing is ever unpickled.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import math
import random
import re
import socket
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from mltp.aws import error_code
from mltp.dataset_catalog import split_s3_uri
from mltp.errors import MltpError
from mltp.s3_json import SSE, lost_race, put_json, read_json
from mltp.trainer.spec import CLASSIFICATION_METRICS, REGRESSION_METRICS, better

APPROVAL_STATES = ("PendingManualApproval", "Approved", "Rejected")
# As long as a dataset name, so that a dataset's name with '_' read as '-' is always a valid model name;
# no '_', which Prefect artifact keys (`model-<name>`) do not allow.
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
VERSION_PARTS = ("claim.json", "model.skops", "approval.json")  # what version.json vouches for
CHAMPION = "champion"  # the alias `--promote` moves to a better version
HISTORY_VERSIONS = 30  # the latest versions a metric history shows (one GET each)
EVALUATION = "evaluation.json"  # optional: versions registered before the trainer wrote it have none
_CLAIM_ATTEMPTS = 64
_CAS_ATTEMPTS = 30

# Every type a model from `mltp.trainer` contains, for every algorithm and task in
# `mltp/trainer/algorithms.py` with our preprocessing (numbers, categories, frequent-only text, dates):
# the union of the types named in the skops schema of each such model (on mixed, toy and wide data,
# default and common hyperparameters, kNN with every tree and the euclidean, manhattan, chebyshev and
# minkowski metrics). A file naming anything else is refused, even a type skops would trust by default.
# The kinds of skops node such models hold, each built from the type it names and its walked content.
SKOPS_NODES = frozenset(
    {
        "DTypeNode",
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "SliceNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)
TRUSTED_TYPES: list[str] = [
    "builtins.dict",
    "builtins.list",
    "builtins.slice",
    "builtins.str",
    "builtins.tuple",
    "mltp.trainer.features.DateFeatures",
    "mltp.trainer.one_hot.OneHot",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    "numpy.uint64",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._regression.KNeighborsRegressor",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",  # models trained before mltp.trainer.one_hot
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.LinearSVR",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
]


class RegistryError(MltpError):
    """An unknown model, version or alias, a bad name or status: input the user can fix."""

    exit_code = 2


class AliasRaceError(RegistryError):
    """The alias no longer points where the caller expected: someone else moved it."""


class RejectedVersionError(RegistryError):
    """An alias may not point at a Rejected version."""


class RegistrationInterrupted(MltpError):
    """What a registration wrote vanished before it finished: the store changed under it."""


class TamperedModelError(MltpError):
    """The model file is not the one registered (sha256), or names a type we do not trust."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    created_at: str
    model_uri: str
    sha256: str
    metrics: dict
    primary_metric: str
    task: str
    signature: dict
    lineage: dict
    approval: str

    def as_dict(self) -> dict:
        return asdict(self)


def _slug(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise RegistryError(
            f"invalid {what} {value!r}: use 1-64 lowercase letters, digits and hyphens, starting with a "
            "letter or digit"
        )
    return value


def validate_model_name(name: str) -> str:
    return _slug(name, "model name")


def model_name_for(dataset: str) -> str:
    """The model name a dataset's training registers under unless told otherwise."""
    return dataset.replace("_", "-")


def task_of(primary_metric: str) -> str:
    """The task a version's primary metric measures: each metric belongs to one task."""
    if primary_metric in CLASSIFICATION_METRICS:
        return "classification"
    if primary_metric in REGRESSION_METRICS:
        return "regression"
    raise RegistryError(
        f"primary metric {primary_metric!r} is not one we measure: use one of "
        f"{', '.join(CLASSIFICATION_METRICS + REGRESSION_METRICS)}"
    )


def shown_metric(value: float | None) -> str:
    """A metric for people: 'n/a' when it was not measured (NaN, or null in JSON)."""
    return "n/a" if value is None or math.isnan(value) else str(value)


def promotion(candidate: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether `candidate` (a version's dict) should replace `champion`, on its primary metric, and why.
    A metric not measured never wins; a champion without it is beaten by any measured value."""
    if champion is None:
        return True, "first champion"
    metric = candidate["primary_metric"]
    new, held = candidate["metrics"].get(metric), champion["metrics"].get(metric)
    wins = better(metric, new, held)
    return wins, (
        f"{metric} {shown_metric(new)} {'beats' if wins else 'does not beat'} champion "
        f"v{champion['version']} ({shown_metric(held)})"
    )


def parse_model_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`name`, `name:3` or `name@champion` -> (name, version, alias)."""
    name, at, alias = ref.partition("@")
    name, colon, version = name.partition(":")
    if at and colon:
        raise RegistryError(f"{ref!r}: give NAME:VERSION or NAME@ALIAS, not both")
    if colon and not (re.fullmatch(r"[0-9]+", version) and int(version) > 0):
        raise RegistryError(f"{ref!r}: the version after ':' must be a positive whole number")
    return validate_model_name(name), int(version) if colon else None, _slug(alias, "alias") if at else None


def parse_pinned_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`name:3` or `name@champion`: a reference that names its version (to change what it points at)."""
    name, version, alias = parse_model_ref(ref)
    if version is None and alias is None:
        raise RegistryError(f"{ref!r}: name the version, as NAME:VERSION or NAME@ALIAS")
    return name, version, alias


def rejection_warning(s3, bucket: str, found: ModelVersion) -> str:
    """What to say when a Rejected version is used: a judgement, not a lock, but nobody should miss it."""
    rejections = [
        event
        for event in audit_log(s3, bucket, found.name)
        if event["action"] == "approval" and event["version"] == found.version and event["to"] == "Rejected"
    ]
    why = f"{rejections[-1]['reason']}, by {rejections[-1]['actor']}" if rejections else "no reason recorded"
    return f"{found.name}:{found.version} is Rejected ({why}); predicting with it anyway"


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _prefix(name: str) -> str:
    return f"models/{validate_model_name(name)}/"


def _model_key(name: str) -> str:
    return f"{_prefix(name)}model.json"


def _version_key(name: str, version: int, leaf: str) -> str:
    return f"{_prefix(name)}versions/{version}/{leaf}"


def _listing(s3, bucket: str, name: str) -> tuple[set[int], set[int]]:
    """(claimed numbers, complete numbers) from one listing of the model's versions."""
    claimed, complete = set(), set()
    prefix = f"{_prefix(name)}versions/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            number, _, leaf = entry["Key"].removeprefix(prefix).partition("/")
            if number.isdigit():
                claimed.add(int(number))
                if leaf == "version.json":
                    complete.add(int(number))
    return claimed, complete


def _model_names(s3, bucket: str) -> list[str]:
    names = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="models/", Delimiter="/"):
        names += [entry["Prefix"].split("/")[1] for entry in page.get("CommonPrefixes", [])]
    return sorted(names)


def _unknown_model(s3, bucket: str, name: str) -> RegistryError:
    known = _model_names(s3, bucket)
    return RegistryError(
        f"no model named {name!r} in s3://{bucket}: "
        + (f"known models: {', '.join(known)}" if known else "none is registered yet")
    )


def _append_audit(s3, bucket: str, name: str, event: dict[str, Any]) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    put_json(s3, bucket, f"{_prefix(name)}audit/{stamp}-{uuid.uuid4().hex}.json", event, create=True)


def audit_log(s3, bucket: str, name: str) -> list[dict]:
    """Every alias move and approval change of the model, oldest first."""
    prefix = f"{_prefix(name)}audit/"
    keys = [
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for entry in page.get("Contents", [])
    ]
    return [read_json(s3, bucket, key)[0] for key in sorted(keys)]


def _event(action: str, actor: str, reason: str | None, **fields: Any) -> dict[str, Any]:
    return {"at": _now(), "actor": actor, "action": action, **fields, "reason": reason}


def _skops():
    """skops.io imports scikit-learn and scans it for trusted types (seconds): only when a model is read,
    not in every `mltp` command and flow run that imports the registry."""
    import skops.io

    return skops.io


def _types_in(data: bytes) -> list[str]:
    """Every type the skops file names, read from its schema without skops (whose import, scikit-learn's
    with it, costs a flow a second or more); refuses what is not skops. A node of a kind our trainer
    never writes (a function, a method, an operator: kinds that name code elsewhere than in their type)
    is named as `skops node <kind>`, which no list trusts. Loading a model still goes through skops, with
    the same trusted list."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise TamperedModelError(f"not a skops file ({error}): refusing to load it") from error
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            if "__loader__" in node and node["__loader__"] not in SKOPS_NODES:
                found.add(f"skops node {node['__loader__']}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return sorted(found)


def check_trusted(data: bytes, label: str) -> None:
    """Refuse a file that is not skops or that names a type outside `TRUSTED_TYPES`."""
    outside = [name for name in _types_in(data) if name not in TRUSTED_TYPES]
    if outside:
        raise TamperedModelError(
            f"{label} contains the untrusted type {outside[0]!r}"
            + (f" and {len(outside) - 1} more" if len(outside) > 1 else "")
            + ": refusing to load it"
        )


def register_version(
    s3,
    bucket: str,
    name: str,
    *,
    model_uri: str,
    sha256: str,
    metrics: dict,
    primary_metric: str,
    signature: dict,
    lineage: dict,
    actor: str,
    evaluation: dict | None = None,
) -> ModelVersion:
    """Store the trained model, once verified, as the next free version number of `name` and record it,
    with the trainer's evaluation data when there is one (plots and the model card read it).
    The name must hold the model's task (told by its primary metric) and target, or hold nothing yet."""
    validate_model_name(name)
    task = task_of(primary_metric)
    source_bucket, source_key = split_s3_uri(model_uri)
    # Checked before a number is claimed, and the very bytes checked are the ones stored: a tampered or
    # foreign file never becomes a version (a server-side copy would store bytes nobody looked at).
    data = s3.get_object(Bucket=source_bucket, Key=source_key)["Body"].read()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise TamperedModelError(
            f"{model_uri} has sha256 {found}, not the {sha256} it was registered with: refusing it"
        )
    check_trusted(data, model_uri)
    _hold(s3, bucket, name, task, target_of(signature), actor)
    version = _claim_number(s3, bucket, name, actor, sha256)
    model_key = _version_key(name, version, "model.skops")
    try:
        s3.put_object(Bucket=bucket, Key=model_key, Body=data, **SSE)
    except BaseException:
        s3.delete_object(Bucket=bucket, Key=model_key)
        raise
    if evaluation is not None:
        put_json(s3, bucket, _version_key(name, version, EVALUATION), evaluation, create=True)
    created_at = _now()
    put_json(
        s3,
        bucket,
        _version_key(name, version, "approval.json"),
        {"status": APPROVAL_STATES[0], "at": created_at, "actor": actor, "reason": "registered"},
        create=True,
    )
    registered = ModelVersion(
        name=name,
        version=version,
        created_at=created_at,
        model_uri=f"s3://{bucket}/{model_key}",
        sha256=sha256,
        metrics=metrics,
        primary_metric=primary_metric,
        task=task,
        signature=signature,
        lineage=lineage,
        approval=APPROVAL_STATES[0],
    )
    document = registered.as_dict()
    del document["approval"]  # it changes: approval.json holds it
    _require_parts(s3, bucket, name, version)
    put_json(s3, bucket, _version_key(name, version, "version.json"), document, create=True)
    _append_audit(
        s3,
        bucket,
        name,
        _event("registered", actor, f"from {model_uri}", version=version, **{"from": None, "to": version}),
    )
    return registered


def target_of(signature: dict) -> str | None:
    """The target column a version predicts, from its signature (None when it names none)."""
    return (signature.get("target") or {}).get("name")


def _held(s3, bucket: str, name: str) -> dict[str, Any] | None:
    """The task and target the name holds: its model.json, else (a model registered before model.json
    existed) its first version's; None for a name that holds nothing yet."""
    document, _ = read_json(s3, bucket, _model_key(name))
    if document is not None:
        return document
    complete = _listing(s3, bucket, name)[1]
    if not complete:
        return None
    first = _read_version(s3, bucket, name, min(complete))
    return {"task": first.task, "target": target_of(first.signature)}


def _require_same(name: str, held: dict[str, Any], task: str, target: str | None) -> None:
    other_target = None not in (held["target"], target) and held["target"] != target
    if held["task"] != task or other_target:
        raise RegistryError(
            f"model {name!r} holds {_kind(held['task'], held['target'])} models, not "
            f"{_kind(task, target)}: a model name holds one task and target; give this model another name "
            "(--model-name)"
        )


def _kind(task: str, target: str | None) -> str:
    return f"{task} of {target!r}" if target else task


def check_holds(s3, bucket: str, name: str, task: str, target: str | None) -> None:
    """Refuse, writing nothing, a model of another task or target than `name` holds: what a training run
    checks before it pays for compute."""
    held = _held(s3, bucket, validate_model_name(name))
    if held is not None:
        _require_same(name, held, task, target)


def _hold(s3, bucket: str, name: str, task: str, target: str | None, actor: str) -> None:
    """`check_holds`, and a name that holds nothing yet is given this task and target: of concurrent first
    registrations of different ones, the one whose model.json is created wins and the others are refused."""
    held = _held(s3, bucket, name)
    if held is None:
        mine = {"task": task, "target": target, "at": _now(), "actor": actor}
        try:
            put_json(s3, bucket, _model_key(name), mine, create=True)
            return
        except ClientError as error:
            if not lost_race(error):
                raise
        held, _ = read_json(s3, bucket, _model_key(name))
    _require_same(name, held, task, target)


def _claim_number(s3, bucket: str, name: str, actor: str, sha256: str) -> int:
    """The next free version number, claimed with If-None-Match: of concurrent claimers exactly one wins
    each number; a loser tries the next one."""
    claimed, _ = _listing(s3, bucket, name)
    number = max(claimed, default=0) + 1
    for _ in range(_CLAIM_ATTEMPTS):
        claim = {"version": number, "claimed_at": _now(), "actor": actor, "sha256": sha256}
        try:
            put_json(s3, bucket, _version_key(name, number, "claim.json"), claim, create=True)
            return number
        except ClientError as error:
            if not lost_race(error):
                raise
            number += 1
    raise RegistryError(
        f"could not claim a version number for {name!r} after {_CLAIM_ATTEMPTS} attempts: "
        "too many concurrent registrations, try again"
    )


def _require_parts(s3, bucket: str, name: str, version: int) -> None:
    """version.json vouches for the claim, the model and the approval: all must still be there before it
    is written. When the claim is gone (an emptied bucket, a restarted sandbox) the number is no longer
    ours, so what this registration wrote under it is removed: nothing half-registered stays behind."""
    prefix = _version_key(name, version, "")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    present = {entry["Key"].removeprefix(prefix) for entry in listing.get("Contents", [])}
    missing = [part for part in VERSION_PARTS if part not in present]
    if not missing:
        return
    claim_lost = "claim.json" in missing
    if claim_lost:
        for part in sorted(present & {"model.skops", "approval.json", EVALUATION}):
            s3.delete_object(Bucket=bucket, Key=prefix + part)
    left = "nothing was registered" if claim_lost else f"version {version} stays incomplete"
    raise RegistrationInterrupted(
        f"registering {name!r} version {version} was interrupted: {', '.join(missing)} vanished from "
        f"s3://{bucket}/{prefix} meanwhile (was the bucket emptied, or the sandbox restarted?); {left}: "
        "train again"
    )


def _read_version(s3, bucket: str, name: str, version: int) -> ModelVersion:
    document, _ = read_json(s3, bucket, _version_key(name, version, "version.json"))
    if document is None:
        claimed, complete = _listing(s3, bucket, name)
        if not claimed:
            raise _unknown_model(s3, bucket, name)
        if version in claimed:
            raise RegistryError(
                f"version {version} of {name!r} is incomplete: its registration did not finish; "
                f"complete versions: {_numbers(complete)}"
            )
        raise RegistryError(f"model {name!r} has no version {version}: versions are {_numbers(complete)}")
    approval, _ = read_json(s3, bucket, _version_key(name, version, "approval.json"))
    document.setdefault("task", task_of(document["primary_metric"]))  # not stored by earlier registrations
    return ModelVersion(**document, approval=approval["status"])


def _numbers(versions: set[int]) -> str:
    return ", ".join(map(str, sorted(versions))) or "none"


def get_version(
    s3, bucket: str, name: str, version: int | None = None, alias: str | None = None
) -> ModelVersion:
    """A version by number, by alias, or (neither) the latest complete one."""
    validate_model_name(name)
    if version is not None and alias is not None:
        raise RegistryError("give a version or an alias, not both")
    if alias is not None:
        known = aliases(s3, bucket, name)
        if _slug(alias, "alias") not in known:
            if not _listing(s3, bucket, name)[0]:
                raise _unknown_model(s3, bucket, name)
            shown = ", ".join(f"{a}={v}" for a, v in sorted(known.items())) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r}: its aliases are {shown}")
        version = known[alias]
    if version is None:
        complete = _listing(s3, bucket, name)[1]
        if not complete:
            raise _unknown_model(s3, bucket, name)
        version = max(complete)
    return _read_version(s3, bucket, name, version)


def concerns(event: dict, version: int) -> bool:
    """Whether an audit-log event is about `version` (an alias move from or to it counts)."""
    if event["action"] == "alias":
        return version in (event["from"], event["to"])
    return event.get("version") == version


def read_evaluation(s3, bucket: str, version: ModelVersion) -> dict | None:
    """The trainer's evaluation data stored with the version; None for one registered without it."""
    return read_json(s3, bucket, _version_key(version.name, version.version, EVALUATION))[0]


def version_numbers(s3, bucket: str, name: str) -> tuple[set[int], set[int]]:
    """(claimed, complete) version numbers of the model; a claimed one that is not complete is a
    registration that never finished."""
    return _listing(s3, bucket, validate_model_name(name))


def list_versions(s3, bucket: str, name: str, last: int | None = None) -> list[ModelVersion]:
    """Every complete version in order, or the `last` few."""
    complete = _listing(s3, bucket, name)[1]
    if not complete:
        raise _unknown_model(s3, bucket, name)
    numbers = sorted(complete)[-last:] if last else sorted(complete)
    return [_read_version(s3, bucket, name, number) for number in numbers]


def list_models(s3, bucket: str) -> list[dict]:
    models = []
    for name in _model_names(s3, bucket):
        if not _SLUG.fullmatch(name):
            continue  # not written by us: nothing to report
        complete = _listing(s3, bucket, name)[1]
        if complete:
            models.append(
                {
                    "name": name,
                    "latest_version": max(complete),
                    "versions": len(complete),
                    "aliases": aliases(s3, bucket, name),
                }
            )
    return models


def aliases(s3, bucket: str, name: str) -> dict[str, int]:
    document, _ = read_json(s3, bucket, f"{_prefix(name)}aliases.json")
    return dict(sorted((document or {}).get("aliases", {}).items()))


def set_alias(
    s3,
    bucket: str,
    name: str,
    alias: str,
    version: int,
    *,
    actor: str,
    reason: str,
    expected_version: int | None = None,
    require_expected: bool = False,
) -> int | None:
    """Point `alias` at `version` with compare-and-swap; returns where it pointed before.

    With `expected_version` (or `require_expected`, where None means "the alias must not exist yet") the
    move happens only while the alias still points there, else `AliasRaceError`. Without it, a write that
    lost to a concurrent change re-reads and re-applies. A Rejected version is refused.
    """
    _slug(alias, "alias")
    if _read_version(s3, bucket, name, version).approval == "Rejected":  # exists and is complete
        rejection, _ = read_json(s3, bucket, _version_key(name, version, "approval.json"))
        raise RejectedVersionError(
            f"{name}:{version} is Rejected ({rejection['reason']}, by {rejection['actor']}): approve it "
            f"first (`mltp models approve {name}:{version} --reason ...`) to point {alias!r} at it"
        )
    pinned = require_expected or expected_version is not None
    key = f"{_prefix(name)}aliases.json"
    for attempt in range(_CAS_ATTEMPTS):
        document, etag = read_json(s3, bucket, key)
        current = (document or {}).get("aliases", {})
        previous = current.get(alias)
        if pinned and previous != expected_version:
            raise AliasRaceError(
                f"alias {alias!r} of {name!r} points at {_describe(previous)}, not the expected "
                f"{_describe(expected_version)}: someone moved it; see `mltp models show {name}` and retry"
            )
        if previous == version:
            return previous
        if not _swapped(s3, bucket, key, {"aliases": {**current, alias: version}}, etag, attempt):
            continue
        _append_audit(
            s3, bucket, name, _event("alias", actor, reason, alias=alias, **{"from": previous, "to": version})
        )
        return previous
    raise RegistryError(
        f"could not move alias {alias!r} of {name!r} after {_CAS_ATTEMPTS} attempts: "
        "too many concurrent changes, try again"
    )


def _swapped(s3, bucket: str, key: str, document: dict, etag: str | None, attempt: int) -> bool:
    """Write `document` only if `key` is unchanged since it was read (absent when `etag` is None);
    False, after a short random pause, when a concurrent writer got there first."""
    try:
        put_json(s3, bucket, key, document, etag=etag, create=etag is None)
    except ClientError as error:
        if not lost_race(error):
            raise
        time.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 5)))
        return False
    return True


def _describe(version: int | None) -> str:
    return "nothing" if version is None else f"version {version}"


def point_alias(
    s3,
    bucket: str,
    reference: str,
    alias: str,
    *,
    actor: str,
    reason: str | None,
    expected_version: int | None,
) -> tuple[str, int, int | None]:
    """`mltp models promote` and the MCP tool: point `alias` at the version `reference` (NAME:VERSION or
    NAME@ALIAS) names. Returns the name, the version and where the alias pointed before."""
    name, version, from_alias = parse_pinned_ref(reference)
    target = get_version(s3, bucket, name, version, from_alias).version
    previous = set_alias(
        s3, bucket, name, alias, target, actor=actor, reason=reason, expected_version=expected_version
    )
    return name, target, previous


def change_approval(
    s3, bucket: str, reference: str, status: str, *, actor: str, reason: str
) -> tuple[str, int, str]:
    """`mltp models approve|reject` and the MCP tools: the version `reference` names gets `status`.
    Returns the name, the version and its previous status."""
    name, version, alias = parse_pinned_ref(reference)
    target = get_version(s3, bucket, name, version, alias).version
    return name, target, set_approval(s3, bucket, name, target, status, actor=actor, reason=reason)


def set_approval(s3, bucket: str, name: str, version: int, status: str, *, actor: str, reason: str) -> str:
    """Change a version's approval status with compare-and-swap; returns the previous status."""
    if status not in APPROVAL_STATES:
        raise RegistryError(f"approval status {status!r}: use one of {', '.join(APPROVAL_STATES)}")
    _read_version(s3, bucket, name, version)
    key = _version_key(name, version, "approval.json")
    for attempt in range(_CAS_ATTEMPTS):
        document, etag = read_json(s3, bucket, key)
        previous = document["status"]
        if previous == status:
            return previous
        changed = {"status": status, "at": _now(), "actor": actor, "reason": reason}
        if not _swapped(s3, bucket, key, changed, etag, attempt):
            continue
        _append_audit(
            s3,
            bucket,
            name,
            _event("approval", actor, reason, version=version, **{"from": previous, "to": status}),
        )
        return previous
    raise RegistryError(f"could not change the approval of {name}:{version}: too many concurrent changes")


def load_model(
    s3, bucket: str, name: str, version: int | None = None, alias: str | None = None
) -> tuple[Any, ModelVersion]:
    """The fitted model, after checking its sha256 and that it names only trusted types."""
    found = get_version(s3, bucket, name, version, alias)
    label = f"{found.name}:{found.version}"
    try:
        data = s3.get_object(Bucket=bucket, Key=_version_key(name, found.version, "model.skops"))["Body"]
        data = data.read()
    except ClientError as error:
        if error_code(error) != "NoSuchKey":
            raise
        raise TamperedModelError(f"the model file of {label} is missing from {found.model_uri}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != found.sha256:
        raise TamperedModelError(
            f"the model file of {label} has sha256 {actual}, not the registered {found.sha256}: "
            "it was changed or replaced; refusing to load it"
        )
    check_trusted(data, f"the model file of {label}")
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return _skops().loads(data, trusted=TRUSTED_TYPES), found
    except UntrustedTypesFoundException as error:
        raise TamperedModelError(f"the model file of {label} has untrusted types: {error}") from error
