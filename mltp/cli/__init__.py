"""The `mltp` command."""

from __future__ import annotations

from mltp.cli.app import main

__all__ = ["main"]
