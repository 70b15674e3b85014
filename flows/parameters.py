"""The training parameters, declared once for every flow that trains (`train-model`, `ingest-and-train`).

Prefect turns each annotation into a field of the deployment's form: the description becomes its help
text, a `Literal` a dropdown, the bounds validation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, get_type_hints

from pydantic import Field
from pydantic.fields import FieldInfo

from mltp.monitor import MonitorSettings
from mltp.planning import ComputeChoice
from mltp.trainer.algorithms import ALGORITHMS

P = ParamSpec("P")
R = TypeVar("R")

AlgorithmName = Literal[tuple(ALGORITHMS)]  # type: ignore[valid-type]

Algorithm = Annotated[AlgorithmName, Field(description="scikit-learn estimator family")]
Target = Annotated[str | None, Field(description="Target column; empty for the dataset's own")]
Task = Annotated[
    Literal["classification", "regression"] | None, Field(description="Empty to infer from the target")
]
Hyperparameters = Annotated[dict[str, Any], Field(description='Fixed hyperparameters, e.g. {"max_depth": 8}')]
Grid = Annotated[
    dict[str, list[Any]],
    Field(description='Grid axes, e.g. {"n_estimators": [50, 100]}: one candidate each'),
]
Compute = Annotated[
    ComputeChoice,
    Field(description="Where to train; auto lets the planner choose"),
]
MaxRuntimeMinutes = Annotated[
    float, Field(ge=0.1, le=10080, description="Hard deadline per job; the compute is terminated after it")
]
ModelName = Annotated[str | None, Field(description="Model name; empty for the dataset's name")]
PrimaryMetric = Annotated[
    str | None, Field(description="Metric that picks the best candidate (default accuracy or r2)")
]
Folds = Annotated[int | None, Field(ge=2, le=20, description="k-fold cross-validation instead of a holdout")]
Holdout = Annotated[float, Field(gt=0.0, lt=0.9, description="Share of rows held out")]
Seed = Annotated[int, Field(description="Random seed for the split and the estimator")]
Monitoring = Annotated[MonitorSettings, Field(description="Polling, heartbeat and relaunch settings")]
RegisterBest = Annotated[bool, Field(description="Register the best model when training succeeds")]
MinMetric = Annotated[
    str | None, Field(description="Quality gate for registering, e.g. accuracy>=0.9 or rmse<12.5")
]
Promote = Annotated[
    bool, Field(description="Move the champion alias to the new version when it beats the champion")
]


def document_parameters(fn: Callable[P, R]) -> Callable[P, R]:
    """Copy each parameter's `Field(description=...)` into the docstring's `Args:` section.

    Prefect builds the form from the signature but drops descriptions given in `Annotated[...]`
    (it passes its own `description=None` over them) and reads them from the docstring instead.
    """
    hints = get_type_hints(fn, include_extras=True)
    described = [
        f"    {name}: {meta.description}"
        for name in inspect.signature(fn).parameters
        for meta in getattr(hints.get(name), "__metadata__", ())
        if isinstance(meta, FieldInfo) and meta.description
    ]
    fn.__doc__ = "\n".join([inspect.cleandoc(fn.__doc__ or ""), "", "Args:", *described])
    return fn
