"""Batch prediction with a registered model: the input checked against the model's signature, converted
to the representation it was trained on, and the predictions (and class probabilities) added."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mltp.errors import DatasetError

_BOOLEANS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


def read_input(path: Path) -> pd.DataFrame:
    """Every cell as the text it is, so the output repeats the input exactly."""
    if not path.is_file():
        raise DatasetError(f"{path} is not a file: pass the CSV to predict for", source=str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not a readable CSV: {error}", source=str(path)) from error
    if not isinstance(frame.index, pd.RangeIndex):  # pandas made the surplus first fields an index
        raise DatasetError(f"{path}: a data row has more fields than the header", source=str(path))
    if frame.empty:
        raise DatasetError(f"{path} has no data rows", source=str(path))
    return frame


def features(frame: pd.DataFrame, signature: dict, label: str) -> tuple[pd.DataFrame, list[str]]:
    """The model's input columns in the representation it was trained on, and the ignored columns."""
    wanted = [column["name"] for column in signature["inputs"]]
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        raise DatasetError(f"{label} lacks columns the model needs: {', '.join(missing)}", source=label)
    converted = {
        column["name"]: _convert(frame[column["name"]], column, label) for column in signature["inputs"]
    }
    return pd.DataFrame(converted, index=frame.index), [c for c in frame.columns if c not in wanted]


def _convert(values: pd.Series, column: dict, label: str) -> pd.Series:
    blank = values.str.strip() == ""
    if column["type"] in ("integer", "float"):
        converted = pd.to_numeric(values.where(~blank), errors="coerce").astype("float64")
    elif column["type"] == "boolean":
        converted = values.str.strip().str.lower().map(_BOOLEANS)
    else:  # strings, and dates, which the model's own date step parses
        return values.astype(object).where(~blank, np.nan)
    bad = converted.isna() & ~blank
    if bad.any():
        raise DatasetError(
            f"{label}: column {column['name']!r} must be {column['type']}, but row {bad.idxmax() + 2} "
            f"has {values[bad.idxmax()]!r}",
            source=label,
        )
    return converted


def predict_frame(
    model: Any, signature: dict, frame: pd.DataFrame, label: str
) -> tuple[pd.DataFrame, list[str]]:
    """The input (cells as text) plus `prediction` and, for classifiers, `probability_<class>` columns;
    and the input columns the model ignores."""
    X, ignored = features(frame, signature, label)
    result = frame.assign(prediction=model.predict(X))
    if hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(X)
        for index, value in enumerate(model.classes_):
            result[f"probability_{value}"] = probabilities[:, index]
    return result, ignored
