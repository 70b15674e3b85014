"""The plain baseline of the cold `mltp train` figure, run in a fresh process and timed from its spawn to
its exit: `python -m benchmarks.plain_forest CSV`. What a data scientist would write for the same model:
pandas from local disk, an 80/20 stratified split, RandomForestClassifier(n_estimators=50), accuracy on
the holdout. Prints JSON with what it fitted."""

from __future__ import annotations

import json
import sys

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

if __name__ == "__main__":
    frame = pd.read_csv(sys.argv[1])
    y = frame.pop("target")
    X_train, X_test, y_train, y_test = train_test_split(frame, y, test_size=0.2, random_state=0, stratify=y)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X_train, y_train)
    print(json.dumps({"accuracy": float(accuracy_score(y_test, model.predict(X_test)))}))
