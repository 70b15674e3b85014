"""Everything refused before any compute is paid for."""

from __future__ import annotations

import pytest

from mltp.errors import BucketError
from mltp.jobs import build_job_spec, expand_grid, parse_grid, parse_params, parse_value, write_job
from mltp.trainer.errors import TrainingInputError
from tests.conftest import packages_imported_by


def column(name, kind, distinct=10, nulls=0, exact=True, low=None, high=None):
    return {
        "name": name,
        "type": kind,
        "distinct": distinct,
        "nulls": nulls,
        "distinct_exact": exact,
        "min": low,
        "max": high,
    }


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
        column("revenue", "float", 950, low=0.0, high=99.5),
        column("constant", "string", 1),
        column("flat", "float", 1, low=3.0, high=3.0),
        column("blank", "empty", 0, nulls=1000),
        column("tags", "nested", None, exact=False),
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


def test_a_repeated_grid_key_adds_to_its_axis_and_no_candidate_runs_twice() -> None:
    axes = parse_grid(["n_neighbors=3,5", "n_neighbors=7", "n_neighbors=5,3", "weights=uniform,uniform"])
    assert axes == {"n_neighbors": [3, 5, 7, 5, 3], "weights": ["uniform", "uniform"]}
    assert expand_grid({}, axes) == [
        {"n_neighbors": 3, "weights": "uniform"},
        {"n_neighbors": 5, "weights": "uniform"},
        {"n_neighbors": 7, "weights": "uniform"},
    ]
    assert expand_grid({}, {"alpha": [1, 1.0, True]}) == [{"alpha": 1}, {"alpha": 1.0}, {"alpha": True}]


def test_a_param_given_twice_must_agree() -> None:
    assert parse_params(["k=5", "k=5"]) == {"k": 5}
    with pytest.raises(TrainingInputError, match="--param k is given twice, as 5 and 6: keep one"):
        parse_params(["k=5", "k=6"])


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
        ({"primary_metric": "r2"}, "'r2' is a regression metric: the classification metrics are accuracy,"),
        ({"primary_metric": "bogus"}, "unknown metric 'bogus': the classification metrics are accuracy, bal"),
        ({"primary_metric": "bogus", "target": "revenue"}, "the regression metrics are r2, rmse, mae"),
        ({"target": "flat"}, "regression target 'flat' is 3 in every row: there is nothing to learn"),
        ({"target": "blank"}, "target 'blank' is empty in every row of shop: choose another --target"),
        ({"target": "tags"}, "target 'tags' of shop is a nested column"),
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


def test_a_spec_with_default_hyperparameters_is_built_without_importing_scikit_learn() -> None:
    # Importing it costs over a second before every launch; default parameters need no check.
    assert packages_imported_by("from tests.test_jobs import spec; spec()", {"sklearn", "scipy"}) == []
