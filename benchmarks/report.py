"""The results table: one row per figure, median [min-max] of each side, and a verdict per target."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

DASH = "\N{EN DASH}"
DIGITS = {"s": 1, "ms": 1, "MB": 0, "calls": 1, "requests": 1}  # any other unit (a score) with SCORE_DIGITS
SCORE_DIGITS = 4
Verdict = Callable[[list[float], list[float]], bool]


@dataclass(frozen=True)
class Row:
    figure: str
    ours: list[float]
    baseline: list[float]
    unit: str  # "s", "MB", or "" for a score
    target: str = "— (informational)"
    met: Verdict | None = None


def summary(values: list[float], unit: str, digits: int | None = None) -> str:
    digits = DIGITS.get(unit, SCORE_DIGITS) if digits is None else digits
    median = f"{statistics.median(values):.{digits}f} {unit}".rstrip()
    if len(values) == 1:
        return f"{median} (1 run)"
    return f"{median} [{min(values):.{digits}f}{DASH}{max(values):.{digits}f}]"


def p90(values: list[float]) -> float:
    """The 90th percentile, interpolated (the value itself for one)."""
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def load_average(values: tuple[float, ...]) -> str:
    """`os.getloadavg()` as the sections print it: "1.32, 1.90, 2.14" (1, 5 and 15 min)."""
    return ", ".join(f"{value:.2f}" for value in values)


def ratio(ours: list[float], baseline: list[float]) -> float:
    return statistics.median(ours) / statistics.median(baseline)


def table(rows: list[Row]) -> str:
    lines = [
        f"| figure | ours (median [min{DASH}max]) | baseline (median [min{DASH}max]) "
        "| ratio ours/baseline (medians) | target |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        target = row.target
        if row.met is not None:
            target += ": **met**" if row.met(row.ours, row.baseline) else ": **NOT met**"
        lines.append(
            f"| {row.figure} | {summary(row.ours, row.unit)} | {summary(row.baseline, row.unit)} "
            f"| {ratio(row.ours, row.baseline):.2f}x | {target} |"
        )
    return "\n".join(lines)
