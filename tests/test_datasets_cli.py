"""`mltp datasets` through the console script, the sandbox's moto server and its Prefect server."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid

import boto3
import pandas as pd
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from mltp import dataset_catalog, datasets
from tests.conftest import run_mltp

pytestmark = pytest.mark.servers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bucket_state(sandbox) -> tuple[list[str], list]:
    s3, bucket = sandbox.s3(), sandbox.status["buckets"]["data"]
    objects = [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return sorted(objects), s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def ingest(sandbox, *args: str):
    return run_mltp("datasets", "ingest", *args, env=sandbox.env)


def poll(fetch, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = fetch()
        if found:
            return found
        time.sleep(0.5)
    return fetch()


@pytest.fixture
def iris(tmp_path):
    name = unique("iris")
    path = tmp_path / f"{name}.csv"
    pd.DataFrame(
        {"petal": [1.4, 1.3, 4.7, 5.1, None], "count": [1, 2, 3, 4, 5], "species": ["a", "a", "b", "c", "b"]}
    ).to_csv(path, index=False)
    return name, path


def test_ingest_list_show_and_no_op_again(sandbox, iris) -> None:
    name, path = iris
    result = ingest(sandbox, str(path), "--target", "species", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    for field in ("name", "version", "uri", "rows", "bytes", "sha256", "columns", "target"):
        assert field in manifest
    assert (manifest["name"], manifest["rows"], manifest["target"], manifest["created"]) == (
        name,
        5,
        "species",
        True,
    )
    assert manifest["uri"].startswith(f"s3://{sandbox.status['buckets']['data']}/datasets/{name}/")

    listed = json.loads(run_mltp("datasets", "list", "--json", env=sandbox.env).stdout)
    assert {"name": name, "latest": manifest["version"], "versions": 1}.items() <= next(
        entry for entry in listed if entry["name"] == name
    ).items()
    shown = json.loads(
        run_mltp("datasets", "show", f"{name}@{manifest['version']}", "--json", env=sandbox.env).stdout
    )
    assert shown["sha256"] == manifest["sha256"]
    people = run_mltp("datasets", "show", name, env=sandbox.env)
    assert people.returncode == 0 and "petal" in people.stdout and manifest["version"] in people.stdout

    before = bucket_state(sandbox)
    again = ingest(sandbox, str(path), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is False
    assert bucket_state(sandbox) == before


def test_ingest_emits_the_event_and_publishes_the_profile(sandbox, iris) -> None:
    name, path = iris
    assert ingest(sandbox, str(path), "--target", "species").returncode == 0

    def events():
        query = {
            "filter": {
                "event": {"name": ["mltp.dataset.ingested"]},
                "resource": {"id": [f"mltp.dataset.{name}"]},
            }
        }
        return sandbox.api("/events/filter", query)["events"]

    found = poll(events)
    assert len(found) == 1
    payload = found[0]["payload"]
    assert {"uri", "version", "rows", "bytes", "target"} <= set(payload)
    assert (payload["rows"], payload["target"]) == (5, "species")

    artifacts = sandbox.api("/artifacts/filter", {"artifacts": {"key": {"any_": [f"dataset-{name}"]}}})
    assert artifacts and artifacts[0]["type"] == "markdown"
    assert "| petal | float | 1 |" in artifacts[0]["data"]

    progress = sandbox.api("/artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
    mine = [artifact for artifact in progress if path.name in (artifact["description"] or "")]
    assert mine and mine[0]["data"] == 100.0

    runs = sandbox.api(
        "/flow_runs/filter",
        {
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "flows": {"name": {"any_": ["ingest-dataset"]}},
        },
    )
    assert runs


def test_s3_source(sandbox, iris) -> None:
    name, path = iris
    bucket = sandbox.status["buckets"]["data"]
    sandbox.s3().put_object(Bucket=bucket, Key=f"uploads/{path.name}", Body=path.read_bytes())
    result = ingest(sandbox, f"s3://{bucket}/uploads/{path.name}", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == name
    assert not [key for key in bucket_state(sandbox)[0] if key.startswith("staging/")]


def write(tmp_path, filename: str, content: bytes):
    path = tmp_path / filename
    path.write_bytes(content)
    return str(path)


BAD_INPUTS = {
    "missing path": (lambda t: str(t / "nope.csv"), [], "does not exist"),
    "directory": (lambda t: str(t), [], "is a directory"),
    "empty file": (lambda t: write(t, "empty.csv", b""), [], "empty.csv is empty"),
    "header only": (lambda t: write(t, "head.csv", b"a,b\n"), [], "has a header but no data rows"),
    "more fields": (
        lambda t: write(t, "more.csv", b"a,b\n1,2\n3,4,5\n"),
        [],
        "has 3 fields but the header has 2",
    ),
    "fewer fields": (
        lambda t: write(t, "less.csv", b"a,b,c\n1,2,3\n4,5\n"),
        [],
        "has 2 fields but the header has 3",
    ),
    "non-UTF-8": (
        lambda t: write(t, "latin.csv", "a,b\n1,caf\u00e9\n".encode("latin-1")),
        [],
        "is not UTF-8",
    ),
    "duplicate columns": (lambda t: write(t, "dup.csv", b"a,a\n1,2\n"), [], "duplicate column names"),
    "empty column name": (lambda t: write(t, "blank.csv", b"a,,c\n1,2,3\n"), [], "have an empty name"),
    "unknown target": (
        lambda t: write(t, "t.csv", b"a,b\n1,2\n"),
        ["--target", "c"],
        "target 'c' is not a column",
    ),
    "null target": (
        lambda t: write(t, "n.csv", b"a,b\n1,\n2,\n"),
        ["--target", "b"],
        "target 'b' is empty in every row",
    ),
    "unsupported extension": (lambda t: write(t, "data.xlsx", b"PK\x03\x04"), [], "unsupported file type"),
    "corrupt gzip": (lambda t: write(t, "bad.csv.gz", b"a,b\n1,2\n"), [], "is not a valid gzip file"),
    "truncated gzip": (
        lambda t: write(t, "cut.csv.gz", gzip.compress(b"a,b\n" + b"1,2\n" * 50_000)[:-40]),
        [],
        "not a valid gzip",
    ),
    "corrupt parquet": (
        lambda t: write(t, "bad.parquet", b"PAR1 not really"),
        [],
        "is not a valid Parquet file",
    ),
    "name with ..": (lambda t: write(t, "ok.csv", b"a\n1\n"), ["--name", "../x"], "'../x' is not allowed"),
    "name with space": (lambda t: write(t, "ok.csv", b"a\n1\n"), ["--name", "my data"], "is not allowed"),
    "uppercase name": (lambda t: write(t, "ok.csv", b"a\n1\n"), ["--name", "Iris"], "is not allowed"),
    "long name": (lambda t: write(t, "ok.csv", b"a\n1\n"), ["--name", "x" * 65], "is not allowed"),
    "over max size": (
        lambda t: write(t, "big.csv", b"a,b\n" + b"1,2\n" * 600_000),
        ["--max-size-mb", "1"],
        "over the maximum of",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(sandbox, tmp_path, case) -> None:
    make, extra, message = BAD_INPUTS[case]
    before = bucket_state(sandbox)
    result = ingest(sandbox, make(tmp_path), *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mltp: error: "), result.stderr
    assert message in lines[0]
    assert bucket_state(sandbox) == before


def sandbox_clients(sandbox, **config):
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="mltp-sandbox", aws_secret_access_key="mltp-sandbox-secret"
    )
    made = {}

    def client(service: str):
        if service not in made:
            made[service] = session.client(
                service,
                endpoint_url=sandbox.aws_endpoint_url,
                config=Config(retries={"mode": "adaptive", "max_attempts": 3}, **config),
            )
        return made[service]

    return client


def test_concurrent_ingests_lose_no_version(sandbox, tmp_path) -> None:
    name, bucket = unique("burst"), sandbox.status["buckets"]["data"]
    paths = []
    for n in range(6):
        path = tmp_path / f"burst{n}.csv"
        path.write_text(f"a,b\n{n},{n * 2}\n")
        paths.append(path)
    results, errors = [], []

    def run(path):
        try:
            results.append(datasets.ingest(sandbox_clients(sandbox), bucket, str(path), name=name))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(path,)) for path in paths + paths[:3]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    created = [r.manifest["version"] for r in results if r.created]
    assert len(created) == len(set(created)) == 6  # the three repeats created nothing
    recorded = [v["version"] for v in dataset_catalog.versions(sandbox_clients(sandbox), bucket, name)]
    assert sorted(recorded) == sorted(created)


def test_upload_throttled_past_the_retries_leaves_nothing(sandbox, tmp_path) -> None:
    path = tmp_path / "throttled.csv"
    pd.DataFrame({"x": range(2_000_000), "y": range(2_000_000)}).to_csv(path, index=False)
    clients = sandbox_clients(sandbox)
    parts = {"n": 0}

    def slow_down(request, **_):
        if "partNumber=" in request.url and request.method == "PUT":
            parts["n"] += 1
            if parts["n"] > 1:  # the first part goes through, every later attempt is throttled
                return AWSResponse(request.url, 503, {}, _Raw(b"<Error><Code>SlowDown</Code></Error>"))
        return None

    clients("s3").meta.events.register("before-send.s3", slow_down)
    before = bucket_state(sandbox)
    with pytest.raises(ClientError, match="SlowDown"):
        datasets.ingest(clients, sandbox.status["buckets"]["data"], str(path), name=unique("throttled"))
    assert bucket_state(sandbox) == before


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def test_progress_of_a_file_the_parser_reads_in_its_own_threads(sandbox, tmp_path) -> None:
    """Past the first 64 KiB, pyarrow reads from threads of its own; progress must still reach the UI."""
    name = unique("progress")
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"x": range(300_000), "y": range(300_000)}).to_csv(path, index=False)
    result = ingest(sandbox, str(path), "--json")
    assert result.returncode == 0, result.stderr
    progress = sandbox.api("/artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
    mine = [artifact for artifact in progress if path.name in (artifact["description"] or "")]
    assert mine and mine[0]["data"] == 100.0


def test_nested_parquet_columns_are_shown_and_published(sandbox, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = unique("nested")
    path = tmp_path / f"{name}.parquet"
    columns = {"tags": [["a"], None, ["b", "c"]], "point|xy": [{"x": 1}, {"x": 2}, None], "y": [1, 2, 3]}
    pq.write_table(pa.table(columns), path)
    result = ingest(sandbox, str(path), "--target", "y")
    assert result.returncode == 0, result.stderr
    assert [line.split()[:4] for line in result.stdout.splitlines() if "│ nested" in line] == [
        ["│", "tags", "│", "nested"],
        ["│", "point|xy", "│", "nested"],
    ]
    artifacts = sandbox.api("/artifacts/filter", {"artifacts": {"key": {"any_": [f"dataset-{name}"]}}})
    assert "| point\\|xy | nested | 1 | - |  |  |" in artifacts[0]["data"]
