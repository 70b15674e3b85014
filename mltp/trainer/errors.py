"""Why a training job failed, as the status file reports it: the user's input, or the infrastructure."""

from __future__ import annotations

from mltp.errors import MltpError


class TrainingInputError(MltpError):
    """The data or the parameters cannot produce a model; retrying or more compute will not help."""

    exit_code = 2
