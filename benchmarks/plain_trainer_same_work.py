"""The honest plain baseline of the trainer's speed figure, run in a fresh process: `python -m
benchmarks.plain_trainer_same_work CSV MODEL`. The same work as our trainer on the benchmark's file, the
way a data scientist would write it with pandas and scikit-learn alone (no mltp): read the CSV from local
disk, drop the identifier `id`, one-hot `category`, expand the date `day` into year, month, day, day of
week and hour (the trainer's column order: numbers, one-hot, date parts), the trainer's 80/20 stratified
split with `random_state=0`, HistGradientBoostingClassifier(random_state=0), the four holdout metrics the
trainer reports for classification, and the model saved with skops to MODEL. Prints JSON with its timings
(imports excluded), its metrics and what it fitted."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

DATE_PARTS = ("year", "month", "day", "day_of_week", "hour")


def main(path: str, model_path: str) -> dict[str, Any]:
    started = time.perf_counter()
    frame = pd.read_csv(path)
    y = frame.pop("label")
    day = pd.to_datetime(frame.pop("day"))
    X = pd.get_dummies(frame.drop(columns=["id"]), columns=["category"])
    for part in DATE_PARTS:
        X[f"day_{part}"] = getattr(day.dt, part)
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    loaded = time.perf_counter()
    model = HistGradientBoostingClassifier(random_state=0).fit(X.iloc[train], y.iloc[train])
    X_test, y_test = X.iloc[test], y.iloc[test]
    predicted = model.predict(X_test)
    metrics = {
        "accuracy": accuracy_score(y_test, predicted),
        "balanced_accuracy": balanced_accuracy_score(y_test, predicted),
        "f1_macro": f1_score(y_test, predicted, average="macro"),
        "roc_auc": roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]),
    }
    fitted = time.perf_counter()
    sio.dump(model, model_path)
    return {
        "load_s": loaded - started,
        "fit_s": fitted - loaded,
        "save_s": time.perf_counter() - fitted,
        **{name: float(value) for name, value in metrics.items()},
        "features": int(model.n_features_in_),
        "iterations": int(model.n_iter_),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
