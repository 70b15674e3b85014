"""The registry reads a model's types from its skops schema without importing skops (or scikit-learn):
it must name at least every type skops itself would ask to trust, for a model of every algorithm and
task, and refuse any node of a kind our trainer never writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mltp import registry
from mltp.registry import TamperedModelError
from mltp.trainer.algorithms import ALGORITHMS, build_estimator
from mltp.trainer.feature_plan import plan_features
from mltp.trainer.features import build_preprocessor
from tests.conftest import packages_imported_by

ROWS = 200
COLUMNS = [
    {"name": "amount", "type": "float", "nulls": 1, "distinct": ROWS},
    {"name": "visits", "type": "float", "nulls": 0, "distinct": 5},
    {"name": "city", "type": "string", "nulls": 0, "distinct": 3},
    {"name": "street", "type": "string", "nulls": 0, "distinct": 60},
    {"name": "signup", "type": "datetime", "nulls": 0, "distinct": 150},
    {"name": "y", "type": "integer", "nulls": 0, "distinct": 3},
]
FITTED = [
    (name, task, params)
    for name, algorithm in ALGORITHMS.items()
    for task in ("classification", "regression")
    if (algorithm.classifier if task == "classification" else algorithm.regressor)
    for params in ([{}, {"metric": "manhattan"}, {"algorithm": "kd_tree"}] if name == "knn" else [{}])
]


def mixed_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=ROWS),
            "visits": rng.integers(0, 5, ROWS).astype(float),
            "city": pd.Series(rng.choice(["x", "y", "z"], ROWS), dtype="str"),
            "street": pd.Series([f"s{i % 60}" for i in range(ROWS)], dtype="str"),
            "signup": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 150, ROWS), unit="D"),
        }
    )
    frame.loc[3, "amount"] = np.nan
    return frame


def model_bytes(name: str, task: str, params: dict) -> bytes:
    algorithm, frame = ALGORITHMS[name], mixed_frame()
    y = np.arange(ROWS) % (2 if name == "hist_gradient_boosting" and task == "classification" else 3)
    y = y if task == "classification" else np.random.default_rng(1).normal(size=ROWS)
    plan = plan_features(COLUMNS, "y", ROWS)
    preprocess = build_preprocessor(plan, scale=algorithm.needs_scaling, impute=not algorithm.handles_missing)
    pipeline = Pipeline([("preprocess", preprocess), ("model", build_estimator(name, task, params, 0))])
    return sio.dumps(pipeline.fit(frame[plan.used], y))


@pytest.mark.parametrize(("name", "task", "params"), FITTED)
def test_names_every_type_skops_would_ask_to_trust_and_all_are_trusted(name, task, params) -> None:
    data = model_bytes(name, task, params)
    assert set(sio.get_untrusted_types(data=data)) <= set(registry._types_in(data))
    registry.check_trusted(data, f"{name} {task}")


def test_a_function_in_a_model_is_refused() -> None:
    data = sio.dumps(Pipeline([("log", FunctionTransformer(np.log1p))]))
    with pytest.raises(TamperedModelError, match=r"untrusted type 'numpy.log1p'"):
        registry.check_trusted(data, "logs")
    assert "skops node FunctionNode" in registry._types_in(data)  # a kind our trainer never writes


def test_checking_a_model_imports_neither_skops_nor_scikit_learn(tmp_path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes("random_forest", "classification", {}))
    statements = (
        "import pathlib; from mltp import registry;"
        f"registry.check_trusted(pathlib.Path({str(path)!r}).read_bytes(), 'forest')"
    )
    assert packages_imported_by(statements, {"skops", "sklearn", "scipy"}) == []
