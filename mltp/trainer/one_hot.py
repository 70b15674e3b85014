"""One-hot encoding of text columns through pandas' hash tables.

The same features as scikit-learn's `SimpleImputer(strategy="most_frequent")` followed by `OneHotEncoder`
(`handle_unknown="ignore"`, or `"infrequent_if_exist"` with `max_categories`): the same columns in the same
order, the same tie-breaking. Those two look every value up in Python dicts, about a second per million
rows; pandas counts and codes them in C, so the trainer's preprocessing no longer costs more than its fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

INFREQUENT = "infrequent_sklearn"  # scikit-learn's name for the grouped column, kept for the same names


class OneHot(TransformerMixin, BaseEstimator):
    """Missing values become the most frequent one; values never seen in fit become zeros, or the
    infrequent column when `max_categories` grouped some (which counts toward the maximum)."""

    def __init__(self, max_categories: int | None = None) -> None:
        self.max_categories = max_categories

    def fit(self, X, y=None):
        self.columns_ = list(X.columns)
        self.fill_values_, self.categories_, self.infrequent_ = [], [], []
        for column in self.columns_:
            fill, counts = _imputed_counts(X[column])
            frequent, infrequent = self._split_by_frequency(counts)
            self.fill_values_.append(fill)
            self.categories_.append(frequent)
            self.infrequent_.append(infrequent)
        return self

    def _split_by_frequency(self, counts: pd.Series) -> tuple[list, list]:
        """Sorted frequent and infrequent values, chosen as scikit-learn chooses them: the smallest counts
        are infrequent, ties broken by sorted order (a stable sort of the counts)."""
        ordered = counts.sort_index()
        if self.max_categories is None or len(ordered) < self.max_categories:
            return list(ordered.index), []
        rarest_first = np.argsort(ordered.to_numpy(), kind="mergesort")
        infrequent = np.zeros(len(ordered), dtype=bool)
        infrequent[rarest_first[: len(ordered) - (self.max_categories - 1)]] = True
        return list(ordered.index[~infrequent]), list(ordered.index[infrequent])

    def transform(self, X):
        blocks = [
            self._encode(X[column], fill, frequent, infrequent)
            for column, fill, frequent, infrequent in zip(
                self.columns_, self.fill_values_, self.categories_, self.infrequent_, strict=True
            )
        ]
        return np.hstack(blocks) if blocks else np.empty((len(X), 0))

    @staticmethod
    def _encode(values: pd.Series, fill, frequent: list, infrequent: list) -> np.ndarray:
        codes, distinct = pd.factorize(values)  # missing: -1
        column_of = pd.Index(frequent + infrequent).get_indexer(distinct)  # never seen in fit: -1
        missing_column = (frequent + infrequent).index(fill) if fill is not None else -1
        columns = np.append(column_of, missing_column)[codes]  # code -1 takes the last: the fill's
        if infrequent:  # seen-but-rare and never-seen values both land in the last column
            columns = np.where((columns < 0) | (columns >= len(frequent)), len(frequent), columns)
        encoded = np.zeros((len(columns), len(frequent) + (1 if infrequent else 0)))
        rows = np.flatnonzero(columns >= 0)
        encoded[rows, columns[rows]] = 1.0
        return encoded

    def get_feature_names_out(self, input_features=None):
        return np.array(
            [
                f"{column}_{value}"
                for column, frequent, infrequent in zip(
                    self.columns_, self.categories_, self.infrequent_, strict=True
                )
                for value in frequent + ([INFREQUENT] if infrequent else [])
            ],
            dtype=object,
        )


def _imputed_counts(values: pd.Series) -> tuple[object, pd.Series]:
    """The most frequent value (the smallest among ties, None when there are no values) and the count of
    each value once the missing ones are filled with it."""
    counts = values.value_counts(dropna=True, sort=False)
    if counts.empty:
        return None, counts
    fill = min(counts.index[counts.to_numpy() == counts.max()])
    missing = int(values.isna().sum())
    if missing:
        counts = counts.copy()  # value_counts' own array is read-only
        counts[fill] += missing
    return fill, counts
