"""Hyperparameters checked before launch, remembered once found valid.

Checking them builds the estimator, which imports scikit-learn: over a second of every training flow
before its launch. A run that repeats a set already found valid (a schedule, a retry, the same form
submitted again) skips that. The sets are remembered per user, in
`$XDG_CACHE_HOME/mltp/valid-hyperparameters.json` (`~/.cache` by default), by scikit-learn's version, the
estimator and the parameters; an invalid set is never remembered, so it is checked and refused every time.
Default parameters need no check.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mltp.trainer.algorithms import get_algorithm, validate_candidates

MAX_REMEMBERED = 1000


def check_candidates(algorithm: str, task: str, candidates: list[dict[str, Any]]) -> None:
    """`validate_candidates` for the sets not found valid before; remembers those it passes."""
    estimator = get_algorithm(algorithm).estimator_path(task)  # the task check, without scikit-learn
    remembered = _remembered()
    keys = {_key(estimator, params): params for params in candidates if params}
    new = {key: params for key, params in keys.items() if key not in remembered}
    if not new:
        return
    validate_candidates(algorithm, task, list(new.values()))
    _remember([*remembered, *new][-MAX_REMEMBERED:])


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mltp" / "valid-hyperparameters.json"


def _key(estimator: str, params: dict[str, Any]) -> str:
    return json.dumps([version("scikit-learn"), estimator, params], sort_keys=True)


def _remembered() -> list[str]:
    try:
        keys = json.loads(cache_file().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: check again
        return []
    return [key for key in keys if isinstance(key, str)] if isinstance(keys, list) else []


def _remember(keys: list[str]) -> None:
    """Replaces the file in one step (concurrent runs each write a whole list); failing to write only
    means checking again next time."""
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as file:
            json.dump(keys, file)
        os.replace(file.name, path)
