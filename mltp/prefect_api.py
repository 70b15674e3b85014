"""Which Prefect API a command talks to, and a check that it answers.

Order: `PREFECT_API_URL` from the environment (an explicit choice), else the running sandbox of this
project, else the active Prefect profile. With none of them we stop and say how to get one, instead of
letting Prefect start a throw-away ephemeral server that nobody can see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mltp.errors import PrefectApiError

HOW_TO_GET_ONE = "start the sandbox with `mltp sandbox up`, or set PREFECT_API_URL to your Prefect server"


@dataclass(frozen=True)
class ApiTarget:
    url: str
    source: str  # "PREFECT_API_URL", "sandbox" or "profile"


def resolve_api(home: Path) -> ApiTarget:
    from_env = os.environ.get("PREFECT_API_URL")
    if from_env:
        return ApiTarget(from_env, "PREFECT_API_URL")
    from mltp.sandbox.lifecycle import Sandbox

    sandbox = Sandbox(home)
    endpoints = sandbox.endpoints()
    if endpoints and sandbox.prefect.state() == "running":  # even if moto died: doctor then says so
        return ApiTarget(endpoints.prefect_api_url, "sandbox")
    from prefect.settings import get_current_settings

    from_profile = get_current_settings().api.url
    if from_profile:
        return ApiTarget(from_profile, "profile")
    raise PrefectApiError(f"no Prefect API is configured: {HOW_TO_GET_ONE}")


@contextmanager
def activated(url: str) -> Iterator[None]:
    """Point every Prefect client created inside the block at `url`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def server_version(target: ApiTarget, client=None) -> str:
    """The server's version; `PrefectApiError` when it does not answer. Call inside `activated`; `client`:
    the sync Prefect client to ask through (default: a new one)."""
    if client is None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return server_version(target, client)
    problem = client.api_healthcheck()
    if problem is None:
        try:
            return client.api_version()
        except Exception as error:  # any transport or HTTP failure means the same to the user
            problem = error
    reason = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
    raise PrefectApiError(
        f"the Prefect API at {target.url} (from {target.source}) is unreachable ({reason}): {HOW_TO_GET_ONE}",
        api_url=target.url,
    )


def reread_prefect_settings() -> None:
    """In a process forked after Prefect was imported: read its settings and configure its logging again
    from this process's environment, as a fresh interpreter would on import."""
    import prefect.context
    import prefect.logging.configuration

    prefect.context.refresh_global_settings_context()
    prefect.logging.configuration.setup_logging(incremental=False)


def flow_run_url(flow_run_id: str) -> str:
    """The flow run's page in the Prefect UI (the API's address without /api unless the UI's is set)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    api = PREFECT_API_URL.value() or ""
    return f"{PREFECT_UI_URL.value() or api.removesuffix('/api')}/runs/flow-run/{flow_run_id}"
