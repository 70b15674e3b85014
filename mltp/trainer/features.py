"""Preprocessing that becomes part of the fitted model, chosen from the dataset's profile.

numbers and booleans -> median imputation (+ scaling when the estimator needs it)
text, few distinct   -> most-frequent imputation + one-hot (unknown categories at predict time -> zeros)
text, many distinct  -> one-hot of the 50 most frequent values, the rest grouped as "infrequent"
text, unique per row -> dropped (an identifier carries no signal); so are unique integers named like ids
missing numbers      -> left to trees, which split on them natively; imputed for the other estimators
dates                -> year, month, day, day of week and hour as numbers
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mltp.trainer.errors import TrainingInputError

ONE_HOT_MAX = 50
ID_LIKE_SHARE = 0.9
_IDENTIFIER = re.compile(r"(^|[_-])(id|uuid|key)$", re.IGNORECASE)


class DateFeatures(TransformerMixin, BaseEstimator):
    """Dates as numbers a model can use; NaT stays missing for the imputer."""

    PARTS = ("year", "month", "day", "day_of_week", "hour")

    def fit(self, X, y=None):
        self.columns_ = list(X.columns)
        return self

    def transform(self, X):
        parts = {}
        for column in self.columns_:
            values = pd.to_datetime(X[column], errors="coerce")
            for part in self.PARTS:
                parts[f"{column}_{part}"] = getattr(values.dt, part).astype("float64")
        return pd.DataFrame(parts, index=X.index)

    def get_feature_names_out(self, input_features=None):
        return np.array([f"{c}_{p}" for c in self.columns_ for p in self.PARTS], dtype=object)


@dataclass
class FeaturePlan:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    frequent_only: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def used(self) -> list[str]:
        return self.numeric + self.categorical + self.frequent_only + self.dates

    def choices(self) -> list[str]:
        """Plain-words log lines for the choices that are not obvious."""
        lines = [f"dropped {name}: {why}" for name, why in self.dropped.items()]
        lines += [
            f"{name}: many distinct values, one-hot of the {ONE_HOT_MAX} most frequent"
            for name in self.frequent_only
        ]
        lines += [f"{name}: date, expanded to {', '.join(DateFeatures.PARTS)}" for name in self.dates]
        return lines


def plan_features(columns: list[dict[str, Any]], target: str, rows: int) -> FeaturePlan:
    plan = FeaturePlan()
    for column in columns:
        name, kind = column["name"], column["type"]
        if name == target:
            continue
        if column["nulls"] == rows or kind == "empty":
            plan.dropped[name] = "no values"
        elif kind == "integer" and _IDENTIFIER.search(name) and column["distinct"] >= ID_LIKE_SHARE * rows:
            plan.dropped[name] = "a different number in almost every row, named like an identifier"
        elif kind in ("integer", "float", "boolean"):
            plan.numeric.append(name)
        elif kind == "datetime":
            plan.dates.append(name)
        elif (
            kind == "string" and column["distinct"] >= ID_LIKE_SHARE * (rows - column["nulls"]) and rows > 20
        ):
            plan.dropped[name] = "a different value in almost every row (an identifier)"
        elif kind == "string" and column["distinct"] > ONE_HOT_MAX:
            plan.frequent_only.append(name)
        elif kind == "string":
            plan.categorical.append(name)
        else:
            plan.dropped[name] = f"type {kind} is not supported as a feature"
    if not plan.used:
        raise TrainingInputError(
            f"no usable feature columns besides target {target!r}"
            + (f" ({'; '.join(f'{n}: {w}' for n, w in plan.dropped.items())})" if plan.dropped else "")
        )
    return plan


def _numeric_steps(scale: bool, impute: bool) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))] if impute else []
    return [*steps, ("scale", StandardScaler())] if scale else steps


def _one_hot(encoder: OneHotEncoder) -> Pipeline:
    return Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)])


def build_preprocessor(plan: FeaturePlan, scale: bool, impute: bool = True) -> ColumnTransformer:
    """`impute=False` leaves missing numbers to estimators that handle them natively (trees)."""
    numeric = _numeric_steps(scale, impute)
    transformers = [
        ("numeric", Pipeline(numeric) if numeric else "passthrough", plan.numeric),
        ("categorical", _one_hot(OneHotEncoder(handle_unknown="ignore")), plan.categorical),
        (
            "frequent",
            _one_hot(OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=ONE_HOT_MAX)),
            plan.frequent_only,
        ),
        ("dates", Pipeline([("parts", DateFeatures()), *_numeric_steps(scale, impute)]), plan.dates),
    ]
    return ColumnTransformer([t for t in transformers if t[2]], sparse_threshold=0.0)
