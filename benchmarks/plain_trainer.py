"""The plain baseline of the trainer's speed figure, run in a fresh process: `python -m
benchmarks.plain_trainer CSV`. What a data scientist would write: pandas from local disk, one-hot
`category`, drop `id` and `day`, the trainer's 80/20 stratified split, HistGradientBoostingClassifier with
default parameters. Prints JSON with its timings (imports excluded) and what it fitted."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split


def main(path: str) -> dict[str, Any]:
    started = time.perf_counter()
    frame = pd.read_csv(path)
    y = frame.pop("label")
    X = pd.get_dummies(frame.drop(columns=["id", "day"]), columns=["category"])
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    loaded = time.perf_counter()
    model = HistGradientBoostingClassifier(random_state=0).fit(X.iloc[train], y.iloc[train])
    accuracy = accuracy_score(y.iloc[test], model.predict(X.iloc[test]))
    return {
        "load_s": loaded - started,
        "fit_s": time.perf_counter() - loaded,
        "accuracy": float(accuracy),
        "features": int(model.n_features_in_),
        "iterations": int(model.n_iter_),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
