from __future__ import annotations

import gzip
import io
import threading

import pytest

from mltp.dataset_catalog import FileFormat, derive_name, detect_format, validate_name
from mltp.dataset_formats import (
    ReadAhead,
    RowTooLongError,
    csv_batches,
    open_csv_stream,
    parsed_ahead,
    sniff_header,
)
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
        (gzip.compress(b"a,b\n1,2\n", mtime=0), "its bytes look like gzip-compressed data: name it .csv.gz"),
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


def test_read_ahead_feeds_every_sink_and_the_reader_once() -> None:
    data = bytes(range(256)) * 40
    hashed, uploaded = [], []
    with ReadAhead(io.BytesIO(data), [hashed.append, uploaded.append], 10**6, "f", 1000, 2) as reader:
        parsed = io.BufferedReader(reader, 300).read()
        reader.finish()
    assert parsed == b"".join(hashed) == b"".join(uploaded) == data
    assert [len(chunk) for chunk in uploaded] == [1000] * 10 + [240] and reader.bytes_read == len(data)


def test_read_ahead_calls_at_end_once_the_source_is_read_while_the_parser_still_reads() -> None:
    uploaded, ended = [], threading.Event()
    reader = ReadAhead(io.BytesIO(b"x" * 1000), [uploaded.append], 10**6, "f", 100, 10, at_end=ended.set)
    with reader:
        assert ended.wait(timeout=10)  # nothing of it parsed yet: the queue holds all ten chunks
        assert b"".join(uploaded) == b"x" * 1000
        assert reader.read() == b"x" * 1000
        reader.finish()


def test_a_read_ahead_stopped_early_never_calls_at_end() -> None:
    ended = threading.Event()
    reader = ReadAhead(EndlessSource(), [], 10**12, "f", 10, 1, at_end=ended.set)
    reader.read(5)
    reader.close()
    assert not ended.is_set()


def test_read_ahead_finish_reads_what_the_parser_left() -> None:
    seen = []
    with ReadAhead(io.BytesIO(b"x" * 10_000), [seen.append], 10**6, "f", 100, 1) as reader:
        reader.read(150)  # the parser stops early, e.g. at a gzip trailer
        reader.finish()
    assert b"".join(seen) == b"x" * 10_000


def test_read_ahead_enforces_the_limit_in_the_reader_and_in_finish() -> None:
    with ReadAhead(io.BytesIO(b"x" * 100), [], 50, "big.csv", 30, 4) as reader:
        with pytest.raises(DatasetError, match=r"big\.csv is larger than the maximum"):
            reader.read()
        with pytest.raises(DatasetError, match=r"big\.csv is larger than the maximum"):
            reader.finish()


def test_read_ahead_raises_a_failing_sink_s_own_error() -> None:
    def broken_upload(chunk: bytes) -> None:
        raise ConnectionError("the upload broke")

    reader = ReadAhead(io.BytesIO(b"x" * 100), [broken_upload], 10**6, "f", 30, 4)
    with reader, pytest.raises(ConnectionError, match="the upload broke"):
        reader.read()


class EndlessSource(io.RawIOBase):
    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return b"x" * size


def test_closing_a_read_ahead_stops_its_thread() -> None:
    source = EndlessSource()
    reader = ReadAhead(source, [], 10**12, "f", 10, 2)
    assert reader.read(5) == b"x" * 5
    reader.close()
    reads = source.reads
    assert "ingest-reader" not in [thread.name for thread in threading.enumerate()]
    assert reads < 10  # two queued, one in hand, one being put
    assert source.reads == reads


def test_a_read_still_waiting_when_a_read_ahead_closes_gets_the_end() -> None:
    reader = ReadAhead(EndlessSource(), [], 10**12, "f", 10, 1)
    reader.read(10)
    reader.close()  # stopped before it could hand over the end of the stream
    waiting = threading.Thread(target=lambda: [None for _ in iter(lambda: reader.readinto(bytearray(10)), 0)])
    waiting.start()
    waiting.join(timeout=10)
    assert not waiting.is_alive()


def batches_of(text: bytes, block_bytes: int = 1024 * 1024):
    dialect, stream = open_csv_stream(io.BytesIO(text), CSV, "f", block_bytes)
    return csv_batches(stream, dialect, "f")


def test_parsed_ahead_yields_every_batch_in_order() -> None:
    text = b"a,b\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(50_000))
    batches = list(parsed_ahead(batches_of(text, block_bytes=4096)))
    assert len(batches) > 10
    assert [int(v) for batch in batches for v in batch.column(0).to_pylist()] == list(range(50_000))


def test_parsed_ahead_raises_the_parse_error_in_the_consumer() -> None:
    text = b"a,b\n" + b"1,2\n" * 20_000 + b"1,2,3\n"
    with pytest.raises(DatasetError, match="has 3 fields but the header has 2"):
        for _ in parsed_ahead(batches_of(text, block_bytes=4096), depth=1):
            pass


def test_parsed_ahead_stops_parsing_when_the_consumer_stops() -> None:
    parsed = []

    def batches():
        for number in range(1000):
            parsed.append(number)
            yield number

    ahead = parsed_ahead(batches(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert len(parsed) <= 5
