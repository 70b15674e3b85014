"""The dataset API on moto in-process: layout, versions, dedupe, reading back, and clean failures."""

from __future__ import annotations

import gzip
import json
import math
import threading

import pandas as pd
import pytest
from botocore.exceptions import ConnectionClosedError

from mltp import dataset_catalog, datasets
from mltp.errors import DatasetError, DatasetNotFoundError
from mltp.s3_multipart import part_size_for

BUCKET = "team-data"


@pytest.fixture
def clients(mock_clients):
    mock_clients("s3").create_bucket(Bucket=BUCKET)
    return mock_clients


def keys(clients) -> list[str]:
    return sorted(entry["Key"] for entry in clients("s3").list_objects_v2(Bucket=BUCKET).get("Contents", []))


def open_uploads(clients) -> list:
    return clients("s3").list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


@pytest.fixture
def iris_csv(tmp_path):
    path = tmp_path / "iris.csv"
    frame = pd.DataFrame(
        {
            "sepal_length": [5.1, 4.9, 6.2, None, 5.9, 6.7],
            "petals": [3, 3, 2, 1, 4, 3],
            "species": ["setosa", "setosa", "virginica", "versicolor", "virginica", "setosa"],
        }
    )
    frame.to_csv(path, index=False)
    return path, frame


def test_ingest_writes_data_manifest_and_latest(clients, iris_csv) -> None:
    path, _ = iris_csv
    result = datasets.ingest(clients, BUCKET, str(path), target="species")
    manifest = result.manifest
    assert result.created
    version = manifest["version"]
    assert version == manifest["sha256"][:16]
    assert keys(clients) == [
        f"datasets/iris/{version}/iris.csv",
        f"datasets/iris/{version}/manifest.json",
        "datasets/iris/latest.json",
    ]
    assert manifest["rows"] == 6
    assert manifest["bytes"] == path.stat().st_size
    assert manifest["task"] == "classification"
    assert manifest["uri"] == f"s3://{BUCKET}/datasets/iris/{version}/iris.csv"
    assert {c["name"]: c["type"] for c in manifest["columns"]} == {
        "sepal_length": "float",
        "petals": "integer",
        "species": "string",
    }
    assert manifest["columns"][0]["nulls"] == 1
    s3 = clients("s3")
    for key in keys(clients):
        assert s3.head_object(Bucket=BUCKET, Key=key)["ServerSideEncryption"] == "AES256"
    stored = s3.get_object(Bucket=BUCKET, Key=f"datasets/iris/{version}/iris.csv")["Body"].read()
    assert stored == path.read_bytes()
    assert not open_uploads(clients)


def test_same_bytes_again_is_a_no_op(clients, iris_csv) -> None:
    path, _ = iris_csv
    first = datasets.ingest(clients, BUCKET, str(path))
    before = {
        entry["Key"]: entry["LastModified"]
        for entry in clients("s3").list_objects_v2(Bucket=BUCKET)["Contents"]
    }
    again = datasets.ingest(clients, BUCKET, str(path))
    after = {
        entry["Key"]: entry["LastModified"]
        for entry in clients("s3").list_objects_v2(Bucket=BUCKET)["Contents"]
    }
    assert not again.created
    assert again.manifest == first.manifest
    assert before == after


def test_new_bytes_make_a_new_version_and_move_latest(clients, iris_csv, tmp_path) -> None:
    path, frame = iris_csv
    first = datasets.ingest(clients, BUCKET, str(path))
    changed = tmp_path / "iris.csv"
    frame.iloc[:3].to_csv(changed, index=False)
    second = datasets.ingest(clients, BUCKET, str(changed))
    assert second.manifest["version"] != first.manifest["version"]
    assert dataset_catalog.get_manifest(clients, BUCKET, "iris")["version"] == second.manifest["version"]
    assert dataset_catalog.get_manifest(clients, BUCKET, "iris", first.manifest["version"]) == first.manifest
    assert [v["version"] for v in dataset_catalog.versions(clients, BUCKET, "iris")] == [
        first.manifest["version"],
        second.manifest["version"],
    ]
    assert dataset_catalog.list_datasets(clients, BUCKET)[0]["versions"] == 2


def test_s3_source_is_staged_and_cleaned_up(clients, iris_csv) -> None:
    path, _ = iris_csv
    clients("s3").put_object(Bucket=BUCKET, Key="incoming/iris.csv", Body=path.read_bytes())
    from_s3 = datasets.ingest(clients, BUCKET, f"s3://{BUCKET}/incoming/iris.csv")
    assert from_s3.created
    assert not [key for key in keys(clients) if key.startswith("staging/")]
    local = datasets.ingest(clients, BUCKET, str(path))  # same bytes, same version
    assert not local.created and local.manifest["version"] == from_s3.manifest["version"]
    # the staged multipart upload was copied into place: its checksum must still verify on read
    stored = clients("s3").get_object(Bucket=BUCKET, Key=from_s3.manifest["uri"].split("/", 3)[3])
    assert stored["Body"].read() == path.read_bytes()


def test_parquet_from_s3_is_spooled_then_profiled(clients, iris_csv, tmp_path) -> None:
    _, frame = iris_csv
    path = tmp_path / "flowers.parquet"
    frame.to_parquet(path)
    clients("s3").put_object(Bucket=BUCKET, Key="incoming/flowers.parquet", Body=path.read_bytes())
    result = datasets.ingest(clients, BUCKET, f"s3://{BUCKET}/incoming/flowers.parquet", target="species")
    assert result.created and result.manifest["rows"] == 6
    assert result.manifest["format"]["kind"] == "parquet"
    assert not [key for key in keys(clients) if key.startswith("staging/")]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_reading_back_gives_the_same_frame(clients, iris_csv, tmp_path, suffix) -> None:
    _, frame = iris_csv
    path = tmp_path / f"flowers{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".csv.gz":
        path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    datasets.ingest(clients, BUCKET, str(path), target="species")
    back = datasets.read_dataframe(clients, BUCKET, "flowers")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["petals"].dtype.kind == "i"


def test_unknown_dataset_and_version(clients) -> None:
    with pytest.raises(DatasetNotFoundError, match="no dataset named 'ghost'"):
        dataset_catalog.get_manifest(clients, BUCKET, "ghost")
    with pytest.raises(DatasetNotFoundError, match="ghost@0123456789abcdef does not exist"):
        dataset_catalog.get_manifest(clients, BUCKET, "ghost", "0123456789abcdef")
    with pytest.raises(DatasetError, match="dataset version 'abc' is not a version"):
        dataset_catalog.get_manifest(clients, BUCKET, "ghost", "abc")


def fail_on(clients, operation: str, after: int = 0):
    """Make the `after`+1-th call of `operation` (and later ones) fail like a dropped connection."""
    calls = {"n": 0}

    def maybe_fail(**_):
        calls["n"] += 1
        if calls["n"] > after:
            raise ConnectionClosedError(endpoint_url="http://s3")

    clients("s3").meta.events.register(f"before-call.s3.{operation}", maybe_fail)


@pytest.mark.parametrize(
    ("operation", "after"),
    [("UploadPart", 1), ("CompleteMultipartUpload", 0), ("PutObject", 0), ("PutObject", 1)],
)
def test_an_upload_failing_half_way_leaves_nothing(clients, tmp_path, operation, after) -> None:
    path = tmp_path / "big.csv"
    pd.DataFrame({"x": range(2_000_000), "y": range(2_000_000)}).to_csv(path, index=False)  # several parts
    fail_on(clients, operation, after)
    with pytest.raises(ConnectionClosedError):
        datasets.ingest(clients, BUCKET, str(path))
    assert keys(clients) == []
    assert open_uploads(clients) == []


def test_the_last_part_is_sent_while_the_parser_still_works(clients, tmp_path) -> None:
    path = tmp_path / "parts.csv"
    pd.DataFrame({"x": range(2_000_000), "y": range(2_000_000)}).to_csv(path, index=False)
    size = path.stat().st_size
    last_part, last_part_sent = math.ceil(size / part_size_for(size)), threading.Event()

    def record(params, **_):
        if params["PartNumber"] == last_part:
            last_part_sent.set()

    clients("s3").meta.events.register("before-parameter-build.s3.UploadPart", record)
    waited = []

    def progress(read: int, total: int | None) -> None:
        if read == total and not waited:  # the parser's batches from here on are the file's last ones
            waited.append(last_part_sent.wait(timeout=30))  # before completion, it would never be sent

    datasets.ingest(clients, BUCKET, str(path), on_progress=progress)
    assert last_part > 1 and waited == [True]


def test_a_bad_row_late_in_the_file_leaves_nothing(clients, tmp_path) -> None:
    path = tmp_path / "late.csv"
    pd.DataFrame({"x": range(1_500_000), "y": range(1_500_000)}).to_csv(path, index=False)
    with path.open("a") as out:
        out.write("1,2,3\n")
    with pytest.raises(DatasetError, match="has 3 fields but the header has 2"):
        datasets.ingest(clients, BUCKET, str(path))
    assert keys(clients) == []
    assert open_uploads(clients) == []


def test_latest_pointer_keeps_every_version(clients, tmp_path) -> None:
    made = []
    for n in range(3):
        path = tmp_path / "series.csv"
        path.write_text(f"a\n{n}\n")
        made.append(datasets.ingest(clients, BUCKET, str(path)).manifest["version"])
    pointer = json.loads(
        clients("s3").get_object(Bucket=BUCKET, Key="datasets/series/latest.json")["Body"].read()
    )
    assert pointer["latest"] == made[-1]
    assert [v["version"] for v in pointer["versions"]] == made


def parquet_file(path, table) -> str:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return str(path)


def test_nested_parquet_columns_are_profiled_and_refused_as_target(clients, tmp_path) -> None:
    import pyarrow as pa

    table = pa.table({"tags": [[1, 2], [3], None], "point": [{"x": 1}, {"x": 2}, {"x": 3}], "y": [1, 2, 3]})
    source = parquet_file(tmp_path / "nested.parquet", table)
    with pytest.raises(DatasetError, match=r"target 'tags' of nested\.parquet is a nested column"):
        datasets.ingest(clients, BUCKET, source, target="tags")
    assert keys(clients) == [] and open_uploads(clients) == []
    manifest = datasets.ingest(clients, BUCKET, source, target="y").manifest
    assert [(c["name"], c["type"]) for c in manifest["columns"]] == [
        ("tags", "nested"),
        ("point", "nested"),
        ("y", "integer"),
    ]
    assert len(datasets.read_dataframe(clients, BUCKET, "nested")) == 3


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "a"], "duplicate column names in the header: 'a'"),
        (["", "a"], r"column\(s\) 1 have an empty name"),
    ],
)
def test_parquet_column_names_follow_the_csv_rules(clients, tmp_path, names, message) -> None:
    import pyarrow as pa

    table = pa.table([pa.array([1, 2]), pa.array([3, 4])], names=names)
    with pytest.raises(DatasetError, match=message):
        datasets.ingest(clients, BUCKET, parquet_file(tmp_path / "named.parquet", table))
    assert keys(clients) == [] and open_uploads(clients) == []


def test_a_row_over_the_parsers_blocks_is_read_again_with_bigger_ones(clients, tmp_path) -> None:
    path = tmp_path / "long.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 1000 + b'3,"' + b"x" * 2_500_000 + b'"\n4,5\n')
    manifest = datasets.ingest(clients, BUCKET, str(path)).manifest
    assert manifest["rows"] == 1002 and manifest["format"]["block_bytes"] == 64 * 2**20
    frame = datasets.read_dataframe(clients, BUCKET, "long")  # the trainer reads it the same way
    assert len(frame) == 1002 and len(frame["b"].iloc[1000]) == 2_500_000
    assert open_uploads(clients) == []


@pytest.mark.parametrize("filename", ["a\nb.csv", "tab\there.csv", "bell\x07.csv"])
def test_a_file_name_with_control_characters_is_refused(clients, tmp_path, filename) -> None:
    path = tmp_path / filename
    path.write_text("a\n1\n")
    with pytest.raises(DatasetError, match="contains control characters"):
        datasets.ingest(clients, BUCKET, str(path), name="named")
    clients("s3").put_object(Bucket=BUCKET, Key=f"uploads/{filename}", Body=b"a\n1\n")
    with pytest.raises(DatasetError, match="contains control characters"):
        datasets.ingest(clients, BUCKET, f"s3://{BUCKET}/uploads/{filename}", name="named")
    assert not [key for key in keys(clients) if not key.startswith("uploads/")]


def test_a_named_pipe_is_not_a_regular_file(clients, tmp_path) -> None:
    import os

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match=r"is not a regular file \(a named pipe\)"):
        datasets.ingest(clients, BUCKET, str(fifo))
    with pytest.raises(DatasetError, match=r"is not a regular file \(a character device\)"):
        datasets.ingest(clients, BUCKET, "/dev/null")


def test_sizes_over_the_maximum_are_shown_in_its_unit(clients, tmp_path) -> None:
    path = tmp_path / "size.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 305_000)
    with pytest.raises(DatasetError, match=r"size.csv is 1.16 MB, over the maximum of 1 MB"):
        datasets.ingest(clients, BUCKET, str(path), max_bytes=2**20)


def test_the_same_bytes_with_another_target_are_refused(clients, iris_csv) -> None:
    path, _ = iris_csv
    version = datasets.ingest(clients, BUCKET, str(path), target="species").manifest["version"]
    with pytest.raises(
        DatasetError,
        match=rf"already ingested as iris@{version} with target 'species': "
        rf"to train on 'petals', run mltp train --dataset iris@{version} --target petals",
    ):
        datasets.ingest(clients, BUCKET, str(path), target="petals")
    assert not datasets.ingest(clients, BUCKET, str(path), target="species").created
    reused = datasets.ingest(clients, BUCKET, str(path), target="petals", other_target="reuse")
    assert not reused.created and reused.manifest["target"] == "species"  # the caller trains its own
    assert not datasets.ingest(clients, BUCKET, str(path)).created
    untargeted = datasets.ingest(clients, BUCKET, str(path), name="plain").manifest
    with pytest.raises(DatasetError, match=r"already ingested as plain@.* with no target"):
        datasets.ingest(clients, BUCKET, str(path), name="plain", target="species")
    assert untargeted["target"] is None
