"""Preprocessing that becomes part of the fitted model, built from a `FeaturePlan` (feature_plan.py).

numeric              -> median imputation (+ scaling when the estimator needs it)
one-hot              -> most-frequent imputation + one-hot (unknown categories at predict time -> zeros)
frequent-only        -> the same, one-hot of the 50 most frequent values, the rest as "infrequent"
missing numbers      -> left to trees, which split on them natively; imputed for the other estimators
dates                -> year, month, day, day of week and hour as numbers
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mltp.trainer.feature_plan import DATE_PARTS, ONE_HOT_MAX, FeaturePlan
from mltp.trainer.one_hot import OneHot


class DateFeatures(TransformerMixin, BaseEstimator):
    """Dates as numbers a model can use; NaT stays missing for the imputer."""

    PARTS = DATE_PARTS

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


def _numeric_steps(scale: bool, impute: bool) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))] if impute else []
    return [*steps, ("scale", StandardScaler())] if scale else steps


def build_preprocessor(plan: FeaturePlan, scale: bool, impute: bool = True) -> ColumnTransformer:
    """`impute=False` leaves missing numbers to estimators that handle them natively (trees)."""
    numeric = _numeric_steps(scale, impute)
    transformers = [
        ("numeric", Pipeline(numeric) if numeric else "passthrough", plan.numeric),
        ("categorical", OneHot(), plan.categorical),
        ("frequent", OneHot(max_categories=ONE_HOT_MAX), plan.frequent_only),
        ("dates", Pipeline([("parts", DateFeatures()), *_numeric_steps(scale, impute)]), plan.dates),
    ]
    return ColumnTransformer([t for t in transformers if t[2]], sparse_threshold=0.0)
