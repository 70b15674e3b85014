"""Reading dataset files as a stream: CSV dialect sniffing, and Arrow record batches from CSV (plain or
gzip) and Parquet, with every parse failure turned into a `DatasetError`. Which files we take and how
they are named is `mltp.dataset_catalog`'s."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mltp.dataset_catalog import FileFormat
from mltp.errors import DatasetError

SAMPLE_BYTES = 64 * 1024
CSV_BLOCK_BYTES = 1024 * 1024  # bigger blocks parse no faster and hold far more memory


class TeeReader(io.RawIOBase):
    """Reads `source` and hands every byte to `sinks` (hash, upload) as it goes: one read serves all.

    Also enforces the size limit, so a stream without a known size cannot grow past it.
    """

    def __init__(
        self, source: BinaryIO, sinks: list[Callable[[bytes], None]], limit: int, label: str
    ) -> None:
        self.source, self.sinks, self.limit, self.label = source, sinks, limit, label
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        if not data:
            return 0
        self.bytes_read += len(data)
        if self.bytes_read > self.limit:
            raise DatasetError(
                f"{self.label} is larger than the maximum of {self.limit / 1e6:,.0f} MB: raise --max-size-mb "
                "(MLTP_MAX_DATASET_MB) or split the file",
                source=self.label,
            )
        for sink in self.sinks:
            sink(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self, chunk: int = 1024 * 1024) -> None:
        """Read whatever the parser left (a gzip trailer, padding) so the hash covers every byte."""
        buffer = bytearray(chunk)
        while self.readinto(buffer):
            pass


class _Prefixed(io.RawIOBase):
    """`head` followed by the rest of `stream`: lets us look at the start before the parser does."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            size = min(len(buffer), len(self.head))
            buffer[:size] = self.head[:size]
            self.head = self.head[size:]
            return size
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(raw: BinaryIO, file_format: FileFormat, label: str) -> BinaryIO:
    return gzip.GzipFile(fileobj=raw, mode="rb") if file_format.compression == "gzip" else raw


def _read_sample(stream: BinaryIO, label: str) -> bytes:
    sample = stream.read(SAMPLE_BYTES)
    while sample and b"\n" not in sample and len(sample) < 16 * SAMPLE_BYTES:
        more = stream.read(SAMPLE_BYTES)
        if not more:
            break
        sample += more
    return sample


def sniff_header(sample: bytes, label: str) -> tuple[str, list[str]]:
    """Delimiter (comma, semicolon or tab) and column names from the start of a CSV file."""
    complete = sample if b"\n" not in sample else sample[: sample.rfind(b"\n") + 1]
    lines = []
    for number, raw_line in enumerate(complete.removeprefix(b"\xef\xbb\xbf").splitlines()[:50], start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"{label} is not UTF-8 text (line {number}, byte {error.start + 1}): save it as UTF-8",
                source=label,
            ) from error
        if line.strip():
            lines.append(line)
    if not lines:
        raise DatasetError(f"{label} has no header row", source=label)

    def shape(delimiter: str) -> tuple[bool, int]:
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        return len(set(counts)) == 1, counts[0]

    try:
        scores = {delimiter: shape(delimiter) for delimiter in (",", ";", "\t")}
        delimiter = max(scores, key=lambda d: (scores[d][1] > 1, scores[d][0], scores[d][1]))
        names = next(csv.reader(lines[:1], delimiter=delimiter))
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise DatasetError(f"{label}: the header is not readable CSV ({error})", source=label) from error
    empty = [str(position + 1) for position, name in enumerate(names) if not name.strip()]
    if empty:
        raise DatasetError(
            f"{label}: column(s) {', '.join(empty)} have an empty name in the header", source=label
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DatasetError(
            f"{label}: duplicate column names in the header: {', '.join(duplicates)}", source=label
        )
    return delimiter, names


@dataclass
class CsvDialect:
    delimiter: str
    names: list[str]


def open_csv_stream(raw: BinaryIO, file_format: FileFormat, label: str) -> tuple[CsvDialect, BinaryIO]:
    """Sniff the dialect from the first bytes and return a stream that still starts at byte 0."""
    stream = _decompressed(raw, file_format, label)
    with translate_errors(label, file_format):
        sample = _read_sample(stream, label)
    delimiter, names = sniff_header(sample, label)
    return CsvDialect(delimiter, names), io.BufferedReader(_Prefixed(sample, stream), CSV_BLOCK_BYTES)


def csv_batches(stream: BinaryIO, dialect: CsvDialect, label: str) -> Iterator[pa.RecordBatch]:
    """All columns as strings (types are inferred by the profiler across the whole file)."""
    bad_rows: list[tuple[int, int, str]] = []

    def on_invalid_row(row) -> str:
        bad_rows.append((row.expected_columns, row.actual_columns, row.text))
        return "error"

    reader_options = pa_csv.ReadOptions(
        column_names=dialect.names, skip_rows=1, block_size=CSV_BLOCK_BYTES, encoding="utf8"
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=dialect.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid_row
    )
    convert_options = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in dialect.names}, strings_can_be_null=True
    )
    rows = 0
    with translate_errors(label, FileFormat("csv", None, ".csv"), lambda: rows, bad_rows):
        reader = pa_csv.open_csv(stream, reader_options, parse_options, convert_options)
        for batch in reader:
            rows += batch.num_rows
            yield batch


def parquet_batches(file: BinaryIO | str, label: str) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    parquet_format = FileFormat("parquet", None, ".parquet")
    with translate_errors(label, parquet_format):
        parquet = pq.ParquetFile(file)
        names = parquet.schema_arrow.names

    def batches() -> Iterator[pa.RecordBatch]:
        with translate_errors(label, parquet_format):
            yield from parquet.iter_batches(batch_size=65_536)

    return names, batches()


class translate_errors:
    """Turn the parsers' exceptions into one-line `DatasetError`s that say what is wrong with the file."""

    def __init__(self, label: str, file_format: FileFormat, rows=lambda: 0, bad_rows=None) -> None:
        self.label, self.format, self.rows = label, file_format, rows
        self.bad_rows = bad_rows if bad_rows is not None else []

    def __enter__(self) -> translate_errors:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, DatasetError):
            return False
        message = self._message(error)
        if message is None:
            return False
        raise DatasetError(message, source=self.label) from error

    def _message(self, error: BaseException) -> str | None:
        label = self.label
        if isinstance(error, (gzip.BadGzipFile, zlib.error, EOFError)) or (
            isinstance(error, OSError) and "gzip" in str(error).lower()
        ):
            return f"{label} is not a valid gzip file ({error}): check the file or drop the .gz extension"
        if not isinstance(error, (pa.ArrowInvalid, pa.ArrowException)):
            return None
        text = str(error)
        if self.format.kind == "parquet":
            return f"{label} is not a valid Parquet file ({text.splitlines()[0]})"
        if self.bad_rows:
            expected, actual, row = self.bad_rows[0]
            shown = row if len(row) <= 60 else row[:57] + "..."
            where = f" (after data row {self.rows():,})" if self.rows() else ""
            return f"{label}: a data row{where} has {actual} fields but the header has {expected}: {shown!r}"
        if "invalid UTF8" in text or "UTF8" in text:
            where = f" (after data row {self.rows():,})" if self.rows() else ""
            return f"{label} is not UTF-8 text{where}: save it as UTF-8"
        return f"{label} could not be parsed as CSV ({text.splitlines()[0]})"
