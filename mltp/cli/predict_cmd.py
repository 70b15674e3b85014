"""`mltp predict`: batch predictions with a registered model, the input checked against its signature."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mltp import registry
from mltp.cli.context import prefect_connection
from mltp.cli.models_cmd import models_bucket
from mltp.cli.output import console, emit_json
from mltp.dataset_catalog import column_list
from mltp.output_file import check_destination, write_output


def predict(
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS of a registered model"),
    input_file: Path = typer.Argument(
        ..., help="The rows to predict for: CSV (comma, semicolon or tab; .csv.gz) or Parquet"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the predictions (CSV)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict every row: the input's columns + `prediction` (+ `probability_<class>` for classifiers)."""
    from mltp.predict import model_inputs, predict_frame, read_input  # the data stack: this command alone

    name, version, alias = registry.parse_model_ref(reference)
    check_destination(output)
    data = read_input(input_file)
    with prefect_connection():
        s3, bucket = models_bucket()
        found = registry.get_version(s3, bucket, name, version, alias)
        features, ignored = model_inputs(data, found.signature)
        model, _ = registry.load_model(s3, bucket, name, found.version)
        if found.approval == "Rejected":
            _warn(_rejected(s3, bucket, found))
    if ignored:
        _warn(f"ignoring columns the model does not use: {column_list(ignored)}")
    result = predict_frame(model, features, data.cells)
    write_output(output, lambda handle: result.to_csv(handle, index=False))
    if json:
        emit_json(
            {
                "model": found.name,
                "version": found.version,
                "rows": len(result),
                "output": str(output),
                "columns": list(result.columns),
                "ignored_columns": ignored,
            }
        )
        return
    console.print(f"wrote {len(result):,} predictions of {found.name}:{found.version} to {output}")


def _rejected(s3, bucket: str, found: registry.ModelVersion) -> str:
    """The warning for a Rejected version: a judgement, not a lock, so it predicts, but nobody misses it."""
    rejections = [
        event
        for event in registry.audit_log(s3, bucket, found.name)
        if event["action"] == "approval" and event["version"] == found.version and event["to"] == "Rejected"
    ]
    why = f"{rejections[-1]['reason']}, by {rejections[-1]['actor']}" if rejections else "no reason recorded"
    return f"{found.name}:{found.version} is Rejected ({why}); predicting with it anyway"


def _warn(message: str) -> None:
    print(f"mltp: warning: {message}", file=sys.stderr)
