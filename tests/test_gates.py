"""Quality gates: parsing, refusing bad syntax, and deciding."""

from __future__ import annotations

import pytest

from mltp.errors import ConfigError
from mltp.gates import QualityGate


@pytest.mark.parametrize(
    ("text", "metrics", "passes"),
    [
        ("accuracy>=0.9", {"accuracy": 0.9}, True),
        ("accuracy > 0.9", {"accuracy": 0.9}, False),
        ("rmse<12.5", {"rmse": 3.0}, True),
        ("rmse <= 1e-3", {"rmse": 0.01}, False),
        ("r2==1", {"r2": 1.0}, True),
        (" f1_macro >= -0.5 ", {"f1_macro": 0.0}, True),
    ],
)
def test_gates_decide(text, metrics, passes) -> None:
    assert QualityGate.parse(text).passes(metrics) is passes


@pytest.mark.parametrize(
    "text", ["accuracy", "accuracy=>0.9", ">=0.9", "accuracy>=high", "accuracy>=0.9 or 1", ""]
)
def test_bad_syntax_is_a_one_line_error(text) -> None:
    with pytest.raises(ConfigError, match="is not METRIC OP NUMBER: write"):
        QualityGate.parse(text)


def test_a_metric_the_task_does_not_measure_is_refused() -> None:
    gate = QualityGate.parse("rmse<3")
    gate.check_metric("regression")
    with pytest.raises(ConfigError, match="quality gate rmse<3: 'rmse' is a regression metric: the classif"):
        gate.check_metric("classification")
    with pytest.raises(ConfigError, match="quality gate rmse2<3: unknown metric 'rmse2': the regression met"):
        QualityGate.parse("rmse2<3").check_metric("regression")
    assert str(gate) == "rmse<3"


@pytest.mark.parametrize("missing", [None, float("nan")])
@pytest.mark.parametrize("text", ["roc_auc>=0.5", "roc_auc<0.5", "rmse<=3", "r2==1"])
def test_a_metric_not_measured_never_passes(text, missing) -> None:
    """null (how JSON carries a metric that could not be measured) fails every gate, as NaN does."""
    metric = QualityGate.parse(text).metric
    assert QualityGate.parse(text).passes({metric: missing, "accuracy": 1.0}) is False
