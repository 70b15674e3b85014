"""The model registry on moto: version numbers under concurrency, aliases, approvals, audit, safe loading."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from concurrent.futures import ThreadPoolExecutor

import boto3
import numpy as np
import pytest
import skops.io as sio
from botocore.exceptions import ClientError
from sklearn import datasets as toy
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mltp import registry
from mltp.registry import AliasRaceError, RegistryError, TamperedModelError
from mltp.s3_json import put_json, read_json
from tests.conftest import threaded_moto_server
from tests.test_trainer import DATA, MODELS, ingest_frame, run

ACTOR = "test:registry"


@pytest.fixture
def clients(mock_clients):
    for bucket in (DATA, MODELS):
        mock_clients("s3").create_bucket(Bucket=bucket)
    return mock_clients


@pytest.fixture
def s3(clients):
    return clients("s3")


def upload(s3, key: str, data: bytes) -> tuple[str, str]:
    s3.put_object(Bucket=MODELS, Key=key, Body=data)
    return f"s3://{MODELS}/{key}", hashlib.sha256(data).hexdigest()


def small_model_bytes() -> bytes:
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    return sio.dumps(LogisticRegression().fit(X, [0, 0, 1, 1]))


def register(s3, name: str, model_uri: str, sha256: str, **overrides) -> registry.ModelVersion:
    arguments = {
        "model_uri": model_uri,
        "sha256": sha256,
        "metrics": {"accuracy": 0.9},
        "primary_metric": "accuracy",
        "signature": {"inputs": [{"name": "x", "type": "float"}]},
        "lineage": {"dataset": {"name": "toy"}, "job_ids": ["job-1"]},
        "actor": ACTOR,
    }
    return registry.register_version(s3, MODELS, name, **{**arguments, **overrides})


@pytest.fixture
def small(s3) -> tuple[str, str]:
    return upload(s3, "runs/small/model.skops", small_model_bytes())


def test_a_trained_model_round_trips_through_the_registry(clients, s3, tmp_path) -> None:
    frame = toy.load_iris(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "iris", frame, "target")
    status, metrics = run(clients, manifest, algorithm="logistic_regression", candidates=[{}])
    signature, _ = read_json(s3, MODELS, f"runs/{metrics['job_id']}/signature.json")
    lineage = {"dataset": metrics["dataset"], "job_ids": [metrics["job_id"]], "versions": metrics["versions"]}
    made = register(
        s3,
        "iris",
        status["model_uri"],
        status["model_sha256"],
        metrics=status["metrics"],
        signature=signature,
        lineage=lineage,
    )
    assert made.version == 1 and made.approval == "PendingManualApproval"
    assert made.model_uri == f"s3://{MODELS}/models/iris/versions/1/model.skops"
    head = s3.head_object(Bucket=MODELS, Key="models/iris/versions/1/model.skops")
    assert head["ServerSideEncryption"] == "AES256"
    assert registry.get_version(s3, MODELS, "iris") == made == registry.get_version(s3, MODELS, "iris", 1)
    assert registry.get_version(s3, MODELS, "iris").lineage == lineage
    model, found = registry.load_model(s3, MODELS, "iris", 1)
    assert found == made
    features = frame.drop(columns="target")
    assert (model.predict(features) == frame["target"]).mean() > 0.9
    assert registry.list_models(s3, MODELS) == [
        {"name": "iris", "latest_version": 1, "versions": 1, "aliases": {}}
    ]


def test_versions_are_numbered_in_order_and_documents_stay_intact(s3, small) -> None:
    made = [register(s3, "fraud", *small, lineage={"n": n}) for n in range(3)]
    assert [v.version for v in made] == [1, 2, 3]
    assert [v.lineage for v in registry.list_versions(s3, MODELS, "fraud")] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert registry.get_version(s3, MODELS, "fraud").version == 3


def test_twenty_concurrent_registrations_get_twenty_distinct_versions() -> None:
    with threaded_moto_server() as url:

        def client():
            return boto3.client("s3", endpoint_url=url, region_name="us-east-1")

        client().create_bucket(Bucket=MODELS)
        source = upload(client(), "runs/shared/model.skops", small_model_bytes())

        def one(worker: int) -> int:
            return register(client(), "busy", *source, lineage={"worker": worker}).version

        with ThreadPoolExecutor(20) as pool:
            versions = list(pool.map(one, range(20)))
        assert sorted(versions) == list(range(1, 21))
        s3 = client()
        found = {v.version: v for v in registry.list_versions(s3, MODELS, "busy")}
        assert sorted(found) == list(range(1, 21))
        assert {found[v].lineage["worker"] for v in found} == set(range(20))
        assert all(found[versions[w]].lineage == {"worker": w} for w in range(20))
        assert all(v.sha256 == source[1] for v in found.values())
        events = registry.audit_log(s3, MODELS, "busy")
        assert sorted(e["version"] for e in events if e["action"] == "registered") == list(range(1, 21))


def test_a_refused_model_takes_no_number_and_a_failed_store_leaves_no_version(s3, small, monkeypatch) -> None:
    register(s3, "half", *small)
    with pytest.raises(TamperedModelError, match=r"not the 0+ it was registered with"):
        register(s3, "half", small[0], "0" * 64)
    assert register(s3, "half", *small).version == 2  # the refusal claimed nothing
    real_put = s3.put_object

    def failing_model_upload(**request):
        if request["Key"].endswith("model.skops"):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "PutObject")
        return real_put(**request)

    monkeypatch.setattr(s3, "put_object", failing_model_upload)
    with pytest.raises(ClientError):
        register(s3, "half", *small)
    monkeypatch.undo()
    keys = {e["Key"] for e in s3.list_objects_v2(Bucket=MODELS, Prefix="models/half/versions/3/")["Contents"]}
    assert keys == {"models/half/versions/3/claim.json"}
    with pytest.raises(RegistryError, match=r"version 3 of 'half' is incomplete.*complete versions: 1, 2"):
        registry.get_version(s3, MODELS, "half", 3)
    assert registry.get_version(s3, MODELS, "half").version == 2
    assert register(s3, "half", *small).version == 4
    assert [v.version for v in registry.list_versions(s3, MODELS, "half")] == [1, 2, 4]


def test_alias_moves_are_compare_and_swap(s3, small) -> None:
    for _ in range(3):
        register(s3, "cas", *small)
    assert registry.set_alias(s3, MODELS, "cas", "champion", 1, actor=ACTOR, reason="first") is None
    # Two movers both read champion=1; the first wins, the second's expectation is stale.
    assert (
        registry.set_alias(s3, MODELS, "cas", "champion", 2, actor="a", reason="better", expected_version=1)
        == 1
    )
    with pytest.raises(AliasRaceError, match="points at version 2, not the expected version 1"):
        registry.set_alias(s3, MODELS, "cas", "champion", 3, actor="b", reason="mine", expected_version=1)
    assert registry.aliases(s3, MODELS, "cas") == {"champion": 2}
    with pytest.raises(AliasRaceError, match="not the expected nothing"):
        registry.set_alias(s3, MODELS, "cas", "champion", 3, actor="b", reason="x", require_expected=True)
    assert (
        registry.set_alias(s3, MODELS, "cas", "staging", 3, actor="b", reason="new", require_expected=True)
        is None
    )
    assert registry.get_version(s3, MODELS, "cas", alias="staging").version == 3
    moves = [
        (e["actor"], e["alias"], e["from"], e["to"])
        for e in registry.audit_log(s3, MODELS, "cas")
        if e["action"] == "alias"
    ]
    assert moves == [(ACTOR, "champion", None, 1), ("a", "champion", 1, 2), ("b", "staging", None, 3)]


def _sneak_in(s3, name: str, document: dict) -> None:
    """Right before our next write of the model's aliases.json, someone else replaces it (once)."""
    other = boto3.client("s3", region_name="us-east-1")
    fired = []

    def before_put(params, **_):
        if params["url_path"].endswith("aliases.json") and not fired:
            fired.append(True)
            put_json(other, MODELS, f"models/{name}/aliases.json", document)

    s3.meta.events.register("before-call.s3.PutObject", before_put)


def test_an_unpinned_alias_move_that_lost_a_race_reapplies_on_the_new_document(s3, small) -> None:
    register(s3, "race", *small)
    register(s3, "race", *small)
    registry.set_alias(s3, MODELS, "race", "champion", 1, actor=ACTOR, reason="start")
    _sneak_in(s3, "race", {"aliases": {"champion": 1, "staging": 2}})
    assert registry.set_alias(s3, MODELS, "race", "champion", 2, actor=ACTOR, reason="go") == 1
    assert registry.aliases(s3, MODELS, "race") == {"champion": 2, "staging": 2}


def test_a_pinned_alias_move_that_lost_a_race_is_an_error(s3, small) -> None:
    for _ in range(3):
        register(s3, "pinned", *small)
    registry.set_alias(s3, MODELS, "pinned", "champion", 1, actor=ACTOR, reason="start")
    _sneak_in(s3, "pinned", {"aliases": {"champion": 3}})
    with pytest.raises(AliasRaceError, match="points at version 3, not the expected version 1"):
        registry.set_alias(s3, MODELS, "pinned", "champion", 2, actor=ACTOR, reason="x", expected_version=1)
    assert registry.aliases(s3, MODELS, "pinned") == {"champion": 3}


def test_approvals_and_the_audit_log(s3, small) -> None:
    register(s3, "appr", *small)
    assert registry.set_approval(s3, MODELS, "appr", 1, "Approved", actor="alice", reason="ok") == (
        "PendingManualApproval"
    )
    assert registry.set_approval(s3, MODELS, "appr", 1, "Rejected", actor="bob", reason="drift") == "Approved"
    assert registry.get_version(s3, MODELS, "appr", 1).approval == "Rejected"
    with pytest.raises(RegistryError, match="approval status 'Maybe': use one of PendingManualApproval"):
        registry.set_approval(s3, MODELS, "appr", 1, "Maybe", actor="bob", reason="?")
    with pytest.raises(RegistryError, match="has no version 7: versions are 1"):
        registry.set_approval(s3, MODELS, "appr", 7, "Approved", actor="bob", reason="?")
    events = registry.audit_log(s3, MODELS, "appr")
    assert [(e["action"], e["actor"], e["from"], e["to"], e["reason"]) for e in events] == [
        ("registered", ACTOR, None, 1, f"from {small[0]}"),
        ("approval", "alice", "PendingManualApproval", "Approved", "ok"),
        ("approval", "bob", "Approved", "Rejected", "drift"),
    ]
    assert all(e["version"] == 1 for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_a_changed_model_file_is_refused(s3, small) -> None:
    register(s3, "tamper", *small)
    s3.put_object(Bucket=MODELS, Key="models/tamper/versions/1/model.skops", Body=small_model_bytes() + b"x")
    with pytest.raises(TamperedModelError, match=r"tamper:1 has sha256 .* not the registered"):
        registry.load_model(s3, MODELS, "tamper")


def _swap_in(s3, name: str, data: bytes) -> None:
    """An attacker with write access replaces the file and the sha256 in its version document."""
    version = registry.get_version(s3, MODELS, name).version
    s3.put_object(Bucket=MODELS, Key=f"models/{name}/versions/{version}/model.skops", Body=data)
    key = f"models/{name}/versions/{version}/version.json"
    document, _ = read_json(s3, MODELS, key)
    put_json(s3, MODELS, key, {**document, "sha256": hashlib.sha256(data).hexdigest()})


def test_a_pickle_renamed_to_skops_is_refused(s3, small) -> None:
    data = pickle.dumps(LogisticRegression())
    with pytest.raises(TamperedModelError, match="not a skops file"):
        register(s3, "pickled", *upload(s3, "runs/evil/model.skops", data))
    register(s3, "pickled", *small)
    _swap_in(s3, "pickled", data)
    with pytest.raises(TamperedModelError, match="not a skops file"):
        registry.load_model(s3, MODELS, "pickled")


def test_a_model_with_an_untrusted_type_is_refused(s3, small) -> None:
    evil = Pipeline([("run", FunctionTransformer(func=os.system)), ("model", LogisticRegression())])
    data = sio.dumps(evil)
    with pytest.raises(TamperedModelError, match=r"untrusted type '(posix|os)\.system'"):
        register(s3, "evil", *upload(s3, "runs/evil/model.skops", data))
    register(s3, "evil", *small)
    _swap_in(s3, "evil", data)
    with pytest.raises(TamperedModelError, match=r"untrusted type '(posix|os)\.system'"):
        registry.load_model(s3, MODELS, "evil")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("fraud", ("fraud", None, None)),
        ("fraud:3", ("fraud", 3, None)),
        ("fraud@champion", ("fraud", None, "champion")),
        ("a-1@b-2", ("a-1", None, "b-2")),
    ],
)
def test_model_references(ref, expected) -> None:
    assert registry.parse_model_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("../etc", "invalid model name '../etc'"),
        ("Fraud", "invalid model name 'Fraud'"),
        ("", "invalid model name ''"),
        ("-x", "invalid model name '-x'"),
        ("a" * 65, "invalid model name"),
        ("m:0", "must be a positive whole number"),
        ("m:two", "must be a positive whole number"),
        ("m:1@x", "not both"),
        ("m@Champ/../x", "invalid alias"),
    ],
)
def test_bad_references_are_refused(ref, message) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)):
        registry.parse_model_ref(ref)


def test_unknown_models_versions_and_aliases_name_what_exists(s3, small) -> None:
    with pytest.raises(RegistryError, match=r"no model named 'ghost'.*none is registered yet"):
        registry.get_version(s3, MODELS, "ghost")
    register(s3, "known", *small)
    registry.set_alias(s3, MODELS, "known", "champion", 1, actor=ACTOR, reason="r")
    with pytest.raises(RegistryError, match=r"no model named 'ghost'.*known models: known"):
        registry.load_model(s3, MODELS, "ghost", alias="champion")
    with pytest.raises(RegistryError, match="has no version 4: versions are 1"):
        registry.get_version(s3, MODELS, "known", 4)
    with pytest.raises(RegistryError, match="has no alias 'staging': its aliases are champion=1"):
        registry.get_version(s3, MODELS, "known", alias="staging")
    with pytest.raises(RegistryError, match="invalid model name"):
        register(s3, "../escape", *small)
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias(s3, MODELS, "known", "Top/../x", 1, actor=ACTOR, reason="r")


def test_trusted_types_cover_what_skops_reports_for_a_trained_pipeline(clients, s3, tmp_path) -> None:
    frame = toy.load_wine(as_frame=True).frame
    manifest = ingest_frame(clients, tmp_path, "wine", frame, "target")
    status, _ = run(clients, manifest, algorithm="hist_gradient_boosting", candidates=[{"max_iter": 10}])
    data = s3.get_object(Bucket=MODELS, Key=status["model_uri"].split(f"{MODELS}/")[1])["Body"].read()
    assert set(sio.get_untrusted_types(data=data)) <= set(registry.TRUSTED_TYPES)
    registry.check_trusted(data, "wine")
    assert registry.cli_actor().startswith("cli:") and "@" in registry.cli_actor()


def test_a_registration_whose_claim_vanished_meanwhile_fails_and_leaves_nothing(s3, small) -> None:
    """The store was emptied between the claim and the document (a restarted sandbox): version.json must
    not vouch for files that are gone, and the number's leftovers must not block it."""
    prefix = "models/wiped/versions/1/"

    def empty_the_store(**request) -> None:
        if request["params"]["Key"].endswith("approval.json"):
            s3.delete_object(Bucket=MODELS, Key=f"{prefix}claim.json")
            s3.delete_object(Bucket=MODELS, Key=f"{prefix}model.skops")

    s3.meta.events.register("provide-client-params.s3.PutObject", empty_the_store)
    with pytest.raises(registry.RegistrationInterrupted, match=r"claim.json, model.skops vanished.*nothing"):
        register(s3, "wiped", *small)
    s3.meta.events.unregister("provide-client-params.s3.PutObject", empty_the_store)
    left = s3.list_objects_v2(Bucket=MODELS, Prefix="models/wiped/")["Contents"]
    assert [entry["Key"] for entry in left] == ["models/wiped/model.json"]  # what the name holds, no version
    assert register(s3, "wiped", *small).version == 1


def test_a_registration_whose_model_vanished_keeps_its_claim_and_writes_no_document(s3, small) -> None:
    def lose_the_model(**request) -> None:
        if request["params"]["Key"].endswith("approval.json"):
            s3.delete_object(Bucket=MODELS, Key="models/lost/versions/1/model.skops")

    s3.meta.events.register("provide-client-params.s3.PutObject", lose_the_model)
    with pytest.raises(registry.RegistrationInterrupted, match=r"model.skops vanished.*version 1 stays"):
        register(s3, "lost", *small)
    s3.meta.events.unregister("provide-client-params.s3.PutObject", lose_the_model)
    assert registry.version_numbers(s3, MODELS, "lost") == ({1}, set())  # incomplete, never reused
    assert register(s3, "lost", *small).version == 2


def predicting(target: str, kind: str) -> dict:
    return {"inputs": [{"name": "x", "type": "float"}], "target": {"name": target, "type": kind}}


def classifier_of(target: str) -> dict:
    return {"signature": predicting(target, "string")}


def regressor_of(target: str) -> dict:
    return {
        "metrics": {"r2": 0.5, "rmse": 1.0},
        "primary_metric": "r2",
        "signature": predicting(target, "float"),
    }


def test_a_model_name_holds_one_task_and_one_target(s3, small) -> None:
    first = register(s3, "one", *small, **classifier_of("y"))
    assert first.task == "classification"
    registry.check_holds(s3, MODELS, "one", "classification", "y")
    for other, refused in [
        (regressor_of("y"), "holds classification of 'y' models, not regression of 'y'"),
        (classifier_of("z"), "holds classification of 'y' models, not classification of 'z'"),
    ]:
        with pytest.raises(RegistryError, match=re.escape(refused) + r".*another name \(--model-name\)"):
            register(s3, "one", *small, **other)
        assert registry.version_numbers(s3, MODELS, "one") == ({1}, {1})  # no claim left behind
    with pytest.raises(RegistryError, match="holds classification of 'y' models, not regression of 'y'"):
        registry.check_holds(s3, MODELS, "one", "regression", "y")
    assert register(s3, "one", *small, **classifier_of("y")).version == 2
    assert [e["action"] for e in registry.audit_log(s3, MODELS, "one")] == ["registered", "registered"]
    registry.check_holds(s3, MODELS, "nothing-yet", "regression", "y")  # a new name holds anything


def test_a_model_registered_before_model_json_is_held_to_its_first_version(s3, small) -> None:
    """Versions written before `task` and model.json existed: the task is told by the primary metric."""
    register(s3, "legacy", *small, **regressor_of("price"))
    s3.delete_object(Bucket=MODELS, Key="models/legacy/model.json")
    key = "models/legacy/versions/1/version.json"
    document, _ = read_json(s3, MODELS, key)
    put_json(s3, MODELS, key, {k: v for k, v in document.items() if k != "task"})
    assert registry.get_version(s3, MODELS, "legacy", 1).task == "regression"
    with pytest.raises(RegistryError, match="holds regression of 'price' models, not classification"):
        registry.check_holds(s3, MODELS, "legacy", "classification", "price")
    with pytest.raises(RegistryError, match="holds regression of 'price' models, not classification"):
        register(s3, "legacy", *small, **classifier_of("price"))
    assert registry.version_numbers(s3, MODELS, "legacy") == ({1}, {1})
    assert register(s3, "legacy", *small, **regressor_of("price")).version == 2


def test_concurrent_first_registrations_of_two_tasks_leave_one_task_and_no_claim() -> None:
    with threaded_moto_server() as url:

        def client():
            return boto3.client("s3", endpoint_url=url, region_name="us-east-1")

        client().create_bucket(Bucket=MODELS)
        source = upload(client(), "runs/shared/model.skops", small_model_bytes())

        def one(worker: int) -> str:
            kind = classifier_of("y") if worker % 2 else regressor_of("y")
            try:
                return register(client(), "contested", *source, **kind).task
            except RegistryError as error:
                assert "a model name holds one task and target" in str(error)
                return "refused"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(12)))
        s3 = client()
        held = read_json(s3, MODELS, "models/contested/model.json")[0]["task"]
        assert sorted(outcomes) == sorted(["refused"] * 6 + [held] * 6)
        claimed, complete = registry.version_numbers(s3, MODELS, "contested")
        assert claimed == complete == set(range(1, 7))
        assert {v.task for v in registry.list_versions(s3, MODELS, "contested")} == {held}


def test_an_alias_never_points_at_a_rejected_version(s3, small) -> None:
    register(s3, "rej", *small)
    register(s3, "rej", *small)
    registry.set_alias(s3, MODELS, "rej", "champion", 2, actor=ACTOR, reason="first")
    registry.set_approval(s3, MODELS, "rej", 1, "Rejected", actor="bob", reason="drifted")
    with pytest.raises(
        registry.RejectedVersionError,
        match=re.escape("rej:1 is Rejected (drifted, by bob): approve it first (`mltp models approve rej:1"),
    ):
        registry.set_alias(s3, MODELS, "rej", "champion", 1, actor=ACTOR, reason="back", expected_version=2)
    with pytest.raises(registry.RejectedVersionError, match="to point 'staging' at it"):
        registry.set_alias(s3, MODELS, "rej", "staging", 1, actor=ACTOR, reason="new")
    assert registry.aliases(s3, MODELS, "rej") == {"champion": 2}
    assert registry.promotion(
        {"primary_metric": "accuracy", "metrics": {"accuracy": 0.99}}, {"version": 2, "metrics": {}}
    ) == (True, "accuracy 0.99 beats champion v2 (n/a)")
    registry.set_approval(s3, MODELS, "rej", 1, "Approved", actor="bob", reason="retrained data checked")
    assert registry.set_alias(s3, MODELS, "rej", "champion", 1, actor=ACTOR, reason="back") == 2


def test_the_longest_dataset_name_makes_a_valid_model_name() -> None:
    """A dataset name may be 64 characters with '_': training it without --model-name must not fail on a
    name the user never gave, nor anything named after the model (S3 keys, artifact keys)."""
    from prefect.types.names import LOWERCASE_LETTERS_NUMBERS_AND_DASHES_ONLY_REGEX as ARTIFACT_KEY

    from mltp.dataset_catalog import validate_name

    dataset = validate_name("a_" + "b" * 62)
    name = registry.validate_model_name(registry.model_name_for(dataset))
    assert len(name) == 64 and re.fullmatch(ARTIFACT_KEY, f"model-{name}")
    assert registry.parse_model_ref(f"{name}@champion") == (name, None, "champion")
    with pytest.raises(RegistryError, match="use 1-64 lowercase letters"):
        registry.validate_model_name(name + "c")
