"""Deterministic benchmark datasets, generated in chunks so even the ~1 GB file needs little memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CHUNK_ROWS = 250_000


def write_csv(path: Path, rows: int, seed: int = 7) -> Path:
    """About 87 bytes a row: an id, seven measurements, a category, a count, a date and a label."""
    rng = np.random.default_rng(seed)
    categories = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    with path.open("w") as out:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            frame = pd.DataFrame(
                {
                    "id": np.arange(start, start + n),
                    **{f"x{i}": rng.normal(size=n).round(5) for i in range(7)},
                    "category": categories[rng.integers(0, len(categories), n)],
                    "count": rng.integers(0, 1000, n),
                    "day": (np.datetime64("2024-01-01") + rng.integers(0, 365, n)).astype(str),
                    "label": rng.integers(0, 2, n),
                }
            )
            frame.to_csv(out, index=False, header=start == 0)
    return path
