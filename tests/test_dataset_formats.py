from __future__ import annotations

import gzip
import io

import pytest

from mltp.dataset_catalog import FileFormat, derive_name, detect_format, validate_name
from mltp.dataset_formats import RowTooLongError, TeeReader, csv_batches, open_csv_stream, sniff_header
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
        (b'"multi\nline",b,y\n1,2,3\n', ",", ["multi\nline", "b", "y"]),
        (b'"a;b"\tc\n"1;2"\t3\n', "\t", ["a;b", "c"]),
    ],
)
def test_sniffing(text, delimiter, names) -> None:
    assert sniff_header(text, "f.csv") == (delimiter, names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"a,a,b\n1,2,3\n", "duplicate column names in the header: 'a'"),
        (b"a,,b\n1,2,3\n", r"column\(s\) 2 have an empty name"),
        (b"a, ,b\n1,2,3\n", r"column\(s\) 2 have an empty name"),
        (b"\n\n", "has no header row"),
        (b"a,b\n\xff\xfe,1\n", r"is not UTF-8 text \(line 2, byte 1\)"),
        (b"a,b\n1,ok\n2,caf\xe9\n", r"is not UTF-8 text \(line 3, byte 6\)"),
        (gzip.compress(b"a,b\n1,2\n"), "its bytes look like gzip-compressed data: name it .csv.gz"),
        (b"PAR1\x15\x04", "its bytes look like a Parquet file: name it .parquet"),
        (b"PK\x03\x04\x14\x00", "its bytes look like a ZIP archive"),
        (b"BZh91AY&SY", "its bytes look like bzip2-compressed data"),
        ("a,b\n1,2\n".encode("utf-16"), "its bytes look like UTF-16 text: save it as UTF-8"),
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


def test_a_quoted_header_with_a_newline_names_one_column() -> None:
    assert rows_of(b'"multi\nline",b\n1,2\n') == [{"multi\nline": "1", "b": "2"}]


def test_a_row_longer_than_the_blocks_asks_for_bigger_ones() -> None:
    long_row = b"a,b\n" + b"1,2\n" * 10 + b"3," + b"x" * 2_500_000 + b"\n4,5\n"
    with pytest.raises(RowTooLongError, match=r"a row after data row 10 is longer than 1 MB"):
        rows_of(long_row)
    dialect, stream = open_csv_stream(io.BytesIO(long_row), CSV, "f.csv", block_bytes=8 * 2**20)
    assert sum(batch.num_rows for batch in csv_batches(stream, dialect, "f.csv")) == 12


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
