"""What the MCP tools reach the platform through: the blocks (loaded once, as every `mltp` command loads
them) and the clients kept with them, and the one place a failure becomes the one-line error result an
agent reads."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from mltp.errors import MltpError
from mltp.s3_json import finite, strict_dumps

logger = logging.getLogger("mltp.mcp")


class Platform:
    """The platform's blocks for the server's lifetime: loaded at the first call that needs them (or
    given, as tests do)."""

    def __init__(self, blocks=None, audit_sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._blocks = blocks
        self._lock = threading.Lock()  # tools run on worker threads
        self._audit_sink = audit_sink or _to_prefect
        self._single_attempt: dict[str, Any] = {}  # service -> client, for the blocks above
        self._prefect_clients: dict[str, Any] = {}  # API URL -> an open sync Prefect client

    def audit(self, record: dict[str, Any]) -> None:
        """One line of the server's log (stderr: the client keeps it) and, by default, a Prefect event."""
        logger.info("tool call: %s", strict_dumps(record))
        self._audit_sink(record)

    def blocks(self):
        with self._lock:
            if self._blocks is None:
                from blocks.platform import load_blocks

                self._blocks = load_blocks()
            return self._blocks

    # What `mltp.cli.doctor_cmd.run_checks` takes as its `Sources`: platform_status asks the services
    # afresh on every call, through the blocks and clients kept here.

    def single_attempt_client(self, blocks, service: str):
        """`blocks.single_attempt_client(service)`, made once (a boto3 client is safe across threads)."""
        with self._lock:
            if blocks is not self._blocks:  # not the server's blocks: nothing to keep
                return blocks.single_attempt_client(service)
            if service not in self._single_attempt:
                self._single_attempt[service] = blocks.single_attempt_client(service)
            return self._single_attempt[service]

    def prefect_client(self, url: str) -> contextlib.AbstractContextManager[Any]:
        """An open sync Prefect client for `url` (the API the settings point at), opened at its first use
        and kept open: httpx clients are safe across threads, and a dead server fails its next request."""
        with self._lock:
            client = self._prefect_clients.get(url)
            if client is None:
                from prefect.client.orchestration import get_client

                client = get_client(sync_client=True).__enter__()
                self._prefect_clients[url] = client
        return contextlib.nullcontext(client)

    def data(self) -> tuple[Any, str]:
        """The client factory and the data bucket's name."""
        blocks = self.blocks()
        return blocks.client, blocks.datasets.bucket_name

    def models(self) -> tuple[Any, str]:
        """An S3 client and the models bucket's name."""
        blocks = self.blocks()
        return blocks.client("s3"), blocks.models.bucket_name


def _to_prefect(record: dict[str, Any]) -> None:
    from prefect.events import emit_event

    from mltp.mcp.audit import AUDIT_EVENT

    emit_event(
        AUDIT_EVENT,
        resource={
            "prefect.resource.id": f"mltp.mcp.{record['tool']}",
            "prefect.resource.name": record["tool"],
        },
        payload=finite(record),
    )


@contextlib.contextmanager
def platform_errors() -> Iterator[None]:
    """The platform's own one-line message (what the CLI prints after `mltp: error:`) as the tool's error
    result; an AWS failure is named as one. Anything else is a crash the SDK reports without its text."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except MltpError as error:
        raise ToolError(str(error).splitlines()[0] if str(error) else type(error).__name__) from error
    except (ClientError, BotoCoreError) as error:
        raise ToolError(f"AWS refused or could not be reached: {error}: check `platform_status`") from error


@contextlib.contextmanager
def resource_errors() -> Iterator[None]:
    """`platform_errors` for a resource: the same one line, as the protocol error the client receives
    (a tool's error result has no place in a resource read)."""
    try:
        with platform_errors():
            yield
    except ToolError as error:
        raise ResourceError(str(error)) from error
