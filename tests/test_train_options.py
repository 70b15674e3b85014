"""`mltp train` speaks of its options where the flow's messages name the flow's parameters."""

from __future__ import annotations

import pytest

from mltp.cli.train_cmd import _in_option_terms
from mltp.errors import MltpError
from mltp.monitor import MonitorSettings, assess


def test_a_timeout_names_the_commands_option() -> None:
    from datetime import UTC, datetime, timedelta

    from mltp.compute.base import Launched

    now = datetime.now(UTC)
    launched = Launched("job-1", "ec2", 1, now - timedelta(minutes=5), "i-1")
    verdict = assess(launched, None, None, now, now - timedelta(seconds=1), MonitorSettings(), now)
    assert "raise max_runtime_minutes" in verdict.message  # the UI form's and the deployment's name
    with pytest.raises(MltpError) as caught, _in_option_terms():
        raise MltpError(verdict.message)
    assert "raise --max-runtime" in str(caught.value) and "max_runtime_minutes" not in str(caught.value)


def test_other_errors_pass_unchanged() -> None:
    error = MltpError("max_runtime_minutes_total is not a parameter")
    with pytest.raises(MltpError) as caught, _in_option_terms():
        raise error
    assert caught.value is error and str(error) == "max_runtime_minutes_total is not a parameter"
