"""Importing heavy modules on a thread of their own while the caller waits on the network.

A training flow needs skops to check a model's types before registering it, most of a second of imports
(scikit-learn's among them); meanwhile it waits for the trainer. Started early, the import is done when
needed: Python's import lock makes an import of the same module elsewhere wait for this one instead of
running it twice.
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
