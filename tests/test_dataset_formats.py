from __future__ import annotations

import gzip
import io

import pytest

from mltp.dataset_catalog import FileFormat, derive_name, detect_format, validate_name
from mltp.dataset_formats import TeeReader, csv_batches, open_csv_stream, sniff_header
from mltp.errors import DatasetError

CSV = FileFormat("csv", None, ".csv")


@pytest.mark.parametrize(
    ("filename", "kind", "compression"),
    [
        ("data.csv", "csv", None),
        ("DATA.CSV", "csv", None),
        ("data.tsv", "csv", None),
        ("data.csv.gz", "csv", "gzip"),
        ("data.parquet", "parquet", None),
        ("data.pq", "parquet", None),
    ],
)
def test_supported_formats(filename, kind, compression) -> None:
    found = detect_format(filename)
    assert (found.kind, found.compression) == (kind, compression)


@pytest.mark.parametrize("filename", ["data.xlsx", "data.json", "data", "data.gz", "archive.zip"])
def test_unsupported_extension(filename) -> None:
    with pytest.raises(DatasetError, match="unsupported file type"):
        detect_format(filename)


@pytest.mark.parametrize(
    ("filename", "name"),
    [("Iris Data.csv", "iris-data"), ("sales_2024.csv.gz", "sales_2024"), ("x.parquet", "x")],
)
def test_names_derived_from_files(filename, name) -> None:
    assert derive_name(filename, detect_format(filename)) == name


@pytest.mark.parametrize("name", ["../x", "has space", "Upper", "a" * 65, "", "-lead", "a/b", "dot.name"])
def test_unsafe_names_are_refused(name) -> None:
    with pytest.raises(DatasetError, match="is not allowed"):
        validate_name(name)


@pytest.mark.parametrize("name", ["iris", "a", "x" * 64, "sales_2024-q1", "0day"])
def test_safe_names(name) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("text", "delimiter", "names"),
    [
        (b"a,b,c\n1,2,3\n", ",", ["a", "b", "c"]),
        (b"a;b;c\n1,5;2;3\n", ";", ["a", "b", "c"]),
        (b"a\tb\n1\t2\n", "\t", ["a", "b"]),
        (b'"x, y",z\n"1,2",3\n', ",", ["x, y", "z"]),
        (b"\xef\xbb\xbfa,b\n1,2\n", ",", ["a", "b"]),
        (b"only\n1\n2\n", ",", ["only"]),
    ],
)
def test_sniffing(text, delimiter, names) -> None:
    assert sniff_header(text, "f.csv") == (delimiter, names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"a,a,b\n1,2,3\n", "duplicate column names in the header: a"),
        (b"a,,b\n1,2,3\n", r"column\(s\) 2 have an empty name"),
        (b"\n\n", "has no header row"),
        (b"a,b\n\xff\xfe,1\n", r"is not UTF-8 text \(line 2"),
    ],
)
def test_bad_headers(text, message) -> None:
    with pytest.raises(DatasetError, match=message):
        sniff_header(text, "f.csv")


def rows_of(data: bytes, file_format: FileFormat = CSV) -> list[dict]:
    dialect, stream = open_csv_stream(io.BytesIO(data), file_format, "f.csv")
    return [row for batch in csv_batches(stream, dialect, "f.csv") for row in batch.to_pylist()]


def test_quoted_fields_with_delimiters_and_newlines() -> None:
    assert rows_of(b'id,text\n1,"a, b"\n2,"two\nlines"\n3,""\n') == [
        {"id": "1", "text": "a, b"},
        {"id": "2", "text": "two\nlines"},
        {"id": "3", "text": None},
    ]


def test_gzip_stream() -> None:
    assert rows_of(gzip.compress(b"a;b\n1;2\n"), FileFormat("csv", "gzip", ".csv.gz")) == [
        {"a": "1", "b": "2"}
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a,b\n1,2\n3,4,5\n", "a data row has 3 fields but the header has 2: '3,4,5'"),
        (b"a,b,c\n1,2\n", "a data row has 2 fields but the header has 3"),
        (b"a,b\n1,ok\n2,\xff\n", "is not UTF-8 text"),
    ],
)
def test_bad_rows(data, message) -> None:
    with pytest.raises(DatasetError, match=message):
        rows_of(data)


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(b"a,b\n1,2\n" * 1000, mtime=0)[:-20]],
    ids=["not-gzip", "truncated"],  # every xdist worker must collect the same ids
)
def test_corrupt_gzip(data) -> None:
    with pytest.raises(DatasetError, match="is not a valid gzip file"):
        rows_of(data, FileFormat("csv", "gzip", ".csv.gz"))


def test_tee_feeds_every_sink_and_enforces_the_limit() -> None:
    seen = []
    reader = TeeReader(io.BytesIO(b"x" * 100), [seen.append], limit=1000, label="f")
    reader.drain(chunk=30)
    assert b"".join(seen) == b"x" * 100 and reader.bytes_read == 100
    small = TeeReader(io.BytesIO(b"x" * 100), [], limit=50, label="big.csv")
    with pytest.raises(DatasetError, match=r"big\.csv is larger than the maximum"):
        small.drain(chunk=30)
