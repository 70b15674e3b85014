"""The representation a model's input columns reach scikit-learn in, the same when it is trained and when
it predicts: booleans as 1.0/0.0 and text as pandas' own string type (Arrow-backed, NaN for a missing
value: counting, encoding and taking rows run in C, where Python objects would cost a second per million
rows); numbers and dates stay as Arrow gave them to pandas."""

from __future__ import annotations

import pandas as pd


def as_model_inputs(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """`frame` (an Arrow table's `to_pandas()`) with each column converted in place by its profiled type."""
    for column in frame.columns:
        if types[column] == "boolean":
            frame[column] = frame[column].map({True: 1.0, False: 0.0}).astype("float64")
        elif types[column] == "string":
            frame[column] = frame[column].astype("str")
    return frame
