from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mltp.trainer.errors import TrainingInputError
from mltp.trainer.feature_plan import ONE_HOT_MAX, plan_features
from mltp.trainer.features import build_preprocessor


def col(name, kind, distinct, nulls=0):
    return {
        "name": name,
        "type": kind,
        "distinct": distinct,
        "nulls": nulls,
        "distinct_exact": distinct <= 10_000,
    }


ROWS = 1000


@pytest.mark.parametrize(
    ("column", "role"),
    [
        (col("age", "integer", 80), "numeric"),
        (col("customer_id", "integer", 1000), "dropped"),
        (col("visits", "integer", 1000), "numeric"),  # unique numbers, but not named like an id
        (col("flag", "boolean", 2), "numeric"),
        (col("city", "string", 12), "categorical"),
        (col("street", "string", 400), "frequent_only"),
        (col("email", "string", 995), "dropped"),
        (col("signup", "datetime", 300), "dates"),
        (col("blank", "float", 0, nulls=ROWS), "dropped"),
    ],
)
def test_column_roles(column, role) -> None:
    plan = plan_features([column, col("other", "float", 500), col("y", "string", 2)], "y", ROWS)
    if role == "dropped":
        assert column["name"] in plan.dropped
    else:
        assert column["name"] in getattr(plan, role)


def test_only_the_target_left() -> None:
    with pytest.raises(TrainingInputError, match="no usable feature columns besides target 'y'"):
        plan_features([col("y", "string", 2), col("id", "string", 1000)], "y", ROWS)


def test_missing_numbers_are_imputed_or_left_to_trees() -> None:
    plan = plan_features([col("a", "float", 10, nulls=1), col("y", "string", 2)], "y", ROWS)
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0]})
    imputed = build_preprocessor(plan, scale=False, impute=True).fit_transform(frame)
    native = build_preprocessor(plan, scale=False, impute=False).fit_transform(frame)
    assert not np.isnan(imputed).any()
    assert np.isnan(native).sum() == 1


def test_unknown_and_infrequent_categories_do_not_crash() -> None:
    plan = plan_features(
        [col("city", "string", 3), col("street", "string", 200), col("y", "string", 2)], "y", ROWS
    )
    train = pd.DataFrame({"city": ["a", "b", "c"] * 100, "street": [f"s{i}" for i in range(300)]})
    fitted = build_preprocessor(plan, scale=False).fit(train)
    out = fitted.transform(pd.DataFrame({"city": ["zzz"], "street": ["never-seen"]}))
    assert out.shape[0] == 1
    assert fitted.transform(train).shape[1] <= 3 + ONE_HOT_MAX
