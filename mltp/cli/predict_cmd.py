"""`mltp predict`: batch predictions with a registered model, the input checked against its signature."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mltp import registry
from mltp.cli.context import prefect_connection
from mltp.cli.models_cmd import models_bucket
from mltp.cli.output import console, emit_json
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
    from mltp.predict import predict_registered, read_input  # the data stack: this command alone

    registry.parse_model_ref(reference)  # a bad reference is refused before the input is read
    check_destination(output)
    data = read_input(input_file)
    with prefect_connection():
        prediction = predict_registered(*models_bucket(), reference, data)
    for warning in prediction.warnings:
        print(f"mltp: warning: {warning}", file=sys.stderr)
    result, found, ignored = prediction.result, prediction.version, prediction.ignored
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
