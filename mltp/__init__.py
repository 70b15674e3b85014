"""ml-training-platform: Prefect 3 pipelines that train scikit-learn models on AWS compute."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ml-training-platform")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
