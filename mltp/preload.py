"""Importing heavy modules on a thread of their own while the caller waits on the network.

A training flow needs scikit-learn to check hyperparameters before launch and skops to check a model's
types before registering it, about a second of imports each; meanwhile it waits on Prefect, S3 and the
trainer. Started early, the imports are done when needed: Python's import lock makes an import of the
same module elsewhere wait for this one instead of running it twice.
"""

from __future__ import annotations

import contextlib
import importlib
import threading


def import_in_background(*modules: str) -> threading.Thread:
    def run() -> None:
        for module in modules:
            with contextlib.suppress(Exception):  # the import where the module is used reports a problem
                importlib.import_module(module)

    thread = threading.Thread(target=run, name="preload", daemon=True)
    thread.start()
    return thread
