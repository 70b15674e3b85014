"""AWS client configuration and the error taxonomy every AWS call site shares.

Clients are never built at import time. Core code takes a `ClientFactory` (a callable that returns a
boto3 client for a service name): in flows, the CLI and the MCP server that is `PlatformBlocks.client`
(the credentials block's session); on the compute it is `boto3_client_factory()`. Both are
`SharedClients`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from mltp.errors import AwsAccessError

ClientFactory = Callable[[str], Any]

# Adaptive mode adds client-side rate limiting on top of retries, so a burst of polls slows down
# instead of throttling the whole account.
RETRY_CONFIG: dict[str, Any] = {"retries": {"mode": "adaptive", "max_attempts": 8}}

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "InvalidToken",
    }
)
# What S3 answers for a bucket or key that is not there, or that we may not see (HEAD gives bare codes).
NOT_FOUND_CODES = frozenset({"404", "NoSuchBucket", "NoSuchKey"})
DENIED_CODES = frozenset({"403", "AccessDenied"})
_CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


def botocore_config() -> Config:
    return Config(**RETRY_CONFIG)


class SharedClients:
    """A `ClientFactory` over one boto3 session: one client per service, made on first use and shared
    (clients are thread-safe; each costs ~20 ms to build, and a session of its own ~0.15 s more before
    its first call). `with_settings` makes a client of its own with other settings,
    from the same session. The lock: a boto3 session is not thread-safe."""

    def __init__(self, new_session: Callable[[], boto3.Session], **params: Any) -> None:
        self._new_session, self._params = new_session, params
        self._session: boto3.Session | None = None
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        with self._lock:
            if service not in self._made:
                self._made[service] = self._make(service)
            return self._made[service]

    def with_settings(self, service: str, **settings: Any) -> Any:
        with self._lock:
            return self._make(service, **settings)

    def _make(self, service: str, **settings: Any) -> Any:
        if self._session is None:
            self._session = self._new_session()
        return self._session.client(service, **{**self._params, **settings})


def boto3_client_factory(region: str | None = None, endpoint_url: str | None = None) -> ClientFactory:
    """Clients from the default credential chain (instance role, env): what the compute side uses."""
    return SharedClients(
        lambda: boto3.Session(region_name=region), endpoint_url=endpoint_url, config=botocore_config()
    )


def error_code(error: BaseException) -> str | None:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: throttling, AWS 5xx, dropped or refused connections."""
    if isinstance(error, _CONNECTION_ERRORS):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(error) in THROTTLING_CODES or status >= 500
    return False


def caller_identity(clients: ClientFactory) -> dict[str, str]:
    """STS GetCallerIdentity, with credential and connection failures turned into `AwsAccessError`."""
    try:
        identity = clients("sts").get_caller_identity()
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise AwsAccessError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
            "and run `mltp blocks init`"
        ) from error
    except _CONNECTION_ERRORS as error:
        raise AwsAccessError(
            f"cannot reach AWS at {error.kwargs.get('endpoint_url', 'its endpoint')}: "
            "start the sandbox with `mltp sandbox up`, or fix AWS_ENDPOINT_URL and run `mltp blocks init`"
        ) from error
    except ClientError as error:
        if error_code(error) in CREDENTIAL_CODES:
            raise AwsAccessError(
                f"AWS rejected the credentials ({error_code(error)}): check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, then run `mltp blocks init`"
            ) from error
        raise
    return {"account": identity["Account"], "arn": identity["Arn"]}
