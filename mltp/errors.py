"""One root exception and a few leaves. Each message says what is wrong and what to do about it.

The CLI prints ``str(error)`` as a single line and exits with ``error.exit_code``: 2 for input the user
can fix (a bad variable, a taken port, a bucket name that is not theirs), 1 for an environment that is
not in the state the command needs (a server down, credentials rejected).
"""

from __future__ import annotations


class MltpError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(MltpError):
    """A setting (environment variable, flag, block field) has a value we cannot use."""

    exit_code = 2

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class PortInUseError(MltpError):
    """A sandbox service cannot bind its port because something else holds it."""

    exit_code = 2

    def __init__(self, message: str, *, port: int) -> None:
        super().__init__(message)
        self.port = port


class SandboxError(MltpError):
    """The local sandbox is not in the state the command needs."""


class SandboxNotRunningError(SandboxError):
    """A command needed the sandbox, or asked to stop it, and it is not running."""


class PrefectApiError(MltpError):
    """No Prefect API is configured, or the configured one does not answer."""

    def __init__(self, message: str, *, api_url: str | None = None) -> None:
        super().__init__(message)
        self.api_url = api_url


class AwsAccessError(MltpError):
    """AWS refused or could not be reached with the configured credentials and endpoint."""


class BucketError(MltpError):
    """A bucket we need is missing, not ours, or not set up the way we require."""

    exit_code = 2

    def __init__(self, message: str, *, s3_uri: str) -> None:
        super().__init__(message)
        self.s3_uri = s3_uri


class DatasetError(MltpError):
    """A dataset file or its parameters cannot be ingested as given (the user's input to fix)."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class DatasetNotFoundError(MltpError):
    """A dataset name or version that the data bucket does not hold."""

    exit_code = 2

    def __init__(self, message: str, *, s3_uri: str) -> None:
        super().__init__(message)
        self.s3_uri = s3_uri
