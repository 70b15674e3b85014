"""What `mltp mcp serve` allows: set by whoever starts the server, enforced by the server itself (an
agent's client reads the tools' annotations as hints only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mltp.planning import COMPUTE_CHOICES


@dataclass(frozen=True)
class ServeOptions:
    allow_write: bool = False  # ingest, promote, approve, reject
    root: Path = field(default_factory=Path.cwd)  # local files are taken only below it
    s3_prefixes: tuple[str, ...] = ()  # s3:// sources beyond the data bucket, e.g. s3://bucket/exports/
    max_cost_usd: float = 1.00  # a training run whose plan estimates more is refused
    confirm_above_usd: float | None = None  # above this, the user confirms (or, without elicitation, refused)
    compute: tuple[str, ...] = COMPUTE_CHOICES  # what start_training may ask for
    tools: tuple[str, ...] | None = None  # serve only these tools (None: all)
    exclude_tools: tuple[str, ...] = ()  # and never these
