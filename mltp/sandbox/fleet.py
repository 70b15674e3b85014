"""The sandbox's compute: what AWS would run for every instance launched and every function invoked.

moto records instances and functions but runs neither (it never executes user-data, and its Lambda
`Invoke` needs Docker). The fleet closes that gap with two parts in one process:

- a Lambda endpoint on loopback (the sandbox's Lambda block points at it): asynchronous `Invoke` runs
  the deployed function's handler in a subprocess, from the code that was deployed to it; every other
  Lambda call is forwarded to moto unchanged;
- an EC2 watcher: each new instance whose user-data is our bootstrap runs the trainer command that the
  bootstrap would run, with the instance id exported; when the trainer exits the instance is
  terminated, as `shutdown` with terminate behaviour does. Terminating an instance kills its trainer.

At most `max_trainers` trainers run at once; the others wait, as they would for capacity. Each runs in
its own process, forked from one that imported the trainer's libraries once (`trainer_processes`).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import ClientError

from mltp.aws import error_code
from mltp.compute.user_data import parse_user_data
from mltp.dataset_catalog import split_s3_uri
from mltp.sandbox import trainer_processes

logger = logging.getLogger("mltp.fleet")

INVOKE_SUFFIX = "/invocations"
FUNCTIONS_PATH = "/2015-03-31/functions"
LIVE_STATES = ("pending", "running")
# Runs the handler the way the Lambda runtime does: LAMBDA_TASK_ROOT (the deployed code) first on the path.
RUNTIME_SHIM = (
    "import importlib, json, sys;"
    "module, name = sys.argv[1].rsplit('.', 1);"
    "handler = getattr(importlib.import_module(module), name);"
    "handler(json.loads(sys.stdin.read()), None)"
)


@dataclass
class Work:
    """One trainer to run: for an instance (`instance_id`) or an invocation (`request_id`)."""

    kind: str  # ec2 | lambda
    key: str  # instance id or request id
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    stdin: bytes = b""
    timeout_s: float | None = None
    process: trainer_processes.TrainerProcess | None = None
    started: float = 0.0
    log_path: Path | None = None


@dataclass
class Fleet:
    moto_url: str
    state_dir: Path
    max_trainers: int
    base_env: dict[str, str]
    queue: collections.deque = field(default_factory=collections.deque)
    running: dict[str, Work] = field(default_factory=dict)
    seen_instances: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    work_queued: threading.Event = field(default_factory=threading.Event)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=self.base_env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.base_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.base_env["AWS_SECRET_ACCESS_KEY"],
            # moto is next door: when it does not answer it is down, and the fleet must stay stoppable
            config=Config(
                connect_timeout=2, read_timeout=60, retries={"total_max_attempts": 2, "mode": "standard"}
            ),
        )

    # -- EC2 -------------------------------------------------------------------------------------

    def watch_instances(self, ec2) -> None:
        live = {}
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
        ):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    live[instance["InstanceId"]] = instance
        with self.lock:
            gone = [key for key, work in self.running.items() if work.kind == "ec2" and key not in live]
            queued_gone = [work for work in self.queue if work.kind == "ec2" and work.key not in live]
        for key in gone:
            logger.info("instance %s was terminated: stopping its trainer", key)
            self._kill(key)
        with self.lock:
            for work in queued_gone:
                self.queue.remove(work)
        for instance_id in live.keys() - self.seen_instances:
            self.seen_instances.add(instance_id)
            self._boot(ec2, instance_id)

    def _boot(self, ec2, instance_id: str) -> None:
        attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        encoded = attribute.get("UserData", {}).get("Value")
        script = base64.b64decode(encoded).decode("utf-8", "replace") if encoded else ""
        boot = parse_user_data(script)
        if not boot.get("job_uri"):
            logger.info("instance %s has no mltp bootstrap in its user-data: left idle", instance_id)
            return
        if boot.get("wheel_uri") and not self._exists(boot["wheel_uri"]):
            logger.warning(
                "instance %s: trainer wheel %s is missing: boot fails", instance_id, boot["wheel_uri"]
            )
            self._terminate(instance_id)
            return
        self._enqueue(
            Work(
                "ec2",
                instance_id,
                [sys.executable, "-m", "mltp.trainer", "run", "--job", boot["job_uri"]],
                {**self.base_env, "MLTP_INSTANCE_ID": instance_id},
            )
        )

    def _exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        try:
            self.client("s3").head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        return True

    def _terminate(self, instance_id: str) -> None:
        with contextlib.suppress(ClientError):
            self.client("ec2").terminate_instances(InstanceIds=[instance_id])

    # -- Lambda ----------------------------------------------------------------------------------

    def store_code(self, function_name: str, code: dict[str, Any], sha256: str) -> None:
        """Keep the code just deployed, unpacked under its CodeSha256, so invocations run exactly it."""
        if "ZipFile" in code:
            blob = base64.b64decode(code["ZipFile"])
        elif "S3Bucket" in code:
            blob = self.client("s3").get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
        else:
            return  # a container image: the fleet cannot run it, and says so at invocation
        target = self._code_dir(sha256)
        if not target.exists():
            staging = target.with_name(f"{target.name}.{uuid.uuid4().hex}")
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                archive.extractall(staging)
            with contextlib.suppress(OSError):  # a concurrent deploy of the same code got there first
                staging.rename(target)
        logger.info("function %s: code %s stored", function_name, sha256)

    def _code_dir(self, code_sha256: str) -> Path:
        """CodeSha256 is standard base64, whose `/` cannot be in a file name: the folder is named in hex."""
        return self.state_dir / "functions" / base64.b64decode(code_sha256).hex()

    def invoke(self, function_name: str, payload: bytes) -> str:
        """Queue one asynchronous invocation; returns its request id."""
        configuration = self.client("lambda").get_function(FunctionName=function_name)["Configuration"]
        if configuration.get("PackageType") == "Image":
            raise FleetError(
                "InvalidParameterValueException",
                "the sandbox fleet runs zip-packaged functions only: deploy with `mltp lambda deploy` "
                "and no image_uri",
            )
        code_dir = self._code_dir(configuration["CodeSha256"])
        if not code_dir.is_dir():
            raise FleetError(
                "ResourceNotReadyException",
                f"the code of {function_name} was not deployed through the fleet: run `mltp lambda deploy`",
            )
        request_id = str(uuid.uuid4())
        env = {
            **self.base_env,
            **configuration.get("Environment", {}).get("Variables", {}),
            "LAMBDA_TASK_ROOT": str(code_dir),
            "AWS_LAMBDA_FUNCTION_NAME": configuration["FunctionName"],
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(configuration.get("MemorySize", 128)),
            "AWS_REQUEST_ID": request_id,
        }
        self._enqueue(
            Work(
                "lambda",
                request_id,
                [sys.executable, "-c", RUNTIME_SHIM, configuration["Handler"]],
                env,
                cwd=str(code_dir),
                stdin=payload,
                timeout_s=float(configuration.get("Timeout", 3)),
            )
        )
        return request_id

    # -- running trainers --------------------------------------------------------------------------

    def _enqueue(self, work: Work) -> None:
        with self.lock:
            self.queue.append(work)
        logger.info("%s %s queued", work.kind, work.key)
        self.work_queued.set()  # an invocation starts now, not at the next EC2 poll

    def _kill(self, key: str) -> None:
        with self.lock:
            work = self.running.pop(key, None)
        if work and work.process and work.process.poll() is None:
            work.process.kill()
            work.process.wait()

    def schedule(self) -> None:
        """Reap finished trainers, enforce Lambda timeouts, start queued work while there is room."""
        now = time.monotonic()
        with self.lock:
            finished = [work for work in self.running.values() if work.process.poll() is not None]
            overdue = [
                work
                for work in self.running.values()
                if work.timeout_s and work.process.poll() is None and now - work.started > work.timeout_s
            ]
        for work in overdue:
            logger.warning("invocation %s timed out after %.0f s", work.key, work.timeout_s)
            self._kill(work.key)
        for work in finished:
            with self.lock:
                self.running.pop(work.key, None)
            logger.info("%s %s: trainer exited with %s", work.kind, work.key, work.process.returncode)
            if work.kind == "ec2":
                self._terminate(work.key)
        while True:
            with self.lock:
                if len(self.running) >= self.max_trainers or not self.queue:
                    return
                work = self.queue.popleft()
                self.running[work.key] = work
            self._start(work)

    def _start(self, work: Work) -> None:
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        work.log_path = log_dir / f"{work.key}.log"
        work.process = trainer_processes.start(work.argv, work.env, work.cwd, work.stdin, work.log_path)
        work.started = time.monotonic()
        logger.info("%s %s: trainer started (pid %d)", work.kind, work.key, work.process.pid)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "running": {key: work.process.pid for key, work in self.running.items() if work.process},
                "queued": [work.key for work in self.queue],
                "max_trainers": self.max_trainers,
            }

    def stop(self) -> None:
        with self.lock:
            keys = list(self.running)
            self.queue.clear()
        for key in keys:
            self._kill(key)

    def loop(self, stop: threading.Event, interval: float) -> None:
        """Until `stop`: look for new and terminated instances every `interval` seconds, and start queued
        work at once."""
        ec2 = self.client("ec2")
        next_poll = 0.0
        while not stop.is_set():
            self.work_queued.clear()
            # Neither moto restarting nor a bad instance may stop the fleet, or keep queued work waiting.
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + interval
                try:
                    self.watch_instances(ec2)
                except Exception:
                    logger.exception("fleet: looking at the instances failed")
            try:
                self.schedule()
            except Exception:
                logger.exception("fleet: starting or reaping trainers failed")
            self.work_queued.wait(max(0.0, next_poll - time.monotonic()))


class FleetError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Gateway(BaseHTTPRequestHandler):
    """The Lambda endpoint: runs invocations itself, forwards the rest of the Lambda API to moto."""

    fleet: Fleet
    forward_client: httpx.Client
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def do_GET(self) -> None:
        if self.path == "/fleet/health":
            self._reply(HTTPStatus.OK, json.dumps(self.fleet.snapshot()).encode(), "application/json")
            return
        self._forward()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(FUNCTIONS_PATH) and path.endswith(INVOKE_SUFFIX):
            self._invoke(unquote(path[len(FUNCTIONS_PATH) + 1 : -len(INVOKE_SUFFIX)]))
            return
        self._forward()

    def do_PUT(self) -> None:
        self._forward()

    do_DELETE = do_PATCH = do_PUT

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _invoke(self, function_name: str) -> None:
        payload = self._body()
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind == "DryRun":
            self._reply(HTTPStatus.NO_CONTENT, b"")
            return
        if kind != "Event":
            self._error(
                HTTPStatus.BAD_REQUEST,
                "InvalidParameterValueException",
                "the sandbox fleet runs asynchronous invocations only (InvocationType=Event)",
            )
            return
        try:
            request_id = self.fleet.invoke(function_name, payload)
        except ClientError as error:
            status = error.response["ResponseMetadata"].get("HTTPStatusCode", 400)
            self._error(status, error_code(error), error.response["Error"].get("Message", ""))
            return
        except FleetError as error:
            self._error(HTTPStatus.BAD_REQUEST, error.code, str(error))
            return
        self._reply(HTTPStatus.ACCEPTED, b"", extra={"x-amzn-RequestId": request_id})

    def _forward(self) -> None:
        body = self._body()
        headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
        response = self.forward_client.request(self.command, self.path, content=body, headers=headers)
        if response.is_success and self.command in ("POST", "PUT") and body:
            self._remember_code(body, response)
        self._reply(
            response.status_code,
            response.content,
            response.headers.get("content-type"),
            extra={
                key: value
                for key, value in response.headers.items()
                if key.lower().startswith("x-amz") or key.lower() == "x-amzn-requestid"
            },
        )

    def _remember_code(self, body: bytes, response: httpx.Response) -> None:
        """CreateFunction and UpdateFunctionCode carry code; keep it for the invocations to come."""
        path = urlsplit(self.path).path
        try:
            request, answer = json.loads(body), response.json()
        except ValueError:
            return
        if path == FUNCTIONS_PATH and "Code" in request:
            code = request["Code"]
        elif path.endswith("/code") and ("ZipFile" in request or "S3Bucket" in request):
            code = request
        else:
            return
        try:
            self.fleet.store_code(answer["FunctionName"], code, answer["CodeSha256"])
        except (KeyError, zipfile.BadZipFile, ClientError):
            logger.exception("could not keep the code deployed to %s", answer.get("FunctionName"))

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"Type": "User", "Message": message}).encode()
        self._reply(status, body, "application/json", extra={"x-amzn-ErrorType": code})

    def _reply(
        self, status: int, body: bytes, content_type: str | None = None, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mltp.sandbox.fleet", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--moto-url", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--max-trainers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between EC2 polls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for chatty in ("botocore", "boto3", "urllib3", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    base_env = {
        **os.environ,
        "AWS_ENDPOINT_URL": args.moto_url,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    fleet = Fleet(args.moto_url, args.state_dir, args.max_trainers, base_env)
    trainer_processes.warm_up()
    Gateway.fleet = fleet
    Gateway.forward_client = httpx.Client(base_url=args.moto_url, timeout=120.0)
    server = ThreadingHTTPServer((args.host, args.port), Gateway)
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, daemon=True, name="gateway")
    serving.start()
    logger.info(
        "fleet on %s:%d, moto at %s, at most %d trainers",
        args.host,
        args.port,
        args.moto_url,
        args.max_trainers,
    )
    try:
        fleet.loop(stop, args.interval)
    finally:
        server.shutdown()
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
