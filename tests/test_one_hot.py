"""OneHot gives exactly the features of scikit-learn's most-frequent imputer followed by its one-hot
encoder, which it replaces for speed: the same values, columns, order, names and tie-breaking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mltp.trainer.one_hot import OneHot


def scikit_learn_pair(max_categories: int | None) -> Pipeline:
    encoder = (
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if max_categories is None
        else OneHotEncoder(
            handle_unknown="infrequent_if_exist", max_categories=max_categories, sparse_output=False
        )
    )
    return Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)])


def text_column(rng, rows: int, distinct: int, missing_share: float) -> pd.Series:
    # Zipf-like counts, so some values tie and some are rare.
    weights = 1.0 / np.arange(1, distinct + 1) ** 0.7
    values = rng.choice([f"v{i:03d}" for i in range(distinct)], size=rows, p=weights / weights.sum())
    series = pd.Series(values, dtype=object)
    return series.where(rng.random(rows) >= missing_share, np.nan)


@pytest.mark.parametrize("max_categories", [None, 5, 50])
@pytest.mark.parametrize("distinct", [1, 3, 12, 80])
@pytest.mark.parametrize("missing_share", [0.0, 0.2])
def test_the_same_features_as_scikit_learns_imputer_and_encoder(max_categories, distinct, missing_share):
    rng = np.random.default_rng(distinct * 100 + (max_categories or 0))
    train = pd.DataFrame(
        {"a": text_column(rng, 3000, distinct, missing_share), "b": text_column(rng, 3000, 4, 0.1)}
    )
    # Later rows hold values never seen in fit, and missing values the imputer fills.
    later = pd.DataFrame({"a": ["unseen", np.nan, "v000", "v002"], "b": [np.nan, "v001", "zzz", "v003"]})
    ours = OneHot(max_categories).fit(train)
    theirs = scikit_learn_pair(max_categories).fit(train)
    for frame in (train, later):
        expected = theirs.transform(frame)
        assert ours.transform(frame).shape == expected.shape
        np.testing.assert_array_equal(ours.transform(frame), expected)
    assert list(ours.get_feature_names_out()) == list(theirs.get_feature_names_out())


def test_ties_for_the_most_frequent_value_go_to_the_smallest_as_in_scikit_learn() -> None:
    train = pd.DataFrame({"a": ["b", "a", "b", "a", np.nan, "c"]})
    filled = OneHot().fit(train).transform(pd.DataFrame({"a": [np.nan]}))
    np.testing.assert_array_equal(
        filled, scikit_learn_pair(None).fit(train).transform(pd.DataFrame({"a": [np.nan]}))
    )
    np.testing.assert_array_equal(filled, [[1.0, 0.0, 0.0]])  # "a": tied with "b", and smaller


def test_a_column_with_no_value_gives_no_feature() -> None:
    train = pd.DataFrame({"a": pd.Series([np.nan] * 4, dtype=object), "b": ["x", "y", "x", "y"]})
    encoded = OneHot().fit(train).transform(train)
    np.testing.assert_array_equal(encoded, [[1, 0], [0, 1], [1, 0], [0, 1]])


def test_works_on_pandas_own_string_type() -> None:
    train = pd.DataFrame({"a": pd.Series(["x", None, "y", "x"], dtype="str")})
    np.testing.assert_array_equal(OneHot().fit(train).transform(train), [[1, 0], [1, 0], [0, 1], [1, 0]])
