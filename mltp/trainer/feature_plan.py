"""Which columns become which features, decided from the dataset's profile alone (no data, no
scikit-learn: the CLI checks a training request with this before launch).

numbers and booleans -> numeric
text, few distinct   -> one-hot
text, many distinct  -> one-hot of the 50 most frequent values, the rest grouped as "infrequent"
text, unique per row -> dropped (an identifier carries no signal); so are unique integers named like ids
dates                -> year, month, day, day of week and hour as numbers
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mltp.trainer.errors import TrainingInputError

ONE_HOT_MAX = 50
ID_LIKE_SHARE = 0.9
DATE_PARTS = ("year", "month", "day", "day_of_week", "hour")
_IDENTIFIER = re.compile(r"(^|[_-])(id|uuid|key)$", re.IGNORECASE)


@dataclass
class FeaturePlan:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    frequent_only: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def used(self) -> list[str]:
        return self.numeric + self.categorical + self.frequent_only + self.dates

    def choices(self) -> list[str]:
        """Plain-words log lines for the choices that are not obvious."""
        lines = [f"dropped {name}: {why}" for name, why in self.dropped.items()]
        lines += [
            f"{name}: many distinct values, one-hot of the {ONE_HOT_MAX} most frequent"
            for name in self.frequent_only
        ]
        lines += [f"{name}: date, expanded to {', '.join(DATE_PARTS)}" for name in self.dates]
        return lines


def plan_features(columns: list[dict[str, Any]], target: str, rows: int) -> FeaturePlan:
    plan = FeaturePlan()
    for column in columns:
        name, kind = column["name"], column["type"]
        if name == target:
            continue
        if column["nulls"] == rows or kind == "empty":
            plan.dropped[name] = "no values"
        elif kind == "integer" and _IDENTIFIER.search(name) and column["distinct"] >= ID_LIKE_SHARE * rows:
            plan.dropped[name] = "a different number in almost every row, named like an identifier"
        elif kind in ("integer", "float", "boolean"):
            plan.numeric.append(name)
        elif kind == "datetime":
            plan.dates.append(name)
        elif (
            kind == "string" and column["distinct"] >= ID_LIKE_SHARE * (rows - column["nulls"]) and rows > 20
        ):
            plan.dropped[name] = "a different value in almost every row (an identifier)"
        elif kind == "string" and column["distinct"] > ONE_HOT_MAX:
            plan.frequent_only.append(name)
        elif kind == "string":
            plan.categorical.append(name)
        else:
            plan.dropped[name] = f"type {kind} is not supported as a feature"
    if not plan.used:
        raise TrainingInputError(
            f"no usable feature columns besides target {target!r}"
            + (f" ({'; '.join(f'{n}: {w}' for n, w in plan.dropped.items())})" if plan.dropped else "")
        )
    return plan
