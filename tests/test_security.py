"""Security (issue 8), looked at the way an auditor would:

- the AWS secret access key appears nowhere a run leaves traces: Prefect (runs, states, logs, artifacts,
  events, configuration), the command's output, every file of the sandbox and of the CLI's Prefect home,
  every S3 object, CloudWatch, EC2 (instances, user-data) and Lambda;
- everything written is encrypted (even with the buckets' default encryption off), the buckets are
  private, our instances require IMDSv2 and their user-data holds no credentials;
- models are never unpickled, through `mltp predict` and in the load path itself;
- no user string that becomes part of an S3 key can take the key out of its prefix.

One module-scoped run in the shared sandbox feeds every server check: an ingest, a training on Lambda
and one on EC2 that register, one on EC2 that the trainer fails, and two `mltp predict` of planted model
files, all started together. The scanner's own checks (`test_the_scanner_finds_*`) prove it finds the
secret in every encoding those places use, and each place's canary proves the scan reached it.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import itertools
import json
import os
import pickle
import posixpath
import re
import subprocess
import uuid
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import skops.io as sio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn import datasets as toy
from sklearn.linear_model import LogisticRegression

from mltp import registry
from mltp.buckets import inspect_bucket
from mltp.compute.user_data import render_user_data
from mltp.dataset_catalog import derive_name, detect_format, get_manifest, parse_reference, validate_name
from mltp.errors import DatasetError, MltpError
from mltp.incoming import Drop
from mltp.jobs import new_job_id
from mltp.registry import RegistryError, TamperedModelError
from mltp.runs import job_id_of
from mltp.s3_json import SSE, put_json, read_json
from mltp.sandbox.lifecycle import SECRET_ACCESS_KEY
from mltp.trainer.algorithms import ALGORITHMS
from tests.conftest import MLTP, prefect_http, start_mltp, wait_for
from tests.forked_cli import ForkedCommand

SERVERS = pytest.mark.servers
# The secret the sandbox's credentials block holds (and the fleet hands its trainers). Its access key id,
# "mltp-sandbox", is a public constant and the prefix of the sandbox's bucket names: not a secret to hunt.
SECRET = SECRET_ACCESS_KEY
# It is a constant of that module, so the trainer wheel (it packs the whole `mltp` package) holds its source:
# that copy is its definition, not a leak.
SECRET_DEFINED_IN = "mltp/sandbox/lifecycle.py"
TRAINER_FAILURE = "Solver lbfgs supports only 'l2' or None penalties"


# --- the leak scanner -----------------------------------------------------------------------------------

Trace = tuple[str, str, bytes]  # (place, label, content)
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def _base64_forms(needle: bytes) -> set[bytes]:
    """The characters that encode `needle` inside any base64 text, at each of its three alignments."""
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + needle)
        core = encoded[-(-8 * shift // 6) : 8 * (shift + len(needle)) // 6]  # only the needle's own bits
        forms |= {core, core.translate(bytes.maketrans(b"+/", b"-_"))}
    return forms


def _unpacked(blob: bytes) -> list[tuple[str, bytes]]:
    """What one layer of gzip, zip (skops models, wheels, Lambda code) or base64 text (user-data, Prefect's
    persisted results) holds, each with where it was inside the blob."""
    try:
        if blob[:2] == b"\x1f\x8b":
            return [("!gzip", gzip.decompress(blob))]
        if blob[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                return [(f"!{name}", archive.read(name)) for name in archive.namelist()]
        compact = re.sub(rb"\s+", b"", blob) if len(blob) <= 4_000_000 else b""
        if len(compact) >= 16 and _BASE64_TEXT.fullmatch(compact):
            padded = compact + b"=" * (-len(compact) % 4)
            altchars = b"-_" if re.search(rb"[-_]", compact) else None
            return [("!base64", base64.b64decode(padded, altchars=altchars))]
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, binascii.Error):
        pass
    return []


def _views(blob: bytes, depth: int = 3) -> list[tuple[str, bytes]]:
    """The blob and, up to `depth` layers down, everything packed in it, by where it is."""
    inner = [
        (f"{where}{deeper}", view)
        for where, packed in (_unpacked(blob) if depth else [])
        for deeper, view in _views(packed, depth - 1)
    ]
    return [("", blob), *inner]


def scan(traces: Iterable[Trace], needles: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """For each needle, where it is (the trace's label, and the path inside it when packed), by place.
    One pass, so nothing but the findings is kept in memory."""
    forms = {needle: {needle.encode()} | _base64_forms(needle.encode()) for needle in needles}
    found: dict[str, dict[str, list[str]]] = {needle: {} for needle in forms}
    for place, label, blob in traces:
        views = _views(blob)
        for needle, wanted in forms.items():
            for inside, view in views:
                if any(form in view for form in wanted):
                    found[needle].setdefault(place, []).append(f"{label}{inside}")
                    break
    return found


def _dumped(value) -> bytes:
    return json.dumps(value, default=str).encode()


# --- where a run leaves traces --------------------------------------------------------------------------


def _pages(api: httpx.Client, path: str, body: dict) -> Iterator[dict]:
    offset = 0
    while True:
        page = api.post(path, json={**body, "limit": 200, "offset": offset}).json()
        yield from page
        if len(page) < 200:
            return
        offset += 200


def _events(api: httpx.Client, since: datetime) -> Iterator[dict]:
    window = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    page = api.post("events/filter", json={"filter": {"occurred": window}, "limit": 50}).json()
    while True:
        yield from page["events"]
        if not page.get("next_page"):
            return
        page = api.get(page["next_page"]).json()


def _started_since(run: dict, since: datetime) -> bool:
    return bool(run.get("start_time")) and datetime.fromisoformat(run["start_time"]) >= since


def prefect_traces(api_url: str, since: datetime) -> Iterator[Trace]:
    """Every flow run (and the states of those since `since`), and the task runs, logs and events since
    then, every artifact, and the server's configuration: deployments, pools, automations, blocks."""
    after = since.isoformat()
    with prefect_http(api_url) as api:
        for run in _pages(api, "flow_runs/filter", {}):
            yield "prefect:flow-runs", f"flow run {run['name']}", _dumped(run)
            if _started_since(run, since):
                states = api.get("flow_run_states/", params={"flow_run_id": run["id"]}).json()
                yield "prefect:flow-run-states", f"states of {run['name']}", _dumped(states)
        for task_run in _pages(api, "task_runs/filter", {"task_runs": {"start_time": {"after_": after}}}):
            yield "prefect:task-runs", f"task run {task_run['name']}", _dumped(task_run)
        for log in _pages(api, "logs/filter", {"logs": {"timestamp": {"after_": after}}}):
            yield "prefect:logs", f"log {log['timestamp']} {log['message'][:60]!r}", _dumped(log)
        for artifact in _pages(api, "artifacts/filter", {}):
            yield "prefect:artifacts", f"artifact {artifact['key'] or artifact['id']}", _dumped(artifact)
        for event in _events(api, since):
            yield "prefect:events", f"event {event['event']} {event['id']}", _dumped(event)
        for path in ("deployments", "work_pools", "automations", "block_documents", "variables", "flows"):
            for item in _pages(api, f"{path}/filter", {}):
                yield "prefect:configuration", f"{path} {item.get('name')}", _dumped(item)


def s3_traces(s3) -> Iterator[Trace]:
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", []):
                uri = f"s3://{name}/{entry['Key']}"
                answer = s3.get_object(Bucket=name, Key=entry["Key"])
                yield "s3:objects", uri, answer["Body"].read()
                yield "s3:objects", f"{uri} (metadata)", _dumped(answer.get("Metadata", {}))


def cloudwatch_traces(logs, cloudwatch) -> Iterator[Trace]:
    for group_page in logs.get_paginator("describe_log_groups").paginate():
        for group in group_page["logGroups"]:
            for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group["logGroupName"]):
                for event in page["events"]:
                    yield (
                        "cloudwatch:logs",
                        f"{group['logGroupName']}/{event['logStreamName']}",
                        _dumped(event),
                    )
    for page in cloudwatch.get_paginator("list_metrics").paginate():
        yield "cloudwatch:metrics", "list_metrics", _dumped(page["Metrics"])


def ec2_traces(ec2) -> Iterator[Trace]:
    for page in ec2.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                instance_id = instance["InstanceId"]
                yield "ec2:instances", instance_id, _dumped(instance)
                attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
                yield "ec2:user-data", instance_id, attribute.get("UserData", {}).get("Value", "").encode()


def lambda_traces(lambda_) -> Iterator[Trace]:
    for page in lambda_.get_paginator("list_functions").paginate():
        for function in page["Functions"]:
            found = lambda_.get_function(FunctionName=function["FunctionName"])
            found.pop("ResponseMetadata", None)
            yield "lambda:functions", function["FunctionName"], _dumped(found)


def file_traces(place: str, root: Path) -> Iterator[Trace]:
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file():
                yield place, str(path.relative_to(root)), path.read_bytes()
        except FileNotFoundError:  # a pid file or a trainer's log removed while we walk
            continue


# --- one run in the shared sandbox ----------------------------------------------------------------------


class Planted:
    """Builds itself by touching a file: a model file naming it must be refused before anything is built."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


class _OpensAFile:
    """Unpickling it opens (creates) the file: the visible side effect of running a pickle's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def planted_files(marker: Path) -> dict[str, bytes]:
    return {
        "pickle": pickle.dumps(_OpensAFile(marker)),
        "planted": sio.dumps(Planted(marker)),
        "ordered-dict": sio.dumps(OrderedDict(coef=[1.0])),  # a type skops itself trusts, we do not
    }


def planted_type(kind: str) -> str:
    return {
        "planted": f"{Planted.__module__}.{Planted.__qualname__}",
        "ordered-dict": "collections.OrderedDict",
    }[kind]


def small_model_bytes() -> bytes:
    iris = toy.load_iris(as_frame=True)
    return sio.dumps(LogisticRegression(max_iter=300).fit(iris.data, iris.target))


def upload(s3, bucket: str, key: str, data: bytes) -> tuple[str, str]:
    s3.put_object(Bucket=bucket, Key=key, Body=data, **SSE)
    return f"s3://{bucket}/{key}", hashlib.sha256(data).hexdigest()


def register(s3, bucket: str, name: str, model_uri: str, sha256: str) -> registry.ModelVersion:
    columns = toy.load_iris(as_frame=True).data.columns
    return registry.register_version(
        s3,
        bucket,
        name,
        model_uri=model_uri,
        sha256=sha256,
        metrics={"accuracy": 0.9},
        primary_metric="accuracy",
        signature={"inputs": [{"name": column, "type": "float"} for column in columns]},
        lineage={"job_ids": ["security-test"]},
        actor="test:security",
    )


def swap_in(s3, bucket: str, name: str, version: int, data: bytes) -> None:
    """An attacker with write access to the models bucket replaces the file and its registered sha256."""
    s3.put_object(Bucket=bucket, Key=f"models/{name}/versions/{version}/model.skops", Body=data, **SSE)
    key = f"models/{name}/versions/{version}/version.json"
    document, _ = read_json(s3, bucket, key)
    put_json(s3, bucket, key, {**document, "sha256": hashlib.sha256(data).hexdigest()})


@dataclass
class Command:
    """A `mltp` command started in the background, finished on first use."""

    args: list[str]
    process: ForkedCommand
    result: subprocess.CompletedProcess | None = None

    @classmethod
    def start(cls, sandbox, *args: str) -> Command:
        return cls(list(args), start_mltp(*args, env=sandbox.env))

    def finish(self) -> subprocess.CompletedProcess:
        if self.result is None:
            out, err = self.process.communicate(timeout=300)
            self.result = subprocess.CompletedProcess(self.args, self.process.returncode, out, err)
        return self.result


@dataclass
class Tampered:
    """A registered model whose version 1 file became a pickle and version 2 a skops file naming `Planted`,
    and `mltp predict` started on each."""

    name: str
    marker: Path
    outputs: dict[int, Path]
    predictions: dict[int, Command]


@pytest.fixture(scope="module")
def tampered(sandbox, tmp_path_factory) -> Tampered:
    folder = tmp_path_factory.mktemp("tampered")
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["models"]
    name, marker = f"sec-tampered-{uuid.uuid4().hex[:6]}", folder / "code-ran"
    uri, sha256 = upload(s3, bucket, f"runs/{name}/model.skops", small_model_bytes())
    register(s3, bucket, name, uri, sha256)
    register(s3, bucket, name, uri, sha256)
    payloads = planted_files(marker)
    swap_in(s3, bucket, name, 1, payloads["pickle"])
    swap_in(s3, bucket, name, 2, payloads["planted"])
    inputs = folder / "inputs.csv"
    toy.load_iris(as_frame=True).data.head(5).to_csv(inputs, index=False)
    outputs = {version: folder / f"predicted-{version}.csv" for version in (1, 2)}
    predictions = {
        version: Command.start(sandbox, "predict", f"{name}:{version}", str(inputs), "-o", str(out))
        for version, out in outputs.items()
    }
    return Tampered(name, marker, outputs, predictions)


@dataclass
class Run:
    dataset: str
    since: datetime
    commands: dict[str, Command]
    reports: dict[str, dict] = field(default_factory=dict)
    mcp: list[tuple[str, bytes]] = field(default_factory=list)  # each MCP answer, and the server's log

    def model(self, label: str) -> str:
        return self.reports[label]["model"]

    @property
    def failed_job_id(self) -> str:
        return re.search(r"training failed \(user\): (\S+):", self.commands["failed"].finish().stderr)[1]

    @property
    def failed_run_id(self) -> str:
        return re.sub(r"-s\d+-a\d+$", "", self.failed_job_id)


FOREST = ["--algorithm", "random_forest", "--param", "n_estimators=5", "--json"]
ONLY_THE_TRAINER_REFUSES = [
    *("--algorithm", "logistic_regression"),
    *("--param", "penalty=elasticnet", "--param", "solver=lbfgs"),
]


def _train(sandbox, dataset: str, label: str, compute: str, arguments: list[str]) -> Command:
    model = f"{dataset}-{label}"
    return Command.start(
        sandbox, "train", "--dataset", dataset, "--compute", compute, "--model-name", model, *arguments
    )


def _run_everything(sandbox, dataset: str, csv: Path) -> dict[str, Command]:
    ingest = Command.start(sandbox, "datasets", "ingest", str(csv), "--target", "target", "--json")
    assert ingest.finish().returncode == 0, ingest.finish().stderr
    commands = {
        "ingest": ingest,
        "lambda": _train(sandbox, dataset, "lambda", "lambda", FOREST),
        "ec2": _train(sandbox, dataset, "ec2", "ec2", FOREST),
        "failed": _train(sandbox, dataset, "failed", "ec2", ONLY_THE_TRAINER_REFUSES),
    }
    for command in commands.values():
        command.finish()
    return commands


@pytest.fixture(scope="module")
def run(sandbox, tampered, tmp_path_factory) -> Run:
    """Everything runs while the sandbox's buckets have no default encryption, so every object the run
    writes is encrypted only if its writer asked for it."""
    dataset = f"sec-{uuid.uuid4().hex[:6]}"
    csv = tmp_path_factory.mktemp("security") / f"{dataset}.csv"
    toy.load_iris(as_frame=True).frame.to_csv(csv, index=False)
    since = datetime.now(UTC) - timedelta(seconds=5)
    s3, buckets = sandbox.s3(), list(sandbox.status["buckets"].values())
    saved = {
        bucket: s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        for bucket in buckets
    }
    for bucket in buckets:
        s3.delete_bucket_encryption(Bucket=bucket)
    try:
        commands = _run_everything(sandbox, dataset, csv)
    finally:
        for bucket, configuration in saved.items():
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=configuration)
    run = Run(dataset, since, commands)
    for label in ("lambda", "ec2"):
        result = commands[label].finish()
        assert result.returncode == 0, result.stdout + result.stderr
        run.reports[label] = json.loads(result.stdout)
        assert run.reports[label]["registered"] and run.reports[label]["compute"]["backend"] == label
    failed = commands["failed"].finish()
    assert failed.returncode == 2 and TRAINER_FAILURE in failed.stderr, failed.stderr  # the user's to fix
    run.mcp = ask_the_mcp_server(sandbox, run, tmp_path_factory.mktemp("mcp"))
    # The server stores events a moment after the CLI sent them: scan once both registrations are in.
    with prefect_http(sandbox.prefect_api_url) as api:
        wanted = {f"mltp.model.{run.model(label)}" for label in ("lambda", "ec2")}
        wait_for(lambda: wanted <= {e["resource"]["prefect.resource.id"] for e in _events(api, since)}, 60, 1)
    return run


def ask_the_mcp_server(sandbox, run: Run, folder: Path) -> list[tuple[str, bytes]]:
    """An agent's session over stdio: every read tool, a refused call and a write; what each call
    answered, and everything the server logged (its audit lines included)."""
    import asyncio

    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    model = run.model("lambda")
    calls = [
        ("list_datasets", {}),
        ("describe_dataset", {"name": run.dataset}),
        ("plan_training", {"dataset": run.dataset, "algorithm": "knn"}),
        ("list_models", {}),
        ("describe_model", {"reference": model}),
        ("model_history", {"name": model}),
        ("platform_status", {}),
        ("describe_model", {"reference": f"{model}:99"}),
        ("approve_model", {"reference": f"{model}:1", "reason": "security scan"}),
    ]
    parameters = StdioServerParameters(command=MLTP, args=["mcp", "serve", "--allow-write"], env=sandbox.env)
    log = folder / "server.log"

    async def session() -> list[tuple[str, bytes]]:
        with log.open("w") as errors:
            async with Client(stdio_client(parameters, errlog=errors)) as client:
                answers = [(tool, await client.call_tool(tool, arguments)) for tool, arguments in calls]
        return [(f"mcp {tool}", answer.model_dump_json().encode()) for tool, answer in answers]

    return [*asyncio.run(session()), ("mcp server log", log.read_bytes())]


def canaries(run: Run, sandbox) -> dict[str, str]:
    """For each place, something the run is known to have left there: finding it proves the scan reached
    the place and could see into its encoding."""
    lineage = registry.get_version(
        sandbox.s3(), sandbox.status["buckets"]["models"], run.model("lambda")
    ).lineage
    lambda_job, ec2_job = (run.reports[label]["best"]["job_id"] for label in ("lambda", "ec2"))
    return {
        "cli": TRAINER_FAILURE,
        "prefect:flow-runs": TRAINER_FAILURE,  # the failed run's state message
        "prefect:flow-run-states": TRAINER_FAILURE,
        "prefect:task-runs": lineage["flow_run_id"],
        "prefect:logs": lambda_job,
        "prefect:artifacts": run.model("lambda"),
        "prefect:events": f"mltp.model.{run.model('ec2')}",
        "prefect:configuration": "mltp-aws",
        "s3:objects": "RandomForestClassifier",  # inside the zip entries of the models
        "cloudwatch:logs": ec2_job,
        "cloudwatch:metrics": lambda_job,
        "ec2:instances": run.reports["ec2"]["run_id"],
        "ec2:user-data": f"runs/{run.failed_job_id}/job.json",  # base64 in the API's answer
        "lambda:functions": "mltp.trainer.handler",
        "files:sandbox-home": ec2_job,  # the fleet's log of the instance's trainer
        "files:cli-prefect-home": TRAINER_FAILURE,  # the failed flow's persisted result: base64 of a pickle
        "mcp": run.dataset,  # in the answers, and in the audit lines of the server's log
    }


@pytest.fixture(scope="module")
def found(sandbox, run, tampered) -> dict[str, dict[str, list[str]]]:
    """Where the secret and each place's canary are, over everything the sandbox holds."""
    cli = [
        ("cli", f"mltp {' '.join(command.args[:2])} ({stream})", text.encode())
        for command in [*run.commands.values(), *tampered.predictions.values()]
        for stream, text in (("stdout", command.finish().stdout), ("stderr", command.finish().stderr))
    ]
    traces = itertools.chain(
        cli,
        [("mcp", label, answer) for label, answer in run.mcp],
        prefect_traces(sandbox.prefect_api_url, run.since),
        s3_traces(sandbox.s3()),
        cloudwatch_traces(sandbox.client("logs"), sandbox.client("cloudwatch")),
        ec2_traces(sandbox.client("ec2")),
        lambda_traces(sandbox.client("lambda")),
        file_traces("files:sandbox-home", sandbox.home),
        file_traces("files:cli-prefect-home", Path(os.environ["PREFECT_HOME"])),
    )
    return scan(traces, [SECRET, *canaries(run, sandbox).values()])


# --- the secret -----------------------------------------------------------------------------------------


@SERVERS
def test_the_secret_key_appears_nowhere_a_run_leaves_traces(found) -> None:
    leaks = {
        place: [where for where in found_there if not where.endswith(f"!{SECRET_DEFINED_IN}")]
        for place, found_there in found[SECRET].items()
    }
    assert {place: found_there for place, found_there in leaks.items() if found_there} == {}


@SERVERS
def test_the_scan_reached_what_the_run_left_in_every_place(found, run, sandbox) -> None:
    missed = {place: canary for place, canary in canaries(run, sandbox).items() if place not in found[canary]}
    assert missed == {}


def test_the_scanner_finds_the_secret_however_a_place_holds_it() -> None:
    line = f"2026-01-01 INFO boto3 credentials aws_secret_access_key={SECRET} from env".encode()
    pickled_result = base64.encodebytes(pickle.dumps(RuntimeError(f"failed with {SECRET}")))  # wrapped lines
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", json.dumps({"content": SECRET}))
    planted = {
        "a log line": line,
        "JSON parameters": json.dumps({"parameters": {"token": SECRET}}).encode(),
        "base64 user-data": json.dumps(
            {"Value": base64.b64encode(b"#!/bin/bash\nexport K=" + line).decode()}
        ).encode(),
        "a persisted result": pickled_result,
        "gzip": gzip.compress(line),
        "a zip entry (skops)": zipped.getvalue(),
        "urlsafe base64": base64.urlsafe_b64encode(b"\xff\xfe" + SECRET.encode()),
    }
    for offset in range(3):
        planted[f"base64 at offset {offset}"] = b"x=" + base64.b64encode(
            bytes(offset) + SECRET.encode() + b"!"
        )
    traces = [("planted", label, blob) for label, blob in planted.items()]
    found = scan(traces, [SECRET])[SECRET]
    assert list(found) == ["planted"]
    assert [where.partition("!")[0] for where in found["planted"]] == list(planted)
    assert "a zip entry (skops)!schema.json" in found["planted"]
    clean = [
        ("clean", "bucket names", b"s3://mltp-sandbox-data/x s3://mltp-sandbox-models/y mltp-sandbox"),
        ("clean", "all but its last letter", SECRET[:-1].encode()),
        ("clean", "base64 of all but its last letter", base64.b64encode(SECRET[:-1].encode())),
    ]
    assert scan(clean, [SECRET])[SECRET] == {}


# --- at rest and at launch ------------------------------------------------------------------------------


def encryption_of_every_object(s3) -> dict[str, tuple[str | None, datetime]]:
    """s3://bucket/key -> (its server-side encryption as HeadObject reports it, when it was written)."""
    found = {}
    for bucket in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for entry in page.get("Contents", []):
                head = s3.head_object(Bucket=bucket["Name"], Key=entry["Key"])
                found[f"s3://{bucket['Name']}/{entry['Key']}"] = (
                    head.get("ServerSideEncryption"),
                    entry["LastModified"],
                )
    return found


@SERVERS
def test_every_object_is_encrypted_though_the_run_wrote_with_bucket_encryption_off(run, sandbox) -> None:
    objects = encryption_of_every_object(sandbox.s3())
    assert [uri for uri, (encryption, _) in objects.items() if not encryption] == []
    written_by_the_run = [uri for uri, (_, written) in objects.items() if written >= run.since]
    assert len(written_by_the_run) >= 20  # dataset, manifests, jobs, statuses, models, versions, audit


def test_the_encryption_check_finds_an_unencrypted_object(mock_clients) -> None:
    s3 = mock_clients("s3")
    s3.create_bucket(Bucket="no-default-encryption")
    s3.put_object(Bucket="no-default-encryption", Key="bare", Body=b"x")
    s3.put_object(Bucket="no-default-encryption", Key="asked", Body=b"x", **SSE)
    found = encryption_of_every_object(s3)
    assert {uri: encryption for uri, (encryption, _) in found.items()} == {
        "s3://no-default-encryption/bare": None,
        "s3://no-default-encryption/asked": "AES256",
    }


@SERVERS
def test_the_sandbox_buckets_are_encrypted_and_private(run, sandbox) -> None:
    account = sandbox.client("sts").get_caller_identity()["Account"]
    for bucket in sandbox.status["buckets"].values():
        s3 = sandbox.s3()
        blocked = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert blocked == dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        )
        grantees = [grant["Grantee"].get("URI", "") for grant in s3.get_bucket_acl(Bucket=bucket)["Grants"]]
        assert not [uri for uri in grantees if uri.endswith(("AllUsers", "AuthenticatedUsers"))]
        report = inspect_bucket(sandbox.client, bucket, account)
        assert report.encryption == "AES256" and report.problem() is None
        # moto on loopback speaks plain HTTP, where a TLS-only policy would refuse our own requests (and
        # moto ignores its condition): tests/test_buckets.py checks the policy of buckets made over HTTPS.
        assert report.plain_http and report.policy == "missing"


CREDENTIALS = re.compile(
    r"aws_secret|aws_access_key|aws_session_token|secret_?access|(?-i:\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)"
    rf"|(?<![\w-])mltp-sandbox(?![\w-])|{re.escape(SECRET)}",  # the access key id, not a bucket name
    re.IGNORECASE,
)


@SERVERS
def test_our_instances_require_imdsv2_and_their_user_data_holds_no_credentials(run, sandbox) -> None:
    ec2 = sandbox.client("ec2")
    run_ids = [run.reports["ec2"]["run_id"], run.failed_run_id]
    reservations = ec2.describe_instances(Filters=[{"Name": "tag:mltp:run-id", "Values": run_ids}])[
        "Reservations"
    ]
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    assert len(instances) >= 2  # one each, more if one was relaunched
    for instance in instances:
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        attribute = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
        assert "MLTP_JOB_URI='s3://" in user_data
        assert CREDENTIALS.findall(user_data) == []


@pytest.mark.parametrize(
    "line",
    [
        "export AWS_SECRET_ACCESS_KEY=abc",
        "export AWS_ACCESS_KEY_ID=mltp-sandbox",
        "aws_session_token = IQoJb3JpZ2luX2VjEJr",
        "aws configure set aws_secret_access_key xyz",
        "KEY=AKIAIOSFODNN7EXAMPLE",
        f"S={SECRET}",
    ],
)
def test_the_user_data_check_finds_credentials(line) -> None:
    script = render_user_data(
        job_uri="s3://mltp-sandbox-models/runs/j/job.json",
        output_prefix="s3://mltp-sandbox-models/runs/j/",
        wheel_uri=None,
        requirements_uri=None,
        max_runtime_minutes=60,
        region="us-east-1",
    )
    assert CREDENTIALS.findall(script) == []  # the bucket names and IMDSv2's token header are no credentials
    assert CREDENTIALS.search(script + line + "\n")


# --- models are never unpickled -------------------------------------------------------------------------


@SERVERS
@pytest.mark.parametrize(
    ("version", "message"), [(1, "not a skops file"), (2, "contains the untrusted type")]
)
def test_predict_refuses_a_planted_model_file_in_one_line(run, tampered, version, message) -> None:
    result = tampered.predictions[version].finish()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stdout + result.stderr  # TamperedModelError: not the user's input
    assert len(lines) == 1 and lines[0].startswith("mltp: error: ")
    assert message in lines[0] and lines[0].endswith("refusing to load it")
    if version == 2:
        assert planted_type("planted") in lines[0]
    assert not tampered.outputs[version].exists()
    assert not tampered.marker.exists()


def _forbidden(*_, **__):
    raise AssertionError("pickle was used to load a model")


@SERVERS
def test_loading_a_trained_model_never_calls_pickle(run, sandbox, monkeypatch) -> None:
    import _pickle

    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _forbidden)
    model, found = registry.load_model(sandbox.s3(), sandbox.status["buckets"]["models"], run.model("lambda"))
    iris = toy.load_iris(as_frame=True)
    assert found.version == 1 and (model.predict(iris.data) == iris.target).mean() > 0.9


@pytest.mark.parametrize("kind", ["pickle", "planted", "ordered-dict"])
def test_a_planted_model_file_is_refused_before_anything_is_built_and_claims_no_version(
    mock_clients, tmp_path, kind
) -> None:
    s3, marker = mock_clients("s3"), tmp_path / "code-ran"
    s3.create_bucket(Bucket="models")
    uri, sha256 = upload(s3, "models", "runs/evil/model.skops", planted_files(marker)[kind])
    expected = "not a skops file" if kind == "pickle" else f"untrusted type '{planted_type(kind)}'"
    with pytest.raises(TamperedModelError, match=re.escape(expected)):
        register(s3, "models", "evil", uri, sha256)
    assert not marker.exists()
    assert s3.list_objects_v2(Bucket="models", Prefix="models/")["KeyCount"] == 0


def test_the_planted_files_do_run_code_when_loaded_naively(tmp_path) -> None:
    """Without this the refusals above would prove nothing: each planted file is live."""
    payloads = planted_files(tmp_path / "code-ran")
    pickle.loads(payloads["pickle"]).close()
    assert (tmp_path / "code-ran").exists()
    (tmp_path / "code-ran").unlink()
    sio.loads(payloads["planted"], trusted=sio.get_untrusted_types(data=payloads["planted"]))
    assert (tmp_path / "code-ran").exists()
    assert sio.loads(payloads["ordered-dict"]) == OrderedDict(coef=[1.0])  # skops trusts it by default


# --- S3 keys built from user input stay under their prefix ----------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, database=None)
TRICKY = "abcz09-_./\\%:@ \n\t\u0000\u2215\uff0e\u0130Ä"
USER_TEXT = st.one_of(st.text(max_size=80), st.text(alphabet=TRICKY, max_size=80))
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ESCAPES = ["../x", "a/b", "%2e%2e", "%2e%2e%2fx", "..", ".", "", "a" * 65, "naïve", "İstanbul", "-a", "a\\b"]


def is_slug(name: str) -> bool:
    return bool(SLUG.fullmatch(name))


def stays_under(prefix: str, key: str) -> bool:
    """The key, literally and as a path normaliser or a percent-decoding layer would read it, is inside
    `prefix` (which ends with '/')."""
    readings = {key, unquote(key), unquote(unquote(key)), key.replace("\\", "/")}
    return all(posixpath.normpath(reading).startswith(prefix) for reading in readings) and not any(
        part in ("..", ".") for reading in readings for part in reading.removeprefix(prefix).split("/")
    )


def refused_or_slug(function, text: str, refusal: type[Exception] = MltpError):
    """`function(text)`, or None when it refuses the text with our error; a result must be a slug."""
    try:
        name = function(text)
    except refusal:
        return None
    assert is_slug(name), name
    return name


@FUZZ
@given(USER_TEXT)
@example("../x")
@example("a/b")
@example("%2e%2e")
@example("")
@example("a" * 65)
@example("naïve")
def test_a_dataset_name_is_a_slug_or_refused(text) -> None:
    name = refused_or_slug(validate_name, text, DatasetError)
    if name is not None:
        assert stays_under(f"datasets/{name}/", f"datasets/{name}/latest.json")


@FUZZ
@given(USER_TEXT, st.sampled_from([".csv", ".csv.gz", ".parquet", ".tsv", ".txt.gz"]))
@example("../../etc/passwd", ".csv")
@example("%2e%2e%2f", ".csv")
@example("İstanbul Ümlaut", ".parquet")
@example("-_-", ".csv")
def test_a_name_derived_from_a_file_name_is_a_slug_or_refused(stem, suffix) -> None:
    filename = stem + suffix
    refused_or_slug(lambda text: derive_name(text, detect_format(text)), filename, DatasetError)


@FUZZ
@given(st.lists(USER_TEXT, min_size=1, max_size=3).map("/".join))
@example("../models/x.csv")
@example("a/b/c.csv")
@example("%2e%2e/x.csv")
def test_a_dropped_files_dataset_name_is_a_slug_or_refused(path) -> None:
    drop = Drop("data", f"incoming/{path}", "etag", 1, datetime.now(UTC))
    refused_or_slug(drop.dataset_name, "incoming/", DatasetError)


@FUZZ
@given(USER_TEXT)
@example("../x")
@example("a\n")
@example("%2e%2e")
def test_a_model_name_never_takes_a_key_out_of_the_models_prefix(text) -> None:
    try:
        key = registry._version_key(text, 1, "model.skops")
    except RegistryError:
        return
    assert stays_under(f"models/{text}/", key) and stays_under("models/", key)


@FUZZ
@given(USER_TEXT)
@example("abc\n")
def test_a_model_name_or_alias_is_a_slug_or_refused(text) -> None:
    refused_or_slug(registry.validate_model_name, text)
    refused_or_slug(lambda alias: registry.parse_model_ref(f"model@{alias}")[2], text)


@FUZZ
@given(USER_TEXT)
@example("model:²")
def test_a_model_reference_is_parsed_or_refused_with_our_error(text) -> None:
    try:
        name, version, alias = registry.parse_model_ref(text)
    except RegistryError:
        return
    assert is_slug(name) and (version is None or version >= 1) and (alias is None or is_slug(alias))


@FUZZ
@given(USER_TEXT)
@example("iris@../../models/x")
@example("iris@%2e%2e")
def test_a_dataset_reference_keeps_its_keys_under_the_dataset(text) -> None:
    try:
        name, version = parse_reference(text)
    except DatasetError:
        return
    assert is_slug(name)
    assert stays_under(f"datasets/{name}/", f"datasets/{name}/{version or 'latest'}/manifest.json")


@pytest.mark.parametrize(("name", "version"), [("../models/x", None), ("iris", "../../models/x")])
def test_get_manifest_reads_nothing_outside_the_dataset(mock_clients, name, version) -> None:
    s3 = mock_clients("s3")
    s3.create_bucket(Bucket="data")
    read = []
    s3.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: read.append(params["Key"])
    )
    with pytest.raises(MltpError):
        get_manifest(mock_clients, "data", name, version)
    assert [key for key in read if not stays_under("datasets/", key)] == []


@FUZZ
@given(
    st.from_regex(SLUG, fullmatch=True),
    st.sampled_from(sorted(ALGORITHMS)),
    st.integers(1, 99),
    st.integers(1, 9),
)
def test_job_and_run_ids_are_slugs_under_runs(dataset, algorithm, shard, attempt) -> None:
    run_id = new_job_id(dataset, algorithm)
    for job_id in (run_id, job_id_of(run_id, shard, attempt)):
        assert is_slug(job_id) and stays_under(f"runs/{job_id}/", f"runs/{job_id}/job.json")


@pytest.mark.parametrize("text", ESCAPES)
def test_the_explicit_escapes_are_refused_as_names(text) -> None:
    for check in (validate_name, registry.validate_model_name):
        with pytest.raises(MltpError):
            check(text)
