"""Prefect flows, one module per flow. A flow only wires tasks; decisions live in `mltp/`."""
