"""Retry policy shared by every task that talks to AWS: transient failures only, with backoff+jitter."""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from mltp.aws import is_transient
from mltp.compute.base import CapacityError


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry throttling, 5xx and dropped connections, never user errors."""
    try:
        state.result()
    except CapacityError:  # the flow relaunches it as a new attempt, counted against its budget
        return False
    except Exception as error:
        return is_transient(error) or is_transient(error.__cause__ or error)
    return False


AWS_RETRIES = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
