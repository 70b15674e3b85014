"""Quality gates: `accuracy>=0.9`, `rmse<12.5`: a model is registered only when its metric passes."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from mltp.errors import ConfigError
from mltp.trainer.spec import metric_problem

_GATE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<|==)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


@dataclass(frozen=True)
class QualityGate:
    metric: str
    comparison: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> QualityGate:
        match = _GATE.match(text)
        if not match:
            raise ConfigError(
                f"quality gate {text!r} is not METRIC OP NUMBER: write e.g. accuracy>=0.9 or rmse<12.5",
                setting="min_metric",
            )
        metric, comparison, threshold = match.groups()
        return cls(metric, comparison, float(threshold))

    def check_metric(self, task: str) -> None:
        problem = metric_problem(self.metric, task)
        if problem:
            raise ConfigError(f"quality gate {self}: {problem}", setting="min_metric")

    def passes(self, metrics: dict[str, float | None]) -> bool:
        """A metric not measured (null, or NaN: every comparison with it is false) never passes."""
        value = metrics.get(self.metric)
        return value is not None and _OPERATORS[self.comparison](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.comparison}{self.threshold:g}"
