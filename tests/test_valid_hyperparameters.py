"""Hyperparameters found valid are remembered, so a run repeating them does not import scikit-learn to
check them again; an invalid set is checked, and refused, every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mltp.trainer.errors import TrainingInputError
from mltp.valid_hyperparameters import cache_file, check_candidates

CHECK = (
    "import sys, json; from mltp.valid_hyperparameters import check_candidates;"
    "check_candidates('random_forest', 'classification', json.loads(sys.argv[1]));"
    "print('sklearn' in sys.modules)"
)


def check_in_a_fresh_process(candidates: list[dict], env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", CHECK, json.dumps(candidates)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return dict(os.environ)


def test_a_set_found_valid_is_not_checked_again(cache_env) -> None:
    first = check_in_a_fresh_process([{"n_estimators": 50}], cache_env)
    assert first.returncode == 0 and first.stdout.strip() == "True", first.stderr  # imported to check
    again = check_in_a_fresh_process([{"n_estimators": 50}], cache_env)
    assert again.returncode == 0 and again.stdout.strip() == "False", again.stderr
    other = check_in_a_fresh_process([{"n_estimators": 50}, {"n_estimators": 60}], cache_env)
    assert other.stdout.strip() == "True"  # a new set in the grid is checked
    defaults = check_in_a_fresh_process([{}], cache_env)
    assert defaults.stdout.strip() == "False"  # default parameters need no check


def test_an_invalid_set_is_refused_every_time(cache_env) -> None:
    for _ in range(2):
        with pytest.raises(TrainingInputError, match="invalid hyperparameters for random_forest"):
            check_candidates("random_forest", "classification", [{"n_estimators": -1}])
    assert not cache_file().exists()


def test_the_task_is_checked_without_scikit_learn(cache_env) -> None:
    with pytest.raises(TrainingInputError, match="does only classification, but the task is regression"):
        check_candidates("logistic_regression", "regression", [{}])


def test_a_damaged_cache_means_checking_again(cache_env) -> None:
    cache_file().parent.mkdir(parents=True)
    cache_file().write_text("{not json")
    check_candidates("random_forest", "classification", [{"n_estimators": 5}])
    assert len(json.loads(cache_file().read_text())) == 1
