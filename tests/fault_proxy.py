"""A loopback HTTP proxy in front of the moto server that injects AWS faults, the way production fails.

Per service (read from the SigV4 credential scope; `"*"` for every service not named) a share of calls
gets one of:
- `throttle`: the service's own throttling error (`RequestLimitExceeded` for EC2, `Throttling` for
  CloudWatch, `ThrottlingException` for other JSON services, `SlowDown` for S3), without reaching moto;
- `lost`: the call reaches moto and takes effect, but the client gets a 503 (the answer was lost);
- `error`: a plain 500 without reaching moto;
- `unavailable`: a plain 503 without reaching moto;
- `drop`: the connection is closed without an answer, without reaching moto;
- `slow`: the call is answered normally after `slow_seconds`;
- `capacity`: EC2's `InsufficientInstanceCapacity`, without reaching moto.
Faults can also be scripted for the next calls of one action (`proxy.script("ec2:RunInstances",
"capacity")`; S3's actions are named from the request, e.g. `s3:CompleteMultipartUpload`, and so is
Lambda's `lambda:Invoke`). The random
generator is seeded, so a failing run can be replayed.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


def throttling_response(service: str) -> tuple[int, dict[str, str], bytes]:
    if service == "ec2":
        body = (
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
            "</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        )
        return 503, {"Content-Type": "text/xml"}, body.encode()
    if service == "s3":
        body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return 503, {"Content-Type": "application/xml"}, body.encode()
    code = "Throttling" if service == "monitoring" else "ThrottlingException"  # CloudWatch's own name
    body = f'{{"__type": "{code}", "message": "Rate exceeded"}}'.encode()
    return 400, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code};Sender"}, body


def _action(service: str, method: str, path: str, target: str, body: bytes) -> str:
    """The API action: from X-Amz-Target for JSON protocols, S3's from its REST request, else from a
    query protocol's form body."""
    if target:
        return target.rsplit(".", 1)[-1]
    if service == "s3":
        return _s3_action(method, path)
    if service == "lambda":  # REST too; the platform's calls: Invoke, and GetFunction to check the code
        return "Invoke" if path.partition("?")[0].endswith("/invocations") else f"{method}:{path}"
    return parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]


def _s3_action(method: str, path: str) -> str:
    resource, _, query = path.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    on_object = resource.strip("/").count("/") >= 1
    if "uploads" in params:
        return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
    if "uploadId" in params:
        named = {"POST": "CompleteMultipartUpload", "PUT": "UploadPart", "DELETE": "AbortMultipartUpload"}
        return named.get(method, "ListParts")
    if not on_object:
        return {"GET": "ListObjectsV2", "HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(method, method)
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(
        method, method
    )


def canned_response(fault: str, service: str) -> tuple[int, dict[str, str], bytes]:
    if fault == "throttle":
        return throttling_response(service)
    if fault == "capacity":
        body = (
            "<Response><Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>There is no "
            "capacity.</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        )
        return 500, {"Content-Type": "text/xml"}, body.encode()
    return (503 if fault == "unavailable" else 500), {}, b""


class FaultProxy:
    def __init__(
        self, target: str, rates: dict[str, dict[str, float]], seed: int = 7, slow_seconds: float = 0.5
    ) -> None:
        """`rates`: service (or "*") -> {fault: share of that service's calls}."""
        self.target, self.rates, self.slow_seconds = target, rates, slow_seconds
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter = Counter()  # (service, fault) -> count, scripted and drawn
        self.drawn: Counter = Counter()  # the same, drawn at the configured rates only
        self.calls: Counter = Counter()
        self.scripted: defaultdict[str, deque] = defaultdict(deque)
        self.client = httpx.Client(base_url=target, timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                match = _SCOPE.search(self.headers.get("Authorization", ""))
                service = match.group(1) if match else "unknown"
                action = _action(service, self.command, self.path, self.headers.get("X-Amz-Target", ""), body)
                fault = proxy._draw(service, action)
                if fault in ("throttle", "error", "unavailable", "capacity"):
                    self._reply(*canned_response(fault, service))
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_seconds)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                response = proxy.client.request(self.command, self.path, content=body, headers=headers)
                if fault == "lost":
                    self._reply(503, {}, b"")
                    return
                passed = {
                    k: v
                    for k, v in response.headers.items()
                    if k.lower()
                    not in ("content-length", "transfer-encoding", "connection", "content-encoding")
                }
                self._reply(response.status_code, passed, response.content)

            def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, key: str, *faults: str) -> None:
        """The next calls of `key` (`service:Action`, e.g. `ec2:RunInstances`) get these faults, in order."""
        with self.lock:
            self.scripted[key].extend(faults)

    def _draw(self, service: str, action: str) -> str | None:
        with self.lock:
            self.calls[service] += 1
            queue = self.scripted.get(f"{service}:{action}")
            if queue:
                fault = queue.popleft()
                self.injected[(service, fault)] += 1
                return fault
            roll = self.random.random()
            for fault, share in self.rates.get(service, self.rates.get("*", {})).items():
                if roll < share:
                    self.injected[(service, fault)] += 1
                    self.drawn[(service, fault)] += 1
                    return fault
                roll -= share
        return None

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.client.close()


@contextmanager
def platform_routed(prefect_api_url: str, aws_url: str, lambda_url: str | None = None) -> Iterator[None]:
    """Point the sandbox's `mltp-aws` block (and `mltp-lambda`'s endpoint, if given) at other URLs, such
    as fault proxies: commands started meanwhile talk to AWS through them. The blocks are put back as
    they were afterwards, so the sandbox can go on serving other tests."""
    from prefect_aws import AwsCredentials

    from blocks.compute import LambdaCompute
    from blocks.platform import CREDENTIALS, LAMBDA
    from mltp.prefect_api import activated

    def route(aws: str, lambda_endpoint: str | None) -> tuple[str, str | None]:
        with activated(prefect_api_url):
            credentials = AwsCredentials.load(CREDENTIALS)
            previous = credentials.aws_client_parameters.endpoint_url, None
            credentials.aws_client_parameters.endpoint_url = aws
            credentials.save(CREDENTIALS, overwrite=True)
            if lambda_endpoint:
                function = LambdaCompute.load(LAMBDA)
                previous = previous[0], function.endpoint_url
                function.endpoint_url = lambda_endpoint
                function.save(LAMBDA, overwrite=True)
        return previous

    previous = route(aws_url, lambda_url)
    try:
        yield
    finally:
        route(*previous)
