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
    with activated(target.url), _no_flow_heartbeats_unless_configured():
        server_version(target)
        yield target


@contextmanager
def _no_flow_heartbeats_unless_configured() -> Iterator[None]:
    """A flow a command runs in its own process sends no Prefect flow-run heartbeat, unless the user set
    `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`: nothing in the platform reads them (the command's own process
    reports a crash), and at the end of every run Prefect waits up to a second for the heartbeat thread's
    sleep to end. Flow runs a worker starts keep them."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
