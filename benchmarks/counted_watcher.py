"""One `watch-incoming` run in this process, as a watcher on another machine would run it, with its API
calls counted: `python -m benchmarks.counted_watcher MAX_FILES` (PREFECT_API_URL names the sandbox's
API). Prints JSON: the flow's report, its wall time, the AWS calls of every client it made (by operation,
through api_calls.CallCounter) and its HTTP requests to the Prefect API (by answer's status; the events it
emits go over a websocket and are not counted)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any
from unittest import mock

import boto3
import httpx

from benchmarks.api_calls import CallCounter


def counting_clients(counter: CallCounter) -> Any:
    make_client = boto3.session.Session.client

    def client(session: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        return counter.attach(make_client(session, *args, **kwargs))

    return mock.patch.object(boto3.session.Session, "client", client)


def counting_requests(answers: Counter[int]) -> list[Any]:
    """Patches of httpx's send, sync and async, counting the answers from the Prefect API (retries too:
    Prefect's clients retry through the same send)."""
    api = httpx.URL(os.environ["PREFECT_API_URL"])
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def count(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.host == api.host and request.url.port == api.port:
            answers[response.status_code] += 1
        return response

    def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return count(request, sync_send(client, request, **kwargs))

    async def send_async(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return count(request, await async_send(client, request, **kwargs))

    return [
        mock.patch.object(httpx.Client, "send", send),
        mock.patch.object(httpx.AsyncClient, "send", send_async),
    ]


def main(max_files: int) -> dict[str, Any]:
    from flows.watch import watch_incoming

    aws, answers = CallCounter(), Counter[int]()
    patches = [counting_clients(aws), *counting_requests(answers)]
    for patch in patches:
        patch.start()
    started = time.perf_counter()
    report = watch_incoming(max_files=max_files)
    seconds = time.perf_counter() - started
    for patch in patches:
        patch.stop()
    return {
        "seconds": seconds,
        "report": report,
        "aws_calls": dict(aws.calls),
        "aws_requests": aws.requests,
        "prefect_answers": {str(status): count for status, count in answers.items()},
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
