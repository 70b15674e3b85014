"""Batch prediction with a registered model. The input is read as ingest reads a dataset (CSV with its
dialect sniffed, gzip, Parquet; the same cells null), checked against the model's signature and converted
as the trainer converts its data; the output repeats the input's cells and adds `prediction` and, for
classifiers, `probability_<class>`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from mltp.dataset_catalog import FileFormat, check_data_file, column_list, detect_format
from mltp.dataset_formats import (
    CSV_BLOCK_BYTES,
    LONG_ROW_BLOCK_BYTES,
    RowTooLongError,
    csv_batches,
    csv_read_options,
    open_csv_stream,
    parquet_batches,
)
from mltp.errors import DatasetError
from mltp.model_inputs import as_model_inputs

# The types a model's input columns are converted to, tried in order: the casts ingest's profile inferred
# them with. Integers become floats too: the model computes in floats, and 1.5 is a number to it.
_CASTS = {
    "integer": (pa.float64(),),
    "float": (pa.float64(),),
    "boolean": (pa.bool_(),),
    "datetime": (pa.timestamp("us"), pa.timestamp("us", tz="UTC")),  # without a zone, or with one
}
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError)


@dataclass(frozen=True)
class PredictionInput:
    label: str
    values: pa.Table  # null wherever ingest reads null: a CSV's cells as text, Parquet's as typed
    cells: pd.DataFrame  # what the output repeats: a CSV's cells as written (its nulls spelled as given)
    first_row: int  # the number messages give the first data row (a CSV's header is row 1)


def read_input(path: Path) -> PredictionInput:
    label = str(path)
    check_data_file(path, label)
    file_format = detect_format(path.name)
    if file_format.kind == "parquet":
        _, batches = parquet_batches(str(path), label)
        values = _table(list(batches), label)
        return PredictionInput(label, values, values.to_pandas(types_mapper=pd.ArrowDtype), first_row=1)
    data = path.read_bytes()  # both readings below parse the same bytes
    try:
        return _read_csv(data, file_format, label, CSV_BLOCK_BYTES)
    except RowTooLongError:
        return _read_csv(data, file_format, label, LONG_ROW_BLOCK_BYTES)


def _read_csv(data: bytes, file_format: FileFormat, label: str, block_bytes: int) -> PredictionInput:
    dialect, stream = open_csv_stream(io.BytesIO(data), file_format, label, block_bytes)
    values = _table(list(csv_batches(stream, dialect, label)), label)
    # Read again with no cell null, for the output: the first reading refused whatever does not parse.
    dialect, stream = open_csv_stream(io.BytesIO(data), file_format, label, block_bytes)
    text = pa_csv.read_csv(
        stream,
        csv_read_options(dialect.names, dialect.block_bytes),
        pa_csv.ParseOptions(delimiter=dialect.delimiter, newlines_in_values=True),
        pa_csv.ConvertOptions(column_types=dict.fromkeys(dialect.names, pa.string())),
    )
    return PredictionInput(label, values, text.to_pandas(), first_row=2)


def rows_input(rows: list[dict[str, Any]], label: str) -> PredictionInput:
    """Rows given as data (an agent's JSON objects) read like a CSV's: every cell as text, a missing or
    null value as a null cell; the columns in the order they first appear."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    cells = {name: [None if row.get(name) is None else str(row[name]) for row in rows] for name in names}
    values = _table(
        [pa.record_batch([pa.array(cells[name], pa.string()) for name in names], names=names)], label
    )
    return PredictionInput(label, values, values.to_pandas(), first_row=1)


def _table(batches: list[pa.RecordBatch], label: str) -> pa.Table:
    if not any(batch.num_rows for batch in batches):
        raise DatasetError(f"{label} has no data rows: add the rows to predict for", source=label)
    return pa.Table.from_batches(batches)


def _added_columns(signature: dict) -> list[str]:
    """The columns the output adds to the input's."""
    return ["prediction", *(f"probability_{name}" for name in signature.get("classes", []))]


def model_inputs(data: PredictionInput, signature: dict) -> tuple[pd.DataFrame, list[str]]:
    """The model's input columns as the trainer fits on them, and the input's columns the model ignores.
    Needs only the signature: every fault of the input is found before the model is loaded."""
    names = data.values.column_names
    taken = [name for name in _added_columns(signature) if name in names]
    if taken:
        raise DatasetError(
            f"{data.label} has column(s) the output adds: {column_list(taken)}: rename or drop them",
            source=data.label,
        )
    wanted = [column["name"] for column in signature["inputs"]]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise DatasetError(
            f"{data.label} lacks columns the model needs: {column_list(missing)}", source=data.label
        )
    converted = pa.table({column["name"]: _convert(data, column) for column in signature["inputs"]})
    types = {column["name"]: column["type"] for column in signature["inputs"]}
    return as_model_inputs(converted.to_pandas(), types), [name for name in names if name not in wanted]


def _convert(data: PredictionInput, column: dict) -> pa.ChunkedArray:
    name, kind = column["name"], column["type"]
    values = data.values[name]
    if kind not in _CASTS:  # text
        return pc.cast(values, pa.string())
    number = kind in ("integer", "float")
    text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    # The trainer's CSV reader allows blanks around a number.
    source = pc.utf8_trim_whitespace(values) if number and text else values
    for target in _CASTS[kind]:
        try:
            converted = pc.cast(source, target)
            break
        except _CAST_ERRORS:
            continue
    else:
        row = _first_refused(source, _CASTS[kind][0])
        raise DatasetError(
            f"{data.label}: column {name!r} must be {kind}, but row {data.first_row + row} has "
            f"{values[row].as_py()!r}",
            source=data.label,
        )
    row = pc.index(pc.is_inf(converted), True).as_py() if number else -1
    if row >= 0:  # `inf`, `-inf`, and numbers past the float range such as 1e309
        raise DatasetError(
            f"{data.label}: column {name!r} has an infinite number in row {data.first_row + row} "
            f"({values[row].as_py()!r}): write a finite number, or leave the cell empty if it is unknown",
            source=data.label,
        )
    return converted


def _first_refused(values: pa.ChunkedArray, target: pa.DataType) -> int:
    """The position of the first value the cast refuses, by halving: about two casts' work in all."""
    low, high = 0, len(values)  # the first refused value is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            pc.cast(values.slice(low, middle - low), target)
        except _CAST_ERRORS:
            high = middle
        else:
            low = middle
    return low


@dataclass(frozen=True)
class Prediction:
    result: pd.DataFrame  # the input's cells, `prediction` and `probability_<class>`
    version: Any  # the registry's ModelVersion that predicted
    ignored: list[str]  # input columns the model does not use
    warnings: list[str]  # for people: a Rejected version, ignored columns


def predict_registered(s3, bucket: str, reference: str, data: PredictionInput) -> Prediction:
    """Predict `data` with a registered model (NAME, NAME:VERSION or NAME@ALIAS): the input is checked
    against the version's signature before the model is loaded; a Rejected version predicts, with a
    warning."""
    from mltp import registry

    name, version, alias = registry.parse_model_ref(reference)
    found = registry.get_version(s3, bucket, name, version, alias)
    features, ignored = model_inputs(data, found.signature)
    model, _ = registry.load_model(s3, bucket, name, found.version)
    warnings = [registry.rejection_warning(s3, bucket, found)] if found.approval == "Rejected" else []
    if ignored:
        warnings.append(f"ignoring columns the model does not use: {column_list(ignored)}")
    return Prediction(predict_frame(model, features, data.cells), found, ignored, warnings)


def predict_frame(model: Any, features: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` plus `prediction` and, for classifiers, `probability_<class>` columns."""
    result = cells.assign(prediction=model.predict(features))
    if hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(features)
        for index, value in enumerate(model.classes_):
            result[f"probability_{value}"] = probabilities[:, index]
    return result
