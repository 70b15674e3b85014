"""Everything refused before any compute is paid for."""

from __future__ import annotations

import pytest

from mltp.errors import BucketError
from mltp.jobs import build_job_spec, expand_grid, parse_grid, parse_params, parse_value, write_job
from mltp.trainer.errors import TrainingInputError


def column(name, kind, distinct=10, nulls=0, exact=True):
    return {"name": name, "type": kind, "distinct": distinct, "nulls": nulls, "distinct_exact": exact}


MANIFEST = {
    "name": "shop",
    "manifest_uri": "s3://data/datasets/shop/abc/manifest.json",
    "rows": 1000,
    "target": "churn",
    "task": "classification",
    "columns": [
        column("spend", "float", 900),
        column("plan", "string", 3),
        column("churn", "string", 2),
        column("revenue", "float", 950),
        column("constant", "string", 1),
    ],
}


def spec(**options):
    return build_job_spec(
        MANIFEST, **{"algorithm": "random_forest", "candidates": [{}], "models_bucket": "m", **options}
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("0.1", 0.1),
        ("true", True),
        ("False", False),
        ("None", None),
        ("null", None),
        ("deep", "deep"),
        ("sqrt", "sqrt"),
        ("[1, 2]", [1, 2]),
    ],
)
def test_parse_value(text, value) -> None:
    assert parse_value(text) == value


def test_candidates_from_params_and_grid() -> None:
    fixed, axes = parse_params(["max_depth=5"]), parse_grid(["n_estimators=10,20", "min_samples_leaf=1,2"])
    assert expand_grid(fixed, axes) == [
        {"max_depth": 5, "n_estimators": 10, "min_samples_leaf": 1},
        {"max_depth": 5, "n_estimators": 10, "min_samples_leaf": 2},
        {"max_depth": 5, "n_estimators": 20, "min_samples_leaf": 1},
        {"max_depth": 5, "n_estimators": 20, "min_samples_leaf": 2},
    ]
    assert expand_grid({}, {}) == [{}]


def test_a_good_spec() -> None:
    built = spec(candidates=[{"n_estimators": 10}], folds=3)
    assert (built.target, built.task, built.primary_metric) == ("churn", "classification", "accuracy")
    assert built.output_prefix == f"s3://m/runs/{built.job_id}/"
    assert built.validation.kind == "kfold" and built.validation.folds == 3
    assert built.metrics == ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc"]
    assert spec(target="revenue").task == "regression"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "xgboost"}, "unknown algorithm 'xgboost': choose one of logistic_regression, ridge,"),
        ({"algorithm": "ridge"}, "'ridge' does only regression, but the task is classification"),
        ({"algorithm": "logistic_regression", "target": "revenue"}, "does only classification"),
        ({"target": "constant", "task": "classification"}, "has a single class"),
        ({"target": "plan", "task": "regression"}, "regression target 'plan' is not numeric"),
        ({"target": "nope"}, "target 'nope' is not a column"),
        ({"candidates": [{"n_estimators": -1}]}, "must be an int in the range [1, inf). Got -1"),
        ({"candidates": [{"max_depth": "deep"}]}, "'max_depth' parameter of RandomForestClassifier"),
        ({"candidates": [{"colour": "red"}]}, "Invalid parameter 'colour'"),
        ({"primary_metric": "r2"}, "do not apply to classification"),
        ({"job_id": "Bad Id"}, "job spec is invalid: job_id"),
    ],
)
def test_refused_before_launch(options, message) -> None:
    with pytest.raises(TrainingInputError) as caught:
        spec(**options)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_no_usable_features() -> None:
    manifest = {
        **MANIFEST,
        "columns": [column("churn", "string", 2), column("empty", "float", 0, nulls=1000)],
    }
    with pytest.raises(TrainingInputError, match="no usable feature columns besides target 'churn'"):
        build_job_spec(manifest, algorithm="knn", candidates=[{}], models_bucket="m")


def test_unwritable_output_location() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        with pytest.raises(BucketError, match="the model output location s3://m does not exist"):
            write_job(lambda service: session.client(service), spec())
