"""Connecting a command to the Prefect API it should use (see `mltp.prefect_api`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mltp.home import mltp_home
from mltp.prefect_api import ApiTarget, activated, resolve_api, server_version


@contextmanager
def prefect_connection() -> Iterator[ApiTarget]:
    """Resolve the API, point Prefect at it and make sure it answers before the command starts."""
    target = resolve_api(mltp_home())
    with activated(target.url):
        server_version(target)
        yield target
