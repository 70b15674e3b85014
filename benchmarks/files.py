"""Benchmark inputs, generated once and cached under `<repo>/.mltp/bench/` (git-ignored)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.data import write_csv

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".mltp" / "bench"


def cached_csv(rows: int, seed: int = 7) -> Path:
    """The CSV of `rows` rows, reused when a previous run left it complete (its recorded size matches)."""
    path = CACHE / f"bench-{rows}-rows-seed-{seed}.csv"
    sidecar = path.with_suffix(".json")
    try:
        if json.loads(sidecar.read_text())["bytes"] == path.stat().st_size:
            return path
    except (FileNotFoundError, ValueError, KeyError):
        pass
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    write_csv(partial, rows, seed)
    partial.replace(path)
    sidecar.write_text(json.dumps({"rows": rows, "seed": seed, "bytes": path.stat().st_size}))
    return path
