"""`mltp predict`: batch predictions from a CSV with a registered model, checked against its signature."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mltp import registry
from mltp.cli.context import prefect_connection
from mltp.cli.models_cmd import models_bucket
from mltp.cli.output import console, emit_json
from mltp.errors import ConfigError


def predict(
    reference: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS of a registered model"),
    input_csv: Path = typer.Argument(..., help="CSV with the model's input columns"),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the predictions (CSV)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Predict every row: the input's columns + `prediction` (+ `probability_<class>` for classifiers)."""
    from mltp.predict import predict_frame, read_input  # pandas: imported by this command alone

    name, version, alias = registry.parse_model_ref(reference)
    if not output.parent.is_dir():
        raise ConfigError(f"cannot write {output}: the folder {output.parent} does not exist")
    frame = read_input(input_csv)
    with prefect_connection():
        s3, bucket = models_bucket()
        model, found = registry.load_model(s3, bucket, name, version, alias)
    result, ignored = predict_frame(model, found.signature, frame, str(input_csv))
    if ignored:
        print(
            f"mltp: warning: ignoring columns the model does not use: {', '.join(ignored)}", file=sys.stderr
        )
    result.to_csv(output, index=False)
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
