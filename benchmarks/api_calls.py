"""Counting the AWS API calls a piece of code makes, through botocore's event system: `before-call`
fires once per operation call (each page of a paginator is one), `before-send` once per HTTP request
(so retries show as requests without calls), `after-call` when the call's answer is in (errors too)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from mltp.aws import ClientFactory


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()  # "Service.Operation" -> calls
        self.seconds: Counter[str] = Counter()  # "Service.Operation" -> seconds spent in those calls
        self.requests = 0
        self._started = 0.0  # calls are sequential: one clock is enough

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()
        self.requests = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def attach(self, client: Any) -> Any:
        service = client.meta.service_model.service_id

        def count_call(model: Any, **_: Any) -> None:
            self.calls[f"{service}.{model.name}"] += 1
            self._started = time.perf_counter()

        def count_request(**_: Any) -> None:
            self.requests += 1

        def time_call(model: Any, **_: Any) -> None:
            self.seconds[f"{service}.{model.name}"] += time.perf_counter() - self._started

        client.meta.events.register("before-call", count_call)
        client.meta.events.register("before-send", count_request)
        client.meta.events.register("after-call", time_call)
        return client


def counted(clients: ClientFactory, counter: CallCounter) -> ClientFactory:
    """One client per service, created on first use and counted (prefect-aws caches its clients too)."""
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in made:
            made[service] = counter.attach(clients(service))
        return made[service]

    return client
