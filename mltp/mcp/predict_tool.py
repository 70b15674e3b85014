"""The `predict` tool: a registered model on up to 1,000 rows given in the call (the predictions come back
in the result), or on a CSV or Parquet file under the server's root (written beside it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from mltp.mcp.answers import answer
from mltp.mcp.guards import allowed_source, require_write
from mltp.mcp.options import ServeOptions
from mltp.mcp.platform import Platform, platform_errors
from mltp.mcp.results import PredictionResult

MAX_ROWS = 1000
SAMPLE_ROWS = 20  # of a file's predictions, shown in the result
PREDICT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def register_predict_tool(server: MCPServer, platform: Platform, options: ServeOptions) -> None:
    @server.tool(title="Predict with a registered model", annotations=PREDICT)
    def predict(
        reference: Annotated[str, Field(description="NAME (the newest version), NAME:VERSION or NAME@ALIAS")],
        rows: Annotated[
            list[dict[str, Any]] | None,
            Field(
                min_length=1,
                max_length=MAX_ROWS,
                description=f"Up to {MAX_ROWS:,} rows as objects (column: value), predicted in the result",
            ),
        ] = None,
        input_path: Annotated[
            str | None,
            Field(description="A CSV or Parquet file under the server's root: predictions go beside it"),
        ] = None,
    ) -> Annotated[CallToolResult, PredictionResult]:
        """Predict with a registered model, as `mltp predict` does: the input is checked against the
        model's signature first; a Rejected version predicts with a warning."""
        from mltp.dataset_catalog import detect_format
        from mltp.output_file import write_output
        from mltp.predict import predict_registered, read_input, rows_input

        require_write(options, "predict")
        if (rows is None) == (input_path is None):
            raise ToolError("give either rows (up to 1,000, returned in the result) or input_path, not both")
        if input_path is not None and input_path.startswith("s3://"):
            raise ToolError(f"{input_path}: input_path is a local file under the server's root")
        with platform_errors():
            if rows is not None:
                data, output = rows_input(rows, "rows"), None
            else:
                source = Path(allowed_source(input_path, options, data_bucket=""))  # local: checked above
                data = read_input(source)
                stem = source.name[: -len(detect_format(source.name).suffix)]
                output = source.with_name(f"{stem}.predictions.csv")
            prediction = predict_registered(*platform.models(), reference, data)
            if output is not None:
                write_output(output, lambda handle: prediction.result.to_csv(handle, index=False))
        shown = prediction.result if output is None else prediction.result.head(SAMPLE_ROWS)
        found = prediction.version
        result = PredictionResult(
            model=found.name,
            version=found.version,
            rows=len(prediction.result),
            output=str(output) if output else None,
            predictions=json.loads(shown.to_json(orient="records")),
            ignored_columns=prediction.ignored,
            warnings=prediction.warnings,
        )
        where = f", written to {output}" if output else ""
        warned = f" ({'; '.join(prediction.warnings)})" if prediction.warnings else ""
        return answer(result, f"{result.rows:,} predictions of {found.name}:{found.version}{where}{warned}")
